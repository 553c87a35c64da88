//! Errors of the IR crate. Every error names where it happened: function, node, op, file
//! position, with what was expected and what was found.

use thiserror::Error;

/// An error raised by an op's type inference or reference evaluation, before the caller adds
/// the node and function it happened in.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("{0}")]
pub struct OpError(pub String);

impl OpError {
    /// An error with a message.
    pub fn new(msg: impl Into<String>) -> Self {
        OpError(msg.into())
    }
}

impl From<crate::dim::DimError> for OpError {
    fn from(e: crate::dim::DimError) -> Self {
        OpError(e.to_string())
    }
}

/// Build an [`OpError`] with `format!` syntax and return it.
#[macro_export]
macro_rules! bail {
    ($($t:tt)*) => { return Err($crate::error::OpError::new(format!($($t)*))) };
}

/// Errors of the IR crate.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum IrError {
    /// Type inference failed at a node.
    #[error("type error in @{function} at {node} ({op}): {message}")]
    Type {
        /// Function name.
        function: String,
        /// Node (`%id` and its name where it has one).
        node: String,
        /// Op name.
        op: String,
        /// What was expected and what was found.
        message: String,
    },
    /// Reference evaluation failed at a node.
    #[error("evaluation error in @{function} at {node} ({op}): {message}")]
    Eval {
        /// Function name.
        function: String,
        /// Node.
        node: String,
        /// Op name.
        op: String,
        /// Message.
        message: String,
    },
    /// The verifier rejected a module.
    #[error("verification failed in @{function} at {node}: {message}")]
    Verify {
        /// Function name.
        function: String,
        /// Node (or `-` for function-level problems).
        node: String,
        /// Message.
        message: String,
    },
    /// The text parser rejected its input.
    #[error("{file}:{line}:{column}: {message}")]
    Parse {
        /// File name (or `<input>`).
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// Message.
        message: String,
    },
    /// An op name that is not in the op list.
    #[error("unknown op `{name}` (known ops: {allowed})")]
    UnknownOp {
        /// The name given.
        name: String,
        /// Comma-separated list of known ops.
        allowed: String,
    },
    /// Bad attributes for an op.
    #[error("bad attributes for op `{op}`: {message}")]
    Attributes {
        /// Op name.
        op: String,
        /// Message (from serde, naming the field).
        message: String,
    },
    /// A constant is missing or malformed.
    #[error("constant `{name}`: {message}")]
    Constant {
        /// Constant name.
        name: String,
        /// Message.
        message: String,
    },
    /// Wrong inputs given to a function.
    #[error("inputs of @{function}: {message}")]
    Inputs {
        /// Function name.
        function: String,
        /// Message.
        message: String,
    },
    /// A shape problem outside a node (tensor construction, bytes).
    #[error("shape error: {0}")]
    Shape(String),
    /// Something the reference cannot represent.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// JSON (de)serialization failed.
    #[error("json: {0}")]
    Json(String),
}
