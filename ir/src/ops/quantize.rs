//! `quantize`: symmetric quantization to an integer (i8, i4) or low-precision float (f8, f4)
//! type, with one scale per tensor, token, channel or group (`techniques.md` §0.1, §0.3).
//!
//! Operand `x` (float). Results `(q, scale)`:
//! * `q` has `x`'s shape and the target `dtype`;
//! * `scale` has dtype `scale_dtype` (default f32) and **`x`'s rank**, with
//!   - `per_tensor`: every dim 1;
//!   - `per_token`: `x.shape[:-1] + [1]` (one scale per row; the last dim is reduced);
//!   - `per_channel(axis)`: every dim 1 except `axis`, which keeps its size;
//!   - `per_group(axis, size)`: `x`'s shape with dim `axis` divided by `size` (groups of `size`
//!     consecutive elements along `axis`, one scale per group and per index of the other dims);
//!     `size` must divide the (fixed) axis dim.
//!
//! With `A` the absmax of a scale's elements and `b` the target's bit width:
//! * integer, convention `paper`: `S = A/(2^(b-1)−1)`, `q = clamp(rne(x/S), −(2^(b-1)−1),
//!   2^(b-1)−1)`;
//! * integer, convention `deepspeed`: `S = A/2^(b-1)`, `q = clamp(rne(x/S), −2^(b-1),
//!   2^(b-1)−1)` (so `+A` saturates to `2^(b-1)−1`);
//! * float targets: `S = A/fmt_max` (448, 57344, 6), `q = round_fmt(clamp(x/S, ±fmt_max))` with
//!   the exact codec (round to nearest even; the convention is ignored).
//!
//! A second operand `scale` (dtype `scale_dtype`, exactly the scale's dims) gives the scales
//! instead: a static scale from calibration, or a feature-wise (FWQ) scale folded into the next
//! weight. Then `S` is that operand (each value positive and finite, or an evaluation error),
//! values beyond `S·hi` saturate, and the `scale` result is the operand.
//!
//! `S` is first rounded to `scale_dtype`, and `q` is computed with that stored `S`, so
//! `dequantize` (`q·S`) reproduces exactly what was quantized. `A == 0` gives `S = 1` (no NaN).
//! A scale that rounds to 0 or ∞ in `scale_dtype` is an evaluation error.

use super::util::{expect_arity_range, expect_float, normalize_axis, op_err};
use super::{EvalCx, InferCx, OpSpec};
use crate::dtype::DType;
use crate::error::OpError;
use crate::numerics::round_half_even;
use crate::tensor::{strides_of, Tensor};
use crate::types::{Dim, TensorType};
use serde::{Deserialize, Serialize};

/// Which elements share a scale.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Granularity {
    /// One scale for the whole tensor.
    #[default]
    PerTensor,
    /// One scale per row (all dims but the last).
    PerToken,
    /// One scale per index of `axis`.
    PerChannel {
        /// The channel axis (negative counts from the end).
        axis: i64,
    },
    /// One scale per `size` consecutive elements along `axis` (and per index of other dims).
    PerGroup {
        /// The grouped axis (negative counts from the end).
        axis: i64,
        /// Group size; must divide the axis dim.
        size: u64,
    },
}

impl Granularity {
    /// The scale's dims for a tensor of dims `x` (see the module docs).
    pub fn scale_dims(&self, op: &str, x: &[Dim]) -> Result<Vec<Dim>, OpError> {
        let r = x.len();
        let ones = vec![Dim::from(1u64); r];
        Ok(match self {
            Granularity::PerTensor => ones,
            Granularity::PerToken => {
                if r == 0 {
                    crate::bail!("{op}: per_token needs a tensor of rank >= 1, found a scalar");
                }
                let mut s = x.to_vec();
                s[r - 1] = Dim::from(1u64);
                s
            }
            Granularity::PerChannel { axis } => {
                let a = normalize_axis(op, *axis, r)?;
                let mut s = ones;
                s[a] = x[a].clone();
                s
            }
            Granularity::PerGroup { axis, size } => {
                let a = normalize_axis(op, *axis, r)?;
                let n = &x[a];
                let groups = n.div_exact(*size).map_err(|e| {
                    OpError::new(format!(
                        "{op}: per_group size {size} must divide axis {a} of size {n} (use a size that divides it or pad the tensor): {e}"
                    ))
                })?;
                let mut s = x.to_vec();
                s[a] = groups;
                s
            }
        })
    }

