//! `mmca_attention`: the multi-modal causal attention of DeepSpeed-VisualChat (arXiv
//! 2309.14327; `techniques.md` §7): two separately normalized masked softmaxes over the same
//! logits, whose probabilities are **added** before multiplying by V.
//!
//! Operands: `(q[B,H,Sq,D], k[B,Hk,Sk,D], v[B,Hk,Sk,Dv], token_types[B,Sk])`, q/k/v of one float
//! dtype, `token_types` of an integer dtype with 0 = padding, 1 = text, 2 = image. GQA as in
//! `attention` (`Hk` divides `H`). Query `i` sits at position `p = i + Sk − Sq` (aligned to the
//! end; `Sq ≤ Sk`) and has type `token_types[b, p]`. With `s_j = q·k_j · scale` (`scale` default
//! `1/√D`) and causal visibility `j ≤ p`:
//!
//! * **image branch**: an image query sees only itself (`j = p`); any other query sees the
//!   earlier image keys (`j ≤ p`, type 2);
//! * **text branch**: every query sees the earlier text keys (`j ≤ p`, type 1);
//! * `out = Σ_j (softmax_img(s)_j + softmax_txt(s)_j) · v_j`.
//!
//! A branch with no visible key is defined by `empty_row`: `"uniform"` (default) reproduces the
//! reference implementation, where blocked logits get `finfo.min` added on top of the causal
//! mask and so an empty branch becomes the uniform distribution over the causally visible keys
//! `j ≤ p` (every row's weights then sum to 2); `"zero"` makes an empty branch contribute
//! nothing. Padding keys are visible in neither branch.
//!
//! Divergence from the reference code, on purpose: it applies the "image query sees only
//! itself" rule only in the prompt phase (`Sq == Sk`); here it applies for any `Sq`, so a
//! decode step computes the same row as the prompt phase does.

use super::attention::{infer_qkv, masked_softmax, Qkv};
use super::util::{expect_arity, expect_int, expect_rank, op_err};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// What a branch with no visible key contributes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmptyRow {
    /// Uniform over the causally visible keys (what DeepSpeed-VisualChat computes).
    #[default]
    Uniform,
    /// Zero weights.
    Zero,
}

/// Multi-modal causal attention; see the module docs for operands and semantics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MmcaAttention {
    /// Logit scale; `None` = `1/√D`.
    #[serde(default)]
    pub scale: Option<f64>,
    /// What an empty branch contributes.
    #[serde(default)]
    pub empty_row: EmptyRow,
}

const TEXT: f64 = 1.0;
const IMAGE: f64 = 2.0;

