//! Execution of one instruction: each op on burn's tensor operations (rank-generic primitives),
//! on a native CPU kernel, or through the reference semantics on the host.

mod indexing;
mod kernel;

use super::{download_f32, float_dtype, upload, upload_f32, Instr, Lowering, Program, Value};
use crate::kernels::packed::is_packed;
use crate::kernels::registry::KernelRun;
use burn::tensor::backend::Backend;
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions, FloatTensor};
use burn::tensor::{BoolDType, Element, IntDType, Scalar, Shape, Slice, TensorMetadata};
use fuselage_ir::ops::attention::AttnMask;
use fuselage_ir::ops::compare::Predicate;
use fuselage_ir::ops::cumulative::CumulativeKind;
use fuselage_ir::ops::gelu::GeluApproximate;
use fuselage_ir::ops::logical::LogicalKind;
use fuselage_ir::ops::math::MathFn;
use fuselage_ir::ops::pool::PoolKind;
use fuselage_ir::ops::reduce::ReduceKind;
use fuselage_ir::ops::rope::RopeStyle;
use fuselage_ir::ops::util::{broadcast_shapes, normalize_axis};
use fuselage_ir::ops::EvalCx;
use fuselage_ir::{DType, Dim, Op, Tensor, TensorType};
use std::collections::HashMap;

type F<B> = FloatTensor<B>;
type R<T> = Result<T, String>;

fn shape_of<B: Backend>(t: &F<B>) -> Vec<usize> {
    t.shape().to_vec()
}

fn sh(v: &[usize]) -> Shape {
    Shape::from(v.to_vec())
}

fn bool_dtype<B: Backend>() -> BoolDType {
    BoolDType::from(<B::BoolElem as Element>::dtype())
}

fn int_dtype<B: Backend>() -> IntDType {
    IntDType::from(<B::IntElem as Element>::dtype())
}

/// Broadcast `t` to `target` (numpy rules; `t`'s rank ≤ target rank).
fn bcast<B: Backend>(t: F<B>, target: &[usize]) -> F<B> {
    let s = shape_of::<B>(&t);
    if s == target {
        return t;
    }
    let t = if s.len() < target.len() {
        let mut ns = vec![1; target.len() - s.len()];
        ns.extend_from_slice(&s);
        B::float_reshape(t, sh(&ns))
    } else {
        t
    };
    B::float_expand(t, sh(target))
}

fn bshape(op: &str, a: &[usize], b: &[usize]) -> R<Vec<usize>> {
    broadcast_shapes(op, a, b).map_err(|e| e.0)
}

fn binary<B: Backend>(op: &str, a: F<B>, b: F<B>, f: impl Fn(F<B>, F<B>) -> F<B>) -> R<F<B>> {
    let s = bshape(op, &shape_of::<B>(&a), &shape_of::<B>(&b))?;
    Ok(f(bcast::<B>(a, &s), bcast::<B>(b, &s)))
}

fn bool_to_f<B: Backend>(b: burn::tensor::ops::BoolTensor<B>) -> F<B> {
    B::bool_into_float(b, float_dtype::<B>())
}

/// `t != 0` as a backend bool tensor.
fn truthy<B: Backend>(t: F<B>) -> burn::tensor::ops::BoolTensor<B> {
    B::float_not_equal_elem(t, Scalar::Float(0.0), bool_dtype::<B>())
}

fn scalar<B: Backend>(x: f64, shape: &[usize], device: &B::Device) -> F<B> {
    B::float_full(sh(shape), Scalar::Float(x), device, float_dtype::<B>())
}

/// Sum over `dim` keeping it.
fn sum_dim<B: Backend>(t: F<B>, dim: usize) -> F<B> {
    B::float_sum_dim(t, dim)
}

/// Normalize over the last dim of a `[rows, n]` tensor: `(x - mean) / sqrt(var + eps)`.
fn standardize<B: Backend>(x: F<B>, n: usize, eps: f64) -> F<B> {
    let mean = B::float_div_scalar(sum_dim::<B>(x.clone(), 1), Scalar::Float(n as f64));
    let s = shape_of::<B>(&x);
    let c = B::float_sub(x, B::float_expand(mean, sh(&s)));
    let var = B::float_div_scalar(
        sum_dim::<B>(B::float_mul(c.clone(), c.clone()), 1),
        Scalar::Float(n as f64),
    );
    let inv = B::float_recip(B::float_sqrt(B::float_add_scalar(var, Scalar::Float(eps))));
    B::float_mul(c, B::float_expand(inv, sh(&s)))
}

fn resolve(ty: &TensorType, b: &HashMap<String, u64>) -> R<Vec<usize>> {
    ty.resolve(b)
        .map_err(|e| format!("cannot resolve the shape {ty}: {e}"))
}

/// Softmax over `dim` with the max subtracted; rows whose every entry is `-inf` give zeros.
fn softmax<B: Backend>(x: F<B>, dim: usize) -> F<B> {
    let s = shape_of::<B>(&x);
    let m = B::float_max_dim(x.clone(), dim);
    let dead = B::float_equal_elem(
        m.clone(),
        Scalar::Float(f64::NEG_INFINITY),
        bool_dtype::<B>(),
    );
    let m = B::float_mask_fill(m, dead, Scalar::Float(0.0));
    let e = B::float_exp(B::float_sub(x, B::float_expand(m, sh(&s))));
    let z = sum_dim::<B>(e.clone(), dim);
    let zero = B::float_equal_elem(z.clone(), Scalar::Float(0.0), bool_dtype::<B>());
    let z = B::float_mask_fill(z, zero, Scalar::Float(1.0));
    B::float_div(e, B::float_expand(z, sh(&s)))
}

/// Pad the last two dims of an NCHW tensor with `value`: (top, left, bottom, right).
fn pad2d<B: Backend>(x: F<B>, p: [usize; 4], value: f64, device: &B::Device) -> F<B> {
    if p == [0; 4] {
        return x;
    }
    let s = shape_of::<B>(&x);
    let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
    let mut rows = vec![];
    if p[0] > 0 {
        rows.push(scalar::<B>(value, &[n, c, p[0], w], device));
    }
    rows.push(x);
    if p[2] > 0 {
        rows.push(scalar::<B>(value, &[n, c, p[2], w], device));
    }
    let x = if rows.len() > 1 {
        B::float_cat(rows, 2)
    } else {
        rows.pop().expect("one")
    };
    let hh = h + p[0] + p[2];
    let mut cols = vec![];
    if p[1] > 0 {
        cols.push(scalar::<B>(value, &[n, c, hh, p[1]], device));
    }
    cols.push(x);
    if p[3] > 0 {
        cols.push(scalar::<B>(value, &[n, c, hh, p[3]], device));
    }
    if cols.len() > 1 {
        B::float_cat(cols, 3)
    } else {
        cols.pop().expect("one")
    }
}

fn matmul<B: Backend>(a: F<B>, b: F<B>) -> R<F<B>> {
    let (sa, sb) = (shape_of::<B>(&a), shape_of::<B>(&b));
    let (ra, rb) = (sa.len(), sb.len());
    if ra < 2 || rb < 2 {
        return Err(format!("matmul needs rank >= 2, found {sa:?} and {sb:?}"));
    }
    let (m, k, n) = (sa[ra - 2], sa[ra - 1], sb[rb - 1]);
    if sb[rb - 2] != k {
        return Err(format!("matmul contraction dims differ: {sa:?} · {sb:?}"));
    }
    let batch = bshape("matmul", &sa[..ra - 2], &sb[..rb - 2])?;
    let nb: usize = batch.iter().product();
    let mut out_shape = batch.clone();
    out_shape.extend([m, n]);
    if rb == 2 {
        // Fold the batch of `a` into its rows.
        let a = bcast::<B>(a, &[batch.clone(), vec![m, k]].concat());
        let a = B::float_reshape(a, sh(&[nb * m, k]));
        return Ok(B::float_reshape(B::float_matmul(a, b), sh(&out_shape)));
    }
    let a = B::float_reshape(
        bcast::<B>(a, &[batch.clone(), vec![m, k]].concat()),
        sh(&[nb, m, k]),
    );
    let b = B::float_reshape(
        bcast::<B>(b, &[batch.clone(), vec![k, n]].concat()),
        sh(&[nb, k, n]),
    );
    Ok(B::float_reshape(B::float_matmul(a, b), sh(&out_shape)))
}

