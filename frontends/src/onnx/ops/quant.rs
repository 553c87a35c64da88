//! ONNX quantization: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, MatMulInteger,
//! QLinearMatMul — composed with exact integer semantics (round half to even, saturation to
//! the output type, integer products in f64, exact below 2^53) as the ONNX reference defines
//! them. fuselage's own `quantize`/`dequantize` ops carry its quantization schemes; these are
//! the ONNX operators as a model states them.

use super::{axis, one, Convert};
use crate::onnx::import::Importer;
use crate::onnx::node::{bad, err, unsup, NResult, Node};
use crate::onnx::tensor::onnx_dtype;
use crate::onnx::value::Val;
use fuselage_ir::ops::math::{Math, MathFn};
use fuselage_ir::ops::reduce::ReduceKind;
use fuselage_ir::ops::{self as irops, Op};
use fuselage_ir::{DType, Dim};

pub(crate) const OPS: &[(&str, Convert)] = &[
    ("QuantizeLinear", quantize_linear),
    ("DequantizeLinear", dequantize_linear),
    ("DynamicQuantizeLinear", dynamic_quantize_linear),
    ("MatMulInteger", matmul_integer),
    ("QLinearMatMul", qlinear_matmul),
];

fn d(n: u64) -> Dim {
    Dim::from(n)
}

/// A scale or zero point shaped to broadcast against `x`: a scalar as is, a 1-D vector along
/// `axis`, or (with `block_size`) blocks along `axis` repeated to `x`'s size.
fn per_axis(cx: &mut Importer, p: Val, x: &[Dim], ax: i64, block: i64) -> NResult<Val> {
    let ps = cx.shape(&p)?;
    let r = x.len();
    if ps.is_empty() || (ps.len() == 1 && ps[0].fixed() == Some(1) && block == 0) {
        return Ok(p);
    }
    let a = axis(ax, r)?;
    if block > 0 {
        if ps.len() != r {
            bad!("blocked scale must have the input's rank {r}, found {ps:?}");
        }
        // [.., n, ..] → [.., n, 1, ..] → [.., n, block, ..] → [.., n·block, ..] → slice to x.
        let mut e = ps.clone();
        e.insert(a + 1, d(1));
        let p = cx.reshape(p, e.clone())?;
        e[a + 1] = d(block as u64);
        let p = cx.broadcast(p, e)?;
        let mut full = ps.clone();
        full[a] = ps[a].mul_int(block).map_err(err)?;
        let p = cx.reshape(p, full.clone())?;
        if full[a] != x[a] {
            return cx.slice_axis(p, a, Dim::default(), x[a].clone(), 1);
        }
        return Ok(p);
    }
    if ps.len() != 1 {
        bad!("scale must be a scalar or a 1-D vector, found {ps:?}");
    }
    let mut shape = vec![d(1); r];
    shape[a] = ps[0].clone();
    cx.reshape(p, shape)
}

fn round(cx: &mut Importer, x: Val) -> NResult<Val> {
    cx.un(
        Op::Math(Math {
            func: MathFn::Round,
        }),
        x,
    )
}

/// Clamp to an integer dtype's range and cast.
fn saturate(cx: &mut Importer, x: Val, dt: DType) -> NResult<Val> {
    let (lo, hi) = dt
        .int_range()
        .ok_or_else(|| err(format!("{dt} is not an integer type")))?;
    let c = cx.un(
        Op::Clamp(irops::clamp::Clamp {
            min: Some(lo),
            max: Some(hi),
        }),
        x,
    )?;
    cx.cast_to(c, dt)
}

fn quantize_linear(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let scale = cx.input(n, 1)?;
    let zp = cx.opt_input(n, 2)?;
    let xs = cx.shape(&x)?;
    let (ax, block) = (n.i("axis", 1), n.i("block_size", 0));
    let out = match &zp {
        Some(z) => cx.dtype(z)?,
        None if n.has("output_dtype") => onnx_dtype(n.i("output_dtype", 2) as i32)
            .map_err(crate::onnx::node::NodeErr::Unsupported)?,
        None => DType::U8,
    };
    let xdt = cx.dtype(&x)?;
    let sdt = cx.dtype(&scale)?;
    // x / scale in the wider of the two float types (numpy's promotion).
    let wdt = if xdt == DType::F64 || sdt == DType::F64 {
        DType::F64
    } else if xdt == DType::F32 || sdt == DType::F32 {
        DType::F32
    } else {
        xdt
    };
    let scale = per_axis(cx, scale, &xs, ax, block)?;
    let xw = cx.cast_to(x, wdt)?;
    let sw = cx.cast_to(scale, wdt)?;
    let q = cx.div(xw, sw)?;
    if out.is_float() {
        if !n.flag("saturate", true) {
            unsup!("QuantizeLinear to {out} with saturate = 0");
        }
        // Float outputs: the quotient cast to the format (round to nearest even, saturating).
        let q = match zp {
            Some(z) if out == DType::F4E2M1 => {
                let z = per_axis(cx, z, &xs, ax, block)?;
                let z = cx.cast_to(z, wdt)?;
                cx.add(q, z)?
            }
            _ => q,
        };
        return one(cx.cast_to(q, out)?);
    }
    let r = round(cx, q)?;
    let r = match zp {
        Some(z) => {
            let z = per_axis(cx, z, &xs, ax, block)?;
            let z = cx.cast_to(z, wdt)?;
            cx.add(r, z)?
        }
        None => r,
    };
    one(saturate(cx, r, out)?)
}

