//! GGUF (llama.cpp) import: a reader of the file format, exact dequantization of the common
//! tensor types, the llama architecture, and the tokenizer the file carries.
//!
//! Written from the GGUF specification (ggml `docs/gguf.md`):
//!
//! ```text
//! magic "GGUF" (u32 LE 0x46554747) · version u32 (2 or 3) · tensor_count u64 · kv_count u64
//! kv_count × { key: string, value_type: u32, value }
//! tensor_count × { name: string, n_dims: u32, ne[n_dims]: u64 (fastest first), type: u32,
//!                  offset: u64 (relative to the data section, a multiple of the alignment) }
//! padding to `general.alignment` (default 32) · tensor data
//! ```
//! where `string` is `len: u64` then UTF-8 bytes, and an array value is `elem_type: u32`,
//! `len: u64`, then the elements.
//!
//! The file is memory-mapped ([`GgufFile::open`]); nothing is copied until a tensor is
//! dequantized. Every count, length, shape and offset is checked against the file before use, so
//! a truncated or corrupted file gives a [`FrontendError::Gguf`] naming the file (and the tensor
//! or key), never a panic or a read past the end. (As with any memory map, a file that another
//! process truncates *while* it is mapped can still fault; GGUF files are treated as immutable.)
//!
//! Dequantization follows ggml / gguf-py exactly, in `f32` arithmetic, so the dense `f32`
//! constants are bit-identical to what gguf-py's `dequantize` produces.
//!
//! ```no_run
//! let module = fuselage_frontends::gguf::load_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")?;
//! let file = fuselage_frontends::gguf::GgufFile::open("SmolLM2-135M-Instruct.Q4_1.gguf")?;
//! let tok = fuselage_frontends::gguf::tokenizer(&file)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// The container format (header, metadata, tensor table, bounds checks).
mod file;
// ggml tensor types and exact dequantization of their block formats.
mod dequant;
// The llama architecture built through the builder.
mod llama;
// The BPE tokenizer carried in the metadata.
mod tokenizer;

pub use dequant::{dequantize, GgmlType};
pub use file::{GgufFile, MetaValue, TensorInfo, DEFAULT_ALIGNMENT, GGUF_MAGIC};
pub use llama::{llama_module, llama_module_with, llama_params, unpermute_rope_rows, LlamaParams};
pub use tokenizer::tokenizer;

use crate::error::FrontendError;
use fuselage_ir::Module;
use std::path::Path;

/// Load a GGUF llama model into a module with input `input_ids: i64[B,S]` and output
/// `logits: f32[B,S,vocab]`, the same graph as [`crate::builtin::llama`] with the file's weights
/// (dequantized to dense `f32` constants named after the GGUF tensors).
///
/// Q/K rope permutation: llama.cpp's converter permutes the rows of `attn_q` and `attn_k` so that
/// llama.cpp rotates adjacent pairs. This importer *undoes* the permutation
/// ([`unpermute_rope_rows`]) and uses rope style `"half"`, so the IR (and its weights) are the
/// same as those of the Hugging Face checkpoint and of the builder's llama block. (Keeping the
/// stored rows with style `"interleaved"` is equivalent; a test checks both give the same logits.)
pub fn load_gguf(path: impl AsRef<Path>) -> Result<Module, FrontendError> {
    let g = GgufFile::open(path)?;
    llama_module(&g)
}
