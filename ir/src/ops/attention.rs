//! `attention`: scaled dot-product attention with GQA, a causal mask aligned to the end, and any
//! number of additive biases (Evoformer style).

use super::util::{
    broadcast_dims, broadcast_shapes, broadcast_strides, expect_float, expect_rank, join, op_err,
    same_dtype,
};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// The built-in mask of [`Attention`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttnMask {
    /// Every query sees every key.
    #[default]
    None,
    /// Query `i` sees keys `j <= i + (Sk - Sq)` (aligned to the end, as with a KV cache).
    Causal,
}

/// `softmax(q·kᵀ·scale + Σ bias + mask) · v`.
///
/// Operands `(q[B,H,Sq,D], k[B,Hk,Sk,D], v[B,Hk,Sk,Dv], bias_1, …, bias_n)`, one float dtype.
/// Query head `h` uses key/value head `h / (H/Hk)` (grouped-query attention; `Hk` must divide
/// `H`). Each bias broadcasts (numpy-style) to `[B,H,Sq,Sk]`. `scale` defaults to `1/√D`.
/// A row whose every key is masked (causal with `Sq > Sk`, or all biases `-inf`) yields zeros.
/// Computed in f64 and rounded once; result `[B,H,Sq,Dv]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attention {
    /// Built-in mask.
    #[serde(default)]
    pub mask: AttnMask,
    /// Logit scale; `None` = `1/√D`.
    #[serde(default)]
    pub scale: Option<f64>,
}

/// Check `q, k, v` of an attention op; returns the result type `[B,H,Sq,Dv]`.
pub(crate) fn infer_qkv(
    op: &str,
    q: &TensorType,
    k: &TensorType,
    v: &TensorType,
) -> Result<TensorType, OpError> {
    let d = same_dtype(op, &[q.clone(), k.clone(), v.clone()])?;
    expect_float(op, "q", q)?;
    expect_rank(op, "q[B,H,Sq,D]", q, 4)?;
    expect_rank(op, "k[B,Hk,Sk,D]", k, 4)?;
    expect_rank(op, "v[B,Hk,Sk,Dv]", v, 4)?;
    let (qs, ks, vs) = (&q.shape, &k.shape, &v.shape);
    if qs[0] != ks[0] || ks[0] != vs[0] {
        crate::bail!("{op}: batch dims differ: q {q}, k {k}, v {v}");
    }
    if qs[3] != ks[3] {
        crate::bail!("{op}: q and k head dims differ: q {q}, k {k}");
    }
    if ks[1] != vs[1] || ks[2] != vs[2] {
        crate::bail!("{op}: k and v must share heads and length: k {k}, v {v}");
    }
    if qs[1] != ks[1] {
        match (qs[1].fixed(), ks[1].fixed()) {
            (Some(h), Some(hk)) if hk > 0 && h.is_multiple_of(hk) => {}
            _ => crate::bail!(
                "{op}: key/value heads {} must divide query heads {} (q {q}, k {k})",
                ks[1],
                qs[1]
            ),
        }
    }
    Ok(TensorType::new(
        d,
        [qs[0].clone(), qs[1].clone(), qs[2].clone(), vs[3].clone()],
    ))
}

/// Concrete q/k/v of an attention op with their dims.
pub(crate) struct Qkv<'a> {
    pub q: &'a Tensor,
    pub k: &'a Tensor,
    pub v: &'a Tensor,
    pub b: usize,
    pub h: usize,
    pub hk: usize,
    pub sq: usize,
    pub sk: usize,
    pub d: usize,
    pub dv: usize,
}

impl<'a> Qkv<'a> {
    /// Check shapes at run time.
    pub fn new(op: &str, q: &'a Tensor, k: &'a Tensor, v: &'a Tensor) -> Result<Self, OpError> {
        if q.rank() != 4 || k.rank() != 4 || v.rank() != 4 {
            crate::bail!("{op} needs rank-4 q, k, v");
        }
        let (qs, ks, vs) = (q.shape(), k.shape(), v.shape());
        if qs[0] != ks[0]
            || ks[0] != vs[0]
            || qs[3] != ks[3]
            || ks[1] != vs[1]
            || ks[2] != vs[2]
            || ks[1] == 0
            || qs[1] % ks[1] != 0
        {
            crate::bail!("{op}: inconsistent shapes q {qs:?}, k {ks:?}, v {vs:?}");
        }
        Ok(Qkv {
            q,
            k,
            v,
            b: qs[0],
            h: qs[1],
            hk: ks[1],
            sq: qs[2],
            sk: ks[2],
            d: qs[3],
            dv: vs[3],
        })
    }

