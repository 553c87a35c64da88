//! Neural-network ops: convolution, pooling, normalizations, resizing.

use super::{axis, one, Convert};
use crate::onnx::import::Importer;
use crate::onnx::node::{bad, err, unsup, NResult, Node};
use crate::onnx::tensor::Known;
use crate::onnx::value::Val;
use fuselage_ir::ops::reduce::ReduceKind;
use fuselage_ir::ops::{self as irops, Op};
use fuselage_ir::{Dim, Tensor};

pub(crate) const OPS: &[(&str, Convert)] = &[
    ("Conv", conv),
    ("AveragePool", average_pool),
    ("MaxPool", max_pool),
    ("BatchNormalization", batch_norm),
    ("InstanceNormalization", instance_norm),
    ("GroupNormalization", group_norm),
    ("LayerNormalization", layer_norm),
    ("RMSNormalization", rms_norm),
    ("LRN", lrn),
    ("Resize", resize),
    ("Upsample", resize),
];

fn d(n: i64) -> Dim {
    Dim::from_i64(n)
}

/// Explicit pads `[begin…, end…]` for `k` spatial dims from `pads` or `auto_pad`.
pub(crate) fn explicit_pads(
    n: &Node,
    xs: &[Dim],
    kernel: &[i64],
    strides: &[i64],
    dil: &[i64],
) -> NResult<Vec<i64>> {
    let k = kernel.len();
    let auto = n.s_or("auto_pad", "NOTSET");
    match auto.as_str() {
        "NOTSET" => {
            let p = n.ints("pads").unwrap_or(vec![0; 2 * k]);
            if p.len() != 2 * k {
                bad!("pads has {} entries for {k} spatial dims", p.len());
            }
            if p.iter().any(|&v| v < 0) {
                bad!("negative pads {p:?}");
            }
            Ok(p)
        }
        "VALID" => Ok(vec![0; 2 * k]),
        "SAME_UPPER" | "SAME_LOWER" => {
            let mut begin = vec![];
            let mut end = vec![];
            for i in 0..k {
                let s = strides.get(i).copied().unwrap_or(1).max(1);
                let dl = dil.get(i).copied().unwrap_or(1);
                let span = (kernel[i] - 1) * dl + 1;
                let total = match xs.get(2 + i).and_then(|x| x.fixed()) {
                    Some(inp) => {
                        let inp = inp as i64;
                        let out = (inp + s - 1) / s;
                        ((out - 1) * s + span - inp).max(0)
                    }
                    // With stride 1 the total padding does not depend on the input size.
                    None if s == 1 => (span - 1).max(0),
                    None => unsup!("auto_pad {auto} with stride {s} on a symbolic spatial dim"),
                };
                let small = total / 2;
                let (b, e) = if auto == "SAME_UPPER" {
                    (small, total - small)
                } else {
                    (total - small, small)
                };
                begin.push(b);
                end.push(e);
            }
            begin.extend(end);
            Ok(begin)
        }
        other => bad!("unknown auto_pad `{other}`"),
    }
}

fn conv(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let w = cx.input(n, 1)?;
    let xs = cx.shape(&x)?;
    let ws = cx.shape(&w)?;
    if xs.len() != 4 {
        unsup!("only 2-D convolutions (NCHW input) are supported");
    }
    let kernel: Vec<i64> = match n.ints("kernel_shape") {
        Some(k) => k,
        None => ws[2..]
            .iter()
            .map(|d| d.fixed().map(|v| v as i64))
            .collect::<Option<_>>()
            .ok_or_else(|| err("the kernel dims must be fixed"))?,
    };
    let strides = n.ints("strides").unwrap_or(vec![1, 1]);
    let dil = n.ints("dilations").unwrap_or(vec![1, 1]);
    let pads = explicit_pads(n, &xs, &kernel, &strides, &dil)?;
    let u2 = |v: &[i64], what: &str| -> NResult<[u64; 2]> {
        match v {
            [a, b] if *a >= 1 && *b >= 1 => Ok([*a as u64, *b as u64]),
            _ => bad!("{what} {v:?}"),
        }
    };
    let op = Op::Conv2d(irops::conv2d::Conv2d {
        stride: u2(&strides, "strides")?,
        padding: [
            pads[0] as u64,
            pads[1] as u64,
            pads[2] as u64,
            pads[3] as u64,
        ],
        dilation: u2(&dil, "dilations")?,
        groups: n.i("group", 1).max(1) as u64,
    });
    let mut args = vec![x, w];
    if let Some(b) = cx.opt_input(n, 2)? {
        args.push(b);
    }
    one(cx.emit(op, &args)?)
}

