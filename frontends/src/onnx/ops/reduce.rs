//! Reductions and normalizing maps: Reduce*, ArgMax, TopK, Softmax, LogSoftmax, Hardmax,
//! global pools, LpNormalization, MeanVarianceNormalization.

use super::{axis, one, Convert};
use crate::onnx::import::Importer;
use crate::onnx::node::{bad, NResult, Node};
use crate::onnx::value::Val;
use fuselage_ir::ops::compare::Predicate;
use fuselage_ir::ops::reduce::ReduceKind;
use fuselage_ir::ops::{self as irops, Op};
use fuselage_ir::{DType, Dim};

pub(crate) const OPS: &[(&str, Convert)] = &[
    ("ReduceSum", reduce),
    ("ReduceMean", reduce),
    ("ReduceMax", reduce),
    ("ReduceMin", reduce),
    ("ReduceL1", reduce),
    ("ReduceL2", reduce),
    ("ReduceSumSquare", reduce),
    ("ReduceLogSum", reduce),
    ("ReduceLogSumExp", reduce),
    ("ArgMax", argmax),
    ("ArgMin", argmax),
    ("ReduceProd", reduce),
    ("CumSum", cumulative),
    ("CumProd", cumulative),
    ("TopK", top_k),
    ("Softmax", softmax),
    ("LogSoftmax", softmax),
    ("Hardmax", softmax),
    ("GlobalAveragePool", global_pool),
    ("GlobalMaxPool", global_pool),
    ("LpNormalization", lp_normalization),
    ("MeanVarianceNormalization", mean_variance_normalization),
];

/// The axes of a Reduce node (attribute before opset 18, 13 for ReduceSum; input after) and
/// whether it is a no-op (`noop_with_empty_axes` with no axes).
fn reduce_axes(cx: &mut Importer, n: &Node, rank: usize) -> NResult<Option<Vec<i64>>> {
    let input_since = if n.op_type() == "ReduceSum" { 13 } else { 18 };
    let axes = if n.opset < input_since {
        n.ints("axes")
    } else {
        match cx.opt_input(n, 1)? {
            Some(v) => Some(cx.ints(&v, "axes")?),
            None => None,
        }
    };
    Ok(match axes {
        Some(ax) if !ax.is_empty() => Some(ax),
        _ if n.flag("noop_with_empty_axes", false) => None,
        _ => Some((0..rank as i64).collect()),
    })
}

