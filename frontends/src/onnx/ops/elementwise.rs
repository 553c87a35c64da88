//! Element-wise ops: arithmetic, math functions, activations, comparisons, logic, casts.

use super::{no_legacy_broadcast, one, Convert};
use crate::onnx::import::Importer;
use crate::onnx::node::{bad, unsup, NResult, Node};
use crate::onnx::tensor::onnx_dtype;
use crate::onnx::value::Val;
use fuselage_ir::ops::compare::Predicate;
use fuselage_ir::ops::logical::{Logical, LogicalKind};
use fuselage_ir::ops::{self as irops, Op};
use fuselage_ir::{DType, Tensor};

pub(crate) const OPS: &[(&str, Convert)] = &[
    ("Add", arith),
    ("Sub", arith),
    ("Mul", arith),
    ("Div", arith),
    ("Pow", pow),
    ("Mod", modulo),
    ("BitShift", bitwise),
    ("BitwiseAnd", bitwise),
    ("BitwiseOr", bitwise),
    ("BitwiseXor", bitwise),
    ("BitwiseNot", bitwise),
    ("Floor", math),
    ("Ceil", math),
    ("Round", math),
    ("Sign", math),
    ("Tan", math),
    ("Asin", math),
    ("Acos", math),
    ("Atan", math),
    ("Sinh", math),
    ("Cosh", math),
    ("Asinh", math),
    ("Acosh", math),
    ("Atanh", math),
    ("Max", variadic),
    ("Min", variadic),
    ("Sum", variadic),
    ("Mean", variadic),
    ("Neg", unary),
    ("Abs", unary),
    ("Exp", unary),
    ("Log", unary),
    ("Sqrt", unary),
    ("Tanh", unary),
    ("Erf", unary),
    ("Sin", unary),
    ("Cos", unary),
    ("Relu", unary),
    ("Sigmoid", unary),
    ("Not", unary),
    ("Reciprocal", activation),
    ("Softplus", activation),
    ("Softsign", activation),
    ("LeakyRelu", activation),
    ("Elu", activation),
    ("Selu", activation),
    ("Celu", activation),
    ("ThresholdedRelu", activation),
    ("HardSigmoid", activation),
    ("HardSwish", activation),
    ("Mish", activation),
    ("Swish", activation),
    ("Shrink", activation),
    ("PRelu", prelu),
    ("Gelu", gelu),
    ("IsNaN", is_nan),
    ("IsInf", is_inf),
    ("Equal", comparison),
    ("Less", comparison),
    ("LessOrEqual", comparison),
    ("Greater", comparison),
    ("GreaterOrEqual", comparison),
    ("And", logical),
    ("Or", logical),
    ("Xor", logical),
    ("Where", where_),
    ("Cast", cast),
    ("CastLike", cast),
    ("Clip", clip),
    ("Identity", identity),
    ("Dropout", dropout),
];

fn arith(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    no_legacy_broadcast(n)?;
    let (x, y) = (cx.input(n, 0)?, cx.input(n, 1)?);
    one(match n.op_type() {
        "Add" => cx.add(x, y)?,
        "Sub" => cx.sub(x, y)?,
        "Mul" => cx.mul(x, y)?,
        // Integer division truncates toward zero in both ONNX and the IR.
        _ => cx.div(x, y)?,
    })
}

fn pow(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    no_legacy_broadcast(n)?;
    let (x, y) = (cx.input(n, 0)?, cx.input(n, 1)?);
    let dt = cx.dtype(&x)?;
    let p = Op::Pow(irops::pow::Pow {});
    if dt.is_float() {
        let y = cx.cast_to(y, dt)?;
        return one(cx.bin(p, x, y)?);
    }
    // An integer base: compute in f64 and cast back (the result has the base's type).
    let xf = cx.cast_to(x, DType::F64)?;
    let yf = cx.cast_to(y, DType::F64)?;
    let r = cx.bin(p, xf, yf)?;
    one(cx.cast_to(r, dt)?)
}

fn modulo(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let (x, y) = (cx.input(n, 0)?, cx.input(n, 1)?);
    let fmod = n.flag("fmod", false);
    if !fmod && cx.dtype(&x)?.is_float() {
        bad!("Mod of floats needs fmod = 1");
    }
    one(cx.bin_bc(Op::Mod(irops::mod_::Mod { fmod }), x, y)?)
}

