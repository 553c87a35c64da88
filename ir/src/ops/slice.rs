//! `slice`: python-style `x[start:end:step]` along one axis.

use super::util::{expect_arity, normalize_axis, op_err};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::{Dim, TensorType};
use serde::{Deserialize, Serialize};

fn one() -> i64 {
    1
}

/// `x[..., start:end:step, ...]` on `axis`, with python semantics: negative start/end count
/// from the end, out-of-range bounds clamp, a negative step walks backwards, `end` may be
/// `i64::MAX` ("to the end"). Step 0 is an error. On a symbolic dim only the full forward slice
/// (`start` 0, `end` ≥ 2^62, step 1) is expressible.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slice {
    /// The axis (negative counts from the end).
    pub axis: i64,
    /// First index (python semantics).
    pub start: i64,
    /// One past the last index (python semantics).
    pub end: i64,
    /// Stride, default 1; negative walks backwards.
    #[serde(default = "one")]
    pub step: i64,
}

impl Slice {
    /// The selected indices along an axis of length `n`, as (first, count).
    pub fn range(&self, n: u64) -> Result<(i64, u64), OpError> {
        if self.step == 0 {
            crate::bail!("slice step must not be 0");
        }
        let n = n as i64;
        let norm = |v: i64, lo: i64, hi: i64| -> i64 {
            let v = if v < 0 { v.saturating_add(n) } else { v };
            v.clamp(lo, hi)
        };
        let (s, e) = if self.step > 0 {
            (norm(self.start, 0, n), norm(self.end, 0, n))
        } else {
            (norm(self.start, -1, n - 1), norm(self.end, -1, n - 1))
        };
        let count = if self.step > 0 {
            if e > s {
                (e - s - 1) / self.step + 1
            } else {
                0
            }
        } else if s > e {
            (s - e - 1) / (-self.step) + 1
        } else {
            0
        };
        Ok((s, count as u64))
    }
}

impl OpSpec for Slice {
    const NAME: &'static str = "slice";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        expect_arity(Self::NAME, inputs, 1)?;
        let x = &inputs[0];
        let ax = normalize_axis(Self::NAME, self.axis, x.rank())?;
        let d = match &x.shape[ax] {
            Dim::Fixed(n) => Dim::Fixed(self.range(*n)?.1),
            Dim::Sym(s) => {
                if self.start == 0 && self.end >= 1 << 62 && self.step == 1 {
                    Dim::Sym(s.clone())
                } else {
                    crate::bail!(
                        "slice [{}:{}:{}] of symbolic dim {s} (axis {ax} of {x}) has no expressible size",
                        self.start,
                        self.end,
                        self.step
                    );
                }
            }
        };
        let mut shape = x.shape.clone();
        shape[ax] = d;
        Ok(vec![TensorType::new(x.dtype, shape)])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity(Self::NAME, inputs, 1)?;
        let x = inputs[0];
        let ax = normalize_axis(Self::NAME, self.axis, x.rank())?;
        let (first, count) = self.range(x.shape()[ax] as u64)?;
        let n = x.shape()[ax];
        let outer: usize = x.shape()[..ax].iter().product();
        let inner: usize = x.shape()[ax + 1..].iter().product();
        let mut out = Vec::with_capacity(outer * count as usize * inner);
        for o in 0..outer {
            for k in 0..count as i64 {
                let i = (first + k * self.step) as usize;
                let base = (o * n + i) * inner;
                out.extend_from_slice(&x.data()[base..base + inner]);
            }
        }
        let mut shape = x.shape().to_vec();
        shape[ax] = count as usize;
        Ok(vec![Tensor::new(x.dtype(), shape, out).map_err(op_err)?])
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // naive reference formulas index like the math
mod tests {
    use super::Slice;
    use crate::dtype::DType;
    use crate::ops::testing::{eval_op, rand_tensor};
    use crate::ops::Op;
    use proptest::prelude::*;

    /// Naive python slice: walk every candidate index.
    fn py_indices(n: i64, start: i64, end: i64, step: i64) -> Vec<usize> {
        let fix = |v: i64| if v < 0 { v + n } else { v };
        let (s, e) = (fix(start), fix(end));
        let mut out = vec![];
        let mut i = if step > 0 { s.max(0) } else { s.min(n - 1) };
        while (step > 0 && i < e.min(n)) || (step < 0 && i > e.max(-1)) {
            if i >= 0 && i < n {
                out.push(i as usize);
            }
            i += step;
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn matches_python_slicing(n in 1usize..7, start in -9i64..9, end in -9i64..9,
                                  step in prop_oneof![-3i64..0, 1i64..4], seed in 0u64..100) {
            let x = rand_tensor(DType::F32, vec![2, n], seed);
            let op = Slice { axis: 1, start, end, step };
            let out = eval_op(Op::Slice(op), std::slice::from_ref(&x)).unwrap();
            let idx = py_indices(n as i64, start, end, step);
            prop_assert_eq!(out[0].shape(), &[2, idx.len()][..]);
            for r in 0..2 { for (k, &i) in idx.iter().enumerate() {
                prop_assert_eq!(out[0].at(&[r, k]), x.at(&[r, i]));
            }}
        }
    }

    #[test]
    fn zero_step_and_bad_axis_are_errors() {
        let x = rand_tensor(DType::F32, vec![4], 0);
        let op = Slice {
            axis: 0,
            start: 0,
            end: 4,
            step: 0,
        };
        let e = eval_op(Op::Slice(op), std::slice::from_ref(&x))
            .unwrap_err()
            .to_string();
        assert!(e.contains("step must not be 0"), "{e}");
        let op = Slice {
            axis: 1,
            start: 0,
            end: i64::MAX,
            step: 1,
        };
        let e = eval_op(Op::Slice(op), &[x]).unwrap_err().to_string();
        assert!(e.contains("out of range"), "{e}");
    }
}
