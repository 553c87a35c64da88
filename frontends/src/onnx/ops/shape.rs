//! Shape and layout ops: Shape, Size, Reshape, Flatten, (Un)Squeeze, Expand, Concat, Split,
//! Slice, Transpose, Tile, Constant, ConstantOfShape, Range, EyeLike, Depth/SpaceToDepth.
//!
//! Shape arguments (targets, repeats, starts/ends, split sizes) are read as dims, so they may be
//! symbolic (`[batch, 12*seq]`) when they come from shape computations.

use super::{axis, one, Convert};
use crate::onnx::import::Importer;
use crate::onnx::node::{bad, err, unsup, NResult, Node, NodeErr};
use crate::onnx::tensor::{decode_tensor, Known};
use crate::onnx::value::{SymT, Val};
use fuselage_ir::ops::compare::Predicate;
use fuselage_ir::ops::{self as irops, Op};
use fuselage_ir::{DType, Dim, Tensor};
use std::sync::Arc;

pub(crate) const OPS: &[(&str, Convert)] = &[
    ("Shape", shape),
    ("Size", size),
    ("Reshape", reshape),
    ("Flatten", flatten),
    ("Squeeze", squeeze),
    ("Unsqueeze", unsqueeze),
    ("Expand", expand),
    ("Concat", concat),
    ("Split", split),
    ("Slice", slice),
    ("Transpose", transpose),
    ("Tile", tile),
    ("Constant", constant),
    ("ConstantOfShape", constant_of_shape),
    ("Range", range),
    ("EyeLike", eye_like),
    ("Pad", pad),
    ("CenterCropPad", center_crop_pad),
    ("DepthToSpace", depth_to_space),
    ("SpaceToDepth", space_to_depth),
];

fn d(n: i64) -> Dim {
    Dim::from_i64(n)
}

fn dim_err(e: fuselage_ir::DimError) -> NodeErr {
    err(e)
}

fn shape(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let xs = cx.shape(&x)?;
    let r = xs.len() as i64;
    let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let s = clampi(n.i("start", 0));
    let e = clampi(n.i("end", r));
    one(cx.sym_vector(xs[s..e.max(s)].to_vec()))
}

fn size(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let numel = Dim::product(&cx.shape(&x)?).map_err(dim_err)?;
    one(Val::Sym(Arc::new(SymT::scalar(numel, DType::I64))))
}

fn reshape(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let target = if n.opset < 5 {
        match n.ints("shape") {
            Some(v) => v.into_iter().map(d).collect(),
            None => bad!("missing the `shape` attribute"),
        }
    } else {
        let t = cx.input(n, 1)?;
        cx.dims_of(&t, "shape")?
    };
    let allowzero = n.flag("allowzero", false);
    let xs = cx.shape(&x)?;
    let mut dims = Vec::with_capacity(target.len());
    for (i, t) in target.iter().enumerate() {
        dims.push(match t.as_const() {
            Some(0) if !allowzero => match xs.get(i) {
                Some(d) => d.clone(),
                None => bad!("shape entry {i} copies a dim the input does not have"),
            },
            _ => t.clone(),
        });
    }
    one(cx.reshape(x, dims)?)
}

fn flatten(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let xs = cx.shape(&x)?;
    let r = xs.len() as i64;
    let ax = n.i("axis", 1);
    let ax = if ax < 0 { ax + r } else { ax };
    if !(0..=r).contains(&ax) {
        bad!("axis {ax} out of range for rank {r}");
    }
    let (l, rr) = xs.split_at(ax as usize);
    let dims = vec![
        Dim::product(l).map_err(dim_err)?,
        Dim::product(rr).map_err(dim_err)?,
    ];
    one(cx.reshape(x, dims)?)
}

/// Axes from the attribute (opset < 13) or the optional second input.
fn axes_of(cx: &mut Importer, n: &Node, attr_before: i64) -> NResult<Option<Vec<i64>>> {
    if n.opset < attr_before {
        Ok(n.ints("axes"))
    } else {
        match cx.opt_input(n, 1)? {
            Some(v) => Ok(Some(cx.ints(&v, "axes")?)),
            None => Ok(None),
        }
    }
}

