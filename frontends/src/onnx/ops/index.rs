//! Indexing ops: Gather, GatherElements, GatherND, Scatter(Elements), ScatterND, OneHot,
//! Trilu.

use super::{axis, one, Convert};
use crate::onnx::import::Importer;
use crate::onnx::node::{bad, NResult, Node};
use crate::onnx::value::Val;
use fuselage_ir::ops::compare::Predicate;
use fuselage_ir::ops::{self as irops, Op};
use fuselage_ir::{DType, Dim};

pub(crate) const OPS: &[(&str, Convert)] = &[
    ("Gather", gather),
    ("GatherElements", gather_elements),
    ("GatherND", gather_nd),
    ("Scatter", scatter_elements),
    ("ScatterElements", scatter_elements),
    ("ScatterND", scatter_nd),
    ("OneHot", one_hot),
    ("Trilu", trilu),
];

fn int_indices(cx: &Importer, idx: &Val) -> NResult<()> {
    if !cx.dtype(idx)?.is_int() {
        bad!("indices must be integers, found {}", cx.dtype(idx)?);
    }
    Ok(())
}

fn gather_elements(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let (x, idx) = (cx.input(n, 0)?, cx.input(n, 1)?);
    int_indices(cx, &idx)?;
    let op = Op::GatherElements(irops::gather_elements::GatherElements {
        axis: n.i("axis", 0),
    });
    one(cx.bin(op, x, idx)?)
}

fn gather_nd(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let (x, idx) = (cx.input(n, 0)?, cx.input(n, 1)?);
    int_indices(cx, &idx)?;
    let bd = n.i("batch_dims", 0);
    if bd < 0 {
        bad!("batch_dims {bd} is negative");
    }
    // Constant index tuples into fixed dims are checked here, naming the node at import.
    if let Some(k) = cx.known_of(&idx) {
        let xs = cx.shape(&x)?;
        let t = k.shape.last().copied().unwrap_or(0);
        let dims = xs.get(bd as usize..bd as usize + t).unwrap_or(&[]);
        if let (Ok(ints), true) = (k.ints(), t > 0) {
            for (ti, tuple) in ints.chunks_exact(t).enumerate() {
                for (j, (&i, d)) in tuple.iter().zip(dims).enumerate() {
                    if let Some(d) = d.fixed() {
                        let d = d as i64;
                        if i < -d || i >= d {
                            bad!(
                                "index tuple {ti}: entry {j} is {i}, out of range for data dim \
                                 {} of size {d}",
                                bd as usize + j
                            );
                        }
                    }
                }
            }
        }
    }
    let op = Op::GatherNd(irops::gather_nd::GatherNd {
        batch_dims: bd as u64,
    });
    one(cx.bin(op, x, idx)?)
}

fn reduction(n: &Node) -> NResult<irops::scatter_elements::ScatterReduction> {
    use irops::scatter_elements::ScatterReduction as R;
    Ok(match n.s_or("reduction", "none").as_str() {
        "none" => R::None,
        "add" => R::Add,
        "mul" => R::Mul,
        "max" => R::Max,
        "min" => R::Min,
        other => bad!("unknown reduction `{other}`"),
    })
}

fn scatter_elements(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let (x, idx, upd) = (cx.input(n, 0)?, cx.input(n, 1)?, cx.input(n, 2)?);
    int_indices(cx, &idx)?;
    let op = Op::ScatterElements(irops::scatter_elements::ScatterElements {
        axis: n.i("axis", 0),
        reduction: reduction(n)?,
    });
    one(cx.emit(op, &[x, idx, upd])?)
}

fn scatter_nd(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let (x, idx, upd) = (cx.input(n, 0)?, cx.input(n, 1)?, cx.input(n, 2)?);
    int_indices(cx, &idx)?;
    let op = Op::ScatterNd(irops::scatter_nd::ScatterNd {
        reduction: reduction(n)?,
    });
    one(cx.emit(op, &[x, idx, upd])?)
}

fn trilu(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let k = match cx.opt_input(n, 1)? {
        Some(kv) => match cx.ints(&kv, "k")?.as_slice() {
            [k] => *k,
            v => bad!("k must hold one value, found {}", v.len()),
        },
        None => 0,
    };
    let op = Op::Trilu(irops::trilu::Trilu {
        upper: n.flag("upper", true),
        k,
    });
    one(cx.un(op, x)?)
}

fn gather(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let (x, idx) = (cx.input(n, 0)?, cx.input(n, 1)?);
    int_indices(cx, &idx)?;
    let ax = n.i("axis", 0);
    one(cx.bin(Op::Gather(irops::gather::Gather { axis: ax }), x, idx)?)
}

/// OneHot: `values[1]` where `indices` (negative ones count from `depth`) equals the position
/// along the new `axis`, `values[0]` elsewhere.
fn one_hot(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let (idx, depth, values) = (cx.input(n, 0)?, cx.input(n, 1)?, cx.input(n, 2)?);
    let depth_v = cx.scalar_f64(&depth, "depth")?;
    if depth_v < 1.0 || depth_v.fract() != 0.0 {
        bad!("depth {depth_v} must be a positive integer");
    }
    let depth_n = depth_v as i64;
    let is = cx.shape(&idx)?;
    let r = is.len() + 1;
    let ax = axis(n.i("axis", -1), r)?;
    // Normalize negative indices: i < 0 ? i + depth : i (in f64, exact for small integers).
    let fi = cx.cast_to(idx, DType::F64)?;
    let zero = cx.scalar(DType::F64, 0.0, "zero");
    let dv = cx.scalar(DType::F64, depth_v, "depth");
    let neg = cx.compare(Predicate::Lt, fi.clone(), zero)?;
    let shifted = cx.add(fi.clone(), dv)?;
    let fi = cx.select(neg, shifted, fi)?;
    let mut with_axis = is.clone();
    with_axis.insert(ax, Dim::from(1u64));
    let fi = cx.reshape(fi, with_axis)?;
    let mut full = is;
    full.insert(ax, Dim::from_i64(depth_n));
    let pos = cx.iota(full, ax as i64, DType::F64)?;
    let hit = cx.compare(Predicate::Eq, fi, pos)?;
    let vs = cx.shape(&values)?;
    if vs.len() != 1 || vs[0].fixed() != Some(2) {
        bad!("values must be [off, on], found shape {vs:?}");
    }
    let off = cx.slice_axis(values.clone(), 0, Dim::from(0u64), Dim::from(1u64), 1)?;
    let on = cx.slice_axis(values, 0, Dim::from(1u64), Dim::from(2u64), 1)?;
    let off = cx.reshape(off, vec![])?;
    let on = cx.reshape(on, vec![])?;
    one(cx.select(hit, on, off)?)
}