    /// Unscaled logits `q[b,h,i]·k[b,hk(h),j]` for all `j`.
    pub fn logits(&self, b: usize, h: usize, i: usize) -> Vec<f64> {
        let kh = h / (self.h / self.hk);
        let qo = ((b * self.h + h) * self.sq + i) * self.d;
        let qrow = &self.q.data()[qo..qo + self.d];
        (0..self.sk)
            .map(|j| {
                let ko = ((b * self.hk + kh) * self.sk + j) * self.d;
                qrow.iter()
                    .zip(&self.k.data()[ko..ko + self.d])
                    .map(|(a, c)| a * c)
                    .sum()
            })
            .collect()
    }

    /// `Σ_j w_j · v[b, hk(h), j, :]` appended to `out`.
    pub fn mix(&self, b: usize, h: usize, w: &[f64], out: &mut Vec<f64>) {
        let kh = h / (self.h / self.hk);
        let start = out.len();
        out.resize(start + self.dv, 0.0);
        for (j, &wj) in w.iter().enumerate() {
            if wj == 0.0 {
                continue;
            }
            let vo = ((b * self.hk + kh) * self.sk + j) * self.dv;
            for (o, &x) in out[start..]
                .iter_mut()
                .zip(&self.v.data()[vo..vo + self.dv])
            {
                *o += wj * x;
            }
        }
    }

    /// The scale: given, or `1/√D`.
    pub fn scale(&self, given: Option<f64>) -> f64 {
        given.unwrap_or(1.0 / (self.d as f64).sqrt())
    }
}

/// Softmax over the entries that are `Some` (masked entries get probability 0). `None` when no
/// entry is visible or every visible logit is `-inf`.
pub(crate) fn masked_softmax(s: &[Option<f64>]) -> Option<Vec<f64>> {
    let m = s.iter().flatten().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
    if m == f64::NEG_INFINITY {
        return None;
    }
    let e: Vec<f64> = s.iter().map(|x| x.map_or(0.0, |x| (x - m).exp())).collect();
    let z: f64 = e.iter().sum();
    Some(e.into_iter().map(|x| x / z).collect())
}

impl OpSpec for Attention {
    const NAME: &'static str = "attention";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        if inputs.len() < 3 {
            crate::bail!(
                "attention takes q, k, v and zero or more biases, found {} operands",
                inputs.len()
            );
        }
        let out = infer_qkv(Self::NAME, &inputs[0], &inputs[1], &inputs[2])?;
        let (q, k) = (&inputs[0].shape, &inputs[1].shape);
        let logits = [q[0].clone(), q[1].clone(), q[2].clone(), k[2].clone()];
        for (i, b) in inputs[3..].iter().enumerate() {
            if b.dtype != out.dtype {
                crate::bail!("attention bias {i} is {b}, expected dtype {}", out.dtype);
            }
            let bb = broadcast_dims(Self::NAME, &b.shape, &logits);
            if bb.as_ref() != Ok(&logits.to_vec()) {
                crate::bail!(
                    "attention bias {i} {b} does not broadcast to the logits [{}]",
                    join(&logits)
                );
            }
        }
        Ok(vec![out])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        if inputs.len() < 3 {
            crate::bail!("attention takes at least 3 operands");
        }
        let a = Qkv::new(Self::NAME, inputs[0], inputs[1], inputs[2])?;
        let logit_shape = [a.b, a.h, a.sq, a.sk];
        let mut biases = vec![];
        for t in &inputs[3..] {
            if broadcast_shapes(Self::NAME, t.shape(), &logit_shape)? != logit_shape {
                crate::bail!(
                    "attention bias {:?} does not broadcast to {logit_shape:?}",
                    t.shape()
                );
            }
            biases.push((t.data(), broadcast_strides(t.shape(), &logit_shape)));
        }
        let scale = a.scale(self.scale);
        let shift = a.sk as i64 - a.sq as i64;
        let mut out = Vec::with_capacity(a.b * a.h * a.sq * a.dv);
        for b in 0..a.b {
            for h in 0..a.h {
                for i in 0..a.sq {
                    let l = a.logits(b, h, i);
                    let s: Vec<Option<f64>> = (0..a.sk)
                        .map(|j| {
                            if self.mask == AttnMask::Causal && j as i64 > i as i64 + shift {
                                return None;
                            }
                            let bias: f64 = biases
                                .iter()
                                .map(|(d, st)| d[b * st[0] + h * st[1] + i * st[2] + j * st[3]])
                                .sum();
                            Some(l[j] * scale + bias)
                        })
                        .collect();
                    match masked_softmax(&s) {
                        Some(w) => a.mix(b, h, &w, &mut out),
                        None => out.extend(std::iter::repeat_n(0.0, a.dv)),
                    }
                }
            }
        }
        let shape = vec![a.b, a.h, a.sq, a.dv];
        Ok(vec![Tensor::new(a.q.dtype(), shape, out).map_err(op_err)?])
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // naive reference formulas index like the math
mod tests {
    use super::{Attention, AttnMask};
    use crate::dtype::DType;
    use crate::ops::testing::{eval_op, rand_tensor};
    use crate::ops::Op;
    use crate::tensor::Tensor;
    use proptest::prelude::*;

