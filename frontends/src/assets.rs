//! Finding model files: `$FUSELAGE_MODELS`, then the workspace's `../shared/models`, then
//! `$FUSELAGE_CACHE` (default `~/.cache/fuselage/models`).

use std::path::PathBuf;

/// The folders searched for models, in order.
pub fn model_roots() -> Vec<PathBuf> {
    let mut roots = vec![];
    if let Some(p) = std::env::var_os("FUSELAGE_MODELS") {
        roots.push(PathBuf::from(p));
    }
    // frontends/ → workspace root → its sibling shared/models
    roots.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/models"));
    match std::env::var_os("FUSELAGE_CACHE") {
        Some(p) => roots.push(PathBuf::from(p)),
        None => {
            if let Some(h) = std::env::var_os("HOME") {
                roots.push(PathBuf::from(h).join(".cache/fuselage/models"));
            }
        }
    }
    roots
}

/// The folder of model `name` (e.g. `minilm-l6`), or an error listing where it looked.
pub fn find_model(name: &str) -> Result<PathBuf, String> {
    let roots = model_roots();
    for r in &roots {
        let p = r.join(name);
        if p.is_dir() {
            return Ok(p);
        }
    }
    Err(format!(
        "model `{name}` not found; looked in {} (set FUSELAGE_MODELS, or run scripts/fetch-models.sh)",
        roots
            .iter()
            .map(|r| r.join(name).display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}