impl<B: Backend> Program<B> {
    /// Execute one instruction on register values: a typed kernel takes packed operands as
    /// they are; the host path reads them exactly; every other path reads them decoded to f32
    /// (counted in `widened`), and results of a packed dtype are packed.
    pub(crate) fn exec_values(
        &self,
        ins: &Instr<B>,
        args: Vec<Value<B>>,
        bindings: &HashMap<String, u64>,
        widened: &mut u64,
    ) -> R<Vec<Value<B>>> {
        match ins.how {
            Lowering::Trivial => return Ok(args),
            Lowering::Host => return self.host_values(ins, args, bindings, widened),
            _ => {}
        }
        match &ins.op {
            Op::Call(_) => return self.call_values(ins, args),
            Op::For(f) => return self.for_values(ins, f, args),
            _ => {}
        }
        // An exact-held operand that f32 cannot hold (an integer beyond 2^24, an f64 that is
        // no f32): the reference semantics, exact.
        if !args.iter().all(Value::is_f32_exact) {
            return self.host_values(ins, args, bindings, widened);
        }
        if let (Lowering::Kernel, Some(KernelRun::Typed(run))) =
            (ins.how, ins.kernel.map(|k| k.run))
        {
            return self.typed_kernel(ins, run, args, bindings);
        }
        let floats = args
            .into_iter()
            .map(|v| v.into_float(&self.device, widened))
            .collect();
        self.exec(ins, floats, bindings)?
            .into_iter()
            .zip(&ins.result_types)
            .map(|(t, ty)| Value::from_float(t, ty.dtype))
            .collect()
    }

    /// The reference semantics on the host, on register values (packed ones read exactly,
    /// counted as widened: the host decodes them).
    fn host_values(
        &self,
        ins: &Instr<B>,
        args: Vec<Value<B>>,
        bindings: &HashMap<String, u64>,
        widened: &mut u64,
    ) -> R<Vec<Value<B>>> {
        if ins.prepared.is_some() {
            return Err(format!(
                "an operand was prepared for {} at lowering, the reference semantics cannot run \
                 without it (lower with prepare_constants off)",
                ins.kernel.map_or("a kernel", |k| k.name)
            ));
        }
        let host: Vec<Tensor> = args
            .into_iter()
            .zip(&ins.operand_types)
            .map(|(v, ty)| {
                if matches!(v, Value::Packed(_)) {
                    *widened += 1;
                }
                v.download(ty.dtype)
            })
            .collect::<R<_>>()?;
        let refs: Vec<&Tensor> = host.iter().collect();
        let cx = EvalCx {
            module: &self.module,
            bindings,
            result_types: &ins.result_types,
        };
        let out = ins.op.eval(&cx, &refs).map_err(|e| e.0)?;
        out.iter().map(|t| Value::upload(t, &self.device)).collect()
    }

    /// Execute one instruction on f32 device tensors.
    pub(crate) fn exec(
        &self,
        ins: &Instr<B>,
        args: Vec<F<B>>,
        bindings: &HashMap<String, u64>,
    ) -> R<Vec<F<B>>> {
        let out = match ins.how {
            Lowering::Host => self.host(ins, args, bindings)?,
            Lowering::Kernel => self.kernel(ins, args)?,
            Lowering::Trivial => args,
            Lowering::Native => self.native(ins, args, bindings)?,
            Lowering::Folded => {
                return Err("internal: a folded instruction reached execution".into())
            }
        };
        // Bring results back onto their dtypes.
        // Kernel results are rounded by `kernel()` itself, on the host data.
        let exact = super::classify::selects_operand_values(&ins.op)
            || ins.how == Lowering::Host
            || ins.how == Lowering::Trivial
            || ins.how == Lowering::Kernel;
        if exact {
            return Ok(out);
        }
        // Packed dtypes are rounded as they are packed (`Value::from_float`).
        out.into_iter()
            .zip(&ins.result_types)
            .map(|(t, ty)| {
                if is_packed(ty.dtype) {
                    Ok(t)
                } else {
                    self.round_to(t, ty.dtype)
                }
            })
            .collect()
    }

    /// Round an f32 value exactly onto `dtype`.
    fn round_to(&self, t: F<B>, dtype: DType) -> R<F<B>> {
        match dtype {
            DType::F32 | DType::F64 | DType::Bool => Ok(t),
            DType::I64
            | DType::I32
            | DType::I16
            | DType::I8
            | DType::U64
            | DType::U32
            | DType::U16
            | DType::U8 => {
                let (lo, hi) = dtype.int_range().expect("int dtype has a range");
                let r = B::float_round(t);
                Ok(B::float_clamp(r, Scalar::Float(lo), Scalar::Float(hi)))
            }
            // f16, bf16, f8, f4, i4: exact codecs on the host; a CPU tensor that owns its
            // buffer is rounded where it is.
            _ => {
                let t = match super::host_view::round_owned_cpu::<B>(t, dtype)? {
                    Ok(done) => return Ok(done),
                    Err(t) => t,
                };
                let (mut v, shape) = download_f32::<B>(t)?;
                crate::kernels::round::round_in_place(dtype, &mut v);
                Ok(upload_f32::<B>(v, &shape, &self.device))
            }
        }
    }

    /// The reference semantics on the host.
    fn host(
        &self,
        ins: &Instr<B>,
        args: Vec<F<B>>,
        bindings: &HashMap<String, u64>,
    ) -> R<Vec<F<B>>> {
        let mut widened = 0;
        let args = args.into_iter().map(Value::Float).collect();
        Ok(self
            .host_values(ins, args, bindings, &mut widened)?
            .into_iter()
            .map(|v| v.into_float(&self.device, &mut widened))
            .collect())
    }

