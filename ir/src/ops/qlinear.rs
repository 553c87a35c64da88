//! `qlinear`: the INT8 GEMM of W8A8 quantization with its epilogue (`techniques.md` §1: HERO's
//! `Y = fp(acc_i32) · s_x[m] · s_w[n] + bias[n]`, then an activation).
//!
//! Operands `(xq, x_scale, wq, w_scale[, bias])`:
//! * `xq`: i8 `[..., K]`, the quantized activations;
//! * `x_scale`: float, `xq`'s rank, last dim 1, every other dim 1 or `xq`'s (per tensor or per
//!   token — a scale indexed by `K` does not factor out of the sum, §0.2);
//! * `wq`: i8 `[K, N]`, the quantized weight in matmul layout;
//! * `w_scale`: float `[1, N]` (per output channel) or `[1, 1]` (per tensor), `x_scale`'s dtype;
//! * `bias`: float `[N]`, `x_scale`'s dtype.
//!
//! Result: `x_scale`'s dtype, `[..., N]`:
//! `y[.., n] = act(acc[.., n] · x_scale[..] · w_scale[n] + bias[n])` with
//! `acc = Σ_k xq[.., k] · wq[k, n]` computed exactly (an integer: `|acc| ≤ 128² · K`), the
//! epilogue in f64 and rounded once to the result dtype. With `xq = quantize(x)` and
//! `wq = quantize(w)` (same scales) this is `act(dequantize(xq) · dequantize(wq) + bias)`.

use super::util::{expect_arity_range, expect_float, join, op_err};
use super::{EvalCx, InferCx, OpSpec};
use crate::dtype::DType;
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::{Dim, TensorType};
use serde::{Deserialize, Serialize};

/// The activation a `qlinear` epilogue applies after the bias.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// None.
    #[default]
    None,
    /// `max(x, 0)`.
    Relu,
    /// GELU, exact (erf) form.
    Gelu,
    /// GELU, tanh approximation.
    GeluTanh,
    /// `x · sigmoid(x)`.
    Silu,
}

impl Activation {
    /// The activation of `x`, in f64 (the reference semantics).
    pub fn apply(self, x: f64) -> f64 {
        match self {
            Activation::None => x,
            Activation::Relu => x.max(0.0),
            Activation::Gelu => 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2)),
            Activation::GeluTanh => {
                let c = (2.0 / std::f64::consts::PI).sqrt();
                0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
            }
            Activation::Silu => x / (1.0 + (-x).exp()),
        }
    }
}

/// `act(Σ_k xq·wq · x_scale · w_scale + bias)`: see the module docs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QLinear {
    /// The epilogue's activation (default none).
    #[serde(default)]
    pub activation: Activation,
}

/// Whether scale dims `s` may scale rows of dims `x` (rank equal, last 1, others 1 or equal).
fn row_scale_dims(x: &[Dim], s: &[Dim]) -> bool {
    s.len() == x.len()
        && s.last().is_some_and(|d| d.fixed() == Some(1))
        && s[..s.len() - 1]
            .iter()
            .zip(x)
            .all(|(d, xd)| d.fixed() == Some(1) || d == xd)
}

