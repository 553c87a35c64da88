//! The indexing ops on burn primitives: `gather_elements`, `gather_nd`, `scatter_elements` and
//! `scatter_nd` (reductions `none` and `add`), `pad`, `trilu`.
//!
//! Index operands are read back to the host (as `gather` does): there they are checked (an
//! out-of-range index is an error, never a panic inside burn) and resolved with the IR op's own
//! index plan (`source_offsets`, `index_rows`, …, property-tested against naive formulas in
//! `fuselage-ir`) into flat positions; the data itself stays on the device and moves with
//! `float_select` (gathers, edge/reflect/wrap padding), `float_select_add` (scatter `add`),
//! `float_mask_where` (scatter `none`, last update wins), `float_cat` of constant blocks
//! (constant padding) and `float_mask_fill` (trilu). Every one of these copies values or sums
//! them, so the results equal the reference's (exactly, except for the f32 summation of
//! scatter `add`).

use super::{scalar, sh, shape_of, take_range, truthy, F, R};
use crate::lower::{download_f32, float_dtype, upload_f32};
use burn::tensor::backend::Backend;
use burn::tensor::ops::IntTensor;
use burn::tensor::{Element, TensorData};
use fuselage_ir::ops::gather_elements::GatherElements;
use fuselage_ir::ops::gather_nd::{index_rows, GatherNd};
use fuselage_ir::ops::pad::{Pad, PadMode};
use fuselage_ir::ops::scatter_elements::{ScatterElements, ScatterReduction};
use fuselage_ir::ops::scatter_nd::ScatterNd;
use fuselage_ir::ops::trilu::Trilu;
use fuselage_ir::ops::OpSpec;
use fuselage_ir::DType;
use std::collections::HashMap;

/// Positions as a backend int tensor of `shape`.
fn positions<B: Backend>(v: &[usize], shape: &[usize], dev: &B::Device) -> IntTensor<B> {
    let v: Vec<i64> = v.iter().map(|&x| x as i64).collect();
    B::int_from_data(
        TensorData::new(v, shape.to_vec()).convert_dtype(<B::IntElem as Element>::dtype()),
        dev,
    )
}

/// An index operand on the host, as the `f64` values the IR's index plans read.
fn host_indices<B: Backend>(t: F<B>) -> R<(Vec<f64>, Vec<usize>)> {
    let (v, s) = download_f32::<B>(t)?;
    Ok((v.into_iter().map(f64::from).collect(), s))
}

fn empty<B: Backend>(shape: &[usize], dev: &B::Device) -> F<B> {
    B::float_empty(sh(shape), dev, float_dtype::<B>())
}

fn numel(s: &[usize]) -> usize {
    s.iter().product()
}

/// `gather_elements`: a select of the source offsets from the flattened data.
pub(super) fn gather_elements<B: Backend>(
    g: &GatherElements,
    data: F<B>,
    idx: F<B>,
    dev: &B::Device,
) -> R<F<B>> {
    let ds = shape_of::<B>(&data);
    let (iv, is) = host_indices::<B>(idx)?;
    let offs = g.source_offsets(&ds, &is, &iv).map_err(|e| e.0)?;
    if offs.is_empty() {
        return Ok(empty::<B>(&is, dev));
    }
    let flat = B::float_reshape(data, sh(&[numel(&ds)]));
    let sel = B::float_select(flat, 0, positions::<B>(&offs, &[offs.len()], dev));
    Ok(B::float_reshape(sel, sh(&is)))
}

/// `gather_nd`: a select of whole rows of the data viewed as `[rows, slice]`.
pub(super) fn gather_nd<B: Backend>(
    g: &GatherNd,
    data: F<B>,
    idx: F<B>,
    dev: &B::Device,
) -> R<F<B>> {
    let ds = shape_of::<B>(&data);
    let (iv, is) = host_indices::<B>(idx)?;
    let (rows, slice) = index_rows(GatherNd::NAME, &ds, &is, &iv, g.batch_dims).map_err(|e| e.0)?;
    let out = g.result_shape(&ds, &is);
    if rows.is_empty() || slice == 0 {
        return Ok(empty::<B>(&out, dev));
    }
    let d2 = B::float_reshape(data, sh(&[numel(&ds) / slice, slice]));
    let sel = B::float_select(d2, 0, positions::<B>(&rows, &[rows.len()], dev));
    Ok(B::float_reshape(sel, sh(&out)))
}

/// Scatter `updates` (`[n, slice]` once reshaped) into the rows `dest` of `data` viewed as
/// `[rows, slice]`: `add` sums with `float_select_add`; `none` selects, for every row, the
/// last update that writes it and keeps the data elsewhere.
fn scatter_rows<B: Backend>(
    reduction: ScatterReduction,
    data: F<B>,
    dest: &[usize],
    slice: usize,
    upd: F<B>,
    dev: &B::Device,
) -> R<F<B>> {
    let ds = shape_of::<B>(&data);
    if dest.is_empty() || slice == 0 {
        return Ok(data);
    }
    let rows = numel(&ds) / slice;
    let d2 = B::float_reshape(data, sh(&[rows, slice]));
    let u2 = B::float_reshape(upd, sh(&[dest.len(), slice]));
    let out = match reduction {
        ScatterReduction::Add => {
            B::float_select_add(d2, 0, positions::<B>(dest, &[dest.len()], dev), u2)
        }
        ScatterReduction::None => {
            let mut src = vec![usize::MAX; rows];
            for (t, &r) in dest.iter().enumerate() {
                src[r] = t;
            }
            let hit: Vec<f32> = src
                .iter()
                .map(|&s| f32::from(u8::from(s != usize::MAX)))
                .collect();
            let src: Vec<usize> = src
                .into_iter()
                .map(|s| if s == usize::MAX { 0 } else { s })
                .collect();
            let sel = B::float_select(u2, 0, positions::<B>(&src, &[rows], dev));
            let mask = B::float_expand(upload_f32::<B>(hit, &[rows, 1], dev), sh(&[rows, slice]));
            B::float_mask_where(d2, truthy::<B>(mask), sel)
        }
        other => return Err(format!("scatter reduction {other:?} runs on the host")),
    };
    Ok(B::float_reshape(out, sh(&ds)))
}

