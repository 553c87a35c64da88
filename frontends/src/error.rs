//! Errors of the frontends.

use thiserror::Error;

/// An error while building or importing a model.
#[derive(Debug, Error)]
pub enum FrontendError {
    /// An IR error (type inference, verification) while building a node.
    #[error("building `{context}`: {source}")]
    Build {
        /// What was being built (the node or block name).
        context: String,
        /// The IR error.
        #[source]
        source: Box<fuselage_ir::IrError>,
    },
    /// A model name that is not built in.
    #[error("unknown built-in model `{name}` (available: {available})")]
    UnknownBuiltin {
        /// The name given.
        name: String,
        /// Comma-separated list of built-in models.
        available: String,
    },
    /// A model folder found nowhere.
    #[error("model `{name}` not found; looked in: {looked} (set FUSELAGE_MODELS, or run scripts/fetch-models.sh)")]
    ModelNotFound {
        /// The model's folder name.
        name: String,
        /// Every place looked at, comma-separated.
        looked: String,
    },
    /// A file that cannot be read or is malformed (the message names the tensor or field).
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What is wrong (names the tensor where there is one).
        message: String,
    },
    /// A bad configuration value.
    #[error("model config: {0}")]
    Config(String),
    /// A GGUF file that cannot be read or imported (the message names the tensor or key).
    #[error("GGUF file {file}: {message}")]
    Gguf {
        /// The file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// An ONNX file that cannot be read or imported: corrupt protobuf, bad tensor data, a node
    /// whose inputs do not fit its op. The message names the tensor or node.
    #[error("ONNX model `{file}`: {message}")]
    Onnx {
        /// The file (or the name given to [`load_onnx_bytes`](crate::onnx::load_onnx_bytes)).
        file: String,
        /// What is wrong, naming the tensor or node.
        message: String,
    },
    /// Every ONNX node the importer cannot map to IR ops, found in one pass over the model.
    #[error("ONNX model `{file}`: {} unsupported op(s):\n{}{}", ops.len(),
        ops.iter().map(|o| format!("  {o}")).collect::<Vec<_>>().join("\n"),
        if errors.is_empty() { String::new() } else {
            format!("\nand {} other error(s):\n  {}", errors.len(), errors.join("\n  "))
        })]
    OnnxUnsupported {
        /// The file (or the name given to the byte loader).
        file: String,
        /// The unsupported nodes, in graph order.
        ops: Vec<UnsupportedOp>,
        /// Other node errors met while importing the rest of the graph.
        errors: Vec<String>,
    },
}

/// One ONNX node the importer cannot map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsupportedOp {
    /// The op type (`MaxPool`), prefixed with its domain when not the default one.
    pub op_type: String,
    /// The opset version of the op's domain the model imports.
    pub opset: i64,
    /// The node's name (or its first output's name when the node has none).
    pub node: String,
    /// Why, when the op type is known but this use of it is not supported.
    pub reason: Option<String>,
}

impl std::fmt::Display for UnsupportedOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (opset {}) at node `{}`",
            self.op_type, self.opset, self.node
        )?;
        if let Some(r) = &self.reason {
            write!(f, ": {r}")?;
        }
        Ok(())
    }
}

impl FrontendError {
    /// An error about a file.
    pub fn file(path: &std::path::Path, message: impl Into<String>) -> Self {
        FrontendError::File {
            path: path.display().to_string(),
            message: message.into(),
        }
    }

    /// A build error with its context.
    pub fn build(context: impl Into<String>, source: fuselage_ir::IrError) -> Self {
        FrontendError::Build {
            context: context.into(),
            source: Box::new(source),
        }
    }
}
