//! `group_norm`: normalize each group of channels over the group's channels and all spatial
//! positions (PyTorch `F.group_norm`).

use super::util::{expect_arity_range, expect_float, fixed_dim, op_err, same_dtype};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::{Dim, TensorType};
use serde::{Deserialize, Serialize};

fn default_eps() -> f64 {
    1e-5
}

/// Operands `(x[N, C, ...], [scale[C], [bias[C]]])`. Channels split into `groups` consecutive
/// groups; each `(n, group)` slice is normalized with its own mean and biased variance,
/// `y = (x − μ)/√(σ² + eps) · scale[c] + bias[c]`. `C` must be fixed and divisible by `groups`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupNorm {
    /// Number of channel groups.
    pub groups: u64,
    /// Added to the variance (default 1e-5).
    #[serde(default = "default_eps")]
    pub eps: f64,
}

impl OpSpec for GroupNorm {
    const NAME: &'static str = "group_norm";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        expect_arity_range(Self::NAME, inputs, 1, 3)?;
        let d = same_dtype(Self::NAME, inputs)?;
        let x = &inputs[0];
        expect_float(Self::NAME, "x", x)?;
        if x.rank() < 2 {
            crate::bail!("group_norm expects x[N, C, ...] of rank >= 2, found {x}");
        }
        let c = fixed_dim(Self::NAME, "channel dim C", &x.shape[1])?;
        if self.groups == 0 || !c.is_multiple_of(self.groups) {
            crate::bail!(
                "group_norm: groups {} must divide channels {c} (x is {x})",
                self.groups
            );
        }
        for (i, p) in inputs[1..].iter().enumerate() {
            if p.shape != [Dim::from(c)] {
                crate::bail!(
                    "group_norm {} must be [{c}], found {p}",
                    if i == 0 { "scale" } else { "bias" }
                );
            }
        }
        Ok(vec![TensorType::new(d, x.shape.clone())])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity_range(Self::NAME, inputs, 1, 3)?;
        let x = inputs[0];
        if x.rank() < 2 {
            crate::bail!("group_norm expects rank >= 2");
        }
        let (n, c) = (x.shape()[0], x.shape()[1]);
        let g = self.groups as usize;
        if g == 0 || !c.is_multiple_of(g) {
            crate::bail!("group_norm: groups {g} must divide channels {c}");
        }
        for p in &inputs[1..] {
            if p.numel() != c {
                crate::bail!("group_norm scale/bias must have {c} elements");
            }
        }
        let sp: usize = x.shape()[2..].iter().product();
        let cpg = c / g;
        let len = cpg * sp;
        let mut out = x.data().to_vec();
        for ni in 0..n {
            for gi in 0..g {
                let start = (ni * c + gi * cpg) * sp;
                let seg = &x.data()[start..start + len];
                let mean = seg.iter().sum::<f64>() / len as f64;
                let var = seg.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / len as f64;
                let inv = 1.0 / (var + self.eps).sqrt();
                for (k, o) in out[start..start + len].iter_mut().enumerate() {
                    let ch = gi * cpg + k / sp;
                    let mut y = (*o - mean) * inv;
                    if let Some(s) = inputs.get(1) {
                        y *= s.data()[ch];
                    }
                    if let Some(b) = inputs.get(2) {
                        y += b.data()[ch];
                    }
                    *o = y;
                }
            }
        }
        Ok(vec![
            Tensor::new(x.dtype(), x.shape().to_vec(), out).map_err(op_err)?
        ])
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // naive reference formulas index like the math
mod tests {
    use super::GroupNorm;
    use crate::dtype::DType;
    use crate::ops::testing::{eval_op, rand_tensor};
    use crate::ops::Op;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn matches_naive_two_pass(n in 1usize..3, g in 1usize..4, cpg in 1usize..3,
                                  h in 1usize..4, w in 1usize..4, seed in 0u64..1000) {
            let c = g * cpg;
            let x = rand_tensor(DType::F64, vec![n, c, h, w], seed);
            let s = rand_tensor(DType::F64, vec![c], seed + 1);
            let b = rand_tensor(DType::F64, vec![c], seed + 2);
            let op = GroupNorm { groups: g as u64, eps: 1e-5 };
            let out = eval_op(Op::GroupNorm(op), &[x.clone(), s.clone(), b.clone()]).unwrap();
            for ni in 0..n { for gi in 0..g {
                let mut vals = vec![];
                for ch in gi * cpg..(gi + 1) * cpg { for y in 0..h { for z in 0..w {
                    vals.push(x.at(&[ni, ch, y, z]));
                }}}
                let m = vals.iter().sum::<f64>() / vals.len() as f64;
                let v = vals.iter().map(|a| (a - m).powi(2)).sum::<f64>() / vals.len() as f64;
                for ch in gi * cpg..(gi + 1) * cpg { for y in 0..h { for z in 0..w {
                    let want = (x.at(&[ni, ch, y, z]) - m) / (v + 1e-5).sqrt() * s.at(&[ch])
                        + b.at(&[ch]);
                    prop_assert!((out[0].at(&[ni, ch, y, z]) - want).abs() < 1e-9);
                }}}
            }}
        }
    }

    #[test]
    fn groups_must_divide_channels() {
        let x = rand_tensor(DType::F32, vec![1, 6, 2, 2], 0);
        let e = eval_op(
            Op::GroupNorm(GroupNorm {
                groups: 4,
                eps: 1e-5,
            }),
            std::slice::from_ref(&x),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("groups 4 must divide channels 6"), "{e}");
        let s = rand_tensor(DType::F32, vec![3], 0);
        let e = eval_op(
            Op::GroupNorm(GroupNorm {
                groups: 3,
                eps: 1e-5,
            }),
            &[x, s],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("scale must be [6]"), "{e}");
    }
}