fn squeeze(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let axes = axes_of(cx, n, 13)?;
    let xs = cx.shape(&x)?;
    let r = xs.len();
    let drop: Vec<usize> = match axes {
        Some(ax) => ax.iter().map(|&i| axis(i, r)).collect::<NResult<_>>()?,
        None => {
            if let Some(s) = xs.iter().find(|d| !d.is_const()) {
                unsup!("Squeeze without axes on symbolic dim {s} (whether it is 1 is unknown)");
            }
            (0..r).filter(|&i| xs[i].fixed() == Some(1)).collect()
        }
    };
    for &i in &drop {
        if xs[i].fixed() != Some(1) {
            bad!("cannot squeeze axis {i} of size {}", xs[i]);
        }
    }
    let dims = (0..r)
        .filter(|i| !drop.contains(i))
        .map(|i| xs[i].clone())
        .collect();
    one(cx.reshape(x, dims)?)
}

fn unsqueeze(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let Some(ax) = axes_of(cx, n, 13)? else {
        bad!("Unsqueeze needs axes")
    };
    let mut dims = cx.shape(&x)?;
    let r = dims.len() + ax.len();
    let mut ax: Vec<usize> = ax.iter().map(|&i| axis(i, r)).collect::<NResult<_>>()?;
    ax.sort_unstable();
    if ax.windows(2).any(|w| w[0] == w[1]) {
        bad!("repeated axis in {ax:?}");
    }
    for i in ax {
        dims.insert(i, d(1));
    }
    one(cx.reshape(x, dims)?)
}

/// Bidirectional (numpy) broadcast of `x`'s dims with a target shape.
pub(crate) fn broadcast_with(x: &[Dim], target: &[Dim]) -> NResult<Vec<Dim>> {
    let r = x.len().max(target.len());
    let mut out = Vec::with_capacity(r);
    for i in 0..r {
        let xd = (i + x.len() >= r).then(|| &x[i + x.len() - r]);
        let td = (i + target.len() >= r).then(|| &target[i + target.len() - r]);
        out.push(match (xd, td) {
            (Some(a), None) | (None, Some(a)) => a.clone(),
            (Some(a), Some(b)) if a == b => a.clone(),
            (Some(a), Some(b)) if a.fixed() == Some(1) => b.clone(),
            (Some(a), Some(b)) if b.fixed() == Some(1) => a.clone(),
            (Some(a), Some(b)) => bad!("cannot broadcast dim {a} to {b}"),
            (None, None) => bad!("internal: empty broadcast position"),
        });
    }
    Ok(out)
}

fn expand(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let t = cx.input(n, 1)?;
    let target = cx.dims_of(&t, "shape")?;
    let xs = cx.shape(&x)?;
    let dims = broadcast_with(&xs, &target)?;
    one(cx.broadcast(x, dims)?)
}

fn concat(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let args: Vec<Val> = (0..n.input_names().len())
        .filter(|&i| n.has_input(i))
        .map(|i| cx.input(n, i))
        .collect::<NResult<_>>()?;
    let ax = if n.opset < 4 {
        n.i("axis", 1)
    } else if n.has("axis") {
        n.i("axis", 0)
    } else {
        bad!("missing the `axis` attribute")
    };
    // Zero-length operands contribute nothing (ONNX allows them, e.g. an empty shape part).
    let mut parts = vec![];
    for a in args {
        let s = cx.shape(&a)?;
        let r = s.len();
        if r > 0 && s[axis(ax, r)?].fixed() == Some(0) {
            continue;
        }
        parts.push(a);
    }
    match parts.len() {
        0 => bad!("every operand is empty"),
        1 => one(parts.remove(0)),
        _ => {
            let r = cx.rank(&parts[0])?;
            let parts = if r > 0 {
                cx.align(parts, Some(axis(ax, r)?))?
            } else {
                parts
            };
            one(cx.emit(Op::Concat(irops::concat::Concat { axis: ax }), &parts)?)
        }
    }
}