fn bitwise(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    use irops::bitwise::{Bitwise, BitwiseKind};
    let kind = match n.op_type() {
        "BitShift" => match n.s_or("direction", "").as_str() {
            "LEFT" => BitwiseKind::Shl,
            "RIGHT" => BitwiseKind::Shr,
            other => bad!("direction must be LEFT or RIGHT, found `{other}`"),
        },
        "BitwiseAnd" => BitwiseKind::And,
        "BitwiseOr" => BitwiseKind::Or,
        "BitwiseXor" => BitwiseKind::Xor,
        _ => BitwiseKind::Not,
    };
    let x = cx.input(n, 0)?;
    let op = Op::Bitwise(Bitwise { kind });
    if kind == BitwiseKind::Not {
        return one(cx.un(op, x)?);
    }
    let y = cx.input(n, 1)?;
    one(cx.bin_bc(op, x, y)?)
}

fn math(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    use irops::math::{Math, MathFn};
    let func = match n.op_type() {
        "Floor" => MathFn::Floor,
        "Ceil" => MathFn::Ceil,
        "Round" => MathFn::Round,
        "Sign" => MathFn::Sign,
        "Tan" => MathFn::Tan,
        "Asin" => MathFn::Asin,
        "Acos" => MathFn::Acos,
        "Atan" => MathFn::Atan,
        "Sinh" => MathFn::Sinh,
        "Cosh" => MathFn::Cosh,
        "Asinh" => MathFn::Asinh,
        "Acosh" => MathFn::Acosh,
        _ => MathFn::Atanh,
    };
    let x = cx.input(n, 0)?;
    one(cx.un(Op::Math(Math { func }), x)?)
}

fn variadic(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    no_legacy_broadcast(n)?;
    let args = cx.inputs(n)?;
    let k = args.len();
    let mut it = args.into_iter();
    let Some(mut acc) = it.next() else {
        bad!("needs at least one input")
    };
    for v in it {
        acc = match n.op_type() {
            "Max" => cx.bin_bc(Op::Maximum(irops::maximum::Maximum {}), acc, v)?,
            "Min" => cx.bin_bc(Op::Minimum(irops::minimum::Minimum {}), acc, v)?,
            _ => cx.add(acc, v)?,
        };
    }
    if n.op_type() == "Mean" && k > 1 {
        let c = cx.scalar_like(&acc, k as f64, "count")?;
        acc = cx.div(acc, c)?;
    }
    one(acc)
}

fn unary(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    if n.has("consumed_inputs") {
        unsup!("the legacy `consumed_inputs` attribute (opset {})", n.opset);
    }
    let x = cx.input(n, 0)?;
    let op = match n.op_type() {
        "Neg" => Op::Neg(irops::neg::Neg {}),
        "Abs" => Op::Abs(irops::abs::Abs {}),
        "Exp" => Op::Exp(irops::exp::Exp {}),
        "Log" => Op::Log(irops::log::Log {}),
        "Sqrt" => Op::Sqrt(irops::sqrt::Sqrt {}),
        "Tanh" => Op::Tanh(irops::tanh::Tanh {}),
        "Erf" => Op::Erf(irops::erf::Erf {}),
        "Sin" => Op::Sin(irops::sin::Sin {}),
        "Cos" => Op::Cos(irops::cos::Cos {}),
        "Relu" => Op::Relu(irops::relu::Relu {}),
        "Sigmoid" => Op::Sigmoid(irops::sigmoid::Sigmoid {}),
        _ => Op::Not(irops::not::Not {}),
    };
    one(cx.un(op, x)?)
}

