//! `iota`: a tensor whose value is the index along one axis (positions for rope, masks).

use super::util::{expect_arity, normalize_axis};
use super::{EvalCx, InferCx, OpSpec};
use crate::dtype::DType;
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::{Dim, TensorType};
use serde::{Deserialize, Serialize};

/// No operands; result `dtype[shape]` with element `[i0, …, in]` equal to `i_axis` (rounded to
/// the dtype, so indices beyond the dtype's range saturate or round). Symbolic dims of `shape`
/// are resolved from the running function's bindings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Iota {
    /// Result shape (fixed sizes or symbols).
    pub shape: Vec<Dim>,
    /// The axis whose index is the value (negative counts from the end).
    pub axis: i64,
    /// Result dtype (numeric).
    pub dtype: DType,
}

impl OpSpec for Iota {
    const NAME: &'static str = "iota";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        expect_arity(Self::NAME, inputs, 0)?;
        if self.dtype == DType::Bool {
            crate::bail!("iota expects a numeric dtype, found bool");
        }
        normalize_axis(Self::NAME, self.axis, self.shape.len())?;
        Ok(vec![TensorType::new(self.dtype, self.shape.clone())])
    }

    fn eval(&self, cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity(Self::NAME, inputs, 0)?;
        let shape = cx.result_shape(0)?;
        let axis = normalize_axis(Self::NAME, self.axis, shape.len())?;
        Ok(vec![Tensor::from_fn(self.dtype, shape, |i| i[axis] as f64)])
    }
}

#[cfg(test)]
mod tests {
    use crate::dtype::DType;
    use crate::eval::{Executor, Reference};
    use crate::graph::Graph;
    use crate::module::Module;
    use crate::ops::testing::{check_exact, eval_op};
    use crate::ops::{iota::Iota, Op};
    use crate::types::{Dim, TensorType};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn value_is_the_index_along_axis(
            shape in prop::collection::vec(1usize..5, 1..4),
            axis in -3i64..3,
            dt in prop::sample::select(vec![DType::F32, DType::BF16, DType::I64, DType::I4]),
        ) {
            let rank = shape.len() as i64;
            prop_assume!(axis >= -rank && axis < rank);
            let a = axis.rem_euclid(rank) as usize;
            let dims = shape.iter().map(|&d| Dim::from(d as u64)).collect();
            let out = eval_op(Op::Iota(Iota { shape: dims, axis, dtype: dt }), &[]).unwrap();
            // Row-major: the index along `a` is (flat / stride_a) % shape[a].
            let stride: usize = shape[a + 1..].iter().product();
            let n: usize = shape.iter().product();
            let naive: Vec<f64> = (0..n).map(|f| ((f / stride) % shape[a]) as f64).collect();
            check_exact(&out[0], dt, &shape, &naive).map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn symbolic_shape_resolves_from_bindings() {
        let mut m = Module::new();
        let mut g = Graph::new();
        let x = g.add_input("x", TensorType::new(DType::F32, vec!["S".into()]));
        let op = Iota {
            shape: vec!["S".into(), 2u64.into()],
            axis: 0,
            dtype: DType::I64,
        };
        let p = g.add_inferred(&m, Op::Iota(op), vec![], None).unwrap();
        assert_eq!(g.node(p).unwrap().results[0].to_string(), "i64[S,2]");
        g.add_output("x", x.into());
        g.add_output("p", p.into());
        m.functions.insert("main".into(), g);
        let xs = crate::tensor::Tensor::zeros(DType::F32, vec![3]);
        let out = Reference.run(&m, "main", &[xs]).unwrap();
        assert_eq!(out[1].shape(), &[3, 2]);
        assert_eq!(out[1].data(), &[0.0, 0.0, 1.0, 1.0, 2.0, 2.0]);
    }

    #[test]
    fn bad_axis_operands_and_dtype_are_rejected() {
        let op = |axis, dtype| {
            Op::Iota(Iota {
                shape: vec![Dim::from(2u64)],
                axis,
                dtype,
            })
        };
        let e = eval_op(op(1, DType::I32), &[]).unwrap_err().to_string();
        assert!(e.contains("axis 1 is out of range for rank 1"), "{e}");
        let e = eval_op(op(0, DType::Bool), &[]).unwrap_err().to_string();
        assert!(e.contains("numeric dtype, found bool"), "{e}");
        let x = crate::tensor::Tensor::zeros(DType::F32, vec![1]);
        let e = eval_op(op(0, DType::I32), &[x]).unwrap_err().to_string();
        assert!(e.contains("takes 0 operands, found 1"), "{e}");
    }
}