    fn native(
        &self,
        ins: &Instr<B>,
        mut a: Vec<F<B>>,
        bind: &HashMap<String, u64>,
    ) -> R<Vec<F<B>>> {
        let dev = &self.device;
        let name = ins.op.name();
        let rank0 = a.first().map(|t| shape_of::<B>(t).len()).unwrap_or(0);
        let axis = |ax: i64, rank: usize| normalize_axis(name, ax, rank).map_err(|e| e.0);
        let one = |v: F<B>| Ok(vec![v]);
        macro_rules! un {
            ($f:expr) => {{
                let x = a.pop().ok_or("missing operand")?;
                one($f(x))
            }};
        }
        macro_rules! bin {
            ($f:expr) => {{
                let y = a.pop().ok_or("missing operand")?;
                let x = a.pop().ok_or("missing operand")?;
                one(binary::<B>(name, x, y, $f)?)
            }};
        }
        match &ins.op {
            Op::Add(_) => bin!(B::float_add),
            Op::Sub(_) => bin!(B::float_sub),
            Op::Mul(_) => bin!(B::float_mul),
            // Integer quotients truncate toward zero (then `round_to` saturates); exact for
            // operands representable in f32 (|x| <= 2^24).
            Op::Div(_) if ins.result_types.first().is_some_and(|t| t.dtype.is_int()) => {
                bin!(|x, y| B::float_trunc(B::float_div(x, y)))
            }
            Op::Div(_) => bin!(B::float_div),
            Op::Pow(_) => bin!(B::float_powf),
            Op::Maximum(_) => bin!(|x: F<B>, y: F<B>| {
                let m = B::float_greater(x.clone(), y.clone(), bool_dtype::<B>());
                B::float_mask_where(y, m, x)
            }),
            Op::Minimum(_) => bin!(|x: F<B>, y: F<B>| {
                let m = B::float_lower(x.clone(), y.clone(), bool_dtype::<B>());
                B::float_mask_where(y, m, x)
            }),
            Op::Neg(_) => un!(B::float_neg),
            Op::Abs(_) => un!(B::float_abs),
            Op::Exp(_) => un!(B::float_exp),
            Op::Log(_) => un!(B::float_log),
            Op::Sqrt(_) => un!(B::float_sqrt),
            Op::Rsqrt(_) => un!(|x| B::float_recip(B::float_sqrt(x))),
            Op::Tanh(_) => un!(B::float_tanh),
            Op::Erf(_) => un!(B::float_erf),
            Op::Sin(_) => un!(B::float_sin),
            Op::Cos(_) => un!(B::float_cos),
            Op::Math(m) => match m.func {
                MathFn::Floor => un!(B::float_floor),
                MathFn::Ceil => un!(B::float_ceil),
                // Ties to even, as the reference (burn's documented contract).
                MathFn::Round => un!(B::float_round),
                // burn's sign maps NaN to -1: keep NaN.
                MathFn::Sign => un!(|x: F<B>| {
                    let nan = B::float_is_nan(x.clone(), bool_dtype::<B>());
                    B::float_mask_where(B::float_sign(x.clone()), nan, x)
                }),
                MathFn::Tan => un!(B::float_tan),
                MathFn::Asin => un!(B::float_asin),
                MathFn::Acos => un!(B::float_acos),
                MathFn::Atan => un!(B::float_atan),
                MathFn::Sinh => un!(B::float_sinh),
                MathFn::Cosh => un!(B::float_cosh),
                MathFn::Asinh => un!(B::float_asinh),
                MathFn::Acosh => un!(B::float_acosh),
                MathFn::Atanh => un!(B::float_atanh),
            },
            Op::Relu(_) => un!(|x| B::float_clamp_min(x, Scalar::Float(0.0))),
            Op::Sigmoid(_) => un!(B::sigmoid),
            Op::Silu(_) => un!(|x: F<B>| B::float_mul(x.clone(), B::sigmoid(x))),
            Op::Gelu(g) => match g.approximate {
                GeluApproximate::None => un!(|x: F<B>| {
                    let e = B::float_erf(B::float_mul_scalar(
                        x.clone(),
                        Scalar::Float(std::f64::consts::FRAC_1_SQRT_2),
                    ));
                    B::float_mul(
                        B::float_mul_scalar(x, Scalar::Float(0.5)),
                        B::float_add_scalar(e, Scalar::Float(1.0)),
                    )
                }),
                GeluApproximate::Tanh => un!(|x: F<B>| {
                    let c = (2.0 / std::f64::consts::PI).sqrt();
                    let x3 = B::float_mul(B::float_mul(x.clone(), x.clone()), x.clone());
                    let inner = B::float_mul_scalar(
                        B::float_add(x.clone(), B::float_mul_scalar(x3, Scalar::Float(0.044715))),
                        Scalar::Float(c),
                    );
                    let t = B::float_add_scalar(B::float_tanh(inner), Scalar::Float(1.0));
                    B::float_mul(B::float_mul_scalar(x, Scalar::Float(0.5)), t)
                }),
            },
            Op::Clamp(c) => {
                let mut x = a.pop().ok_or("missing operand")?;
                if let Some(lo) = c.min {
                    x = B::float_clamp_min(x, Scalar::Float(lo));
                }
                if let Some(hi) = c.max {
                    x = B::float_clamp_max(x, Scalar::Float(hi));
                }
                one(x)
            }
            Op::Compare(c) => {
                let bd = bool_dtype::<B>();
                let p = c.predicate;
                bin!(|x: F<B>, y: F<B>| bool_to_f::<B>(match p {
                    Predicate::Eq => B::float_equal(x, y, bd),
                    Predicate::Ne => B::float_not_equal(x, y, bd),
                    Predicate::Lt => B::float_lower(x, y, bd),
                    Predicate::Le => B::float_lower_equal(x, y, bd),
                    Predicate::Gt => B::float_greater(x, y, bd),
                    Predicate::Ge => B::float_greater_equal(x, y, bd),
                }))
            }
            Op::Logical(l) => {
                let k = l.kind;
                bin!(|x: F<B>, y: F<B>| match k {
                    LogicalKind::And => B::float_mul(x, y),
                    LogicalKind::Or => B::float_clamp_max(B::float_add(x, y), Scalar::Float(1.0)),
                    LogicalKind::Xor => {
                        bool_to_f::<B>(B::float_not_equal(x, y, bool_dtype::<B>()))
                    }
                })
            }
            Op::Not(_) => un!(|x| B::float_add_scalar(B::float_neg(x), Scalar::Float(1.0))),
            Op::Where(_) => {
                let (c, x, y) = (a.remove(0), a.remove(0), a.remove(0));
                let s = bshape(name, &shape_of::<B>(&c), &shape_of::<B>(&x))?;
                let s = bshape(name, &s, &shape_of::<B>(&y))?;
                let m = truthy::<B>(bcast::<B>(c, &s));
                one(B::float_mask_where(bcast::<B>(y, &s), m, bcast::<B>(x, &s)))
            }
            Op::Cast(c) => {
                let x = a.pop().ok_or("missing operand")?;
                let from = ins.operand_types[0].dtype;
                let to = c.dtype;
                if to == DType::Bool {
                    return one(bool_to_f::<B>(truthy::<B>(x)));
                }
                if to.is_int() && from.is_float() {
                    // Truncation toward zero, then saturation (round_to clamps).
                    return one(B::float_trunc(x));
                }
                one(x)
            }
            Op::Iota(io) => {
                let shape = resolve(&ins.result_types[0], bind)?;
                let ax = axis(io.axis, shape.len())?;
                let t = Tensor::from_fn(io.dtype, shape, |i| i[ax] as f64);
                one(upload::<B>(&t, dev))
            }
            Op::Softmax(s) => {
                let x = a.pop().ok_or("missing operand")?;
                let d = axis(s.axis, rank0)?;
                one(softmax::<B>(x, d))
            }
            Op::Reduce(r) => {
                let mut x = a.pop().ok_or("missing operand")?;
                let mut axes: Vec<usize> =
                    r.axes.iter().map(|&ax| axis(ax, rank0)).collect::<R<_>>()?;
                axes.sort_unstable();
                axes.dedup();
                let count: usize = axes.iter().map(|&d| shape_of::<B>(&x)[d]).product();
                let target = resolve(&ins.result_types[0], bind)?;
                if count == 0 {
                    // ONNX's empty-set results; `round_to` brings ±inf onto integer ranges.
                    return one(scalar::<B>(r.kind.empty_value(), &target, dev));
                }
                // burn's max/min_dim skip NaN (they go through argmax): propagate it here.
                let float = ins.operand_types[0].dtype.is_float();
                let mut nan = (float && matches!(r.kind, ReduceKind::Max | ReduceKind::Min))
                    .then(|| bool_to_f::<B>(B::float_is_nan(x.clone(), bool_dtype::<B>())));
                for &d in &axes {
                    x = match r.kind {
                        ReduceKind::Sum | ReduceKind::Mean => B::float_sum_dim(x, d),
                        ReduceKind::Max => B::float_max_dim(x, d),
                        ReduceKind::Min => B::float_min_dim(x, d),
                        ReduceKind::Prod => return Err("reduce prod runs on the host".into()),
                    };
                    nan = nan.map(|n| B::float_sum_dim(n, d));
                }
                if let Some(n) = nan {
                    let any = B::float_greater_elem(n, Scalar::Float(0.0), bool_dtype::<B>());
                    x = B::float_mask_fill(x, any, Scalar::Float(f64::NAN));
                }
                if r.kind == ReduceKind::Mean {
                    x = B::float_div_scalar(x, Scalar::Float(count as f64));
                }
                one(B::float_reshape(x, sh(&target)))
            }
            Op::ArgMax(am) => {
                let x = a.pop().ok_or("missing operand")?;
                let target = resolve(&ins.result_types[0], bind)?;
                let float = ins.operand_types[0].dtype.is_float();
                let (d, last) = (axis(am.axis, rank0)?, am.select_last_index);
                one(arg_extreme::<B>(
                    name, x, d, false, last, float, &target, dev,
                )?)
            }
            Op::ArgMin(am) => {
                let x = a.pop().ok_or("missing operand")?;
                let target = resolve(&ins.result_types[0], bind)?;
                let float = ins.operand_types[0].dtype.is_float();
                let (d, last) = (axis(am.axis, rank0)?, am.select_last_index);
                one(arg_extreme::<B>(
                    name, x, d, true, last, float, &target, dev,
                )?)
            }
            Op::Cumulative(c) => {
                let x = a.pop().ok_or("missing operand")?;
                let s = shape_of::<B>(&x);
                let d = axis(c.axis, s.len())?;
                let n = s[d];
                if s.contains(&0) {
                    return one(x);
                }
                let x = if c.reverse { B::float_flip(x, &[d]) } else { x };
                let (mut y, identity) = match c.kind {
                    CumulativeKind::Sum => (B::float_cumsum(x, d), 0.0),
                    CumulativeKind::Prod => (B::float_cumprod(x, d), 1.0),
                };
                if c.exclusive {
                    // Shift by one along the axis, the identity first (exact: no subtraction).
                    let mut s1 = s.clone();
                    s1[d] = 1;
                    let first = scalar::<B>(identity, &s1, dev);
                    y = if n == 1 {
                        first
                    } else {
                        let head = take_range::<B>(y, d, 0, n as i64 - 1, 1, dev)?;
                        B::float_cat(vec![first, head], d)
                    };
                }
                one(if c.reverse { B::float_flip(y, &[d]) } else { y })
            }
            Op::Transpose(t) => {
                let x = a.pop().ok_or("missing operand")?;
                one(B::float_permute(x, &t.perm))
            }
            Op::Reshape(r) => {
                let x = a.pop().ok_or("missing operand")?;
                let n = shape_of::<B>(&x).iter().product::<usize>();
                let target = match ins.result_types[0].resolve(bind) {
                    Ok(t) => t,
                    Err(_) => reshape_target(&r.shape, n, bind)?,
                };
                one(B::float_reshape(x, sh(&target)))
            }
            Op::BroadcastTo(_) => {
                let x = a.pop().ok_or("missing operand")?;
                let target = resolve(&ins.result_types[0], bind)?;
                one(bcast::<B>(x, &target))
            }
            Op::Concat(c) => {
                let d = axis(c.axis, rank0)?;
                one(B::float_cat(a, d))
            }
            Op::Slice(s) => {
                let x = a.pop().ok_or("missing operand")?;
                let shape = shape_of::<B>(&x);
                let d = axis(s.axis, shape.len())?;
                let (first, count) = s.range(shape[d] as u64, bind).map_err(|e| e.0)?;
                one(take_range::<B>(x, d, first, count as i64, s.step, dev)?)
            }
            Op::Split(s) => {
                let x = a.pop().ok_or("missing operand")?;
                let d = axis(s.axis, rank0)?;
                let mut out = vec![];
                let mut at = 0i64;
                for n in &s.sizes {
                    let n = n.resolve(bind).map_err(|e| format!("split: {e}"))? as i64;
                    out.push(take_range::<B>(x.clone(), d, at, n, 1, dev)?);
                    at += n;
                }
                Ok(out)
            }
            Op::Gather(g) => {
                let idx = a.pop().ok_or("missing operand")?;
                let data = a.pop().ok_or("missing operand")?;
                let ds = shape_of::<B>(&data);
                let d = axis(g.axis, ds.len())?;
                let n = ds[d];
                let (iv, is) = download_f32::<B>(idx)?;
                let mut fixed = Vec::with_capacity(iv.len());
                for &i in &iv {
                    let j = if i < 0.0 { i + n as f32 } else { i };
                    if j < 0.0 || j >= n as f32 {
                        return Err(format!(
                            "gather index {i} is out of range for axis {d} of size {n}"
                        ));
                    }
                    fixed.push(j as i64);
                }
                let count = fixed.len();
                let it = B::int_from_data(
                    burn::tensor::TensorData::new(fixed, vec![count])
                        .convert_dtype(<B::IntElem as Element>::dtype()),
                    dev,
                );
                let sel = B::float_select(data, d, it);
                let mut out = ds[..d].to_vec();
                out.extend_from_slice(&is);
                out.extend_from_slice(&ds[d + 1..]);
                one(B::float_reshape(sel, sh(&out)))
            }
            Op::GatherElements(g) => {
                let idx = a.pop().ok_or("missing operand")?;
                let data = a.pop().ok_or("missing operand")?;
                one(indexing::gather_elements::<B>(g, data, idx, dev)?)
            }
            Op::GatherNd(g) => {
                let idx = a.pop().ok_or("missing operand")?;
                let data = a.pop().ok_or("missing operand")?;
                one(indexing::gather_nd::<B>(g, data, idx, dev)?)
            }
            Op::ScatterElements(s) => {
                let upd = a.pop().ok_or("missing operand")?;
                let idx = a.pop().ok_or("missing operand")?;
                let data = a.pop().ok_or("missing operand")?;
                one(indexing::scatter_elements::<B>(s, data, idx, upd, dev)?)
            }
            Op::ScatterNd(s) => {
                let upd = a.pop().ok_or("missing operand")?;
                let idx = a.pop().ok_or("missing operand")?;
                let data = a.pop().ok_or("missing operand")?;
                one(indexing::scatter_nd::<B>(s, data, idx, upd, dev)?)
            }
            Op::Pad(p) => {
                let x = a.pop().ok_or("missing operand")?;
                let dtype = ins.result_types.first().ok_or("pad has no result")?.dtype;
                one(indexing::pad::<B>(p, x, dtype, bind, dev)?)
            }
            Op::Trilu(t) => {
                let x = a.pop().ok_or("missing operand")?;
                one(indexing::trilu::<B>(t, x, dev)?)
            }
            Op::Rope(r) => {
                let pos = a.pop().ok_or("missing operand")?;
                let x = a.pop().ok_or("missing operand")?;
                one(self.rope(r, x, pos)?)
            }
            Op::Attention(at) => {
                let q = a.remove(0);
                let k = a.remove(0);
                let v = a.remove(0);
                one(attention::<B>(
                    q,
                    k,
                    v,
                    a,
                    at.mask == AttnMask::Causal,
                    at.scale,
                    dev,
                )?)
            }
            Op::LayerNorm(ln) => {
                let x = a.remove(0);
                let s = shape_of::<B>(&x);
                let d = axis(ln.axis, s.len())?;
                let n: usize = s[d..].iter().product();
                let rows: usize = s[..d].iter().product();
                let mut y = standardize::<B>(B::float_reshape(x, sh(&[rows, n])), n, ln.eps);
                if !a.is_empty() {
                    let sc = B::float_reshape(a.remove(0), sh(&[1, n]));
                    y = B::float_mul(y, B::float_expand(sc, sh(&[rows, n])));
                }
                if !a.is_empty() {
                    let b = B::float_reshape(a.remove(0), sh(&[1, n]));
                    y = B::float_add(y, B::float_expand(b, sh(&[rows, n])));
                }
                one(B::float_reshape(y, sh(&s)))
            }
            Op::RmsNorm(rn) => {
                let x = a.remove(0);
                let s = shape_of::<B>(&x);
                let d = axis(rn.axis, s.len())?;
                let n: usize = s[d..].iter().product();
                let rows: usize = s[..d].iter().product();
                let x = B::float_reshape(x, sh(&[rows, n]));
                let ms = B::float_div_scalar(
                    sum_dim::<B>(B::float_mul(x.clone(), x.clone()), 1),
                    Scalar::Float(n as f64),
                );
                let inv = B::float_recip(B::float_sqrt(B::float_add_scalar(
                    ms,
                    Scalar::Float(rn.eps),
                )));
                let mut y = B::float_mul(x, B::float_expand(inv, sh(&[rows, n])));
                if !a.is_empty() {
                    let sc = B::float_reshape(a.remove(0), sh(&[1, n]));
                    y = B::float_mul(y, B::float_expand(sc, sh(&[rows, n])));
                }
                one(B::float_reshape(y, sh(&s)))
            }
            Op::Linear(_) => {
                let x = a.remove(0);
                let w = a.remove(0);
                let s = shape_of::<B>(&x);
                let (k, n) = {
                    let sw = shape_of::<B>(&w);
                    (sw[0], sw[1])
                };
                let rows: usize = s[..s.len() - 1].iter().product();
                let mut y = B::float_matmul(B::float_reshape(x, sh(&[rows, k])), w);
                if let Some(b) = a.pop() {
                    y = B::float_add(
                        y,
                        B::float_expand(B::float_reshape(b, sh(&[1, n])), sh(&[rows, n])),
                    );
                }
                let mut out = s[..s.len() - 1].to_vec();
                out.push(n);
                one(B::float_reshape(y, sh(&out)))
            }
            Op::MatMul(_) => {
                let b = a.pop().ok_or("missing operand")?;
                let x = a.pop().ok_or("missing operand")?;
                one(matmul::<B>(x, b)?)
            }
            Op::Conv2d(c) => {
                let x = a.remove(0);
                let w = a.remove(0);
                let bias = a.pop();
                let p = c.padding.map(|v| v as usize);
                let (x, pad) = if p[0] == p[2] && p[1] == p[3] {
                    (x, [p[0], p[1]])
                } else {
                    (pad2d::<B>(x, p, 0.0, dev), [0, 0])
                };
                let opts = ConvOptions::new(
                    c.stride.map(|v| v as usize),
                    pad,
                    c.dilation.map(|v| v as usize),
                    c.groups as usize,
                );
                one(B::conv2d(x, w, bias, opts))
            }
            Op::GroupNorm(gn) => {
                let x = a.remove(0);
                let s = shape_of::<B>(&x);
                let (n, c) = (s[0], s[1]);
                let g = gn.groups as usize;
                let per = s[1..].iter().product::<usize>() / g;
                let y = standardize::<B>(B::float_reshape(x, sh(&[n * g, per])), per, gn.eps);
                let mut y = B::float_reshape(y, sh(&s));
                let mut cs = vec![1usize; s.len()];
                cs[1] = c;
                if !a.is_empty() {
                    let sc = B::float_reshape(a.remove(0), sh(&cs));
                    y = B::float_mul(y, B::float_expand(sc, sh(&s)));
                }
                if !a.is_empty() {
                    let b = B::float_reshape(a.remove(0), sh(&cs));
                    y = B::float_add(y, B::float_expand(b, sh(&s)));
                }
                one(y)
            }
            Op::UpsampleNearest2d(u) => {
                let x = a.pop().ok_or("missing operand")?;
                let s = shape_of::<B>(&x);
                let k = u.scale as usize;
                let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
                let x = B::float_reshape(x, sh(&[n, c, h, 1, w, 1]));
                let x = B::float_expand(x, sh(&[n, c, h, k, w, k]));
                one(B::float_reshape(x, sh(&[n, c, h * k, w * k])))
            }
            Op::AvgPool2d(p) => {
                let x = a.pop().ok_or("missing operand")?;
                let k = p.kernel.map(|v| v as usize);
                let st = p.stride.map(|v| v as usize);
                let pd = p.padding.map(|v| v as usize);
                if pd[0] == pd[2] && pd[1] == pd[3] {
                    return one(B::avg_pool2d(
                        x,
                        k,
                        st,
                        [pd[0], pd[1]],
                        p.count_include_pad,
                        false,
                    ));
                }
                let s = shape_of::<B>(&x);
                let xp = pad2d::<B>(x, pd, 0.0, dev);
                let avg = B::avg_pool2d(xp, k, st, [0, 0], true, false);
                if p.count_include_pad {
                    return one(avg);
                }
                let ones = scalar::<B>(1.0, &[1, 1, s[2], s[3]], dev);
                let frac =
                    B::avg_pool2d(pad2d::<B>(ones, pd, 0.0, dev), k, st, [0, 0], true, false);
                let frac = B::float_expand(frac, sh(&shape_of::<B>(&avg)));
                one(B::float_div(avg, frac))
            }
            Op::Conv(c) => {
                let x = a.remove(0);
                let w = a.remove(0);
                let bias = a.pop();
                one(conv_nd::<B>(c, x, w, bias, dev)?)
            }
            Op::ConvTranspose(c) => {
                let x = a.remove(0);
                let w = a.remove(0);
                let bias = a.pop();
                one(conv_transpose_nd::<B>(c, x, w, bias, dev)?)
            }
            Op::Pool(p) => {
                let x = a.pop().ok_or("missing operand")?;
                let out = resolve(&ins.result_types[0], bind)?;
                match pool_nd::<B>(p, x.clone(), &out, dev)? {
                    Some(r) => Ok(r),
                    // A ceil-mode size burn counts differently: the reference on the host.
                    None => self.host(ins, vec![x], bind),
                }
            }
            Op::Resize(rz) => {
                let x = a.pop().ok_or("missing operand")?;
                let out = resolve(&ins.result_types[0], bind)?;
                one(resize::<B>(rz, x, &out, dev)?)
            }
            other => Err(format!("{} has no burn lowering", other.name())),
        }
    }

