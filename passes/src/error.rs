//! Errors of the pass crate. Every error says where it happened (pass, step, node, column) and,
//! for names, which ones are allowed.

use fuselage_ir::IrError;
use thiserror::Error;

/// Errors of pipeline parsing, pass creation and pass execution.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum PassError {
    /// The one-line pipeline spec is malformed.
    #[error("pipeline spec, column {column}: {message}")]
    Spec {
        /// 1-based column (in characters) where the problem was found.
        column: usize,
        /// What was expected and what was found.
        message: String,
    },
    /// A TOML pipeline file is malformed.
    #[error("{file}: {message}")]
    Toml {
        /// File name (or `<toml>`).
        file: String,
        /// What went wrong, with the line and column or the `pass[i]` path.
        message: String,
    },
    /// A pass name that is not in the registry.
    #[error("unknown pass `{name}` (known passes: {allowed})")]
    UnknownPass {
        /// The name given.
        name: String,
        /// Comma-separated list of registered passes.
        allowed: String,
    },
    /// A bad option for a pass: unknown key, wrong type or invalid value.
    #[error("pass `{pass}`: {message}")]
    Options {
        /// The pass.
        pass: String,
        /// What was wrong, naming the allowed keys where the key is unknown.
        message: String,
    },
    /// A pass failed while running.
    #[error("pass `{pass}` failed: {message}")]
    Failed {
        /// The pass.
        pass: String,
        /// What went wrong (node, op, expected vs found).
        message: String,
    },
    /// An IR error raised inside a pass (type inference, evaluation).
    #[error("pass `{pass}`: {source}")]
    Ir {
        /// The pass.
        pass: String,
        /// The IR error.
        source: Box<IrError>,
    },
    /// The verifier rejected the module after a pass.
    #[error("verification failed after pass `{pass}` (step {step}): {source}")]
    Verify {
        /// The pass that produced the invalid module.
        pass: String,
        /// 1-based pass execution index.
        step: usize,
        /// The verifier's error.
        source: Box<IrError>,
    },
    /// The numeric check failed after a pass.
    #[error(
        "numeric check failed after pass `{pass}` (step {step}): {summary}; first diverging node: \
         {first_diverging}"
    )]
    Numeric {
        /// The pass.
        pass: String,
        /// 1-based pass execution index.
        step: usize,
        /// Error figures and the tolerance that was exceeded.
        summary: String,
        /// The first node (in the transformed graph's topological order) whose values exceed
        /// the tolerance against its counterpart before the pass, or the output that diverges.
        first_diverging: String,
    },
    /// The numeric check could not run the model after a pass although it ran before.
    #[error("numeric check after pass `{pass}` (step {step}): {message}")]
    NumericRun {
        /// The pass.
        pass: String,
        /// 1-based pass execution index.
        step: usize,
        /// What went wrong.
        message: String,
    },
    /// Bad pass-manager configuration (an unknown pass name in `print_ir_after`, …).
    #[error("pass manager: {0}")]
    Config(String),
    /// Reading or writing a file failed.
    #[error("{path}: {message}")]
    Io {
        /// The path.
        path: String,
        /// The OS error.
        message: String,
    },
}

impl PassError {
    /// [`PassError::Options`] of `pass`.
    pub fn options(pass: &str, message: impl Into<String>) -> Self {
        PassError::Options {
            pass: pass.into(),
            message: message.into(),
        }
    }

    /// [`PassError::Failed`] of `pass`.
    pub fn failed(pass: &str, message: impl Into<String>) -> Self {
        PassError::Failed {
            pass: pass.into(),
            message: message.into(),
        }
    }
}
