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
}

impl FrontendError {
    /// A build error with its context.
    pub fn build(context: impl Into<String>, source: fuselage_ir::IrError) -> Self {
        FrontendError::Build {
            context: context.into(),
            source: Box::new(source),
        }
    }
}
