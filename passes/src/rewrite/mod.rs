//! Equality saturation on the IR with egg: the [`TensorLang`](lang::TensorLang) language and
//! its type analysis ([`lang`]), rules as data files ([`rules`]), and a DAG-aware extraction
//! with a roofline cost table ([`extract`]). The `canonicalize` pass
//! ([`crate::canonicalize`]) drives them.

pub mod extract;
pub mod lang;
pub mod rules;

use thiserror::Error;

/// Errors of the rewrite machinery: bad rule files, a bad cost table, a failed rewrite.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum RewriteError {
    /// A rule file does not parse.
    #[error("{file}:{line}: {message}")]
    Syntax {
        /// Rule file.
        file: String,
        /// Line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A rule is malformed (unknown op, unbound variable, unknown condition, …).
    #[error("{file}:{line}: rule `{rule}`: {message}")]
    Rule {
        /// Rule file.
        file: String,
        /// Line of the rule.
        line: usize,
        /// Rule name.
        rule: String,
        /// What is wrong.
        message: String,
    },
    /// The cost table does not parse.
    #[error("cost table costs.toml: {0}")]
    Costs(String),
    /// Rewriting a function failed.
    #[error("canonicalize @{function}: {message}")]
    Function {
        /// Function name.
        function: String,
        /// What went wrong.
        message: String,
    },
}
