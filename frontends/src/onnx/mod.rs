//! The ONNX importer: `.onnx` files → an IR [`Module`].
//!
//! ```no_run
//! let module = fuselage_frontends::onnx::load_onnx("model.onnx")?;
//! # Ok::<(), fuselage_frontends::FrontendError>(())
//! ```
//!
//! # How it reads ONNX
//!
//! The protobuf is decoded with [`prost`] into hand-written messages ([`proto`]) that mirror
//! the part of `onnx.proto` the importer needs, with the schema's exact field numbers — no
//! `protoc`, no build script. Malformed, truncated or oversized input is a
//! [`FrontendError::Onnx`] naming the file and, for tensors, the tensor; every initializer's data
//! length is checked against its dims (and external data against its file) before use, and
//! declared sizes past the memory budget ([`ImportOptions::max_constant_bytes`]) are refused
//! before anything is allocated.
//!
//! The `onnx-ir` crate (burn's ONNX front end) is deliberately not used: it renames nodes and
//! values, fuses `MatMul`+`Add` (and other patterns) on its own before a user sees the graph,
//! and depends on a second version of burn besides the one the backends use. fuselage keeps the
//! model's own names (each ONNX node's name becomes the name of the IR node that computes its
//! output; graph inputs and outputs keep their value names) and leaves fusion to its passes.
//!
//! # What it maps
//!
//! One table ([`supported_ops`]) maps each ONNX op type to its converter, one file per op family
//! under `ops/`; converters build typed IR ops. While importing, the importer tracks which
//! values are known at import time: constants, and small integer tensors whose entries are dim
//! expressions (`Shape(x)` of an input `[batch, seq]` is `[batch, seq]`). Every IR op applied
//! to such values is evaluated symbolically — `Gather`, `Concat`, `Unsqueeze`, arithmetic,
//! comparisons, `Where`, `Cast` — so shape subgraphs fold into dims like `12*batch` and never
//! reach the graph; `Reshape`, `Expand`, `ConstantOfShape`, `Range`, `Tile`, `Slice`, `Pad` read
//! them. Nodes whose inputs are all constants are folded through the IR's reference semantics.
//! A value that is truly data-dependent (`NonZero`, `Unique`) has no type the IR can name and is
//! reported as such.
//!
//! Every node is tried; all the nodes that cannot be mapped are reported together in one
//! [`FrontendError::OnnxUnsupported`] with op type, opset, node name and reason.

mod import;
mod node;
mod ops;
pub mod proto;
mod tensor;
mod value;

use crate::error::FrontendError;
use fuselage_ir::{Module, Tensor};
use prost::Message;
use std::collections::HashMap;
use std::path::Path;

/// Options of an import.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// Values of graph inputs. An input whose value a converter needs at import time (axes,
    /// a target shape, pads given as a graph input) is specialized: it becomes a constant and
    /// is no longer an input of the module.
    pub input_values: HashMap<String, Tensor>,
    /// The largest constant or input (in bytes, by its declared shape and dtype) the importer
    /// accepts; larger declared sizes are an error before anything is allocated.
    pub max_constant_bytes: u64,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            input_values: HashMap::new(),
            max_constant_bytes: fuselage_ir::limits::memory_budget(),
        }
    }
}

/// A model imported with [`load_onnx_with`].
#[derive(Clone, Debug)]
pub struct Imported {
    /// The module (function `main`).
    pub module: Module,
    /// Graph inputs that were specialized on their given values (no longer inputs).
    pub specialized: Vec<String>,
    /// Facts the importer assumed about symbols (`S <= 512`, `H % 2 == 0`) and why; they are
    /// also in the module's facts, checked whenever inputs are bound.
    pub notes: Vec<String>,
}

/// Import an ONNX model file. Tensors stored as external data are read relative to the file's
/// folder (bounds-checked against those files).
pub fn load_onnx(path: impl AsRef<Path>) -> Result<Module, FrontendError> {
    load_onnx_with(path, &ImportOptions::default()).map(|i| i.module)
}

/// Import an ONNX model file with options (input values to specialize on, memory budget).
pub fn load_onnx_with(
    path: impl AsRef<Path>,
    options: &ImportOptions,
) -> Result<Imported, FrontendError> {
    let path = path.as_ref();
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| FrontendError::Onnx {
        file: file.clone(),
        message: format!("cannot read the file: {e}"),
    })?;
    import(&bytes, &file, path.parent(), options)
}

/// Import an ONNX model from its serialized bytes; `name` is used in error messages. A model
/// whose tensors live in external files cannot be loaded this way (use [`load_onnx`]).
pub fn load_onnx_bytes(bytes: &[u8], name: &str) -> Result<Module, FrontendError> {
    import(bytes, name, None, &ImportOptions::default()).map(|i| i.module)
}

fn import(
    bytes: &[u8],
    file: &str,
    dir: Option<&Path>,
    options: &ImportOptions,
) -> Result<Imported, FrontendError> {
    let model = proto::ModelProto::decode(bytes).map_err(|e| FrontendError::Onnx {
        file: file.to_string(),
        message: format!("not a valid ONNX protobuf ({} bytes): {e}", bytes.len()),
    })?;
    let im = import::Importer::run(&model, file, dir, options)?;
    Ok(Imported {
        module: im.module,
        specialized: im.specialized,
        notes: im.notes,
    })
}

/// The ONNX op types the importer maps (default domain), sorted.
pub fn supported_ops() -> Vec<&'static str> {
    ops::supported()
}

/// The ONNX op types the importer maps, per op family (the file under `onnx/ops/` that
/// converts them), in the order of each family's table.
pub fn supported_ops_by_family() -> Vec<(&'static str, Vec<&'static str>)> {
    ops::by_family()
}
