//! One ONNX node as a converter sees it: typed attribute access with defaults, and the opset
//! version its semantics follow.

use super::proto::{AttributeProto, NodeProto, TensorProto};

/// Why a node was not imported.
#[derive(Debug)]
pub(crate) enum NodeErr {
    /// The op (or this use of it) is not supported; the reason says what would be needed.
    Unsupported(String),
    /// The node is malformed or its inputs do not fit the op.
    Error(String),
}

/// Result of a converter step.
pub(crate) type NResult<T> = Result<T, NodeErr>;

/// Return `NodeErr::Unsupported` with a formatted reason.
macro_rules! unsup {
    ($($t:tt)*) => { return Err($crate::onnx::node::NodeErr::Unsupported(format!($($t)*))) };
}
/// Return `NodeErr::Error` with a formatted message.
macro_rules! bad {
    ($($t:tt)*) => { return Err($crate::onnx::node::NodeErr::Error(format!($($t)*))) };
}
pub(crate) use {bad, unsup};

/// Any displayable error as a node error.
pub(crate) fn err(e: impl std::fmt::Display) -> NodeErr {
    NodeErr::Error(e.to_string())
}

/// A node with its domain's opset version.
pub(crate) struct Node<'a> {
    pub proto: &'a NodeProto,
    /// The opset version of the node's domain the model imports.
    pub opset: i64,
}

impl<'a> Node<'a> {
    /// The op type.
    pub fn op_type(&self) -> &str {
        &self.proto.op_type
    }

    fn get(&self, name: &str) -> Option<&'a AttributeProto> {
        self.proto.attribute.iter().find(|a| a.name == name)
    }

    /// Whether the attribute is present.
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// An int attribute.
    pub fn i(&self, name: &str, default: i64) -> i64 {
        self.get(name).map(|a| a.i).unwrap_or(default)
    }

    /// A bool attribute (an int, nonzero is true).
    pub fn flag(&self, name: &str, default: bool) -> bool {
        self.get(name).map(|a| a.i != 0).unwrap_or(default)
    }

    /// A float attribute.
    pub fn f(&self, name: &str, default: f64) -> f64 {
        self.get(name).map(|a| a.f as f64).unwrap_or(default)
    }

    /// An ints attribute.
    pub fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.get(name).map(|a| a.ints.clone())
    }

    /// A floats attribute.
    pub fn floats(&self, name: &str) -> Option<Vec<f32>> {
        self.get(name).map(|a| a.floats.clone())
    }

    /// A string attribute.
    pub fn s(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(|a| String::from_utf8_lossy(&a.s).into_owned())
    }

    /// A string attribute with a default.
    pub fn s_or(&self, name: &str, default: &str) -> String {
        self.s(name).unwrap_or_else(|| default.to_string())
    }

    /// A tensor attribute.
    pub fn t(&self, name: &str) -> Option<&'a TensorProto> {
        self.get(name).and_then(|a| a.t.as_ref())
    }

    /// Names of the node's inputs (empty strings for omitted optional inputs).
    pub fn input_names(&self) -> &'a [String] {
        &self.proto.input
    }

    /// Whether input `i` is given.
    pub fn has_input(&self, i: usize) -> bool {
        self.proto.input.get(i).is_some_and(|s| !s.is_empty())
    }

    /// Whether output `i` is used (named).
    pub fn wants_output(&self, i: usize) -> bool {
        self.proto.output.get(i).is_some_and(|s| !s.is_empty())
    }

    /// Number of outputs the node declares.
    pub fn num_outputs(&self) -> usize {
        self.proto.output.len()
    }
}

/// The name a node's IR op gets: its own, or its first output's.
pub(crate) fn node_name(n: &NodeProto) -> String {
    if !n.name.is_empty() {
        n.name.clone()
    } else {
        n.output
            .first()
            .cloned()
            .unwrap_or_else(|| n.op_type.clone())
    }
}
