//! The ONNX importer: `.onnx` files (opset 13 and up) → an IR [`Module`].
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
//! length is checked against its dims (and external data against its file) before use.
//!
//! The `onnx-ir` crate (burn's ONNX front end) is deliberately not used: it renames nodes and
//! values, fuses `MatMul`+`Add` (and other patterns) on its own before a user sees the graph,
//! and depends on a second version of burn besides the one the backends use. fuselage keeps the
//! model's own names (each ONNX node's name becomes the name of the IR node that computes its
//! output; graph inputs and outputs keep their value names) and leaves fusion to its passes.
//!
//! # What it maps
//!
//! Each ONNX node becomes one IR op or a short decomposition into IR ops (see `docs/onnx.md`).
//! While importing, the importer tracks which values are known at import time — constants and
//! *shape vectors* whose entries are integers or IR symbols (`dim_param` names of graph inputs).
//! Shape subgraphs (`Shape`, `Gather`, `Unsqueeze`, `Concat`, `Slice`, `Cast`, arithmetic on
//! shapes) fold to these values, and `Reshape`/`Expand`/`ConstantOfShape`/`Range` read them, so
//! no shape computation reaches the IR. Nodes whose inputs are all constants are folded through
//! the IR's reference semantics.
//!
//! Every node is tried; all the nodes that cannot be mapped are reported together in one
//! [`FrontendError::OnnxUnsupported`] with op type, opset and node name.

mod import;
mod ops;
pub mod proto;
mod tensor;

use crate::error::FrontendError;
use fuselage_ir::Module;
use prost::Message;
use std::path::Path;

/// Import an ONNX model file. Tensors stored as external data are read relative to the file's
/// folder (bounds-checked against those files).
pub fn load_onnx(path: impl AsRef<Path>) -> Result<Module, FrontendError> {
    let path = path.as_ref();
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| FrontendError::Onnx {
        file: file.clone(),
        message: format!("cannot read the file: {e}"),
    })?;
    import(&bytes, &file, path.parent())
}

/// Import an ONNX model from its serialized bytes; `name` is used in error messages. A model
/// whose tensors live in external files cannot be loaded this way (use [`load_onnx`]).
pub fn load_onnx_bytes(bytes: &[u8], name: &str) -> Result<Module, FrontendError> {
    import(bytes, name, None)
}

fn import(bytes: &[u8], file: &str, dir: Option<&Path>) -> Result<Module, FrontendError> {
    let model = proto::ModelProto::decode(bytes).map_err(|e| FrontendError::Onnx {
        file: file.to_string(),
        message: format!("not a valid ONNX protobuf ({} bytes): {e}", bytes.len()),
    })?;
    import::Importer::run(&model, file, dir)
}

/// The ONNX op types (default domain) the importer maps, sorted.
pub fn supported_ops() -> &'static [&'static str] {
    import::SUPPORTED
}
