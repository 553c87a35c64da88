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

#[cfg(test)]
mod tests {
    use crate::dtype::ALL_DTYPES;
    use crate::ops::testing::rand_tensor;
    use crate::{Dim, Executor, Graph, Module, Reference, TensorType};
    use proptest::prelude::*;

    fn identity(ty: TensorType) -> Module {
        let mut g = Graph::new();
        let x = g.add_input("x", ty);
        g.add_output("y", x.into());
        let mut m = Module::new();
        m.functions.insert("main".into(), g);
        m
    }

    proptest! {
        /// An input binds to the tensor given, whatever its dtype, with symbolic dims bound
        /// from the tensor's shape.
        #[test]
        fn binds_the_given_tensor(d in 0usize..ALL_DTYPES.len(), b in 1usize..4, s in 0usize..6,
                                  seed in 0u64..1000) {
            let dt = ALL_DTYPES[d];
            let m = identity(TensorType::new(dt, ["B".into(), "S".into(), Dim::from(2u64)]));
            let t = rand_tensor(dt, vec![b, s, 2], seed);
            let out = Reference.run(&m, "main", std::slice::from_ref(&t)).unwrap();
            prop_assert_eq!(&out[0], &t);
        }
    }

    #[test]
    fn wrong_inputs_are_errors_naming_the_input() {
        let m = identity(TensorType::new(
            crate::DType::F32,
            ["B".into(), Dim::from(3u64)],
        ));
        let bad = rand_tensor(crate::DType::F32, vec![2, 4], 0);
        let e = Reference.run(&m, "main", &[bad]).unwrap_err().to_string();
        assert!(e.contains("input `x` expects f32[B,3]"), "{e}");
        let wrong_dtype = rand_tensor(crate::DType::F16, vec![2, 3], 0);
        assert!(Reference.run(&m, "main", &[wrong_dtype]).is_err());
        assert!(Reference.run(&m, "main", &[]).is_err());
    }
}