fn split(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let ax = n.i("axis", 0);
    let xs = cx.shape(&x)?;
    let a = axis(ax, xs.len())?;
    let dim = xs[a].clone();
    let given: Option<Vec<Dim>> = if n.opset < 13 {
        n.ints("split").map(|v| v.into_iter().map(d).collect())
    } else {
        match cx.opt_input(n, 1)? {
            Some(v) => Some(cx.dims_of(&v, "split")?),
            None => None,
        }
    };
    let sizes = match given {
        Some(s) => s,
        None => {
            let k = if n.opset >= 18 && n.has("num_outputs") {
                n.i("num_outputs", 1)
            } else {
                n.num_outputs() as i64
            };
            if k < 1 {
                bad!("num_outputs {k}");
            }
            let k = k as u64;
            match dim.fixed() {
                // ONNX: ceil(d/k) each, the last one smaller.
                Some(dv) => {
                    let per = dv.div_ceil(k);
                    (0..k)
                        .map(|i| Dim::from(per.min(dv.saturating_sub(i * per))))
                        .filter(|s| n.opset < 18 || s.fixed() != Some(0) || k == 1)
                        .collect()
                }
                None => {
                    let per = dim.div_exact(k).map_err(dim_err)?;
                    vec![per; k as usize]
                }
            }
        }
    };
    let o = Op::Split(irops::split::Split { axis: ax, sizes });
    cx.emit_multi(o, &[x])
}

/// Starts, ends, axes and steps of a Slice node.
type SliceArgs = (Vec<Dim>, Vec<Dim>, Option<Vec<i64>>, Option<Vec<i64>>);

fn slice(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let r = cx.rank(&x)?;
    let (starts, ends, axes, steps): SliceArgs = if n.opset < 10 {
        let (Some(s), Some(e)) = (n.ints("starts"), n.ints("ends")) else {
            bad!("missing starts/ends attributes")
        };
        (
            s.into_iter().map(d).collect(),
            e.into_iter().map(d).collect(),
            n.ints("axes"),
            None,
        )
    } else {
        let s = cx.input(n, 1)?;
        let e = cx.input(n, 2)?;
        let starts = cx.dims_of(&s, "starts")?;
        let ends = cx.dims_of(&e, "ends")?;
        let axes = match cx.opt_input(n, 3)? {
            Some(v) => Some(cx.ints(&v, "axes")?),
            None => None,
        };
        let steps = match cx.opt_input(n, 4)? {
            Some(v) => Some(cx.ints(&v, "steps")?),
            None => None,
        };
        (starts, ends, axes, steps)
    };
    let k = starts.len();
    let axes = axes.unwrap_or_else(|| (0..k as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; k]);
    if ends.len() != k || axes.len() != k || steps.len() != k {
        bad!("starts, ends, axes and steps have different lengths");
    }
    let mut v = x;
    for i in 0..k {
        let ax = axis(axes[i], r)?;
        if steps[i] == 0 {
            bad!("step {i} is 0");
        }
        // `x[:S]` of a fixed dim n with a symbol S: the model can only run with S <= n.
        let dim = cx.shape(&v)?[ax].clone();
        if let (Some(sym), Some(nn), Some(0), true) = (
            ends[i].as_sym(),
            dim.fixed(),
            starts[i].as_const(),
            steps[i] == 1,
        ) {
            cx.assume_max(sym, nn);
        }
        v = cx.slice_axis(v, ax, starts[i].clone(), ends[i].clone(), steps[i])?;
    }
    one(v)
}

fn transpose(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let r = cx.rank(&x)?;
    let perm: Vec<usize> = match n.ints("perm") {
        Some(p) => p.iter().map(|&i| axis(i, r)).collect::<NResult<_>>()?,
        None => (0..r).rev().collect(),
    };
    let mut seen = perm.clone();
    seen.sort_unstable();
    if seen != (0..r).collect::<Vec<_>>() {
        bad!("perm {perm:?} is not a permutation of 0..{r}");
    }
    one(cx.transpose(x, perm)?)
}