fn average_pool(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let xs = cx.shape(&x)?;
    if xs.len() != 4 {
        unsup!("only 2-D pooling (NCHW input) is supported");
    }
    if n.flag("ceil_mode", false) {
        unsup!("ceil_mode = 1");
    }
    let Some(k) = n.ints("kernel_shape") else {
        bad!("missing kernel_shape")
    };
    let strides = n.ints("strides").unwrap_or(vec![1, 1]);
    let dil = n.ints("dilations").unwrap_or(vec![1, 1]);
    if dil.iter().any(|&v| v != 1) {
        unsup!("dilated pooling");
    }
    let pads = explicit_pads(n, &xs, &k, &strides, &dil)?;
    if k.len() != 2 || strides.len() != 2 {
        bad!("kernel_shape and strides must have 2 entries");
    }
    let op = Op::AvgPool2d(irops::avg_pool2d::AvgPool2d {
        kernel: [k[0].max(1) as u64, k[1].max(1) as u64],
        stride: [strides[0].max(1) as u64, strides[1].max(1) as u64],
        padding: [
            pads[0] as u64,
            pads[1] as u64,
            pads[2] as u64,
            pads[3] as u64,
        ],
        count_include_pad: n.flag("count_include_pad", false),
    });
    one(cx.un(op, x)?)
}

/// MaxPool with non-overlapping windows (kernel = stride, no padding, dims divisible): a
/// reshape to `[N, C, H/kh, kh, W/kw, kw]` and a max over the window axes.
fn max_pool(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    if n.wants_output(1) {
        unsup!("the Indices output is not computed");
    }
    let x = cx.input(n, 0)?;
    let xs = cx.shape(&x)?;
    let Some(k) = n.ints("kernel_shape") else {
        bad!("missing kernel_shape")
    };
    let strides = n.ints("strides").unwrap_or(vec![1; k.len()]);
    let pads = n.ints("pads").unwrap_or_default();
    let dil = n.ints("dilations").unwrap_or_default();
    let auto = n.s_or("auto_pad", "NOTSET");
    if xs.len() != 4
        || k.len() != 2
        || strides != k
        || pads.iter().any(|&p| p != 0)
        || dil.iter().any(|&v| v != 1)
        || !(auto == "NOTSET" || auto == "VALID")
        || n.flag("ceil_mode", false)
    {
        unsup!("only 2-D pooling with kernel = stride and no padding is supported");
    }
    let mut dims = vec![xs[0].clone(), xs[1].clone()];
    for i in 0..2 {
        let q = xs[2 + i].div_exact(k[i].max(1) as u64).map_err(|e| {
            err(format!(
                "spatial dim {} is not a multiple of the kernel: {e}",
                xs[2 + i]
            ))
        })?;
        dims.push(q);
        dims.push(d(k[i]));
    }
    let r = cx.reshape(x, dims)?;
    one(cx.reduce(ReduceKind::Max, r, vec![3, 5], false)?)
}

/// A per-channel parameter `[C]` reshaped to broadcast against `[N, C, spatial…]`.
fn per_channel(cx: &mut Importer, p: Val, rank: usize) -> NResult<Val> {
    let c = cx.shape(&p)?;
    if c.len() != 1 {
        bad!("per-channel parameter must be 1-D, found {c:?}");
    }
    let mut dims = vec![d(1), c[0].clone()];
    dims.extend(std::iter::repeat_n(d(1), rank.saturating_sub(2)));
    cx.reshape(p, dims)
}

fn batch_norm(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    if n.flag("training_mode", false) || (n.opset < 7 && !n.flag("is_test", false)) {
        unsup!("training-mode BatchNormalization (running statistics are updated)");
    }
    if n.num_outputs() > 1 && (1..n.num_outputs()).any(|i| n.wants_output(i)) {
        unsup!("the running mean/variance outputs (training mode)");
    }
    if n.opset < 9 && !n.flag("spatial", true) {
        unsup!("spatial = 0 (per-activation statistics)");
    }
    let (x, dt) = cx.widen(cx.input(n, 0)?)?;
    let r = cx.rank(&x)?;
    let wdt = cx.dtype(&x)?;
    let mut p = vec![];
    for i in 1..5 {
        let v = cx.input(n, i)?;
        p.push(cx.cast_to(v, wdt)?);
    }
    let [scale, bias, mean, var] = <[Val; 4]>::try_from(p).map_err(|_| err("internal"))?;
    let eps = n.f("epsilon", 1e-5);
    let (scale, bias, mean, var) = (
        per_channel(cx, scale, r)?,
        per_channel(cx, bias, r)?,
        per_channel(cx, mean, r)?,
        per_channel(cx, var, r)?,
    );
    let e = cx.scalar_like(&var, eps, "epsilon")?;
    let v = cx.add(var, e)?;
    let sd = cx.un(Op::Sqrt(irops::sqrt::Sqrt {}), v)?;
    let c = cx.sub(x, mean)?;
    let z = cx.div(c, sd)?;
    let y = cx.mul(z, scale)?;
    let y = cx.add(y, bias)?;
    one(cx.narrow(y, dt)?)
}