fn reduce(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let r = cx.rank(&x)?;
    let keep = n.flag("keepdims", true);
    let Some(axes) = reduce_axes(cx, n, r)? else {
        // noop_with_empty_axes: the input itself, except for the element-wise parts of the
        // composite reductions.
        return one(match n.op_type() {
            "ReduceL1" | "ReduceL2" => cx.un(Op::Abs(irops::abs::Abs {}), x)?,
            "ReduceSumSquare" => cx.mul(x.clone(), x)?,
            "ReduceLogSum" => cx.un(Op::Log(irops::log::Log {}), x)?,
            _ => x,
        });
    };
    let dt = cx.dtype(&x)?;
    let out = match n.op_type() {
        "ReduceSum" => cx.reduce(ReduceKind::Sum, x, axes, keep)?,
        "ReduceMax" => cx.reduce(ReduceKind::Max, x, axes, keep)?,
        "ReduceMin" => cx.reduce(ReduceKind::Min, x, axes, keep)?,
        "ReduceProd" => cx.reduce(ReduceKind::Prod, x, axes, keep)?,
        "ReduceMean" => {
            if dt.is_float() {
                cx.reduce(ReduceKind::Mean, x, axes, keep)?
            } else {
                // Integer mean: in f64, truncated back (as numpy's astype).
                let xf = cx.cast_to(x, DType::F64)?;
                let m = cx.reduce(ReduceKind::Mean, xf, axes, keep)?;
                cx.cast_to(m, dt)?
            }
        }
        "ReduceL1" => {
            let a = cx.un(Op::Abs(irops::abs::Abs {}), x)?;
            cx.reduce(ReduceKind::Sum, a, axes, keep)?
        }
        "ReduceSumSquare" => {
            let sq = cx.mul(x.clone(), x)?;
            cx.reduce(ReduceKind::Sum, sq, axes, keep)?
        }
        "ReduceL2" => {
            let xf = cx.cast_to(x, if dt.is_float() { dt } else { DType::F64 })?;
            let sq = cx.mul(xf.clone(), xf)?;
            let s = cx.reduce(ReduceKind::Sum, sq, axes, keep)?;
            let r = cx.un(Op::Sqrt(irops::sqrt::Sqrt {}), s)?;
            cx.cast_to(r, dt)?
        }
        "ReduceLogSum" => {
            let xf = cx.cast_to(x, if dt.is_float() { dt } else { DType::F64 })?;
            let s = cx.reduce(ReduceKind::Sum, xf, axes, keep)?;
            let r = cx.un(Op::Log(irops::log::Log {}), s)?;
            cx.cast_to(r, dt)?
        }
        _ => {
            // log Σ exp(x) = m + log Σ exp(x − m), m the max (finite rows only; a row of −∞
            // gives −∞ as ONNX).
            let xf = cx.cast_to(x, if dt.is_float() { dt } else { DType::F64 })?;
            let m = cx.reduce(ReduceKind::Max, xf.clone(), axes.clone(), true)?;
            let zero = cx.scalar_like(&m, 0.0, "zero")?;
            let inf = cx.scalar_like(&m, f64::INFINITY, "inf")?;
            let ninf = cx.scalar_like(&m, f64::NEG_INFINITY, "ninf")?;
            let is_pinf = cx.compare(Predicate::Eq, m.clone(), inf)?;
            let is_ninf = cx.compare(Predicate::Eq, m.clone(), ninf)?;
            // m clamped to 0 where it is ±∞ so that x − m stays meaningful.
            let inf_m = cx.bin(
                Op::Logical(irops::logical::Logical {
                    kind: irops::logical::LogicalKind::Or,
                }),
                is_pinf,
                is_ninf,
            )?;
            let ms = cx.select(inf_m, zero, m)?;
            let sh = cx.sub(xf, ms.clone())?;
            let e = cx.un(Op::Exp(irops::exp::Exp {}), sh)?;
            let s = cx.reduce(ReduceKind::Sum, e, axes.clone(), keep)?;
            let l = cx.un(Op::Log(irops::log::Log {}), s)?;
            let ms = if keep {
                ms
            } else {
                let shape = cx.shape(&l)?;
                cx.reshape(ms, shape)?
            };
            let r = cx.add(l, ms)?;
            cx.cast_to(r, dt)?
        }
    };
    one(out)
}

fn argmax(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let (axis, keepdims) = (n.i("axis", 0), n.flag("keepdims", true));
    let select_last_index = n.flag("select_last_index", false);
    let op = if n.op_type() == "ArgMax" {
        Op::ArgMax(irops::argmax::ArgMax {
            axis,
            keepdims,
            select_last_index,
        })
    } else {
        Op::ArgMin(irops::argmin::ArgMin {
            axis,
            keepdims,
            select_last_index,
        })
    };
    one(cx.un(op, x)?)
}

/// CumSum / CumProd: the axis is an input (a scalar).
fn cumulative(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let av = cx.input(n, 1)?;
    let axis = match cx.ints(&av, "axis")?.as_slice() {
        [a] => *a,
        v => bad!("axis must hold one value, found {}", v.len()),
    };
    let kind = if n.op_type() == "CumSum" {
        irops::cumulative::CumulativeKind::Sum
    } else {
        irops::cumulative::CumulativeKind::Prod
    };
    one(cx.un(
        Op::Cumulative(irops::cumulative::Cumulative {
            kind,
            axis,
            exclusive: n.flag("exclusive", false),
            reverse: n.flag("reverse", false),
        }),
        x,
    )?)
}

fn top_k(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let k = if n.opset < 10 {
        n.i("k", -1)
    } else {
        let kv = cx.input(n, 1)?;
        match cx.ints(&kv, "K")?.as_slice() {
            [k] => *k,
            _ => bad!("K must hold one value"),
        }
    };
    if k < 0 {
        bad!("K is negative");
    }
    // `sorted = 0` leaves the order unspecified: the sorted order is a valid answer.
    let o = Op::TopK(irops::top_k::TopK {
        k: k as u64,
        axis: n.i("axis", -1),
        largest: n.flag("largest", true),
    });
    cx.emit_multi(o, &[x])
}