fn tile(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let rv = cx.input(n, 1)?;
    let reps = cx.dims_of(&rv, "repeats")?;
    let xs = cx.shape(&x)?;
    if reps.len() != xs.len() {
        bad!("repeats has {} entries for rank {}", reps.len(), xs.len());
    }
    if reps.iter().all(|r| r.fixed() == Some(1)) {
        return one(x);
    }
    // [d0, d1] → [1, d0, 1, d1] → broadcast [r0, d0, r1, d1] → [r0·d0, r1·d1].
    let mut inter = vec![];
    let mut wide = vec![];
    let mut out = vec![];
    for (dd, r) in xs.iter().zip(&reps) {
        inter.extend([d(1), dd.clone()]);
        wide.extend([r.clone(), dd.clone()]);
        out.push(r.mul(dd).map_err(dim_err)?);
    }
    let y = cx.reshape(x, inter)?;
    let y = cx.broadcast(y, wide)?;
    one(cx.reshape(y, out)?)
}

fn constant(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let k = if let Some(t) = n.t("value") {
        decode_tensor(t, cx.dir.as_deref(), fuselage_ir::limits::memory_budget())
            .map_err(|m| err(format!("value tensor: {m}")))?
    } else if n.has("value_float") {
        Known::from_tensor(&Tensor::scalar(DType::F32, n.f("value_float", 0.0)))
    } else if let Some(v) = n.floats("value_floats") {
        Known::from_tensor(&Tensor::from_f32(vec![v.len()], &v).map_err(err)?)
    } else if n.has("value_int") {
        Known::from_i64s(vec![], &[n.i("value_int", 0)])
    } else if let Some(v) = n.ints("value_ints") {
        Known::from_i64s(vec![v.len()], &v)
    } else if n.has("sparse_value") {
        unsup!("sparse_value constants")
    } else {
        unsup!("string constants (only tensor, float(s) and int(s) values are supported)")
    };
    let name = n.proto.output.first().cloned().unwrap_or_default();
    one(Val::Known(Arc::new(k), name.into()))
}

fn constant_of_shape(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let t = cx.input(n, 0)?;
    let target = cx.dims_of(&t, "shape")?;
    let value = match n.t("value") {
        Some(t) => decode_tensor(t, None, 1 << 20).map_err(|m| err(format!("value: {m}")))?,
        None => Known::from_tensor(&Tensor::scalar(DType::F32, 0.0)),
    };
    if value.numel() != 1 {
        bad!("value must hold one element");
    }
    if let Some(neg) = target.iter().find(|d| d.as_const().is_some_and(|c| c < 0)) {
        bad!("negative dim {neg} in the shape");
    }
    let fill = value.tensor().map_err(err)?.reshaped(vec![]).map_err(err)?;
    let f = cx.tensor(&fill, "value");
    one(cx.broadcast(f, target)?)
}

fn range(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let (s, l, dl) = (cx.input(n, 0)?, cx.input(n, 1)?, cx.input(n, 2)?);
    let dt = cx.dtype(&s)?;
    if let (Some(ks), Some(kl), Some(kd)) = (cx.known_of(&s), cx.known_of(&l), cx.known_of(&dl)) {
        let f = |k: &Known| -> NResult<f64> {
            k.floats()
                .map_err(err)?
                .first()
                .copied()
                .ok_or_else(|| err("empty range operand"))
        };
        let (s0, l0, d0) = (f(&ks)?, f(&kl)?, f(&kd)?);
        if d0 == 0.0 {
            bad!("delta is 0");
        }
        let cnt = ((l0 - s0) / d0).ceil().max(0.0);
        if cnt > (1u64 << 26) as f64 {
            unsup!("a range of {cnt} elements");
        }
        // ONNX accumulates in the dtype: start + i·delta rounded once per element.
        let v: Vec<f64> = (0..cnt as usize).map(|i| s0 + i as f64 * d0).collect();
        let t = Tensor::new(dt, vec![v.len()], v).map_err(err)?;
        return one(cx.tensor(&t, "range"));
    }
    if !dt.is_int() {
        unsup!("a {dt} range whose bounds are computed at run time");
    }
    let delta = match cx.known_of(&dl).and_then(|k| k.ints().ok()) {
        Some(v) if v.len() == 1 && v[0] != 0 => v[0],
        _ => unsup!("a range with a delta that is not a known non-zero integer"),
    };
    let (Some(ss), Some(ll)) = (cx.sym_of(&s), cx.sym_of(&l)) else {
        unsup!("a range whose bounds are computed from run-time data")
    };
    let (Some(start), Some(limit)) = (ss.data.first(), ll.data.first()) else {
        bad!("range bounds must be scalars")
    };
    // count = max(ceil((limit − start)/delta), 0)
    let span = if delta > 0 {
        limit.sub(start)
    } else {
        start.sub(limit)
    }
    .map_err(dim_err)?;
    let count = span
        .maximum(&Dim::default())
        .and_then(|c| c.div_ceil(delta.unsigned_abs()))
        .map_err(dim_err)?;
    let i = cx.iota(vec![count], 0, dt)?;
    let dv = cx.scalar(dt, delta as f64, "delta");
    let scaled = cx.mul(i, dv)?;
    let sv = Val::Sym(Arc::new(SymT::scalar(start.clone(), dt)));
    one(cx.add(scaled, sv)?)
}