impl OpSpec for QLinear {
    const NAME: &'static str = "qlinear";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        expect_arity_range(Self::NAME, inputs, 4, 5)?;
        let (xq, xs, wq, ws) = (&inputs[0], &inputs[1], &inputs[2], &inputs[3]);
        for (what, t) in [("xq", xq), ("wq", wq)] {
            if t.dtype != DType::I8 {
                crate::bail!("qlinear: {what} must be i8, found {t}");
            }
        }
        expect_float(Self::NAME, "x_scale", xs)?;
        let d = xs.dtype;
        for (what, t) in [("w_scale", ws)]
            .into_iter()
            .chain(inputs.get(4).map(|b| ("bias", b)))
        {
            if t.dtype != d {
                crate::bail!("qlinear: {what} must be {d} like x_scale, found {t}");
            }
        }
        if xq.rank() < 1 || wq.rank() != 2 {
            crate::bail!("qlinear expects xq[..., K] and wq[K, N], found {xq} and {wq}");
        }
        let k = &xq.shape[xq.rank() - 1];
        if k != &wq.shape[0] {
            crate::bail!(
                "qlinear contraction dims differ: xq [{}] · wq [{}] ({k} vs {})",
                join(&xq.shape),
                join(&wq.shape),
                wq.shape[0]
            );
        }
        if !row_scale_dims(&xq.shape, &xs.shape) {
            crate::bail!(
                "qlinear: x_scale must be per tensor or per token of xq {xq} (its rank, last dim \
                 1, other dims 1 or xq's), found {xs}"
            );
        }
        let n = &wq.shape[1];
        let per_channel = ws.rank() == 2
            && ws.shape[0].fixed() == Some(1)
            && (ws.shape[1] == *n || ws.shape[1].fixed() == Some(1));
        if !per_channel {
            crate::bail!("qlinear: w_scale must be [1, {n}] or [1, 1], found {ws}");
        }
        if let Some(b) = inputs.get(4) {
            if b.shape.len() != 1 || &b.shape[0] != n {
                crate::bail!("qlinear bias must be [{n}] (wq is {wq}), found {b}");
            }
        }
        let mut shape = xq.shape[..xq.rank() - 1].to_vec();
        shape.push(n.clone());
        Ok(vec![TensorType::new(d, shape)])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity_range(Self::NAME, inputs, 4, 5)?;
        let (xq, xs, wq, ws) = (inputs[0], inputs[1], inputs[2], inputs[3]);
        let r = xq.rank();
        if r < 1 || wq.rank() != 2 || xq.shape()[r - 1] != wq.shape()[0] {
            crate::bail!(
                "qlinear: shapes {:?} · {:?} do not contract",
                xq.shape(),
                wq.shape()
            );
        }
        let (k, n) = (wq.shape()[0], wq.shape()[1]);
        let lead = &xq.shape()[..r - 1];
        let rows: usize = lead.iter().product();
        // The row scale of row `i`: x_scale broadcast over the leading dims.
        if xs.rank() != r || xs.shape()[r - 1] != 1 {
            crate::bail!("qlinear: x_scale {:?} for xq {:?}", xs.shape(), xq.shape());
        }
        let xs_shape = &xs.shape()[..r - 1];
        if xs_shape.iter().zip(lead).any(|(&s, &l)| s != 1 && s != l) {
            crate::bail!("qlinear: x_scale {:?} for xq {:?}", xs.shape(), xq.shape());
        }
        let xs_strides = crate::tensor::strides_of(xs_shape);
        let row_scale = |i: usize| -> f64 {
            let (mut rem, mut off) = (i, 0);
            for ((&l, &s), &st) in lead.iter().zip(xs_shape).zip(&xs_strides).rev() {
                if s != 1 {
                    off += (rem % l) * st;
                }
                rem /= l;
            }
            xs.data()[off]
        };
        let w_scale = |j: usize| -> f64 {
            let d = ws.data();
            if d.len() == 1 {
                d[0]
            } else {
                d[j]
            }
        };
        if ws.numel() != 1 && ws.numel() != n {
            crate::bail!("qlinear: w_scale {:?} for {n} columns", ws.shape());
        }
        let bias = inputs.get(4).map(|b| b.data());
        if bias.is_some_and(|b| b.len() != n) {
            crate::bail!("qlinear: bias does not have {n} elements");
        }
        let (dx, dw) = (xq.data(), wq.data());
        let mut out = Vec::with_capacity(rows * n);
        for i in 0..rows {
            let sx = row_scale(i);
            for j in 0..n {
                // Exact: integer products of i8 values, summed below 2^53.
                let acc: i64 = (0..k)
                    .map(|kk| dx[i * k + kk] as i64 * dw[kk * n + j] as i64)
                    .sum();
                let y = acc as f64 * sx * w_scale(j) + bias.map_or(0.0, |b| b[j]);
                out.push(self.activation.apply(y));
            }
        }
        let mut shape = lead.to_vec();
        shape.push(n);
        Ok(vec![Tensor::new(xs.dtype(), shape, out).map_err(op_err)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{check_rounded, eval_op, rand_tensor};
    use crate::ops::Op;
    use proptest::prelude::*;

    fn i8s(shape: Vec<usize>, seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let v: Vec<f64> = (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 256) as f64 - 128.0
            })
            .collect();
        Tensor::new(DType::I8, shape, v).unwrap()
    }