    /// A call: the callee's program on the register values as they are.
    fn call_values(&self, ins: &Instr<B>, args: Vec<Value<B>>) -> R<Vec<Value<B>>> {
        let sub = ins.sub.as_ref().ok_or("callee was not lowered")?;
        let b = sub_bindings(sub, &args)?;
        sub.run_values(args, &b).map_err(|e| e.to_string())
    }

    /// A counted loop: the body's program once per iteration, with the index (of the body's
    /// first input's dtype), the carried values and the invariant ones.
    fn for_values(
        &self,
        ins: &Instr<B>,
        f: &fuselage_ir::ops::for_loop::For,
        args: Vec<Value<B>>,
    ) -> R<Vec<Value<B>>> {
        let sub = ins.sub.as_ref().ok_or("loop body was not lowered")?;
        let n = sub.output_regs.len();
        if n > args.len() {
            return Err(format!(
                "body returns {n} values, only {} operands",
                args.len()
            ));
        }
        let index_dtype = sub
            .graph
            .input_types()
            .first()
            .map_or(DType::I64, |t| t.dtype);
        let invariant: Vec<Value<B>> = args[n..].to_vec();
        let mut carried: Vec<Value<B>> = args[..n].to_vec();
        for i in 0..f.trip_count {
            let index =
                Tensor::new(index_dtype, vec![], vec![i as f64]).map_err(|e| e.to_string())?;
            let mut it = vec![Value::upload(&index, &self.device)?];
            it.append(&mut carried);
            it.extend(invariant.iter().cloned());
            let b = sub_bindings(sub, &it)?;
            carried = sub
                .run_values(it, &b)
                .map_err(|e| format!("in for @{} iteration {i}: {e}", f.body))?;
        }
        Ok(carried)
    }