/// Activations composed from IR ops (each formula is the ONNX definition).
fn activation(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let (x, dt) = cx.widen(cx.input(n, 0)?)?;
    let exp = |cx: &mut Importer, v: Val| cx.un(Op::Exp(irops::exp::Exp {}), v);
    let c = |cx: &mut Importer, x: &Val, v: f64, what: &str| cx.scalar_like(x, v, what);
    let out = match n.op_type() {
        "Reciprocal" => {
            let one = c(cx, &x, 1.0, "one")?;
            cx.div(one, x)?
        }
        "Softplus" => softplus(cx, x)?,
        "Softsign" => {
            let a = cx.un(Op::Abs(irops::abs::Abs {}), x.clone())?;
            let one = c(cx, &x, 1.0, "one")?;
            let d = cx.add(a, one)?;
            cx.div(x, d)?
        }
        "LeakyRelu" => {
            let alpha = c(cx, &x, n.f("alpha", 0.01), "alpha")?;
            let zero = c(cx, &x, 0.0, "zero")?;
            let ax = cx.mul(x.clone(), alpha)?;
            let neg = cx.compare(Predicate::Lt, x.clone(), zero)?;
            cx.select(neg, ax, x)?
        }
        "Elu" => {
            // x < 0 ? alpha·(eˣ − 1) : x
            let alpha = c(cx, &x, n.f("alpha", 1.0), "alpha")?;
            let zero = c(cx, &x, 0.0, "zero")?;
            let one = c(cx, &x, 1.0, "one")?;
            let e = exp(cx, x.clone())?;
            let em1 = cx.sub(e, one)?;
            let neg = cx.mul(alpha, em1)?;
            let lt = cx.compare(Predicate::Lt, x.clone(), zero)?;
            cx.select(lt, neg, x)?
        }
        "Selu" => {
            // γ·(x <= 0 ? α·eˣ − α : x)
            let alpha = c(cx, &x, n.f("alpha", 1.673_263_192_176_818_8), "alpha")?;
            let gamma = c(cx, &x, n.f("gamma", 1.050_701_022_148_132_3), "gamma")?;
            let zero = c(cx, &x, 0.0, "zero")?;
            let e = exp(cx, x.clone())?;
            let ae = cx.mul(alpha.clone(), e)?;
            let neg = cx.sub(ae, alpha)?;
            let le = cx.compare(Predicate::Le, x.clone(), zero)?;
            let s = cx.select(le, neg, x)?;
            cx.mul(gamma, s)?
        }
        "Celu" => {
            // max(0, x) + min(0, α·(e^(x/α) − 1))
            let a = n.f("alpha", 1.0);
            let alpha = c(cx, &x, a, "alpha")?;
            let zero = c(cx, &x, 0.0, "zero")?;
            let one = c(cx, &x, 1.0, "one")?;
            let xa = cx.div(x.clone(), alpha.clone())?;
            let e = exp(cx, xa)?;
            let em1 = cx.sub(e, one)?;
            let neg = cx.mul(alpha, em1)?;
            let lo = cx.bin(Op::Minimum(irops::minimum::Minimum {}), zero.clone(), neg)?;
            let hi = cx.bin(Op::Maximum(irops::maximum::Maximum {}), zero, x)?;
            cx.add(hi, lo)?
        }
        "ThresholdedRelu" => {
            let alpha = c(cx, &x, n.f("alpha", 1.0), "alpha")?;
            let zero = c(cx, &x, 0.0, "zero")?;
            let gt = cx.compare(Predicate::Gt, x.clone(), alpha)?;
            cx.select(gt, x, zero)?
        }
        "HardSigmoid" => hard_sigmoid(cx, x, n.f("alpha", 0.2), n.f("beta", 0.5))?,
        "HardSwish" => {
            let h = hard_sigmoid(cx, x.clone(), 1.0 / 6.0, 0.5)?;
            cx.mul(x, h)?
        }
        "Mish" => {
            let sp = softplus(cx, x.clone())?;
            let t = cx.un(Op::Tanh(irops::tanh::Tanh {}), sp)?;
            cx.mul(x, t)?
        }
        "Swish" => {
            let alpha = c(cx, &x, n.f("alpha", 1.0), "alpha")?;
            let ax = cx.mul(x.clone(), alpha)?;
            let s = cx.un(Op::Sigmoid(irops::sigmoid::Sigmoid {}), ax)?;
            cx.mul(x, s)?
        }
        _ => {
            // Shrink: x < −λ ? x + bias : x > λ ? x − bias : 0
            let l = n.f("lambd", 0.5);
            let b = n.f("bias", 0.0);
            let (xs, lam, nlam, bias, zero) = if dt.is_float() {
                (
                    x.clone(),
                    c(cx, &x, l, "lambd")?,
                    c(cx, &x, -l, "neg_lambd")?,
                    c(cx, &x, b, "bias")?,
                    c(cx, &x, 0.0, "zero")?,
                )
            } else {
                let xf = cx.cast_to(x.clone(), DType::F64)?;
                (
                    xf,
                    cx.scalar(DType::F64, l, "lambd"),
                    cx.scalar(DType::F64, -l, "neg_lambd"),
                    cx.scalar(DType::F64, b, "bias"),
                    cx.scalar(DType::F64, 0.0, "zero"),
                )
            };
            let lo = cx.compare(Predicate::Lt, xs.clone(), nlam)?;
            let hi = cx.compare(Predicate::Gt, xs.clone(), lam)?;
            let plus = cx.add(xs.clone(), bias.clone())?;
            let minus = cx.sub(xs, bias)?;
            let inner = cx.select(hi, minus, zero)?;
            let r = cx.select(lo, plus, inner)?;
            cx.cast_to(r, dt)?
        }
    };
    one(cx.narrow(out, dt)?)
}