/// Softmax, LogSoftmax and Hardmax. Before opset 13 the input is coerced to 2-D at `axis`
/// (default 1) and normalized over all trailing dims; from 13 over `axis` alone (default −1).
fn softmax(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let xs = cx.shape(&x)?;
    let r = xs.len();
    let legacy = n.opset < 13;
    let ax = axis(n.i("axis", if legacy { 1 } else { -1 }), r.max(1))?;
    let (y, restore) = if legacy && ax + 1 != r {
        let outer = Dim::product(&xs[..ax]).map_err(crate::onnx::node::err)?;
        let inner = Dim::product(&xs[ax..]).map_err(crate::onnx::node::err)?;
        (cx.reshape(x, vec![outer, inner])?, Some(xs))
    } else {
        (x, None)
    };
    let work_axis = if restore.is_some() { 1 } else { ax as i64 };
    let out = match n.op_type() {
        "Hardmax" => {
            // 1 at the first maximum along the axis, 0 elsewhere.
            let s = cx.shape(&y)?;
            let am = cx.un(
                Op::ArgMax(irops::argmax::ArgMax {
                    axis: work_axis,
                    keepdims: true,
                    select_last_index: false,
                }),
                y.clone(),
            )?;
            let pos = cx.iota(s, work_axis, DType::I64)?;
            let hit = cx.compare(Predicate::Eq, pos, am)?;
            let dt = cx.dtype(&y)?;
            cx.cast_to(hit, dt)?
        }
        other => {
            let dt = cx.dtype(&y)?;
            let s = if dt.is_float() && dt.bits() < 32 {
                // A 16-bit Softmax computes in its type, step by step (ONNX reference).
                cx.stepwise_softmax(y, work_axis)?
            } else {
                cx.un(Op::Softmax(irops::softmax::Softmax { axis: work_axis }), y)?
            };
            if other == "LogSoftmax" {
                cx.un(Op::Log(irops::log::Log {}), s)?
            } else {
                s
            }
        }
    };
    one(match restore {
        Some(xs) => cx.reshape(out, xs)?,
        None => out,
    })
}

fn global_pool(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let r = cx.rank(&x)?;
    if r < 3 {
        bad!("needs an input of rank >= 3 (N, C, spatial…)");
    }
    let axes: Vec<i64> = (2..r as i64).collect();
    let kind = if n.op_type() == "GlobalMaxPool" {
        ReduceKind::Max
    } else {
        ReduceKind::Mean
    };
    one(cx.reduce(kind, x, axes, true)?)
}

/// `x / ‖x‖ₚ` along `axis` (p = 1 or 2; 0 where the norm is 0).
fn lp_normalization(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let (x, dt) = cx.widen(cx.input(n, 0)?)?;
    let p = n.i("p", 2);
    let ax = n.i("axis", -1);
    let norm = match p {
        1 => {
            let a = cx.un(Op::Abs(irops::abs::Abs {}), x.clone())?;
            cx.reduce(ReduceKind::Sum, a, vec![ax], true)?
        }
        2 => {
            let sq = cx.mul(x.clone(), x.clone())?;
            let s = cx.reduce(ReduceKind::Sum, sq, vec![ax], true)?;
            cx.un(Op::Sqrt(irops::sqrt::Sqrt {}), s)?
        }
        _ => bad!("p must be 1 or 2, found {p}"),
    };
    // A zero norm gives 0, not 0/0.
    let zero = cx.scalar_like(&norm, 0.0, "zero")?;
    let is0 = cx.compare(Predicate::Eq, norm.clone(), zero.clone())?;
    let q = cx.div(x, norm)?;
    let y = cx.select(is0, zero, q)?;
    one(cx.narrow(y, dt)?)
}

/// `(x − mean) / √(var + 1e-9)` over `axes` (default N, H, W).
fn mean_variance_normalization(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let (x, dt) = cx.widen(cx.input(n, 0)?)?;
    let axes = n.ints("axes").unwrap_or(vec![0, 2, 3]);
    let m = cx.reduce(ReduceKind::Mean, x.clone(), axes.clone(), true)?;
    let c = cx.sub(x, m)?;
    let sq = cx.mul(c.clone(), c.clone())?;
    let var = cx.reduce(ReduceKind::Mean, sq, axes, true)?;
    let eps = cx.scalar_like(&var, 1e-9, "eps")?;
    let v = cx.add(var, eps)?;
    let sd = cx.un(Op::Sqrt(irops::sqrt::Sqrt {}), v)?;
    let y = cx.div(c, sd)?;
    one(cx.narrow(y, dt)?)
}
