//! Tensor types with symbolic dimensions.

use crate::dtype::DType;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;

/// One dimension of a tensor type: a fixed size or a named symbol (`B`, `S`) bound at run time.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(untagged)]
pub enum Dim {
    /// A size known at compile time.
    Fixed(u64),
    /// A symbolic size, e.g. batch `B` or sequence `S`.
    Sym(String),
}

impl Dim {
    /// The fixed size, if any.
    pub fn fixed(&self) -> Option<u64> {
        match self {
            Dim::Fixed(n) => Some(*n),
            Dim::Sym(_) => None,
        }
    }

    /// Resolve to a concrete size using symbol bindings.
    pub fn resolve(&self, bindings: &HashMap<String, u64>) -> Option<u64> {
        match self {
            Dim::Fixed(n) => Some(*n),
            Dim::Sym(s) => bindings.get(s).copied(),
        }
    }
}

impl From<u64> for Dim {
    fn from(n: u64) -> Self {
        Dim::Fixed(n)
    }
}

impl From<usize> for Dim {
    fn from(n: usize) -> Self {
        Dim::Fixed(n as u64)
    }
}

impl From<&str> for Dim {
    fn from(s: &str) -> Self {
        Dim::Sym(s.to_string())
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Sym(s) => f.write_str(s),
        }
    }
}

/// The type of a value: element type and shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TensorType {
    /// Element type.
    pub dtype: DType,
    /// Dimensions, outermost first. Empty for a scalar.
    pub shape: Vec<Dim>,
}

impl TensorType {
    /// A type from a dtype and dims.
    pub fn new(dtype: DType, shape: impl IntoIterator<Item = Dim>) -> Self {
        TensorType {
            dtype,
            shape: shape.into_iter().collect(),
        }
    }

    /// A type with all-fixed dims.
    pub fn fixed(dtype: DType, shape: &[usize]) -> Self {
        TensorType {
            dtype,
            shape: shape.iter().map(|&n| Dim::Fixed(n as u64)).collect(),
        }
    }

    /// A scalar of this dtype.
    pub fn scalar(dtype: DType) -> Self {
        TensorType {
            dtype,
            shape: vec![],
        }
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The concrete shape if every dim is fixed.
    pub fn fixed_shape(&self) -> Option<Vec<usize>> {
        self.shape
            .iter()
            .map(|d| d.fixed().map(|n| n as usize))
            .collect()
    }

    /// Element count if every dim is fixed (None on overflow too).
    pub fn num_elements(&self) -> Option<u64> {
        self.shape
            .iter()
            .try_fold(1u64, |acc, d| d.fixed().and_then(|n| acc.checked_mul(n)))
    }

    /// Concrete shape under symbol bindings.
    pub fn resolve(&self, bindings: &HashMap<String, u64>) -> Option<Vec<usize>> {
        self.shape
            .iter()
            .map(|d| d.resolve(bindings).map(|n| n as usize))
            .collect()
    }

    /// Same shape with another dtype.
    pub fn with_dtype(&self, dtype: DType) -> Self {
        TensorType {
            dtype,
            shape: self.shape.clone(),
        }
    }

    /// Symbols used by this type, in order of first appearance.
    pub fn symbols(&self) -> Vec<&str> {
        let mut out: Vec<&str> = vec![];
        for d in &self.shape {
            if let Dim::Sym(s) = d {
                if !out.contains(&s.as_str()) {
                    out.push(s);
                }
            }
        }
        out
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.dtype)?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}
