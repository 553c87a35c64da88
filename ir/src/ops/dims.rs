//! `dims`: the values of dim expressions as an integer tensor (a shape computation whose result
//! is needed as data, e.g. `Shape(x)` fed into arithmetic, or a sequence length as a scalar).

use super::util::{expect_arity, op_err};
use super::{EvalCx, InferCx, OpSpec};
use crate::dtype::DType;
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::{Dim, TensorType};
use serde::{Deserialize, Serialize};

/// No operands; result `dtype[shape]` whose elements, in row-major order, are `values` evaluated
/// under the running function's bindings (`[B, S*2]` with `B = 3, S = 5` gives `[3, 10]`).
/// Values may be negative (`S - 9`); a value outside the dtype's range, an unbound symbol or an
/// inexact division is an evaluation error. Integer dtypes only.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dims {
    /// The expressions, row-major.
    pub values: Vec<Dim>,
    /// Result shape (its element count must equal the number of values).
    pub shape: Vec<u64>,
    /// Result dtype (an integer dtype).
    pub dtype: DType,
}

impl Dims {
    /// A 1-D vector of the values.
    pub fn vector(values: Vec<Dim>, dtype: DType) -> Dims {
        let n = values.len() as u64;
        Dims {
            values,
            shape: vec![n],
            dtype,
        }
    }
}

impl OpSpec for Dims {
    const NAME: &'static str = "dims";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        expect_arity(Self::NAME, inputs, 0)?;
        if !self.dtype.is_int() {
            crate::bail!("dims expects an integer dtype, found {}", self.dtype);
        }
        let n = self
            .shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or_else(|| OpError::new(format!("dims: shape {:?} overflows", self.shape)))?;
        if n != self.values.len() as u64 {
            crate::bail!(
                "dims: shape {:?} has {n} elements but {} values are given",
                self.shape,
                self.values.len()
            );
        }
        Ok(vec![TensorType::new(
            self.dtype,
            self.shape.iter().map(|&d| Dim::from(d)),
        )])
    }

    fn eval(&self, cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity(Self::NAME, inputs, 0)?;
        let (lo, hi) = self
            .dtype
            .int_range()
            .ok_or_else(|| OpError::new(format!("dims: {} is not an integer dtype", self.dtype)))?;
        let mut data = Vec::with_capacity(self.values.len());
        for d in &self.values {
            let v = d
                .eval(cx.bindings)
                .map_err(|e| OpError::new(format!("dims: {e}")))? as f64;
            if v < lo || v > hi {
                crate::bail!("dims: {d} = {v} is outside the range of {}", self.dtype);
            }
            data.push(v);
        }
        let shape = self.shape.iter().map(|&d| d as usize).collect();
        Ok(vec![Tensor::new(self.dtype, shape, data).map_err(op_err)?])
    }
}

#[cfg(test)]
mod tests {
    use super::Dims;
    use crate::dtype::DType;
    use crate::eval::{Executor, Reference};
    use crate::graph::Graph;
    use crate::module::Module;
    use crate::ops::Op;
    use crate::tensor::Tensor;
    use crate::types::{Dim, TensorType};
    use proptest::prelude::*;

    /// `main(x: f32[B,S]) -> dims(values)`.
    fn module(values: Vec<Dim>, shape: Vec<u64>, dtype: DType) -> Result<Module, crate::IrError> {
        let mut m = Module::new();
        let mut g = Graph::new();
        g.add_input("x", TensorType::new(DType::F32, ["B".into(), "S".into()]));
        let d = g.add_inferred(
            &m,
            Op::Dims(Dims {
                values,
                shape,
                dtype,
            }),
            vec![],
            None,
        )?;
        g.add_output("d", d.into());
        m.functions.insert("main".into(), g);
        Ok(m)
    }

    proptest! {
        #[test]
        fn evaluates_the_expressions(b in 1usize..6, s in 1usize..9, k in 0i64..5) {
            let vals = vec![
                Dim::sym("B"),
                Dim::parse(&format!("S*{k}+B")).unwrap(),
                Dim::parse("B*S - 9").unwrap(),
                Dim::from(7u64),
            ];
            let m = module(vals, vec![2, 2], DType::I64).unwrap();
            let x = Tensor::zeros(DType::F32, vec![b, s]);
            let out = Reference.run(&m, "main", &[x]).unwrap();
            let (b, s) = (b as f64, s as f64);
            prop_assert_eq!(out[0].shape(), &[2, 2]);
            prop_assert_eq!(out[0].data(), &[b, s * k as f64 + b, b * s - 9.0, 7.0]);
        }
    }

    #[test]
    fn errors_are_clear() {
        let e = module(vec![Dim::sym("B")], vec![2], DType::I64).unwrap_err();
        assert!(e.to_string().contains("2 elements but 1 values"), "{e}");
        let e = module(vec![Dim::sym("B")], vec![1], DType::F32).unwrap_err();
        assert!(e.to_string().contains("integer dtype"), "{e}");
        // Out of the dtype's range at run time.
        let m = module(vec![Dim::parse("B*S").unwrap()], vec![1], DType::I8).unwrap();
        let x = Tensor::zeros(DType::F32, vec![20, 20]);
        let e = Reference.run(&m, "main", &[x]).unwrap_err().to_string();
        assert!(e.contains("outside the range of i8"), "{e}");
        // An inexact division names the bindings.
        let m = module(vec![Dim::parse("S/4").unwrap()], vec![1], DType::I64).unwrap();
        let x = Tensor::zeros(DType::F32, vec![1, 6]);
        let e = Reference.run(&m, "main", &[x]).unwrap_err().to_string();
        assert!(
            e.contains("not an exact division") && e.contains("S=6"),
            "{e}"
        );
    }
}