    /// Concrete scale shape for a concrete tensor shape.
    pub fn scale_shape(&self, op: &str, x: &[usize]) -> Result<Vec<usize>, OpError> {
        let dims: Vec<Dim> = x.iter().map(|&n| Dim::from(n)).collect();
        Ok(self
            .scale_dims(op, &dims)?
            .iter()
            .map(|d| d.fixed().unwrap_or(0) as usize)
            .collect())
    }
}

/// For each element of a tensor of `shape`, the flat index of its scale in `scale_shape`
/// (each scale dim divides the tensor dim: element index `i` maps to `i / (n / s)`).
pub fn scale_index_map(shape: &[usize], scale_shape: &[usize]) -> Vec<usize> {
    let n: usize = shape.iter().product();
    let ss = strides_of(scale_shape);
    let div: Vec<usize> = shape
        .iter()
        .zip(scale_shape)
        .map(|(&d, &s)| d.checked_div(s).unwrap_or(1).max(1))
        .collect();
    let mut idx = vec![0usize; shape.len()];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push((0..shape.len()).map(|k| idx[k] / div[k] * ss[k]).sum());
        for ax in (0..shape.len()).rev() {
            idx[ax] += 1;
            if idx[ax] < shape[ax] {
                break;
            }
            idx[ax] = 0;
        }
    }
    out
}

/// Integer rounding convention (`techniques.md` §0.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Convention {
    /// ZeroQuant: `S = absmax/(2^(b-1)-1)`, symmetric clamp.
    #[default]
    Paper,
    /// DeepSpeed kernels: `S = absmax/2^(b-1)`, clamp to `[-2^(b-1), 2^(b-1)-1]`.
    Deepspeed,
}

fn f32_dtype() -> DType {
    DType::F32
}

/// Symmetric quantization; see the module docs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quantize {
    /// Target type: i8, i4, f8e4m3fn, f8e5m2 or f4e2m1.
    pub dtype: DType,
    /// Which elements share a scale (default per_tensor).
    #[serde(default)]
    pub granularity: Granularity,
    /// Integer convention (default paper; ignored for float targets).
    #[serde(default)]
    pub convention: Convention,
    /// Dtype of the scale (default f32; must be a float type).
    #[serde(default = "f32_dtype")]
    pub scale_dtype: DType,
}

/// What `q` is for a target dtype.
enum Target {
    /// Integer with `b` bits.
    Int(u32),
    /// Float format with its max.
    Float(f64),
}

/// The kind of a quantization target, or an error naming the allowed ones.
fn target(op: &str, d: DType) -> Result<Target, OpError> {
    match d {
        DType::I8 => Ok(Target::Int(8)),
        DType::I4 => Ok(Target::Int(4)),
        DType::F8E4M3FN | DType::F8E5M2 | DType::F4E2M1 => Ok(Target::Float(
            d.float_format().map(|f| f.max).unwrap_or(f64::MAX),
        )),
        d => crate::bail!(
            "{op}: target dtype must be one of i8, i4 (symmetric integer), f8e4m3fn, f8e5m2, f4e2m1; found {d}"
        ),
    }
}

impl Quantize {
    fn check(&self) -> Result<Target, OpError> {
        if !self.scale_dtype.is_float() {
            crate::bail!(
                "quantize: scale_dtype must be a float type, found {}",
                self.scale_dtype
            );
        }
        target(Self::NAME, self.dtype)
    }
}