    /// Naive: repeat k/v heads, full logits matrix, additive -inf causal mask, softmax with the
    /// max subtracted, then probabilities times v.
    #[allow(clippy::too_many_arguments)]
    fn naive(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        biases: &[Tensor],
        causal: bool,
        scale: f64,
    ) -> Vec<f64> {
        let (b, h, sq, d) = (q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]);
        let (hk, sk, dv) = (k.shape()[1], k.shape()[2], v.shape()[3]);
        let rep = h / hk;
        let mut out = vec![];
        for bi in 0..b {
            for hi in 0..h {
                for i in 0..sq {
                    let mut row = vec![0.0; sk];
                    for (j, r) in row.iter_mut().enumerate() {
                        let mut dot = 0.0;
                        for x in 0..d {
                            dot += q.at(&[bi, hi, i, x]) * k.at(&[bi, hi / rep, j, x]);
                        }
                        *r = dot * scale;
                        for bias in biases {
                            let s = bias.shape();
                            let full = [bi, hi, i, j];
                            let idx: Vec<usize> = full[4 - s.len()..]
                                .iter()
                                .zip(s)
                                .map(|(&n, &m)| if m == 1 { 0 } else { n })
                                .collect();
                            *r += bias.at(&idx);
                        }
                        if causal && j + sq > i + sk {
                            *r = f64::NEG_INFINITY;
                        }
                    }
                    let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = row.iter().map(|x| (x - m).exp()).sum();
                    for c in 0..dv {
                        let mut acc = 0.0;
                        if m > f64::NEG_INFINITY {
                            for j in 0..sk {
                                acc += (row[j] - m).exp() / z * v.at(&[bi, hi / rep, j, c]);
                            }
                        }
                        out.push(acc);
                    }
                }
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn matches_naive_attention(b in 1usize..3, hk in 1usize..3, rep in 1usize..3,
                                   sq in 1usize..4, sk in 1usize..5, d in 1usize..4,
                                   causal in proptest::bool::ANY, nbias in 0usize..3,
                                   seed in 0u64..1000) {
            let h = hk * rep;
            let q = rand_tensor(DType::F64, vec![b, h, sq, d], seed);
            let k = rand_tensor(DType::F64, vec![b, hk, sk, d], seed + 1);
            let v = rand_tensor(DType::F64, vec![b, hk, sk, 2], seed + 2);
            // Evoformer-like biases: a key mask [B,1,1,Sk] and a pair bias [1,H,Sq,Sk].
            let shapes = [vec![b, 1, 1, sk], vec![h, sq, sk]];
            let biases: Vec<Tensor> = (0..nbias)
                .map(|i| rand_tensor(DType::F64, shapes[i].clone(), seed + 3 + i as u64))
                .collect();
            let mask = if causal { AttnMask::Causal } else { AttnMask::None };
            let mut ins = vec![q.clone(), k.clone(), v.clone()];
            ins.extend(biases.iter().cloned());
            let out = eval_op(Op::Attention(Attention { mask, scale: None }), &ins).unwrap();
            let want = naive(&q, &k, &v, &biases, causal, 1.0 / (d as f64).sqrt());
            prop_assert_eq!(out[0].shape(), &[b, h, sq, 2][..]);
            for (g, w) in out[0].data().iter().zip(&want) {
                prop_assert!((g - w).abs() < 1e-12, "{} vs {}", g, w);
            }
        }
    }

    #[test]
    fn gqa_head_mismatch_and_bad_bias_are_type_errors() {
        let q = rand_tensor(DType::F32, vec![1, 3, 2, 4], 0);
        let k = rand_tensor(DType::F32, vec![1, 2, 2, 4], 0);
        let e = eval_op(
            Op::Attention(Attention::default()),
            &[q.clone(), k.clone(), k],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("key/value heads 2 must divide query heads 3"),
            "{e}"
        );
        let k = rand_tensor(DType::F32, vec![1, 3, 5, 4], 0);
        let bias = rand_tensor(DType::F32, vec![3, 5], 0);
        let e = eval_op(
            Op::Attention(Attention::default()),
            &[q, k.clone(), k, bias],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("bias 0"), "{e}");
    }
}
