//! Text input: Hugging Face `tokenizer.json` through the `tokenizers` crate (built without
//! its C dependencies: the pure-Rust `fancy-regex` backend instead of Oniguruma).
//!
//! Padding and truncation configured in the file are **disabled**: `tokenizer.json` files of
//! sentence-transformers models often ship a fixed padding to 128 tokens, which would make a
//! mean-pooled embedding wrong (see the MiniLM README). A sequence is encoded exactly, with the
//! special tokens of the file's post-processor (`[CLS] … [SEP]` for BERT); an over-long input
//! shows up as a clear error when the model indexes a position past its table.

use crate::error::FrontendError;
use std::path::{Path, PathBuf};

/// A tokenizer loaded from `tokenizer.json`, without padding or truncation.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
}

impl Tokenizer {
    /// Load a `tokenizer.json` file.
    pub fn from_file(path: &Path) -> Result<Self, FrontendError> {
        let mut inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| FrontendError::file(path, format!("cannot load tokenizer: {e}")))?;
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| FrontendError::file(path, format!("disabling truncation: {e}")))?;
        Ok(Tokenizer {
            inner,
            path: path.to_path_buf(),
        })
    }

    /// Load `dir/tokenizer.json` (a Hugging Face model folder).
    pub fn from_model_dir(dir: &Path) -> Result<Self, FrontendError> {
        Self::from_file(&dir.join("tokenizer.json"))
    }

    /// Token ids of `text`, with the special tokens the tokenizer adds (e.g. `[CLS]`, `[SEP]`).
    pub fn encode(&self, text: &str) -> Result<Vec<i64>, FrontendError> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| FrontendError::file(&self.path, format!("encoding {text:?}: {e}")))?;
        Ok(enc.get_ids().iter().map(|&i| i as i64).collect())
    }

    /// The text of token ids (special tokens skipped).
    pub fn decode(&self, ids: &[i64]) -> Result<String, FrontendError> {
        let ids: Vec<u32> = ids
            .iter()
            .map(|&i| {
                u32::try_from(i).map_err(|_| {
                    FrontendError::file(&self.path, format!("token id {i} out of range"))
                })
            })
            .collect::<Result<_, _>>()?;
        self.inner
            .decode(&ids, true)
            .map_err(|e| FrontendError::file(&self.path, format!("decoding: {e}")))
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

impl Tokenizer {
    /// Wrap an already configured tokenizer (e.g. one built from a GGUF file's vocabulary);
    /// `origin` names where it came from in errors.
    pub fn from_tokenizer(
        mut inner: tokenizers::Tokenizer,
        origin: &Path,
    ) -> Result<Self, FrontendError> {
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| FrontendError::file(origin, format!("disabling truncation: {e}")))?;
        Ok(Tokenizer {
            inner,
            path: origin.to_path_buf(),
        })
    }
}