fn instance_norm(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let (scale, bias) = (cx.input(n, 1)?, cx.input(n, 2)?);
    let xs = cx.shape(&x)?;
    let eps = n.f("epsilon", 1e-5);
    if let Some(c) = xs.get(1).and_then(|c| c.fixed()) {
        if xs.len() >= 3 {
            let op = Op::GroupNorm(irops::group_norm::GroupNorm { groups: c, eps });
            return one(cx.emit(op, &[x, scale, bias])?);
        }
    }
    // Symbolic channels: normalize over the spatial axes directly.
    let r = xs.len();
    let axes: Vec<i64> = (2..r as i64).collect();
    let y = normalize(cx, x, axes, eps)?;
    let s = per_channel(cx, scale, r)?;
    let b = per_channel(cx, bias, r)?;
    let y = cx.mul(y, s)?;
    one(cx.add(y, b)?)
}

/// `(x − mean) / √(var + eps)` over `axes`.
fn normalize(cx: &mut Importer, x: Val, axes: Vec<i64>, eps: f64) -> NResult<Val> {
    let (c, inv) = centered_inv_std(cx, x, axes, eps)?;
    cx.mul(c, inv)
}

/// `(x − mean, 1/√(var + eps))` over `axes` (kept dims).
fn centered_inv_std(cx: &mut Importer, x: Val, axes: Vec<i64>, eps: f64) -> NResult<(Val, Val)> {
    let m = cx.reduce(ReduceKind::Mean, x.clone(), axes.clone(), true)?;
    let c = cx.sub(x, m)?;
    let sq = cx.mul(c.clone(), c.clone())?;
    let var = cx.reduce(ReduceKind::Mean, sq, axes, true)?;
    let e = cx.scalar_like(&var, eps, "epsilon")?;
    let v = cx.add(var, e)?;
    let sd = cx.un(Op::Sqrt(irops::sqrt::Sqrt {}), v)?;
    let one_v = cx.scalar_like(&sd, 1.0, "one")?;
    let inv = cx.div(one_v, sd)?;
    Ok((c, inv))
}

fn group_norm(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let groups = n.i("num_groups", 0);
    let eps = n.f("epsilon", 1e-5);
    let xs = cx.shape(&x)?;
    let Some(c) = xs.get(1).and_then(|c| c.fixed()) else {
        unsup!("the channel dim must be fixed");
    };
    if groups <= 0 || c % groups as u64 != 0 {
        bad!("num_groups {groups} does not divide {c} channels");
    }
    let mut args = vec![x];
    for (i, what) in [(1, "scale"), (2, "bias")] {
        let v = cx.input(n, i)?;
        let len = cx.shape(&v)?;
        if len == [Dim::from(c)] {
            args.push(v);
        } else if len == [Dim::from(groups as u64)] {
            // Opset 18: one value per group; repeat it for each channel.
            let Some(k) = cx.known_of(&v) else {
                unsup!("per-group {what} must be a constant");
            };
            let vals = k.floats().map_err(err)?;
            let per = (c / groups as u64) as usize;
            let rep: Vec<f64> = vals
                .iter()
                .flat_map(|&x| std::iter::repeat_n(x, per))
                .collect();
            let t = Tensor::new(k.dtype, vec![c as usize], rep).map_err(err)?;
            args.push(cx.known(Known::from_tensor(&t), what));
        } else {
            bad!("{what} has shape {len:?}, expected [{c}] or [{groups}]");
        }
    }
    one(cx.emit(
        Op::GroupNorm(irops::group_norm::GroupNorm {
            groups: groups as u64,
            eps,
        }),
        &args,
    )?)
}

