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

#[cfg(test)]
mod tests {
    use crate::dtype::ALL_DTYPES;
    use crate::ops::testing::{eval_op_in, rand_tensor};
    use crate::ops::{constant::Constant, Op};
    use crate::Module;
    use proptest::prelude::*;

    proptest! {
        /// A constant evaluates to exactly the tensor it was made from, in every dtype
        /// (dense storage is the dtype's own encoding).
        #[test]
        fn evaluates_to_its_tensor(d in 0usize..ALL_DTYPES.len(), n in 0usize..9, m in 1usize..4,
                                   seed in 0u64..1000) {
            let t = rand_tensor(ALL_DTYPES[d], vec![n, m], seed);
            let mut module = Module::new();
            module.add_constant("c", crate::Constant::from_tensor(&t));
            let out = eval_op_in(module, Op::Constant(Constant { name: "c".into() }), &[]).unwrap();
            prop_assert_eq!(&out[0], &t);
        }
    }

    #[test]
    fn missing_constant_is_a_type_error() {
        let e = eval_op_in(
            Module::new(),
            Op::Constant(Constant { name: "w".into() }),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no constant named `w`"), "{e}");
    }
}