    fn rope(&self, r: &fuselage_ir::ops::rope::Rope, x: F<B>, pos: F<B>) -> R<F<B>> {
        let s = shape_of::<B>(&x);
        let d = s[s.len() - 1];
        let rd = r.rotary_dim.map(|v| v as usize).unwrap_or(d);
        if rd > d || !rd.is_multiple_of(2) {
            return Err(format!("rope: rotary_dim {rd} must be even and <= {d}"));
        }
        let h = rd / 2;
        let lead = &s[..s.len() - 1];
        // Angles in f64 on the host from the (small) positions tensor.
        let (pv, ps) = download_f32::<B>(pos)?;
        if bshape("rope", &ps, lead)? != lead {
            return Err(format!(
                "rope positions {ps:?} do not broadcast to {lead:?}"
            ));
        }
        let inv: Vec<f64> = (0..h)
            .map(|k| r.theta.powf(-(2.0 * k as f64) / rd as f64))
            .collect();
        let mut cos = Vec::with_capacity(pv.len() * h);
        let mut sin = Vec::with_capacity(pv.len() * h);
        for &p in &pv {
            for f in &inv {
                let (sn, cs) = (f64::from(p) * f).sin_cos();
                cos.push(cs as f32);
                sin.push(sn as f32);
            }
        }
        let mut ts = ps.clone();
        ts.push(h);
        let mut full = lead.to_vec();
        full.push(h);
        let cos = bcast::<B>(upload_f32::<B>(cos, &ts, &self.device), &full);
        let sin = bcast::<B>(upload_f32::<B>(sin, &ts, &self.device), &full);
        let last = s.len() - 1;
        let (xa, xb) = match r.style {
            RopeStyle::Half => (
                take_range::<B>(x.clone(), last, 0, h as i64, 1, &self.device)?,
                take_range::<B>(x.clone(), last, h as i64, h as i64, 1, &self.device)?,
            ),
            RopeStyle::Interleaved => (
                take_range::<B>(x.clone(), last, 0, h as i64, 2, &self.device)?,
                take_range::<B>(x.clone(), last, 1, h as i64, 2, &self.device)?,
            ),
        };
        let oa = B::float_sub(
            B::float_mul(xa.clone(), cos.clone()),
            B::float_mul(xb.clone(), sin.clone()),
        );
        let ob = B::float_add(B::float_mul(xb, cos), B::float_mul(xa, sin));
        let rot = match r.style {
            RopeStyle::Half => B::float_cat(vec![oa, ob], last),
            RopeStyle::Interleaved => {
                let mut s2 = full.clone();
                s2.push(1);
                let oa = B::float_reshape(oa, sh(&s2));
                let ob = B::float_reshape(ob, sh(&s2));
                let mut s3 = lead.to_vec();
                s3.push(rd);
                B::float_reshape(B::float_cat(vec![oa, ob], last + 1), sh(&s3))
            }
        };
        if rd == d {
            Ok(rot)
        } else {
            let rest = take_range::<B>(x, last, rd as i64, (d - rd) as i64, 1, &self.device)?;
            Ok(B::float_cat(vec![rot, rest], last))
        }
    }
}