impl OpSpec for MmcaAttention {
    const NAME: &'static str = "mmca_attention";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        expect_arity(Self::NAME, inputs, 4)?;
        let out = infer_qkv(Self::NAME, &inputs[0], &inputs[1], &inputs[2])?;
        let t = &inputs[3];
        expect_int(Self::NAME, "token_types operand", t)?;
        expect_rank(Self::NAME, "token_types[B,Sk]", t, 2)?;
        let (q, k) = (&inputs[0], &inputs[1]);
        if t.shape[0] != k.shape[0] || t.shape[1] != k.shape[2] {
            crate::bail!(
                "mmca_attention: token_types must be [B,Sk] = [{},{}], found {t}",
                k.shape[0],
                k.shape[2]
            );
        }
        if let (Some(sq), Some(sk)) = (q.shape[2].fixed(), k.shape[2].fixed()) {
            if sq > sk {
                crate::bail!("mmca_attention needs Sq <= Sk (queries are the last Sq tokens), found q {q}, k {k}");
            }
        }
        Ok(vec![out])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity(Self::NAME, inputs, 4)?;
        let a = Qkv::new(Self::NAME, inputs[0], inputs[1], inputs[2])?;
        let tt = inputs[3];
        if tt.shape() != [a.b, a.sk] {
            crate::bail!(
                "mmca_attention: token_types {:?} must be [{}, {}]",
                tt.shape(),
                a.b,
                a.sk
            );
        }
        if let Some(bad) = tt
            .data()
            .iter()
            .find(|&&x| x != 0.0 && x != TEXT && x != IMAGE)
        {
            crate::bail!("mmca_attention: token type {bad} is not 0 (pad), 1 (text) or 2 (image)");
        }
        if a.sq > a.sk {
            crate::bail!("mmca_attention needs Sq <= Sk, found {} > {}", a.sq, a.sk);
        }
        let scale = a.scale(self.scale);
        let mut out = Vec::with_capacity(a.b * a.h * a.sq * a.dv);
        for b in 0..a.b {
            let types = &tt.data()[b * a.sk..(b + 1) * a.sk];
            for h in 0..a.h {
                for i in 0..a.sq {
                    let p = i + a.sk - a.sq;
                    let s: Vec<f64> = a.logits(b, h, i).into_iter().map(|x| x * scale).collect();
                    let branch = |visible: &dyn Fn(usize) -> bool| -> Vec<f64> {
                        let row: Vec<Option<f64>> = (0..a.sk)
                            .map(|j| (j <= p && visible(j)).then_some(s[j]))
                            .collect();
                        match (masked_softmax(&row), self.empty_row) {
                            (Some(w), _) => w,
                            (None, EmptyRow::Uniform) => (0..a.sk)
                                .map(|j| if j <= p { 1.0 / (p + 1) as f64 } else { 0.0 })
                                .collect(),
                            (None, EmptyRow::Zero) => vec![0.0; a.sk],
                        }
                    };
                    let img = if types[p] == IMAGE {
                        branch(&|j| j == p)
                    } else {
                        branch(&|j| types[j] == IMAGE)
                    };
                    let txt = branch(&|j| types[j] == TEXT);
                    let w: Vec<f64> = img.iter().zip(&txt).map(|(x, y)| x + y).collect();
                    a.mix(b, h, &w, &mut out);
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
    use super::{EmptyRow, MmcaAttention};
    use crate::dtype::DType;
    use crate::ops::testing::{eval_op, rand_tensor};
    use crate::ops::Op;
    use crate::tensor::Tensor;
    use proptest::prelude::*;

    /// Naive transcription of the DeepSpeed-VisualChat masks: additive masks with a huge
    /// negative `MIN` for blocked entries, added on top of a causal mask, two softmaxes, sum.
    /// (`MIN` = -1e300 in f64 absorbs the logits exactly as `finfo.min` does in fp32.)
    fn naive(q: &Tensor, k: &Tensor, v: &Tensor, types: &[f64], sq: usize) -> Vec<f64> {
        const MIN: f64 = -1e300;
        let (h, d) = (q.shape()[1], q.shape()[3]);
        let (hk, sk, dv) = (k.shape()[1], k.shape()[2], v.shape()[3]);
        let mut out = vec![];
        for hi in 0..h {
            for i in 0..sq {
                let p = i + sk - sq;
                let mut img = vec![0.0; sk];
                let mut txt = vec![0.0; sk];
                for j in 0..sk {
                    let mut dot = 0.0;
                    for x in 0..d {
                        dot += q.at(&[0, hi, i, x]) * k.at(&[0, hi / (h / hk), j, x]);
                    }
                    let s = dot / (d as f64).sqrt();
                    let causal = if j > p { f64::NEG_INFINITY } else { 0.0 };
                    let img_ok = if types[p] == 2.0 {
                        j == p
                    } else {
                        types[j] == 2.0
                    };
                    img[j] = s + causal + if img_ok { 0.0 } else { MIN };
                    txt[j] = s + causal + if types[j] == 1.0 { 0.0 } else { MIN };
                }
                let sm = |r: &[f64]| -> Vec<f64> {
                    let m = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = r.iter().map(|x| (x - m).exp()).sum();
                    r.iter().map(|x| (x - m).exp() / z).collect()
                };
                let (pi, pt) = (sm(&img), sm(&txt));
                for c in 0..dv {
                    let mut acc = 0.0;
                    for j in 0..sk {
                        acc += (pi[j] + pt[j]) * v.at(&[0, hi / (h / hk), j, c]);
                    }
                    out.push(acc);
                }
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn matches_naive_two_mask_softmax(hk in 1usize..3, rep in 1usize..3, sk in 1usize..6,
                                          drop in 0usize..3, d in 1usize..4,
                                          types in proptest::collection::vec(0u8..3, 6),
                                          seed in 0u64..1000) {
            let sq = sk - drop.min(sk - 1);
            let h = hk * rep;
            let q = rand_tensor(DType::F64, vec![1, h, sq, d], seed);
            let k = rand_tensor(DType::F64, vec![1, hk, sk, d], seed + 1);
            let v = rand_tensor(DType::F64, vec![1, hk, sk, 3], seed + 2);
            let ty: Vec<f64> = types[..sk].iter().map(|&t| t as f64).collect();
            let tt = Tensor::new(DType::I64, vec![1, sk], ty.clone()).unwrap();
            let out = eval_op(Op::MmcaAttention(MmcaAttention::default()),
                              &[q.clone(), k.clone(), v.clone(), tt]).unwrap();
            let want = naive(&q, &k, &v, &ty, sq);
            for (g, w) in out[0].data().iter().zip(&want) {
                prop_assert!((g - w).abs() < 1e-9, "{} vs {}", g, w);
            }
        }
    }

    #[test]
    fn rows_sum_to_two_and_empty_branches() {
        // v = 1 everywhere: the output is the sum of the weights of a row.
        let q = rand_tensor(DType::F64, vec![1, 1, 4, 2], 5);
        let k = rand_tensor(DType::F64, vec![1, 1, 4, 2], 6);
        let v = Tensor::new(DType::F64, vec![1, 1, 4, 1], vec![1.0; 4]).unwrap();
        // image, image, text, pad: row 0's text branch is empty.
        let tt = Tensor::new(DType::I32, vec![1, 4], vec![2.0, 2.0, 1.0, 0.0]).unwrap();
        let ins = [q, k, v, tt];
        let out = eval_op(Op::MmcaAttention(MmcaAttention::default()), &ins).unwrap();
        for &x in out[0].data() {
            assert!((x - 2.0).abs() < 1e-12, "{x}");
        }
        let zero = MmcaAttention {
            empty_row: EmptyRow::Zero,
            ..Default::default()
        };
        let out = eval_op(Op::MmcaAttention(zero), &ins).unwrap();
        assert!((out[0].data()[0] - 1.0).abs() < 1e-12, "{:?}", out[0]);
        assert!((out[0].data()[2] - 2.0).abs() < 1e-12, "{:?}", out[0]);
    }

    #[test]
    fn bad_token_types_are_errors() {
        let q = rand_tensor(DType::F32, vec![1, 1, 2, 2], 0);
        let tt = Tensor::new(DType::I32, vec![1, 2], vec![1.0, 3.0]).unwrap();
        let e = eval_op(
            Op::MmcaAttention(MmcaAttention::default()),
            &[q.clone(), q.clone(), q.clone(), tt],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("token type 3"), "{e}");
        let tf = rand_tensor(DType::F32, vec![1, 2], 0);
        let e = eval_op(
            Op::MmcaAttention(MmcaAttention::default()),
            &[q.clone(), q.clone(), q, tf],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("integer token_types"), "{e}");
    }
}
