//! `rope`: rotary position embedding, in both common pairings.

use super::util::{
    broadcast_dims, broadcast_shapes, broadcast_strides, expect_arity, expect_float, expect_int,
    fixed_dim, for_each_index, join, op_err,
};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// Which dims form a rotated pair.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RopeStyle {
    /// GPT-NeoX / HF Llama `rotate_half`: pairs `(i, i + r/2)`.
    #[default]
    Half,
    /// GPT-J / original RoFormer: pairs `(2i, 2i + 1)`.
    Interleaved,
}

fn default_theta() -> f64 {
    10000.0
}

/// Operands `(x[..., S, D], positions)`, positions of an integer dtype shaped `[S]` or anything
/// that broadcasts (numpy-style) to `x.shape[:-1]`. For pair `k < r/2` (r = `rotary_dim`, default
/// D, even, ≤ D) the angle is `pos · theta^(-2k/r)` and the pair `(a, b)` becomes
/// `(a·cos − b·sin, b·cos + a·sin)`; dims `r..D` pass through unchanged.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rope {
    /// The pairing.
    #[serde(default)]
    pub style: RopeStyle,
    /// Base of the frequencies (10000 by default).
    #[serde(default = "default_theta")]
    pub theta: f64,
    /// Number of leading dims that rotate (default: all of D).
    #[serde(default)]
    pub rotary_dim: Option<u64>,
}

impl Default for Rope {
    fn default() -> Self {
        Rope {
            style: RopeStyle::Half,
            theta: default_theta(),
            rotary_dim: None,
        }
    }
}

impl Rope {
    fn rotary(&self, d: u64) -> Result<usize, OpError> {
        let r = self.rotary_dim.unwrap_or(d);
        if r == 0 || !r.is_multiple_of(2) || r > d {
            crate::bail!("rope rotary_dim must be even and in 2..={d} (head dim), found {r}");
        }
        if !(self.theta.is_finite() && self.theta > 0.0) {
            crate::bail!(
                "rope theta must be a positive finite number, found {}",
                self.theta
            );
        }
        Ok(r as usize)
    }
}

impl OpSpec for Rope {
    const NAME: &'static str = "rope";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        expect_arity(Self::NAME, inputs, 2)?;
        let (x, p) = (&inputs[0], &inputs[1]);
        expect_float(Self::NAME, "x", x)?;
        expect_int(Self::NAME, "positions operand", p)?;
        if x.rank() < 2 {
            crate::bail!("rope expects x[..., S, D] of rank >= 2, found {x}");
        }
        let d = fixed_dim(Self::NAME, "head dim D", &x.shape[x.rank() - 1])?;
        self.rotary(d)?;
        let lead = &x.shape[..x.rank() - 1];
        let b = broadcast_dims(Self::NAME, &p.shape, lead)?;
        if b != lead {
            crate::bail!(
                "rope positions {p} must broadcast to x's leading dims [{}] (x is {x})",
                join(lead)
            );
        }
        Ok(vec![x.clone()])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity(Self::NAME, inputs, 2)?;
        let (x, p) = (inputs[0], inputs[1]);
        if x.rank() < 2 {
            crate::bail!("rope expects x of rank >= 2");
        }
        let d = x.shape()[x.rank() - 1];
        let r = self.rotary(d as u64)?;
        let lead = &x.shape()[..x.rank() - 1];
        if broadcast_shapes(Self::NAME, p.shape(), lead)? != lead {
            crate::bail!(
                "rope positions {:?} do not broadcast to {lead:?}",
                p.shape()
            );
        }
        let h = r / 2;
        let inv: Vec<f64> = (0..h)
            .map(|k| self.theta.powf(-(2.0 * k as f64) / r as f64))
            .collect();
        let xd = x.data();
        let pd = p.data();
        let mut out = xd.to_vec();
        let mut row = 0usize;
        for_each_index(lead, &[broadcast_strides(p.shape(), lead)], |o| {
            let pos = pd[o[0]];
            let base = row * d;
            for (k, f) in inv.iter().enumerate() {
                let (s, c) = (pos * f).sin_cos();
                let (ia, ib) = match self.style {
                    RopeStyle::Half => (k, k + h),
                    RopeStyle::Interleaved => (2 * k, 2 * k + 1),
                };
                let (a, b) = (xd[base + ia], xd[base + ib]);
                out[base + ia] = a * c - b * s;
                out[base + ib] = b * c + a * s;
            }
            row += 1;
        });
        Ok(vec![
            Tensor::new(x.dtype(), x.shape().to_vec(), out).map_err(op_err)?
        ])
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // naive reference formulas index like the math
mod tests {
    use super::{Rope, RopeStyle};
    use crate::dtype::DType;
    use crate::ops::testing::{eval_op, rand_tensor};
    use crate::ops::Op;
    use crate::tensor::Tensor;
    use proptest::prelude::*;

