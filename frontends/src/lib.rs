//! # fuselage-frontends
//!
//! Ways into the IR: the [`builder`] API with typed helpers (linear, layer_norm, attention, mlp,
//! transformer blocks), the [`builtin`](mod@builtin) models with seeded weights, and importers of real
//! formats that build the same IR through the same builder:
//!
//! - [`hf::load_dir`]: a Hugging Face folder (`config.json` + `model.safetensors`), BERT and
//!   Llama families, weights memory-mapped zero-copy ([`safetensors_io`]);
//! - [`text::Tokenizer`]: text to token ids from `tokenizer.json`;
//! - [`gguf::load_gguf`]: llama.cpp GGUF files (F32/F16/BF16/Q8_0/Q4_0/Q4_1/…, dequantized
//!   exactly) with the tokenizer they carry;
//! - [`onnx::load_onnx`]: ONNX opset 13+ with every unsupported op reported at once;
//! - [`assets::find_model`]: where models are found on disk.
#![warn(missing_docs)]

pub mod assets;
pub mod builder;
pub mod builtin;
pub mod error;
pub mod gguf;
pub mod hf;
pub mod onnx;
pub mod safetensors_io;
pub mod text;

pub use builder::ModelBuilder;
pub use builtin::{builtin, BUILTINS};
pub use error::{FrontendError, UnsupportedOp};
pub use text::Tokenizer;
