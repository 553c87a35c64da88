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