fn dequantize_linear(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let scale = cx.input(n, 1)?;
    let zp = cx.opt_input(n, 2)?;
    let xs = cx.shape(&x)?;
    let (ax, block) = (n.i("axis", 1), n.i("block_size", 0));
    let out = if n.has("output_dtype") {
        onnx_dtype(n.i("output_dtype", 1) as i32)
            .map_err(crate::onnx::node::NodeErr::Unsupported)?
    } else {
        cx.dtype(&scale)?
    };
    // (x − zp) · scale in f32, then to the output type.
    let xf = cx.cast_to(x.clone(), DType::F32)?;
    let dx = match zp {
        Some(z) if !cx.dtype(&x)?.is_float() => {
            let z = per_axis(cx, z, &xs, ax, block)?;
            let z = cx.cast_to(z, DType::F32)?;
            cx.sub(xf, z)?
        }
        _ => xf,
    };
    let s = per_axis(cx, scale, &xs, ax, block)?;
    let sdt = cx.dtype(&s)?;
    let y = if sdt == DType::F64 {
        let dx = cx.cast_to(dx, DType::F64)?;
        cx.mul(dx, s)?
    } else {
        let s = cx.cast_to(s, DType::F32)?;
        cx.mul(dx, s)?
    };
    one(cx.cast_to(y, out)?)
}

/// y = saturate(round(x / s) + zp) with s = (max(0, max x) − min(0, min x)) / 255 and
/// zp = round(clamp(−min/s, 0, 255)), all in f32 as the reference computes them.
fn dynamic_quantize_linear(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let r = cx.rank(&x)?;
    let all: Vec<i64> = (0..r as i64).collect();
    let x = cx.cast_to(x, DType::F32)?;
    let zero = cx.scalar(DType::F32, 0.0, "zero");
    let mx = cx.reduce(ReduceKind::Max, x.clone(), all.clone(), false)?;
    let mn = cx.reduce(ReduceKind::Min, x.clone(), all, false)?;
    let mx = cx.bin(Op::Maximum(irops::maximum::Maximum {}), mx, zero.clone())?;
    let mn = cx.bin(Op::Minimum(irops::minimum::Minimum {}), mn, zero.clone())?;
    let range = cx.sub(mx.clone(), mn.clone())?;
    let same = cx.compare(irops::compare::Predicate::Eq, mx, mn.clone())?;
    let one_v = cx.scalar(DType::F32, 1.0, "one");
    let range = cx.select(same, one_v, range)?;
    let q = cx.scalar(DType::F32, 255.0, "qrange");
    let scale = cx.div(range, q)?;
    let ms = cx.div(mn, scale.clone())?;
    let izp = cx.sub(zero, ms)?;
    let izp = cx.un(
        Op::Clamp(irops::clamp::Clamp {
            min: Some(0.0),
            max: Some(255.0),
        }),
        izp,
    )?;
    let zpf = round(cx, izp)?;
    let xq = cx.div(x, scale.clone())?;
    let xq = round(cx, xq)?;
    let y = cx.add(xq, zpf.clone())?;
    let y = saturate(cx, y, DType::U8)?;
    let zp = cx.cast_to(zpf, DType::U8)?;
    Ok(vec![y, scale, zp])
}

/// `x − zp` in f64, with a per-row (A) or per-column (B) zero point.
fn centered(cx: &mut Importer, x: Val, zp: Option<Val>, row: bool) -> NResult<Val> {
    let xf = cx.cast_to(x, DType::F64)?;
    let Some(z) = zp else { return Ok(xf) };
    let zs = cx.shape(&z)?;
    let z = cx.cast_to(z, DType::F64)?;
    let z = if row && zs.len() == 1 && zs[0].fixed() != Some(1) {
        // A per-row zero point of A [.., M, K] broadcasts as [M, 1].
        cx.reshape(z, vec![zs[0].clone(), d(1)])?
    } else {
        z
    };
    cx.sub(xf, z)
}

fn matmul_integer(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let (a, b) = (cx.input(n, 0)?, cx.input(n, 1)?);
    let (azp, bzp) = (cx.opt_input(n, 2)?, cx.opt_input(n, 3)?);
    let a = centered(cx, a, azp, true)?;
    let b = centered(cx, b, bzp, false)?;
    let p = super::linalg::matmul_np(cx, a, b)?;
    one(cx.cast_to(p, DType::I32)?)
}

fn qlinear_matmul(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let a = cx.input(n, 0)?;
    let (a_s, a_zp) = (cx.input(n, 1)?, cx.opt_input(n, 2)?);
    let b = cx.input(n, 3)?;
    let (b_s, b_zp) = (cx.input(n, 4)?, cx.opt_input(n, 5)?);
    let (y_s, y_zp) = (cx.input(n, 6)?, cx.opt_input(n, 7)?);
    let out = match &y_zp {
        Some(z) => cx.dtype(z)?,
        None => cx.dtype(&a)?,
    };
    let ac = centered(cx, a, a_zp, true)?;
    let bc = centered(cx, b, b_zp, false)?;
    let c = super::linalg::matmul_np(cx, ac, bc)?;
    // D = C · (a_scale · b_scale / y_scale), the multiplier computed in the scales' type.
    let sdt = cx.dtype(&a_s)?;
    let ab = cx.mul(a_s, b_s)?;
    let m = cx.div(ab, y_s)?;
    let m = cx.cast_to(m, sdt)?;
    let c = cx.cast_to(
        c,
        if sdt == DType::F64 {
            DType::F64
        } else {
            DType::F32
        },
    )?;
    let m = cx.cast_to(m, cx.dtype(&c)?)?;
    let dv = cx.mul(c, m)?;
    let dv = match y_zp {
        Some(z) => {
            let z = cx.cast_to(z, cx.dtype(&dv)?)?;
            cx.add(dv, z)?
        }
        None => dv,
    };
    let r = round(cx, dv)?;
    one(saturate(cx, r, out)?)
}