/// `argmax`/`argmin` along `d` with the reference's rules: ties to the first index (burn's
/// arg ops keep the first of equal values) or, with `last`, to the last (searching the flipped
/// axis); a NaN beats every number (burn's comparisons skip NaN, so lanes holding one take the
/// index of their first NaN instead). The result is reshaped to `target`.
#[allow(clippy::too_many_arguments)]
fn arg_extreme<B: Backend>(
    op: &str,
    x: F<B>,
    d: usize,
    min: bool,
    last: bool,
    float: bool,
    target: &[usize],
    device: &B::Device,
) -> R<F<B>> {
    let n = shape_of::<B>(&x)[d];
    if target.contains(&0) {
        return Ok(B::float_empty(sh(target), device, float_dtype::<B>()));
    }
    if n == 0 {
        return Err(format!(
            "{op} over an empty axis {d} of shape {:?}",
            shape_of::<B>(&x)
        ));
    }
    let x = if last { B::float_flip(x, &[d]) } else { x };
    let index = |i| B::int_into_float(i, float_dtype::<B>());
    let mut i = index(if min {
        B::float_argmin(x.clone(), d, int_dtype::<B>())
    } else {
        B::float_argmax(x.clone(), d, int_dtype::<B>())
    });
    if float {
        let nan = bool_to_f::<B>(B::float_is_nan(x, bool_dtype::<B>()));
        let first_nan = index(B::float_argmax(nan.clone(), d, int_dtype::<B>()));
        let any = B::float_greater_elem(
            B::float_sum_dim(nan, d),
            Scalar::Float(0.0),
            bool_dtype::<B>(),
        );
        i = B::float_mask_where(i, any, first_nan);
    }
    if last {
        i = B::float_add_scalar(B::float_neg(i), Scalar::Float((n - 1) as f64));
    }
    Ok(B::float_reshape(i, sh(target)))
}

/// Bindings of a callee from its argument shapes.
fn sub_bindings<B: Backend>(sub: &Program<B>, args: &[Value<B>]) -> R<HashMap<String, u64>> {
    let tys = sub.graph.input_types();
    let names = sub.graph.input_names();
    let shapes: Vec<Vec<usize>> = args.iter().map(Value::shape).collect();
    let ty_refs: Vec<&TensorType> = tys.iter().collect();
    let name_refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    let shape_refs: Vec<&[usize]> = shapes.iter().map(|s| s.as_slice()).collect();
    fuselage_ir::eval::bind_shapes(&ty_refs, &name_refs, &shape_refs, &sub.module.facts)
        .map_err(|e| format!("@{}: {e}", sub.function))
}

/// `count` elements along `dim` starting at `first` with `step` (step may be negative).
fn take_range<B: Backend>(
    x: F<B>,
    dim: usize,
    first: i64,
    count: i64,
    step: i64,
    device: &B::Device,
) -> R<F<B>> {
    let s = shape_of::<B>(&x);
    if count == 0 {
        let mut e = s.clone();
        e[dim] = 0;
        return Ok(B::float_empty(sh(&e), device, float_dtype::<B>()));
    }
    let mut slices: Vec<Slice> = s
        .iter()
        .map(|&n| Slice::new(0, Some(n as isize), 1))
        .collect();
    if step > 0 {
        let end = first + (count - 1) * step + 1;
        slices[dim] = Slice::new(first as isize, Some(end as isize), step as isize);
        Ok(B::float_slice(x, &slices))
    } else {
        // Negative step: take the ascending range, then flip it.
        let lo = first + (count - 1) * step;
        slices[dim] = Slice::new(lo as isize, Some(first as isize + 1), (-step) as isize);
        Ok(B::float_flip(B::float_slice(x, &slices), &[dim]))
    }
}

