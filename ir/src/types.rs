//! Tensor types with symbolic dimensions (dims are expressions: see [`crate::dim`]).

use crate::dtype::DType;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;

pub use crate::dim::{Dim, DimError};

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
            shape: shape.iter().map(|&n| Dim::from(n)).collect(),
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

    /// Concrete shape under symbol bindings (an unbound symbol, an inexact division or a
    /// negative size is an error).
    pub fn resolve(&self, bindings: &HashMap<String, u64>) -> Result<Vec<usize>, DimError> {
        self.shape
            .iter()
            .map(|d| {
                d.resolve(bindings).and_then(|n| {
                    usize::try_from(n).map_err(|_| DimError::Overflow(format!("{d} = {n}")))
                })
            })
            .collect()
    }

    /// Element count as a dim expression.
    pub fn numel_dim(&self) -> Result<Dim, DimError> {
        Dim::product(&self.shape)
    }

    /// Same shape with another dtype.
    pub fn with_dtype(&self, dtype: DType) -> Self {
        TensorType {
            dtype,
            shape: self.shape.clone(),
        }
    }

    /// Symbols used by this type, in order of first appearance (within a dim: sorted).
    pub fn symbols(&self) -> Vec<String> {
        let mut out: Vec<String> = vec![];
        for d in &self.shape {
            for s in d.symbols() {
                if !out.contains(&s) {
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
