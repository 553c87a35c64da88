//! `slice`: python-style `x[start:end:step]` along one axis.

use super::util::{expect_arity, normalize_axis, op_err};
use super::{EvalCx, InferCx, OpSpec};
use crate::dim::Facts;
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::{Dim, TensorType};
use serde::{Deserialize, Serialize};

/// `x[..., start:end:step, ...]` on `axis`, with python semantics: negative start/end count
/// from the end, out-of-range bounds clamp, a negative step walks backwards, `end` may be
/// `i64::MAX` ("to the end"). Step 0 is an error.
///
/// `start` and `end` are dims: integers, or expressions over symbols (`S-1`) whose value is
/// taken with the same python semantics once the symbols are bound. On a symbolic axis the
/// result's size is an expression (`x[1:]` of `S` is `S-1`; `x[:8]` is `min(8,S)` unless the
/// module's facts decide it); a symbolic bound whose sign the facts cannot decide is an error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slice {
    /// The axis (negative counts from the end).
    pub axis: i64,
    /// First index (python semantics).
    pub start: Dim,
    /// One past the last index (python semantics).
    pub end: Dim,
    /// Stride, default 1; negative walks backwards.
    #[serde(default = "one")]
    pub step: i64,
}

/// Bounds at or past this are "to the end" whatever the dim (as python's `x[a:]`).
const TO_THE_END: i64 = 1 << 62;

impl Slice {
    /// A slice with integer bounds.
    pub fn new(axis: i64, start: i64, end: i64, step: i64) -> Slice {
        Slice {
            axis,
            start: Dim::from_i64(start),
            end: Dim::from_i64(end),
            step,
        }
    }

    /// The selected indices along an axis of length `n` with resolved bounds, as
    /// (first, count).
    pub fn range_of(start: i64, end: i64, step: i64, n: u64) -> Result<(i64, u64), OpError> {
        if step == 0 {
            crate::bail!("slice step must not be 0");
        }
        let n = n as i64;
        let norm = |v: i64, lo: i64, hi: i64| -> i64 {
            let v = if v < 0 { v.saturating_add(n) } else { v };
            v.clamp(lo, hi)
        };
        let (s, e) = if step > 0 {
            (norm(start, 0, n), norm(end, 0, n))
        } else {
            (norm(start, -1, n - 1), norm(end, -1, n - 1))
        };
        let count = if step > 0 {
            if e > s {
                (e - s - 1) / step + 1
            } else {
                0
            }
        } else if s > e {
            (s - e - 1) / (-step) + 1
        } else {
            0
        };
        Ok((s, count as u64))
    }

    /// The selected indices along an axis of length `n` under `bindings`, as (first, count).
    pub fn range(
        &self,
        n: u64,
        bindings: &std::collections::HashMap<String, u64>,
    ) -> Result<(i64, u64), OpError> {
        let start = self.start.eval(bindings)?;
        let end = self.end.eval(bindings)?;
        Slice::range_of(start, end, self.step, n)
    }

    /// The size of the result along a (possibly symbolic) axis of size `n`.
    pub fn size(&self, n: &Dim, facts: &Facts) -> Result<Dim, OpError> {
        if self.step == 0 {
            crate::bail!("slice step must not be 0");
        }
        if let (Some(nn), Some(s), Some(e)) =
            (n.fixed(), self.start.as_const(), self.end.as_const())
        {
            return Ok(Dim::from(Slice::range_of(s, e, self.step, nn)?.1));
        }
        let zero = Dim::default();
        let one = Dim::from_i64(1);
        let (lo, hi) = if self.step > 0 {
            (zero.clone(), n.clone())
        } else {
            (one.neg()?, n.sub(&one)?)
        };
        // Python's normalization: a negative bound counts from the end, then clamps.
        let norm = |v: &Dim, what: &str| -> Result<Dim, OpError> {
            if let Some(c) = v.as_const() {
                if c >= TO_THE_END {
                    return Ok(hi.clone());
                }
                if c <= -TO_THE_END {
                    return Ok(lo.clone());
                }
            }
            let (vlo, vhi) = facts.bounds(v);
            let v = if vlo.is_some_and(|l| l >= 0) {
                v.clone()
            } else if vhi.is_some_and(|h| h < 0) {
                n.add(v)?
            } else {
                crate::bail!(
                    "slice {what} {v} on an axis of size {n}: its sign is not known, so python's \
                     negative-index rule cannot be applied (add a fact such as `assume SYM >= 1`)"
                )
            };
            Ok(v.minimum(&hi)?.maximum(&lo)?.simplify(facts)?)
        };
        let s = norm(&self.start, "start")?;
        let e = norm(&self.end, "end")?;
        let (span, step) = if self.step > 0 {
            (e.sub(&s)?, self.step as u64)
        } else {
            (s.sub(&e)?, self.step.unsigned_abs())
        };
        Ok(span.maximum(&zero)?.div_ceil(step)?.simplify(facts)?)
    }
}

fn one() -> i64 {
    1
}

impl OpSpec for Slice {
    const NAME: &'static str = "slice";

    fn infer(&self, cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        expect_arity(Self::NAME, inputs, 1)?;
        let x = &inputs[0];
        let ax = normalize_axis(Self::NAME, self.axis, x.rank())?;
        let d = self
            .size(&x.shape[ax], &cx.module.facts)
            .map_err(|e| OpError::new(format!("slice of axis {ax} of {x}: {e}")))?;
        let mut shape = x.shape.clone();
        shape[ax] = d;
        Ok(vec![TensorType::new(x.dtype, shape)])
    }

    fn eval(&self, cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity(Self::NAME, inputs, 1)?;
        let x = inputs[0];
        let ax = normalize_axis(Self::NAME, self.axis, x.rank())?;
        let (first, count) = self.range(x.shape()[ax] as u64, cx.bindings)?;
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
            let op = Slice::new(1, start, end, step);
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
        let op = Slice::new(0, 0, 4, 0);
        let e = eval_op(Op::Slice(op), std::slice::from_ref(&x))
            .unwrap_err()
            .to_string();
        assert!(e.contains("step must not be 0"), "{e}");
        let op = Slice::new(1, 0, i64::MAX, 1);
        let e = eval_op(Op::Slice(op), &[x]).unwrap_err().to_string();
        assert!(e.contains("out of range"), "{e}");
    }
}