impl OpSpec for Quantize {
    const NAME: &'static str = "quantize";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        expect_arity_range(Self::NAME, inputs, 1, 2)?;
        let x = &inputs[0];
        expect_float(Self::NAME, "operand", x)?;
        self.check()?;
        let s = self.granularity.scale_dims(Self::NAME, &x.shape)?;
        if let Some(given) = inputs.get(1) {
            if given.dtype != self.scale_dtype || given.shape != s {
                crate::bail!(
                    "quantize: a given scale must be {} like the scale it replaces, found {given}",
                    TensorType::new(self.scale_dtype, s.clone())
                );
            }
        }
        Ok(vec![
            x.with_dtype(self.dtype),
            TensorType::new(self.scale_dtype, s),
        ])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity_range(Self::NAME, inputs, 1, 2)?;
        let x = inputs[0];
        let rule = self.rule()?;
        let sshape = self.granularity.scale_shape(Self::NAME, x.shape())?;
        let map = scale_index_map(x.shape(), &sshape);
        let scales = match inputs.get(1) {
            Some(given) => {
                if given.shape() != sshape.as_slice() {
                    crate::bail!(
                        "quantize: the given scale is {:?}, expected {sshape:?}",
                        given.shape()
                    );
                }
                check_given_scales(given.data())?;
                given.data().to_vec()
            }
            None => {
                let mut absmax = vec![0.0f64; sshape.iter().product()];
                for (&v, &s) in x.data().iter().zip(&map) {
                    absmax[s] = absmax[s].max(v.abs());
                }
                absmax
                    .iter()
                    .map(|&a| rule.scale(a))
                    .collect::<Result<Vec<f64>, OpError>>()?
            }
        };
        let q: Vec<f64> = x
            .data()
            .iter()
            .zip(&map)
            .map(|(&v, &si)| rule.quantize(v, scales[si]))
            .collect();
        Ok(vec![
            Tensor::new(self.dtype, x.shape().to_vec(), q).map_err(op_err)?,
            Tensor::new(self.scale_dtype, sshape, scales).map_err(op_err)?,
        ])
    }
}

/// Given scales must be positive and finite (a zero or NaN scale has no quotient).
pub fn check_given_scales(scales: &[f64]) -> Result<(), OpError> {
    if let Some((i, s)) = scales
        .iter()
        .enumerate()
        .find(|(_, s)| !(s.is_finite() && **s > 0.0))
    {
        crate::bail!("quantize: given scale {i} is {s}; a scale must be positive and finite");
    }
    Ok(())
}

/// The arithmetic of one [`Quantize`]: its scale from an absmax and its quantized value of an
/// element. The reference semantics and the lowering's quantize kernel both compute with it
/// (in f64), so that they agree bit for bit.
#[derive(Clone, Copy, Debug)]
pub struct QuantRule {
    target: DType,
    scale_dtype: DType,
    /// `S = A / divisor`.
    divisor: f64,
    /// The quantized values lie in `[lo, hi]`.
    lo: f64,
    hi: f64,
    /// Integer target (round half to even and clamp) or float target (clamp, then round).
    int: bool,
}

impl QuantRule {
    /// The scale of a group whose absmax is `absmax`: `A/divisor` rounded to the scale dtype
    /// (1 when `A == 0`); an error when it is 0 or not finite there.
    pub fn scale(&self, absmax: f64) -> Result<f64, OpError> {
        let s = if absmax == 0.0 {
            1.0
        } else {
            self.scale_dtype.round(absmax / self.divisor)
        };
        if s == 0.0 || !s.is_finite() {
            crate::bail!(
                "quantize: scale {} (absmax {absmax}) is not representable as a nonzero finite {}",
                absmax / self.divisor,
                self.scale_dtype
            );
        }
        Ok(s)
    }

    /// For an integer target, the range `[lo, hi]` its rounded quotients are clamped to
    /// (`None` for a float target), so kernels can apply the same rule in bulk.
    pub fn int_range(&self) -> Option<(f64, f64)> {
        self.int.then_some((self.lo, self.hi))
    }

    /// The quantized value of `x` with scale `scale` (a value of the target dtype).
    pub fn quantize(&self, x: f64, scale: f64) -> f64 {
        let r = x / scale;
        if self.int {
            round_half_even(r).clamp(self.lo, self.hi)
        } else {
            self.target.round(r.clamp(self.lo, self.hi))
        }
    }
}