/// LayerNormalization with its optional Mean and InvStdDev outputs.
fn layer_norm(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let scale = cx.input(n, 1)?;
    let bias = cx.opt_input(n, 2)?;
    let eps = n.f("epsilon", 1e-5);
    let xs = cx.shape(&x)?;
    let r = xs.len();
    let a = axis(n.i("axis", -1), r)?;
    let stash = n.i("stash_type", 1);
    let stats_dt = crate::onnx::tensor::onnx_dtype(stash as i32)
        .map_err(crate::onnx::node::NodeErr::Unsupported)?;
    let norm = &xs[a..];
    let fused = cx.shape(&scale)? == norm
        && match &bias {
            Some(b) => cx.shape(b)? == norm,
            None => true,
        };
    let wants_stats = n.wants_output(1) || n.wants_output(2);
    let axes: Vec<i64> = (a as i64..r as i64).collect();
    let mut outs = vec![];
    if fused && !wants_stats {
        let mut args = vec![x, scale];
        args.extend(bias);
        let op = Op::LayerNorm(irops::layer_norm::LayerNorm {
            axis: a as i64,
            eps,
        });
        outs.push(cx.emit(op, &args)?);
        return Ok(outs);
    }
    // The statistics in the stash type, Y in x's type.
    let dt = cx.dtype(&x)?;
    let xw = cx.cast_to(x.clone(), stats_dt)?;
    let m = cx.reduce(ReduceKind::Mean, xw.clone(), axes.clone(), true)?;
    let (c, inv) = centered_inv_std(cx, xw, axes, eps)?;
    let z = cx.mul(c, inv.clone())?;
    let z = cx.cast_to(z, dt)?;
    let y = cx.mul(z, scale)?;
    let y = match bias {
        Some(b) => cx.add(y, b)?,
        None => y,
    };
    outs.push(y);
    outs.push(m);
    outs.push(inv);
    Ok(outs)
}

/// RMSNormalization (opset 23): `x / √(mean(x²) + eps) · scale` over `axis..`.
fn rms_norm(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let scale = cx.input(n, 1)?;
    let eps = n.f("epsilon", 1e-5);
    let xs = cx.shape(&x)?;
    let r = xs.len();
    let a = axis(n.i("axis", -1), r)?;
    if cx.shape(&scale)? == xs[a..] {
        let op = Op::RmsNorm(irops::rms_norm::RmsNorm {
            axis: a as i64,
            eps,
        });
        return one(cx.emit(op, &[x, scale])?);
    }
    let stats_dt = crate::onnx::tensor::onnx_dtype(n.i("stash_type", 1) as i32)
        .map_err(crate::onnx::node::NodeErr::Unsupported)?;
    let dt = cx.dtype(&x)?;
    let xw = cx.cast_to(x, stats_dt)?;
    let sq = cx.mul(xw.clone(), xw.clone())?;
    let axes: Vec<i64> = (a as i64..r as i64).collect();
    let ms = cx.reduce(ReduceKind::Mean, sq, axes, true)?;
    let e = cx.scalar_like(&ms, eps, "epsilon")?;
    let v = cx.add(ms, e)?;
    let sd = cx.un(Op::Sqrt(irops::sqrt::Sqrt {}), v)?;
    let z = cx.div(xw, sd)?;
    let z = cx.cast_to(z, dt)?;
    one(cx.mul(z, scale)?)
}

/// LRN: `x / (bias + α/size · Σ x²)^β` over a window of `size` channels.
fn lrn(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let (x, dt) = cx.widen(cx.input(n, 0)?)?;
    let size = n.i("size", 0);
    if size < 1 {
        bad!("size must be >= 1");
    }
    let (alpha, beta, bias) = (n.f("alpha", 1e-4), n.f("beta", 0.75), n.f("bias", 1.0));
    let xs = cx.shape(&x)?;
    if xs.len() < 3 {
        bad!("LRN needs an input of rank >= 3");
    }
    let lo = (size - 1) / 2;
    let hi = size - 1 - lo;
    let sq = cx.mul(x.clone(), x.clone())?;
    // Pad the channel axis with zeros, then add `size` shifted slices.
    let zero = cx.scalar_like(&x, 0.0, "zero")?;
    let mut parts = vec![];
    for pad in [lo, hi] {
        let mut s = xs.clone();
        s[1] = d(pad);
        parts.push((pad, cx.broadcast(zero.clone(), s)?));
    }
    let mut cat = vec![];
    if parts[0].0 > 0 {
        cat.push(parts[0].1.clone());
    }
    cat.push(sq);
    if parts[1].0 > 0 {
        cat.push(parts[1].1.clone());
    }
    let padded = if cat.len() == 1 {
        cat.remove(0)
    } else {
        cx.emit(Op::Concat(irops::concat::Concat { axis: 1 }), &cat)?
    };
    let c = xs[1].clone();
    let mut sum: Option<Val> = None;
    for k in 0..size {
        let end = c.add(&d(k)).map_err(err)?;
        let s = cx.slice_axis(padded.clone(), 1, d(k), end, 1)?;
        sum = Some(match sum {
            Some(acc) => cx.add(acc, s)?,
            None => s,
        });
    }
    let Some(sum) = sum else { bad!("empty window") };
    let a = cx.scalar_like(&x, alpha / size as f64, "alpha")?;
    let b = cx.scalar_like(&x, bias, "bias")?;
    let p = cx.scalar_like(&x, beta, "beta")?;
    let t = cx.mul(sum, a)?;
    let t = cx.add(t, b)?;
    let t = cx.bin(Op::Pow(irops::pow::Pow {}), t, p)?;
    let y = cx.div(x, t)?;
    one(cx.narrow(y, dt)?)
}