    /// HF-style: `x·cos + rotate_half(x)·sin` with `emb = cat(freqs, freqs)` (half), or the
    /// GPT-J `rotate_every_two` with repeat-interleaved frequencies (interleaved).
    fn naive(x: &[f64], pos: f64, theta: f64, r: usize, style: RopeStyle) -> Vec<f64> {
        let d = x.len();
        let mut out = x.to_vec();
        for j in 0..r {
            let (k, partner, sign) = match style {
                RopeStyle::Half => {
                    if j < r / 2 {
                        (j, j + r / 2, -1.0)
                    } else {
                        (j - r / 2, j - r / 2, 1.0)
                    }
                }
                RopeStyle::Interleaved => {
                    if j.is_multiple_of(2) {
                        (j / 2, j + 1, -1.0)
                    } else {
                        (j / 2, j - 1, 1.0)
                    }
                }
            };
            let ang = pos / theta.powf(2.0 * k as f64 / r as f64);
            out[j] = x[j] * ang.cos() + sign * x[partner] * ang.sin();
        }
        assert_eq!(out.len(), d);
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn matches_naive_rotation(h in 1usize..3, s in 1usize..5, half_d in 1usize..4,
                                  partial in proptest::bool::ANY,
                                  interleaved in proptest::bool::ANY,
                                  seed in 0u64..1000) {
            let d = 2 * half_d + if partial { 2 } else { 0 };
            let r = 2 * half_d;
            let style = if interleaved { RopeStyle::Interleaved } else { RopeStyle::Half };
            let x = rand_tensor(DType::F64, vec![h, s, d], seed);
            let pos = Tensor::from_fn(DType::I64, vec![s], |i| {
                (i[0] * 3 + seed as usize % 5) as f64
            });
            let op = Rope { style, theta: 10000.0, rotary_dim: partial.then_some(r as u64) };
            let out = eval_op(Op::Rope(op), &[x.clone(), pos.clone()]).unwrap();
            for hi in 0..h { for si in 0..s {
                let row: Vec<f64> = (0..d).map(|j| x.at(&[hi, si, j])).collect();
                let want = naive(&row, pos.at(&[si]), 10000.0, r, style);
                for j in 0..d {
                    prop_assert!((out[0].at(&[hi, si, j]) - want[j]).abs() < 1e-12);
                }
            }}
        }
    }

    #[test]
    fn bad_rotary_dim_and_positions_are_errors() {
        let x = rand_tensor(DType::F32, vec![2, 3, 4], 0);
        let pos = Tensor::from_fn(DType::I64, vec![3], |i| i[0] as f64);
        let op = Rope {
            rotary_dim: Some(3),
            ..Rope::default()
        };
        let e = eval_op(Op::Rope(op), &[x.clone(), pos])
            .unwrap_err()
            .to_string();
        assert!(e.contains("even"), "{e}");
        let bad = Tensor::from_fn(DType::I64, vec![5], |i| i[0] as f64);
        let e = eval_op(Op::Rope(Rope::default()), &[x, bad])
            .unwrap_err()
            .to_string();
        assert!(e.contains("broadcast"), "{e}");
    }
}
