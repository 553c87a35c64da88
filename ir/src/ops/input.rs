//! `input`: a function parameter. Its type is the node's declared type; it has no operands.

use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// A function parameter, bound by the caller. Evaluated by the interpreter, never by `eval`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Parameter name (as the source model calls it).
    pub name: String,
}

impl OpSpec for Input {
    const NAME: &'static str = "input";

    fn infer(&self, _cx: &InferCx, _inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        Err(OpError::new(
            "an input's type is declared by the function signature, not inferred",
        ))
    }

    fn eval(&self, _cx: &EvalCx, _inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        Err(OpError::new(format!(
            "input `{}` is bound by the interpreter, not evaluated",
            self.name
        )))
    }
}