fn pad(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    use irops::pad::{Pad, PadMode};
    let x = cx.input(n, 0)?;
    let r = cx.rank(&x)?;
    let mode = match n.s_or("mode", "constant").as_str() {
        "constant" => PadMode::Constant,
        "reflect" => PadMode::Reflect,
        "edge" => PadMode::Edge,
        "wrap" => PadMode::Wrap,
        other => bad!("unknown mode `{other}`"),
    };
    let (given, value, axes): (Vec<Dim>, f64, Option<Vec<i64>>) = if n.opset < 11 {
        let p = n
            .ints(if n.opset < 2 { "paddings" } else { "pads" })
            .ok_or_else(|| err("missing pads"))?;
        (p.into_iter().map(d).collect(), n.f("value", 0.0), None)
    } else {
        let pv = cx.input(n, 1)?;
        let pads = cx.dims_of(&pv, "pads")?;
        let value = match cx.opt_input(n, 2)? {
            Some(v) => {
                let f = cx.floats(&v, "constant_value")?;
                f.first().copied().unwrap_or(0.0)
            }
            None => 0.0,
        };
        let axes = match cx.opt_input(n, 3)? {
            Some(v) => Some(cx.ints(&v, "axes")?),
            None => None,
        };
        (pads, value, axes)
    };
    // Per-axis begins then ends, for the listed axes (all by default).
    let axes: Vec<usize> = match axes {
        Some(a) => a.iter().map(|&i| axis(i, r)).collect::<NResult<_>>()?,
        None => (0..r).collect(),
    };
    if given.len() != 2 * axes.len() {
        bad!("pads has {} entries for {} axes", given.len(), axes.len());
    }
    let mut pads = vec![Dim::default(); 2 * r];
    for (k, &a) in axes.iter().enumerate() {
        pads[a] = given[k].clone();
        pads[r + a] = given[axes.len() + k].clone();
    }
    if pads.iter().all(|p| p.as_const() == Some(0)) {
        return one(x);
    }
    one(cx.un(Op::Pad(Pad { pads, mode, value }), x)?)
}

/// CenterCropPad: crop or zero-pad each listed axis to the target size, centered (an odd
/// difference puts the extra element at the end).
fn center_crop_pad(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let sv = cx.input(n, 1)?;
    let target = cx.ints(&sv, "shape")?;
    let xs = cx.shape(&x)?;
    let r = xs.len();
    let axes: Vec<usize> = match n.ints("axes") {
        Some(a) => a.iter().map(|&i| axis(i, r)).collect::<NResult<_>>()?,
        None => (0..r).collect(),
    };
    if target.len() != axes.len() {
        bad!("shape has {} entries for {} axes", target.len(), axes.len());
    }
    let mut pads = vec![Dim::default(); 2 * r];
    for (&a, &t) in axes.iter().zip(&target) {
        let Some(dim) = xs[a].fixed() else {
            unsup!("CenterCropPad of symbolic dim {}", xs[a]);
        };
        let diff = t - dim as i64;
        // Crop is a negative pad; the smaller half goes first.
        let (lo, hi) = if diff >= 0 {
            (diff / 2, diff - diff / 2)
        } else {
            let c = -diff;
            (-(c / 2), -(c - c / 2))
        };
        pads[a] = d(lo);
        pads[r + a] = d(hi);
    }
    if pads.iter().all(|p| p.as_const() == Some(0)) {
        return one(x);
    }
    one(cx.un(
        Op::Pad(irops::pad::Pad {
            pads,
            mode: irops::pad::PadMode::Constant,
            value: 0.0,
        }),
        x,
    )?)
}