/// Resize / Upsample with mode `nearest` by equal integer scales of H and W (2-D NCHW).
fn resize(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let mode = n.s_or("mode", "nearest");
    if mode != "nearest" {
        unsup!("mode `{mode}` (only nearest is supported)");
    }
    let xs = cx.shape(&x)?;
    if xs.len() != 4 {
        unsup!("only 4-D (NCHW) inputs are supported");
    }
    let scales: Vec<f64> = if n.op_type() == "Upsample" {
        if n.opset < 9 {
            n.floats("scales")
                .map(|v| v.into_iter().map(f64::from).collect())
                .ok_or_else(|| err("missing scales"))?
        } else {
            let s = cx.input(n, 1)?;
            cx.floats(&s, "scales")?
        }
    } else {
        // Opset 10: (X, scales); 11+: (X, roi, scales, sizes).
        let scale_idx = if n.opset < 11 { 1 } else { 2 };
        let given = match cx.opt_input(n, scale_idx)? {
            Some(v) => {
                let f = cx.floats(&v, "scales")?;
                (!f.is_empty()).then_some(f)
            }
            None => None,
        };
        match given {
            Some(f) => f,
            None => {
                let Some(sz) = cx.opt_input(n, 3)? else {
                    bad!("neither scales nor sizes given")
                };
                let sz = cx.dims_of(&sz, "sizes")?;
                let mut sc = vec![];
                for (i, s) in sz.iter().enumerate() {
                    let q = match xs.get(i) {
                        Some(x) if x == s => 1.0,
                        Some(x) => match (s.fixed(), x.fixed()) {
                            (Some(a), Some(b)) if b > 0 => a as f64 / b as f64,
                            _ => match s.div_dim(x).and_then(|q| q.fixed()) {
                                Some(q) => q as f64,
                                None => unsup!("sizes {s} for input dim {x}"),
                            },
                        },
                        None => bad!("sizes has more entries than the input's rank"),
                    };
                    sc.push(q);
                }
                sc
            }
        }
    };
    if scales.len() != 4 || scales[0] != 1.0 || scales[1] != 1.0 || scales[2] != scales[3] {
        unsup!("scales {scales:?} (only equal integer scales of H and W are supported)");
    }
    let s = scales[2];
    if s.fract() != 0.0 || s < 1.0 {
        unsup!("scale {s} (only integer upsampling is supported)");
    }
    let ctm = n.s_or("coordinate_transformation_mode", "half_pixel");
    let nm = n.s_or("nearest_mode", "round_prefer_floor");
    // With an integer scale, the half-pixel modes map output i to (i + 0.5)/s - 0.5, strictly
    // inside (k - 0.5, k + 0.5) for k = floor(i / s): rounding to the nearest gives k (floor
    // and ceil do not). Asymmetric maps to i / s, which is k only when rounding down
    // (Upsample and opset 10 are asymmetric with floor).
    let legacy = n.op_type() == "Upsample" || n.opset < 11;
    let nearest = nm == "round_prefer_floor" || nm == "round_prefer_ceil";
    let ok = legacy
        || s == 1.0
        || match ctm.as_str() {
            "half_pixel" | "pytorch_half_pixel" | "tf_half_pixel_for_nn" => nearest,
            "asymmetric" => nm == "floor",
            _ => false,
        };
    if !ok {
        unsup!("coordinate_transformation_mode `{ctm}` with nearest_mode `{nm}`");
    }

    one(cx.un(
        Op::UpsampleNearest2d(irops::upsample_nearest2d::UpsampleNearest2d { scale: s as u64 }),
        x,
    )?)
}
