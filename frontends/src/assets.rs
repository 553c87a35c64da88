//! Finding model assets (weights, tokenizers, golden data) on disk.
//!
//! Models are looked up by folder name (`minilm-l6`, `smollm2-135m`, …), in this order:
//! 1. `$FUSELAGE_MODELS/NAME` when `FUSELAGE_MODELS` is set;
//! 2. `<workspace root>/../shared/models/NAME` (the team's shared folder beside the checkout);
//! 3. `$FUSELAGE_CACHE/NAME`, or `~/.cache/fuselage/models/NAME` when `FUSELAGE_CACHE` is unset
//!    (where `scripts/fetch-models.sh` puts what it fetches).
//!
//! A model that is in none of them is an error listing every place looked at, so tests that need
//! it fail loudly instead of skipping.

use crate::error::FrontendError;
use std::path::{Path, PathBuf};

/// The folders searched for models, in order (existing or not).
pub fn model_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Some(d) = std::env::var_os("FUSELAGE_MODELS").filter(|d| !d.is_empty()) {
        roots.push(PathBuf::from(d));
    }
    // frontends/ is one level below the workspace root.
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    roots.push(workspace.join("..").join("shared").join("models"));
    match std::env::var_os("FUSELAGE_CACHE").filter(|d| !d.is_empty()) {
        Some(d) => roots.push(PathBuf::from(d)),
        None => {
            if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
                roots.push(PathBuf::from(home).join(".cache/fuselage/models"));
            }
        }
    }
    roots
}

/// The folder of model `name`: the first of [`model_roots`] that has a `name` folder.
pub fn find_model(name: &str) -> Result<PathBuf, FrontendError> {
    let candidates: Vec<PathBuf> = model_roots().into_iter().map(|r| r.join(name)).collect();
    for c in &candidates {
        if c.is_dir() {
            return Ok(c.canonicalize().unwrap_or_else(|_| c.clone()));
        }
    }
    Err(FrontendError::ModelNotFound {
        name: name.to_string(),
        looked: candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_model_lists_every_place() {
        let e = find_model("no-such-model-xyz").unwrap_err().to_string();
        assert!(e.contains("no-such-model-xyz"), "{e}");
        assert!(e.contains("shared/models/no-such-model-xyz"), "{e}");
        let n = model_roots().len();
        assert_eq!(e.matches("no-such-model-xyz").count(), n + 1, "{e}");
    }
}
