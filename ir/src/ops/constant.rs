//! `constant`: a reference to a named tensor in the module's constant pool.

use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// Reads a constant from the module's pool. The bytes are shared, never copied per use.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constant {
    /// Name of the constant in the module's pool.
    pub name: String,
}

impl OpSpec for Constant {
    const NAME: &'static str = "constant";

    fn infer(&self, cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        if !inputs.is_empty() {
            crate::bail!("constant takes no operands, found {}", inputs.len());
        }
        match cx.module.constants.get(&self.name) {
            Some(c) => Ok(vec![c.ty.clone()]),
            None => crate::bail!("no constant named `{}` in the module", self.name),
        }
    }

    fn eval(&self, cx: &EvalCx, _inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let c = cx
            .module
            .constants
            .get(&self.name)
            .ok_or_else(|| OpError::new(format!("no constant named `{}`", self.name)))?;
        let t = c
            .value(&self.name)
            .map_err(|e| OpError::new(e.to_string()))?;
        Ok(vec![(*t).clone()])
    }
}