    fn positive(t: Tensor) -> Tensor {
        let v: Vec<f64> = t.data().iter().map(|x| x.abs() + 0.01).collect();
        Tensor::new(t.dtype(), t.shape().to_vec(), v).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn equals_dequantized_linear(
            rows in 1usize..5, k in 1usize..9, n in 1usize..7, per_token: bool,
            per_channel: bool, with_bias: bool,
            act in prop::sample::select(vec![Activation::None, Activation::Relu, Activation::Gelu, Activation::GeluTanh, Activation::Silu]),
            dt in prop::sample::select(vec![DType::F32, DType::F64, DType::BF16]),
            seed in 0u64..500,
        ) {
            let xq = i8s(vec![2, rows, k], seed);
            let wq = i8s(vec![k, n], seed + 1);
            let xs = positive(rand_tensor(dt, if per_token { vec![2, rows, 1] } else { vec![1, 1, 1] }, seed + 2));
            let ws = positive(rand_tensor(dt, vec![1, if per_channel { n } else { 1 }], seed + 3));
            let b = rand_tensor(dt, vec![n], seed + 4);
            let mut ops = vec![xq.clone(), xs.clone(), wq.clone(), ws.clone()];
            if with_bias { ops.push(b.clone()); }
            let out = eval_op(Op::QLinear(QLinear { activation: act }), &ops).unwrap();
            // The naive formula: dequantize both operands (exact in f64), multiply, add, activate.
            let mut naive = vec![];
            for i in 0..2 * rows {
                let sx = if per_token { xs.data()[i] } else { xs.data()[0] };
                for j in 0..n {
                    let sw = if per_channel { ws.data()[j] } else { ws.data()[0] };
                    let mut s = 0.0;
                    for kk in 0..k {
                        s += (xq.data()[i * k + kk] * sx) * (wq.data()[kk * n + j] * sw);
                    }
                    if with_bias { s += b.data()[j]; }
                    naive.push(act.apply(s));
                }
            }
            check_rounded(&out[0], dt, &[2, rows, n], &naive).map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn operands_are_checked() {
        let cx = InferCx {
            module: &crate::module::Module::new(),
        };
        let ty = |d: DType, s: &[usize]| TensorType::fixed(d, s);
        let q = QLinear::default();
        let good = [
            ty(DType::I8, &[2, 3, 4]),
            ty(DType::F32, &[2, 3, 1]),
            ty(DType::I8, &[4, 5]),
            ty(DType::F32, &[1, 5]),
            ty(DType::F32, &[5]),
        ];
        assert_eq!(
            q.infer(&cx, &good).unwrap(),
            vec![ty(DType::F32, &[2, 3, 5])]
        );
        let bad = |i: usize, t: TensorType, want: &str| {
            let mut v = good.to_vec();
            v[i] = t;
            let e = q.infer(&cx, &v).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        };
        bad(0, ty(DType::F32, &[2, 3, 4]), "xq must be i8");
        bad(1, ty(DType::F32, &[2, 3, 4]), "per tensor or per token");
        bad(2, ty(DType::I8, &[3, 5]), "contraction dims differ");
        bad(3, ty(DType::F32, &[4, 5]), "w_scale must be");
        bad(3, ty(DType::BF16, &[1, 5]), "like x_scale");
        bad(4, ty(DType::F32, &[4]), "bias must be");
        assert!(q.infer(&cx, &good[..3]).is_err());
        let a: QLinear = serde_json::from_str(r#"{"activation":"gelu_tanh"}"#).unwrap();
        assert_eq!(a.activation, Activation::GeluTanh);
        assert!(serde_json::from_str::<QLinear>(r#"{"activation":"swish"}"#).is_err());
    }

    #[test]
    fn accumulation_is_exact_beyond_f32() {
        // 4096 products of -128·-128 = 2^26: f32 accumulation would lose the +1 below.
        let k = 4097;
        let mut x = vec![-128.0; k];
        let mut w = vec![-128.0; k];
        x[k - 1] = 1.0;
        w[k - 1] = 1.0;
        let xq = Tensor::new(DType::I8, vec![1, k], x).unwrap();
        let wq = Tensor::new(DType::I8, vec![k, 1], w).unwrap();
        let one = |s: Vec<usize>| Tensor::new(DType::F64, s, vec![1.0]).unwrap();
        let out = eval_op(
            Op::QLinear(QLinear::default()),
            &[xq, one(vec![1, 1]), wq, one(vec![1, 1])],
        )
        .unwrap();
        assert_eq!(out[0].data()[0], 4096.0 * 16384.0 + 1.0);
    }
}