fn softplus(cx: &mut Importer, x: Val) -> NResult<Val> {
    let e = cx.un(Op::Exp(irops::exp::Exp {}), x.clone())?;
    let one = cx.scalar_like(&x, 1.0, "one")?;
    let s = cx.add(e, one)?;
    cx.un(Op::Log(irops::log::Log {}), s)
}

/// `clamp(α·x + β, 0, 1)`.
fn hard_sigmoid(cx: &mut Importer, x: Val, alpha: f64, beta: f64) -> NResult<Val> {
    let a = cx.scalar_like(&x, alpha, "alpha")?;
    let b = cx.scalar_like(&x, beta, "beta")?;
    let ax = cx.mul(x, a)?;
    let y = cx.add(ax, b)?;
    cx.un(
        Op::Clamp(irops::clamp::Clamp {
            min: Some(0.0),
            max: Some(1.0),
        }),
        y,
    )
}

fn prelu(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let (x, slope) = (cx.input(n, 0)?, cx.input(n, 1)?);
    let zero = cx.scalar_like(&x, 0.0, "zero")?;
    let sx = cx.mul(x.clone(), slope)?;
    let neg = cx.compare(Predicate::Lt, x.clone(), zero)?;
    one(cx.select(neg, sx, x)?)
}

fn gelu(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let approximate = match n.s_or("approximate", "none").as_str() {
        "none" => irops::gelu::GeluApproximate::None,
        "tanh" => irops::gelu::GeluApproximate::Tanh,
        other => bad!("unknown approximate `{other}`"),
    };
    one(cx.un(Op::Gelu(irops::gelu::Gelu { approximate }), x)?)
}

fn is_nan(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    one(cx.compare(Predicate::Ne, x.clone(), x)?)
}

fn is_inf(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let side = |cx: &mut Importer, on: bool, v: f64| -> NResult<Option<Val>> {
        if !on {
            return Ok(None);
        }
        let inf = cx.scalar_like(&x, v, "inf")?;
        cx.compare(Predicate::Eq, x.clone(), inf).map(Some)
    };
    let pos = side(cx, n.flag("detect_positive", true), f64::INFINITY)?;
    let neg = side(cx, n.flag("detect_negative", true), f64::NEG_INFINITY)?;
    one(match (pos, neg) {
        (Some(a), Some(b)) => cx.bin(
            Op::Logical(Logical {
                kind: LogicalKind::Or,
            }),
            a,
            b,
        )?,
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => {
            // Neither sign detected: all false.
            let s = cx.shape(&x)?;
            let f = cx.tensor(&Tensor::scalar(DType::Bool, 0.0), "false");
            cx.broadcast(f, s)?
        }
    })
}

fn comparison(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    no_legacy_broadcast(n)?;
    let (x, y) = (cx.input(n, 0)?, cx.input(n, 1)?);
    let p = match n.op_type() {
        "Equal" => Predicate::Eq,
        "Less" => Predicate::Lt,
        "LessOrEqual" => Predicate::Le,
        "Greater" => Predicate::Gt,
        _ => Predicate::Ge,
    };
    one(cx.compare(p, x, y)?)
}

