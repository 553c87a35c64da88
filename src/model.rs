//! Model specs: `builtin:NAME`, a `.fir` text module, a `.json` module, an `.onnx` file, a `.gguf`
//! file, or a Hugging Face model folder (`config.json` + `model.safetensors`).

use fuselage_ir::Module;
use std::path::Path;

/// Errors loading or saving a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A built-in model failed to build or is unknown.
    #[error(transparent)]
    Frontend(#[from] fuselage_frontends::FrontendError),
    /// An IR error (parse, verify).
    #[error(transparent)]
    Ir(#[from] fuselage_ir::IrError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A spec of a kind not understood.
    #[error(
        "cannot load `{0}`: expected builtin:NAME (one of {1}), a .fir file or a .json module"
    )]
    UnknownSpec(String, String),
    /// An output path with an unknown extension.
    #[error("cannot write `{0}`: the extension must be .fir or .json")]
    UnknownOutput(String),
}

fn builtin_names() -> String {
    fuselage_frontends::BUILTINS
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Load a model from a spec.
pub fn load(spec: &str) -> Result<Module, ModelError> {
    if let Some(name) = spec.strip_prefix("builtin:") {
        return Ok(fuselage_frontends::builtin(name)?);
    }
    let path = Path::new(spec);
    if path.is_dir() {
        if path.join("config.json").is_file() {
            return Ok(fuselage_frontends::hf::load_dir(path)?);
        }
        return Err(ModelError::UnknownSpec(spec.to_string(), builtin_names()));
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let read = || {
        std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: spec.to_string(),
            source,
        })
    };
    match ext {
        "fir" => Ok(fuselage_ir::text::parse_module(&read()?, spec)?),
        "onnx" => Ok(fuselage_frontends::onnx::load_onnx(path)?),
        "gguf" => Ok(fuselage_frontends::gguf::load_gguf(path)?),
        "json" => Ok(fuselage_ir::text::from_json(&read()?).map_err(|e| match e {
            fuselage_ir::IrError::Json(m) => fuselage_ir::IrError::Json(format!("{spec}: {m}")),
            e => e,
        })?),
        _ => Err(ModelError::UnknownSpec(spec.to_string(), builtin_names())),
    }
}

/// What [`load_with`] may use besides the model file.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Values of graph inputs by name. An ONNX model whose shapes depend on an input's value
    /// (axes, a target shape or pads given as graph inputs) is specialized on it: the input
    /// becomes a constant.
    pub input_values: std::collections::HashMap<String, fuselage_ir::Tensor>,
}

/// A loaded model and the inputs it was specialized on (see [`LoadOptions::input_values`]).
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The module.
    pub module: Module,
    /// Inputs that became constants.
    pub specialized: Vec<String>,
    /// Facts the importer assumed about symbols, and why.
    pub notes: Vec<String>,
}

/// [`load`] with options; only ONNX models use `input_values`.
pub fn load_with(spec: &str, options: &LoadOptions) -> Result<Loaded, ModelError> {
    let path = Path::new(spec);
    if path.extension().and_then(|e| e.to_str()) == Some("onnx") && !path.is_dir() {
        let o = fuselage_frontends::onnx::ImportOptions {
            input_values: options.input_values.clone(),
            ..Default::default()
        };
        let im = fuselage_frontends::onnx::load_onnx_with(path, &o)?;
        return Ok(Loaded {
            module: im.module,
            specialized: im.specialized,
            notes: im.notes,
        });
    }
    Ok(Loaded {
        module: load(spec)?,
        specialized: vec![],
        notes: vec![],
    })
}

/// Save a module as `.fir` or `.json` (chosen by extension), atomically.
pub fn save(m: &Module, path: &Path) -> Result<(), ModelError> {
    let p = path.display().to_string();
    let text = match path.extension().and_then(|e| e.to_str()) {
        Some("fir") => fuselage_ir::text::print_module(m),
        Some("json") => fuselage_ir::text::to_json(m),
        _ => return Err(ModelError::UnknownOutput(p)),
    };
    crate::npy::write_atomic(path, text.as_bytes())
        .map_err(|source| ModelError::Io { path: p, source })
}

/// The tokenizer a `.gguf` file carries.
pub fn gguf_tokenizer(path: &Path) -> Result<fuselage_frontends::Tokenizer, ModelError> {
    let g = fuselage_frontends::gguf::GgufFile::open(path)?;
    let t = fuselage_frontends::gguf::tokenizer(&g)?;
    Ok(fuselage_frontends::Tokenizer::from_tokenizer(t, path)?)
}