fn eye_like(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let xs = cx.shape(&x)?;
    if xs.len() != 2 {
        bad!("EyeLike needs a 2-D input, found rank {}", xs.len());
    }
    let dt = if n.has("dtype") {
        crate::onnx::tensor::onnx_dtype(n.i("dtype", 1) as i32).map_err(NodeErr::Unsupported)?
    } else {
        cx.dtype(&x)?
    };
    let k = n.i("k", 0);
    let rows = cx.iota(xs.clone(), 0, DType::I64)?;
    let cols = cx.iota(xs, 1, DType::I64)?;
    let kv = cx.scalar(DType::I64, k as f64, "k");
    let shifted = cx.add(rows, kv)?;
    let eq = cx.compare(Predicate::Eq, cols, shifted)?;
    one(cx.cast_to(eq, dt)?)
}

/// DepthToSpace: `[N, C, H, W]` → `[N, C/b², H·b, W·b]` (DCR or CRD order).
fn depth_to_space(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let xs = cx.shape(&x)?;
    let b = n.i("blocksize", 0);
    if xs.len() != 4 || b < 1 {
        bad!("needs a 4-D input and blocksize >= 1");
    }
    let bd = d(b);
    let c2 = xs[1].div_exact((b * b) as u64).map_err(dim_err)?;
    let (nn, h, w) = (xs[0].clone(), xs[2].clone(), xs[3].clone());
    let crd = n.s_or("mode", "DCR") == "CRD";
    let (split, perm) = if crd {
        (
            vec![
                nn.clone(),
                c2.clone(),
                bd.clone(),
                bd.clone(),
                h.clone(),
                w.clone(),
            ],
            vec![0, 1, 4, 2, 5, 3],
        )
    } else {
        (
            vec![
                nn.clone(),
                bd.clone(),
                bd.clone(),
                c2.clone(),
                h.clone(),
                w.clone(),
            ],
            vec![0, 3, 4, 1, 5, 2],
        )
    };
    let y = cx.reshape(x, split)?;
    let y = cx.transpose(y, perm)?;
    let out = vec![
        nn,
        c2,
        h.mul_int(b).map_err(dim_err)?,
        w.mul_int(b).map_err(dim_err)?,
    ];
    one(cx.reshape(y, out)?)
}

/// SpaceToDepth: `[N, C, H, W]` → `[N, C·b², H/b, W/b]` (DCR, or CRD from opset 28).
fn space_to_depth(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let xs = cx.shape(&x)?;
    let b = n.i("blocksize", 0);
    if xs.len() != 4 || b < 1 {
        bad!("needs a 4-D input and blocksize >= 1");
    }
    let bd = d(b);
    let (nn, c) = (xs[0].clone(), xs[1].clone());
    let h2 = xs[2].div_exact(b as u64).map_err(dim_err)?;
    let w2 = xs[3].div_exact(b as u64).map_err(dim_err)?;
    let y = cx.reshape(
        x,
        vec![
            nn.clone(),
            c.clone(),
            h2.clone(),
            bd.clone(),
            w2.clone(),
            bd,
        ],
    )?;
    let perm = match n.s_or("mode", "DCR").as_str() {
        "DCR" => vec![0, 3, 5, 1, 2, 4],
        "CRD" => vec![0, 1, 3, 5, 2, 4],
        other => bad!("unknown mode `{other}`"),
    };
    let y = cx.transpose(y, perm)?;
    let out = vec![nn, c.mul_int(b * b).map_err(dim_err)?, h2, w2];
    one(cx.reshape(y, out)?)
}