/// A reshape target from attrs (entries unresolvable under the bindings act like -1).
fn reshape_target(shape: &[Dim], n: usize, bind: &HashMap<String, u64>) -> R<Vec<usize>> {
    let mut out = vec![];
    let mut infer = None;
    for (i, d) in shape.iter().enumerate() {
        match d.resolve(bind) {
            Ok(v) if d.as_const() != Some(-1) => out.push(v as usize),
            _ => {
                if infer.is_some() {
                    return Err("reshape: more than one dim to infer".into());
                }
                infer = Some(i);
                out.push(1);
            }
        }
    }
    if let Some(i) = infer {
        let known: usize = out.iter().product();
        if known == 0 || !n.is_multiple_of(known) {
            return Err(format!(
                "reshape: cannot infer a dim of {out:?} for {n} elements"
            ));
        }
        out[i] = n / known;
    }
    Ok(out)
}

/// Attention on burn ops: `softmax(q·kᵀ·scale + biases [+ causal mask])·v` with GQA.
fn attention<B: Backend>(
    q: F<B>,
    k: F<B>,
    v: F<B>,
    biases: Vec<F<B>>,
    causal: bool,
    scale: Option<f64>,
    device: &B::Device,
) -> R<F<B>> {
    let (sq_, sk_, sv_) = (shape_of::<B>(&q), shape_of::<B>(&k), shape_of::<B>(&v));
    if sq_.len() != 4 || sk_.len() != 4 || sv_.len() != 4 {
        return Err("attention expects rank-4 q, k, v".into());
    }
    let (b, h, sq, d) = (sq_[0], sq_[1], sq_[2], sq_[3]);
    let (hk, sk, dv) = (sk_[1], sk_[2], sv_[3]);
    if hk == 0 || !h.is_multiple_of(hk) {
        return Err(format!("attention: {hk} kv heads do not divide {h} heads"));
    }
    let rep = h / hk;
    let expand_heads = |t: F<B>, last: usize| {
        if rep == 1 {
            return t;
        }
        let t = B::float_reshape(t, sh(&[b, hk, 1, sk, last]));
        let t = B::float_expand(t, sh(&[b, hk, rep, sk, last]));
        B::float_reshape(t, sh(&[b, h, sk, last]))
    };
    let k = expand_heads(k, d);
    let v = expand_heads(v, dv);
    let scale = scale.unwrap_or(1.0 / (d as f64).sqrt());
    let q = B::float_reshape(q, sh(&[b * h, sq, d]));
    let kt = B::float_reshape(B::float_swap_dims(k, 2, 3), sh(&[b * h, d, sk]));
    let mut l = B::float_mul_scalar(B::float_matmul(q, kt), Scalar::Float(scale));
    let ls = [b, h, sq, sk];
    l = B::float_reshape(l, sh(&ls));
    for bias in biases {
        let bs = shape_of::<B>(&bias);
        if bshape("attention", &bs, &ls)? != ls {
            return Err(format!(
                "attention bias {bs:?} does not broadcast to {ls:?}"
            ));
        }
        l = B::float_add(l, bcast::<B>(bias, &ls));
    }
    if causal {
        let shift = sk as i64 - sq as i64;
        let mut m = Vec::with_capacity(sq * sk);
        for i in 0..sq as i64 {
            for j in 0..sk as i64 {
                m.push(if j > i + shift { 1.0f32 } else { 0.0 });
            }
        }
        let m = bcast::<B>(upload_f32::<B>(m, &[1, 1, sq, sk], device), &ls);
        l = B::float_mask_fill(l, truthy::<B>(m), Scalar::Float(f64::NEG_INFINITY));
    }
    let p = B::float_reshape(softmax::<B>(l, 3), sh(&[b * h, sq, sk]));
    let o = B::float_matmul(p, B::float_reshape(v, sh(&[b * h, sk, dv])));
    Ok(B::float_reshape(o, sh(&[b, h, sq, dv])))
}

/// Pad the spatial axes (from dim 2) of `x` with `value`: `begin[i]` cells before and `end[i]`
/// after spatial axis `i`.
fn pad_spatial<B: Backend>(
    mut x: F<B>,
    begin: &[usize],
    end: &[usize],
    value: f64,
    device: &B::Device,
) -> F<B> {
    for (i, (&b, &e)) in begin.iter().zip(end).enumerate() {
        if b == 0 && e == 0 {
            continue;
        }
        let s = shape_of::<B>(&x);
        let mut parts = vec![];
        let mut side = s.clone();
        if b > 0 {
            side[2 + i] = b;
            parts.push(scalar::<B>(value, &side, device));
        }
        parts.push(x);
        if e > 0 {
            side[2 + i] = e;
            parts.push(scalar::<B>(value, &side, device));
        }
        x = B::float_cat(parts, 2 + i);
    }
    x
}

fn usizes(v: &[u64]) -> Vec<usize> {
    v.iter().map(|&x| x as usize).collect()
}

fn arr<const N: usize>(v: &[usize]) -> R<[usize; N]> {
    v.try_into()
        .map_err(|_| format!("expected {N} spatial entries, found {v:?}"))
}

/// `conv` on burn's conv1d/2d/3d; asymmetric pads are applied explicitly.
fn conv_nd<B: Backend>(
    c: &fuselage_ir::ops::conv::Conv,
    x: F<B>,
    w: F<B>,
    bias: Option<F<B>>,
    dev: &B::Device,
) -> R<F<B>> {
    let r = shape_of::<B>(&x).len().saturating_sub(2);
    let sp = c.spatial(r).map_err(|e| e.0)?;
    let (mut begin, end) = (usizes(&sp.begin), usizes(&sp.end));
    let x = if begin == end {
        x
    } else {
        let x = pad_spatial::<B>(x, &begin, &end, 0.0, dev);
        begin = vec![0; r];
        x
    };
    let (st, dl, g) = (usizes(&sp.strides), usizes(&sp.dilations), c.group as usize);
    Ok(match r {
        1 => B::conv1d(
            x,
            w,
            bias,
            ConvOptions::new(arr(&st)?, arr(&begin)?, arr(&dl)?, g),
        ),
        2 => B::conv2d(
            x,
            w,
            bias,
            ConvOptions::new(arr(&st)?, arr(&begin)?, arr(&dl)?, g),
        ),
        3 => B::conv3d(
            x,
            w,
            bias,
            ConvOptions::new(arr(&st)?, arr(&begin)?, arr(&dl)?, g),
        ),
        _ => return Err(format!("conv: no burn convolution of spatial rank {r}")),
    })
}

