//! Indexing ops: Gather, OneHot.

use super::{axis, one, Convert};
use crate::onnx::import::Importer;
use crate::onnx::node::{bad, NResult, Node};
use crate::onnx::value::Val;
use fuselage_ir::ops::compare::Predicate;
use fuselage_ir::ops::{self as irops, Op};
use fuselage_ir::{DType, Dim};

pub(crate) const OPS: &[(&str, Convert)] = &[("Gather", gather), ("OneHot", one_hot)];

fn gather(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let (x, idx) = (cx.input(n, 0)?, cx.input(n, 1)?);
    if !cx.dtype(&idx)?.is_int() {
        bad!("indices must be integers, found {}", cx.dtype(&idx)?);
    }
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