impl Quantize {
    /// This op's [`QuantRule`], or an error for a target or scale dtype it does not allow.
    pub fn rule(&self) -> Result<QuantRule, OpError> {
        let t = self.check()?;
        let (divisor, lo, hi, int) = match (t, self.convention) {
            (Target::Int(b), Convention::Paper) => {
                let m = ((1u64 << (b - 1)) - 1) as f64;
                (m, -m, m, true)
            }
            (Target::Int(b), Convention::Deepspeed) => {
                let m = (1u64 << (b - 1)) as f64;
                (m, -m, m - 1.0, true)
            }
            (Target::Float(max), _) => (max, -max, max, false),
        };
        Ok(QuantRule {
            target: self.dtype,
            scale_dtype: self.scale_dtype,
            divisor,
            lo,
            hi,
            int,
        })
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // naive reference formulas index like the math
mod tests {
    use super::{Convention, Granularity, Quantize};
    use crate::dtype::DType;
    use crate::ops::testing::{eval_op, rand_tensor};
    use crate::ops::Op;
    use crate::tensor::Tensor;
    use proptest::prelude::*;

    /// Ties to even, written independently of `numerics`.
    fn rne(v: f64) -> f64 {
        if (v - v.trunc()).abs() == 0.5 {
            2.0 * (v / 2.0).round()
        } else {
            v.round()
        }
    }

    /// Naive: for x[m, n], the group id of (i, j) per granularity, then absmax per group.
    fn naive(x: &Tensor, g: &Granularity, d: DType, conv: Convention) -> (Vec<f64>, Vec<f64>) {
        let (m, n) = (x.shape()[0], x.shape()[1]);
        let gid = |i: usize, j: usize| -> usize {
            match g {
                Granularity::PerTensor => 0,
                Granularity::PerToken => i,
                Granularity::PerChannel { .. } => j,
                Granularity::PerGroup { size, .. } => i * (n / *size as usize) + j / *size as usize,
            }
        };
        let ngroups = (0..m)
            .flat_map(|i| (0..n).map(move |j| (i, j)))
            .map(|(i, j)| gid(i, j))
            .max()
            .unwrap()
            + 1;
        let mut amax = vec![0.0f64; ngroups];
        for i in 0..m {
            for j in 0..n {
                amax[gid(i, j)] = amax[gid(i, j)].max(x.at(&[i, j]).abs());
            }
        }
        let (div, lo, hi) = match (d, conv) {
            (DType::I8, Convention::Paper) => (127.0, -127.0, 127.0),
            (DType::I8, Convention::Deepspeed) => (128.0, -128.0, 127.0),
            (DType::I4, Convention::Paper) => (7.0, -7.0, 7.0),
            (DType::I4, Convention::Deepspeed) => (8.0, -8.0, 7.0),
            (DType::F8E4M3FN, _) => (448.0, -448.0, 448.0),
            (DType::F8E5M2, _) => (57344.0, -57344.0, 57344.0),
            _ => (6.0, -6.0, 6.0),
        };
        let scales: Vec<f64> = amax
            .iter()
            .map(|&a| {
                if a == 0.0 {
                    1.0
                } else {
                    (a / div) as f32 as f64
                }
            })
            .collect();
        let mut q = vec![];
        for i in 0..m {
            for j in 0..n {
                let r = x.at(&[i, j]) / scales[gid(i, j)];
                q.push(if d.is_int() {
                    rne(r).clamp(lo, hi)
                } else {
                    d.round(r.clamp(lo, hi))
                });
            }
        }
        (q, scales)
    }

    fn granularity() -> impl Strategy<Value = Granularity> {
        prop_oneof![
            Just(Granularity::PerTensor),
            Just(Granularity::PerToken),
            Just(Granularity::PerChannel { axis: -1 }),
            (1u64..3).prop_map(|s| Granularity::PerGroup { axis: 1, size: s }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn matches_naive_absmax_quantization(m in 1usize..4, half_n in 1usize..4,
                                             g in granularity(),
                                             d in prop_oneof![Just(DType::I8), Just(DType::I4),
                                                 Just(DType::F8E4M3FN), Just(DType::F8E5M2),
                                                 Just(DType::F4E2M1)],
                                             ds in proptest::bool::ANY,
                                             zero_row in proptest::bool::ANY,
                                             seed in 0u64..1000) {
            let n = 2 * half_n;
            let mut x = rand_tensor(DType::F32, vec![m, n], seed);
            if zero_row {
                let mut v = x.data().to_vec();
                v[..n].iter_mut().for_each(|e| *e = 0.0);
                x = Tensor::new(DType::F32, vec![m, n], v).unwrap();
            }
            let conv = if ds { Convention::Deepspeed } else { Convention::Paper };
            let op = Quantize {
                dtype: d, granularity: g.clone(), convention: conv, scale_dtype: DType::F32,
            };
            let out = eval_op(Op::Quantize(op), std::slice::from_ref(&x)).unwrap();
            let (q, s) = naive(&x, &g, d, conv);
            prop_assert_eq!(out[0].data(), &q[..]);
            prop_assert_eq!(out[1].data(), &s[..]);
            prop_assert!(out[0].data().iter().chain(out[1].data()).all(|v| v.is_finite()));
        }
    }

    #[test]
    fn scale_shapes_and_conventions() {
        let x = Tensor::new(
            DType::F32,
            vec![2, 4],
            vec![1.0, -0.5, 0.25, 0.0, 0.0, 0.0, 0.0, 0.0],
        )
        .unwrap();
        let op = Quantize {
            dtype: DType::I8,
            granularity: Granularity::PerToken,
            convention: Convention::Deepspeed,
            scale_dtype: DType::F32,
        };
        let out = eval_op(Op::Quantize(op), std::slice::from_ref(&x)).unwrap();
        assert_eq!(out[1].shape(), &[2, 1]);
        // +absmax maps to 128 and saturates to 127; the all-zero row gets scale 1.
        assert_eq!(out[1].data(), &[1.0 / 128.0, 1.0]);
        assert_eq!(&out[0].data()[..4], &[127.0, -64.0, 32.0, 0.0]);
        let op = Quantize {
            dtype: DType::I8,
            granularity: Granularity::PerGroup { axis: 1, size: 2 },
            convention: Convention::Paper,
            scale_dtype: DType::F16,
        };
        let out = eval_op(Op::Quantize(op), &[x]).unwrap();
        assert_eq!(out[1].shape(), &[2, 2]);
        assert_eq!(out[0].data()[0], 127.0);
    }

    #[test]
    fn a_given_scale_replaces_the_absmax_and_saturates() {
        // Feature-wise scales [1, 3] for x [2, 3]: column 0 at 0.5, 1 at 0.01 (saturates), 2 at 1.
        let x = Tensor::new(
            DType::F32,
            vec![2, 3],
            vec![1.0, 2.0, -3.0, 0.75, -1.0, 0.5],
        )
        .unwrap();
        let s = Tensor::new(DType::F32, vec![1, 3], vec![0.5, 0.01, 1.0]).unwrap();
        let op = Op::Quantize(Quantize {
            dtype: DType::I8,
            granularity: Granularity::PerChannel { axis: -1 },
            convention: Convention::Paper,
            scale_dtype: DType::F32,
        });
        let out = eval_op(op.clone(), &[x.clone(), s.clone()]).unwrap();
        // 0.75/0.5 = 1.5 → 2 (ties to even), 0.5/1 = 0.5 → 0, 2/0.01 → 127 (saturated), −1/0.01 → −100.
        assert_eq!(out[0].data(), &[2.0, 127.0, -3.0, 2.0, -100.0, 0.0]);
        assert_eq!(out[1], s);
        let bad = Tensor::new(DType::F32, vec![1, 3], vec![0.5, 0.0, 1.0]).unwrap();
        let e = eval_op(op.clone(), &[x.clone(), bad])
            .unwrap_err()
            .to_string();
        assert!(e.contains("given scale 1 is 0"), "{e}");
        let wrong = Tensor::new(DType::F32, vec![2, 1], vec![1.0, 1.0]).unwrap();
        let e = eval_op(op, &[x, wrong]).unwrap_err().to_string();
        assert!(e.contains("a given scale must be f32[1,3]"), "{e}");
    }

    #[test]
    fn bad_group_size_and_targets_are_errors() {
        let x = rand_tensor(DType::F32, vec![2, 6], 0);
        let op = Quantize {
            dtype: DType::I8,
            granularity: Granularity::PerGroup { axis: -1, size: 4 },
            convention: Convention::Paper,
            scale_dtype: DType::F32,
        };
        let e = eval_op(Op::Quantize(op), std::slice::from_ref(&x))
            .unwrap_err()
            .to_string();
        assert!(e.contains("size 4 must divide axis 1 of size 6"), "{e}");
        let op = Quantize {
            dtype: DType::U8,
            granularity: Granularity::PerTensor,
            convention: Convention::Paper,
            scale_dtype: DType::F32,
        };
        let e = eval_op(Op::Quantize(op), &[x]).unwrap_err().to_string();
        assert!(e.contains("found u8"), "{e}");
        let g: Result<Granularity, _> = serde_json::from_str(r#"{"kind":"per_group","axis":0}"#);
        assert!(g.is_err());
        let g: Granularity = serde_json::from_str(r#"{"kind":"per_channel","axis":-1}"#).unwrap();
        assert_eq!(g, Granularity::PerChannel { axis: -1 });
    }
}