/// `conv_transpose`: burn's full transposed convolution (no padding), cropped by the pads and
/// extended by the output padding, then the bias.
fn conv_transpose_nd<B: Backend>(
    c: &fuselage_ir::ops::conv_transpose::ConvTranspose,
    x: F<B>,
    w: F<B>,
    bias: Option<F<B>>,
    dev: &B::Device,
) -> R<F<B>> {
    let r = shape_of::<B>(&x).len().saturating_sub(2);
    let (sp, op) = c.spatial(r).map_err(|e| e.0)?;
    let (st, dl, g) = (usizes(&sp.strides), usizes(&sp.dilations), c.group as usize);
    let z = vec![0usize; r];
    let mut y = match r {
        1 => B::conv_transpose1d(
            x,
            w,
            None,
            ConvTransposeOptions::new(arr(&st)?, arr(&z)?, arr(&z)?, arr(&dl)?, g),
        ),
        2 => B::conv_transpose2d(
            x,
            w,
            None,
            ConvTransposeOptions::new(arr(&st)?, arr(&z)?, arr(&z)?, arr(&dl)?, g),
        ),
        3 => B::conv_transpose3d(
            x,
            w,
            None,
            ConvTransposeOptions::new(arr(&st)?, arr(&z)?, arr(&z)?, arr(&dl)?, g),
        ),
        _ => {
            return Err(format!(
                "conv_transpose: no burn transposed convolution of spatial rank {r}"
            ))
        }
    };
    for i in 0..r {
        let full = shape_of::<B>(&y)[2 + i] as i64;
        let (b, e, o) = (sp.begin[i] as i64, sp.end[i] as i64, op[i] as i64);
        let want = full + o - b - e;
        if want < 0 {
            return Err(format!(
                "conv_transpose: output size {want} on spatial axis {i}"
            ));
        }
        let start = b.min(full);
        let keep = (full - start).min(want);
        y = take_range::<B>(y, 2 + i, start, keep, 1, dev)?;
        if want > keep {
            let mut side = vec![0; r];
            side[i] = (want - keep) as usize;
            y = pad_spatial::<B>(y, &vec![0; r], &side, 0.0, dev);
        }
    }
    if let Some(b) = bias {
        let s = shape_of::<B>(&y);
        let mut bs = vec![1usize; s.len()];
        bs[1] = s[1];
        y = B::float_add(y, B::float_expand(B::float_reshape(b, sh(&bs)), sh(&s)));
    }
    Ok(y)
}

/// `pool` on burn's 1-D/2-D max and average pools, or `None` where burn's ceil mode would
/// count a different number of windows (or underflow) than ONNX.
fn pool_nd<B: Backend>(
    p: &fuselage_ir::ops::pool::Pool,
    x: F<B>,
    out: &[usize],
    dev: &B::Device,
) -> R<Option<Vec<F<B>>>> {
    let xs = shape_of::<B>(&x);
    let r = xs.len().saturating_sub(2);
    let (sp, spans) = p.spatial(r).map_err(|e| e.0)?;
    if sp.begin != sp.end || !(1..=2).contains(&r) {
        return Ok(None);
    }
    for i in 0..r {
        let padded = xs[2 + i] as u64 + 2 * sp.begin[i];
        if padded < spans[i] {
            return Ok(None);
        }
        let num = padded - spans[i];
        let s = sp.strides[i];
        let burn = if p.ceil_mode {
            num.div_ceil(s)
        } else {
            num / s
        } + 1;
        if burn != out[2 + i] as u64 {
            return Ok(None);
        }
        // A max window without input cells has index −1; burn reports its first cell.
        if p.indices {
            let (n, b, d) = (xs[2 + i] as i64, sp.begin[i] as i64, sp.dilations[i] as i64);
            let empty = (0..out[2 + i] as i64).any(|o| {
                (0..p.kernel[i] as i64).all(|j| {
                    let q = o * s as i64 + j * d - b;
                    q < 0 || q >= n
                })
            });
            if empty {
                return Ok(None);
            }
        }
    }
    let (k, st, pd, dl) = (
        usizes(&p.kernel),
        usizes(&sp.strides),
        usizes(&sp.begin),
        usizes(&sp.dilations),
    );
    let c = p.ceil_mode;
    let (y, idx) = match (p.kind, r, p.indices) {
        (PoolKind::Avg, 1, _) => (
            B::avg_pool1d(x, k[0], st[0], pd[0], p.count_include_pad, c),
            None,
        ),
        (PoolKind::Avg, 2, _) => (
            B::avg_pool2d(x, arr(&k)?, arr(&st)?, arr(&pd)?, p.count_include_pad, c),
            None,
        ),
        (PoolKind::Max, 1, false) => (B::max_pool1d(x, k[0], st[0], pd[0], dl[0], c), None),
        (PoolKind::Max, 2, false) => (
            B::max_pool2d(x, arr(&k)?, arr(&st)?, arr(&pd)?, arr(&dl)?, c),
            None,
        ),
        (PoolKind::Max, 1, true) => {
            let m = B::max_pool1d_with_indices(x, k[0], st[0], pd[0], dl[0], c);
            (m.output, Some(m.indices))
        }
        (PoolKind::Max, 2, true) => {
            let m = B::max_pool2d_with_indices(x, arr(&k)?, arr(&st)?, arr(&pd)?, arr(&dl)?, c);
            (m.output, Some(m.indices))
        }
        _ => return Ok(None),
    };
    let Some(idx) = idx else {
        return Ok(Some(vec![y]));
    };
    // burn's indices are row-major within an (n, c) plane; ONNX's run over the whole input.
    let (n, ch) = (xs[0], xs[1]);
    let plane: usize = xs[2..].iter().product();
    let offsets: Vec<f32> = (0..n * ch).map(|q| (q * plane) as f32).collect();
    let mut os = vec![n, ch];
    os.extend(std::iter::repeat_n(1, r));
    let offsets = upload_f32::<B>(offsets, &os, dev);
    let idx = B::int_into_float(idx, float_dtype::<B>());
    let s = shape_of::<B>(&idx);
    let idx = B::float_add(idx, B::float_expand(offsets, sh(&s)));
    Ok(Some(vec![y, idx]))
}

/// `resize` as the reference plans it: per resized axis, gather each tap's input cells with
/// `select` and sum them weighted; extrapolated cells are then overwritten.
fn resize<B: Backend>(
    rz: &fuselage_ir::ops::resize::Resize,
    mut x: F<B>,
    out: &[usize],
    dev: &B::Device,
) -> R<F<B>> {
    let plans = rz.plan(&shape_of::<B>(&x), out).map_err(|e| e.0)?;
    for p in plans {
        let mut s = shape_of::<B>(&x);
        s[p.axis] = p.len_out;
        if p.len_out == 0 || s.contains(&0) {
            x = B::float_empty(sh(&s), dev, float_dtype::<B>());
            continue;
        }
        let mut line = vec![1usize; s.len()];
        line[p.axis] = p.len_out;
        let column = |v: Vec<f32>| B::float_expand(upload_f32::<B>(v, &line, dev), sh(&s));
        let mut acc: Option<F<B>> = None;
        for t in 0..p.taps {
            let ix: Vec<i64> = (0..p.len_out)
                .map(|o| p.index[o * p.taps + t] as i64)
                .collect();
            let it = B::int_from_data(
                burn::tensor::TensorData::new(ix, vec![p.len_out])
                    .convert_dtype(<B::IntElem as Element>::dtype()),
                dev,
            );
            let g = B::float_select(x.clone(), p.axis, it);
            let w: Vec<f32> = (0..p.len_out)
                .map(|o| p.coef[o * p.taps + t] as f32)
                .collect();
            let term = if p.taps == 1 {
                // Nearest copies the cell; a zero weight (exclude_outside) gives exactly 0.
                if w.iter().all(|&v| v == 1.0) {
                    g
                } else {
                    let zero: Vec<f32> = w.iter().map(|&v| f32::from(u8::from(v == 0.0))).collect();
                    B::float_mask_fill(g, truthy::<B>(column(zero)), Scalar::Float(0.0))
                }
            } else {
                B::float_mul(g, column(w))
            };
            acc = Some(match acc {
                None => term,
                Some(a) => B::float_add(a, term),
            });
        }
        let mut y = acc.ok_or("resize: an axis plan without taps")?;
        if p.extrapolated.iter().any(|&e| e) {
            let m: Vec<f32> = p
                .extrapolated
                .iter()
                .map(|&e| f32::from(u8::from(e)))
                .collect();
            y = B::float_mask_fill(
                y,
                truthy::<B>(column(m)),
                Scalar::Float(rz.extrapolation_value),
            );
        }
        x = y;
    }
    Ok(x)
}