/// `scatter_elements` with reduction `none` or `add`.
pub(super) fn scatter_elements<B: Backend>(
    s: &ScatterElements,
    data: F<B>,
    idx: F<B>,
    upd: F<B>,
    dev: &B::Device,
) -> R<F<B>> {
    let ds = shape_of::<B>(&data);
    let us = shape_of::<B>(&upd);
    let (iv, is) = host_indices::<B>(idx)?;
    let dest = s.destination_offsets(&ds, &is, &iv, &us).map_err(|e| e.0)?;
    scatter_rows::<B>(s.reduction, data, &dest, 1, upd, dev)
}

/// `scatter_nd` with reduction `none` or `add`.
pub(super) fn scatter_nd<B: Backend>(
    s: &ScatterNd,
    data: F<B>,
    idx: F<B>,
    upd: F<B>,
    dev: &B::Device,
) -> R<F<B>> {
    let ds = shape_of::<B>(&data);
    let us = shape_of::<B>(&upd);
    let (iv, is) = host_indices::<B>(idx)?;
    let (rows, slice) = s.destination_rows(&ds, &is, &iv, &us).map_err(|e| e.0)?;
    scatter_rows::<B>(s.reduction, data, &rows, slice, upd, dev)
}

/// `pad`, one axis at a time: constant padding concatenates blocks of the (dtype-rounded)
/// value around the cropped axis; edge/reflect/wrap select the source index of every result
/// position (the IR's per-axis map).
pub(super) fn pad<B: Backend>(
    p: &Pad,
    x: F<B>,
    dtype: DType,
    bind: &HashMap<String, u64>,
    dev: &B::Device,
) -> R<F<B>> {
    let xs = shape_of::<B>(&x);
    let amounts = p.amounts(xs.len(), bind).map_err(|e| e.0)?;
    let maps: Vec<Vec<Option<usize>>> = amounts
        .iter()
        .zip(&xs)
        .enumerate()
        .map(|(i, (&(b, e), &n))| p.axis_source(n, b, e, i).map_err(|e| e.0))
        .collect::<R<_>>()?;
    let out: Vec<usize> = maps.iter().map(|m| m.len()).collect();
    if numel(&out) == 0 {
        return Ok(empty::<B>(&out, dev));
    }
    let value = dtype.round(p.value);
    let mut x = x;
    for (i, map) in maps.iter().enumerate() {
        if map.len() == xs[i] && map.iter().enumerate().all(|(k, s)| *s == Some(k)) {
            continue;
        }
        let cur = shape_of::<B>(&x);
        if p.mode == PadMode::Constant {
            let kept: Vec<usize> = map.iter().flatten().copied().collect();
            let before = map.iter().take_while(|s| s.is_none()).count();
            let after = map.len() - before - kept.len();
            let block = |len: usize| {
                let mut s = cur.clone();
                s[i] = len;
                scalar::<B>(value, &s, dev)
            };
            let mut parts = vec![];
            if before > 0 {
                parts.push(block(before));
            }
            if let Some(&first) = kept.first() {
                parts.push(take_range::<B>(
                    x,
                    i,
                    first as i64,
                    kept.len() as i64,
                    1,
                    dev,
                )?);
            }
            if after > 0 {
                parts.push(block(after));
            }
            x = if parts.len() == 1 {
                parts.pop().ok_or("pad: no parts")?
            } else {
                B::float_cat(parts, i)
            };
        } else {
            let src: Vec<usize> = map
                .iter()
                .map(|s| s.ok_or_else(|| "pad: a non-constant mode left a hole".to_string()))
                .collect::<R<_>>()?;
            x = B::float_select(x, i, positions::<B>(&src, &[src.len()], dev));
        }
    }
    Ok(x)
}

/// `trilu`: zero the dropped triangle with a mask over the last two axes.
pub(super) fn trilu<B: Backend>(t: &Trilu, x: F<B>, dev: &B::Device) -> R<F<B>> {
    let s = shape_of::<B>(&x);
    let r = s.len();
    if r < 2 {
        return Err(format!("trilu expects rank >= 2, found {s:?}"));
    }
    let (rows, cols) = (s[r - 2], s[r - 1]);
    let mut drop = Vec::with_capacity(rows * cols);
    for i in 0..rows {
        for j in 0..cols {
            drop.push(if t.keeps(i, j) { 0.0f32 } else { 1.0 });
        }
    }
    if numel(&s) == 0 || drop.iter().all(|&d| d == 0.0) {
        return Ok(x);
    }
    let mut ms = vec![1; r - 2];
    ms.extend([rows, cols]);
    let mask = B::float_expand(upload_f32::<B>(drop, &ms, dev), sh(&s));
    Ok(B::float_mask_fill(
        x,
        truthy::<B>(mask),
        burn::tensor::Scalar::Float(0.0),
    ))
}