fn logical(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    no_legacy_broadcast(n)?;
    let (x, y) = (cx.input(n, 0)?, cx.input(n, 1)?);
    let kind = match n.op_type() {
        "And" => LogicalKind::And,
        "Or" => LogicalKind::Or,
        _ => LogicalKind::Xor,
    };
    one(cx.bin_bc(Op::Logical(Logical { kind }), x, y)?)
}

fn where_(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let (c, x, y) = (cx.input(n, 0)?, cx.input(n, 1)?, cx.input(n, 2)?);
    one(cx.select(c, x, y)?)
}

fn cast(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let dt = if n.op_type() == "Cast" {
        if n.opset < 6 {
            unsup!("Cast with a string `to` attribute (opset {} < 6)", n.opset);
        }
        onnx_dtype(n.i("to", 0) as i32).map_err(crate::onnx::node::NodeErr::Unsupported)?
    } else {
        cx.dtype(&cx.input(n, 1)?)?
    };
    if !n.flag("saturate", true)
        && matches!(dt, DType::F8E4M3FN | DType::F8E5M2)
        && !cx.dtype(&x)?.is_int()
    {
        unsup!("Cast to {dt} with saturate = 0 (out-of-range values to inf/NaN)");
    }
    one(cx.cast_to(x, dt)?)
}

fn clip(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let dt = cx.dtype(&x)?;
    // Opset < 11: bounds are attributes; later they are optional inputs.
    let (lo, hi) = if n.opset < 11 {
        let lo = n.has("min").then(|| n.f("min", 0.0));
        let hi = n.has("max").then(|| n.f("max", 0.0));
        (
            lo.map(|v| cx.scalar(dt, v, "min")),
            hi.map(|v| cx.scalar(dt, v, "max")),
        )
    } else {
        (cx.opt_input(n, 1)?, cx.opt_input(n, 2)?)
    };
    let as_const = |cx: &mut Importer, v: &Option<Val>| -> Option<f64> {
        v.as_ref()
            .and_then(|v| cx.known_of(v))
            .and_then(|k| k.floats().ok())
            .and_then(|f| (f.len() == 1).then(|| f[0]))
    };
    let (clo, chi) = (as_const(cx, &lo), as_const(cx, &hi));
    let lo_known = lo.is_none() || clo.is_some();
    let hi_known = hi.is_none() || chi.is_some();
    if lo_known && hi_known && clo.zip(chi).is_none_or(|(a, b)| a <= b) {
        if clo.is_none() && chi.is_none() {
            return one(x);
        }
        return one(cx.un(Op::Clamp(irops::clamp::Clamp { min: clo, max: chi }), x)?);
    }
    // Run-time bounds (or min > max, where ONNX gives max): min(max(x, lo), hi).
    let mut y = x;
    if let Some(lo) = lo {
        y = cx.bin(Op::Maximum(irops::maximum::Maximum {}), y, lo)?;
    }
    if let Some(hi) = hi {
        y = cx.bin(Op::Minimum(irops::minimum::Minimum {}), y, hi)?;
    }
    one(y)
}

fn identity(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    one(cx.input(n, 0)?)
}

/// Dropout at inference: the identity, with an all-true mask. Training mode (random) is
/// unsupported unless the ratio is 0.
fn dropout(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let training = if n.opset >= 12 {
        match cx.opt_input(n, 2)? {
            Some(t) => match cx.known_of(&t).and_then(|k| k.ints().ok()) {
                Some(v) => v.first().is_some_and(|&b| b != 0),
                None => unsup!("a training_mode computed at run time (dropout is random)"),
            },
            None => false,
        }
    } else {
        n.opset < 7 && n.i("is_test", 0) == 0
    };
    if training {
        let ratio = if n.opset >= 12 {
            match cx.opt_input(n, 1)? {
                Some(r) => cx.scalar_f64(&r, "ratio")?,
                None => 0.5,
            }
        } else {
            n.f("ratio", 0.5)
        };
        if ratio != 0.0 {
            unsup!("training-mode dropout with ratio {ratio} (random; only inference is compiled)");
        }
    }
    let mut outs = vec![x.clone()];
    if n.wants_output(1) {
        let s = cx.shape(&x)?;
        let t = cx.tensor(&Tensor::scalar(DType::Bool, 1.0), "mask");
        outs.push(cx.broadcast(t, s)?);
    }
    Ok(outs)
}
