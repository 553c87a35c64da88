//! # fuselage-frontends
//!
//! Ways into the IR: the [`builder`] API with typed helpers (linear, layer_norm, attention, mlp,
//! transformer blocks) and the [`builtin`] models with seeded weights. Importers of real formats
//! (safetensors + config, [`gguf`], ONNX) build the same IR through the same builder.
#![warn(missing_docs)]

pub mod assets;
pub mod builder;
pub mod builtin;
pub mod error;
pub mod gguf;
pub mod onnx;

pub use builder::ModelBuilder;
pub use builtin::{builtin, BUILTINS};
pub use error::{FrontendError, UnsupportedOp};
