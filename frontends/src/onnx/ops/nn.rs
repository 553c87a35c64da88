//! Neural-network ops: convolution, pooling, normalizations, resizing.

use super::{axis, one, Convert};
use crate::onnx::import::Importer;
use crate::onnx::node::{bad, err, unsup, NResult, Node};
use crate::onnx::tensor::Known;
use crate::onnx::value::Val;
use fuselage_ir::ops::reduce::ReduceKind;
use fuselage_ir::ops::{self as irops, Op};
use fuselage_ir::{DType, Dim, Tensor};

pub(crate) const OPS: &[(&str, Convert)] = &[
    ("Conv", conv),
    ("ConvTranspose", conv_transpose),
    ("AveragePool", pool),
    ("MaxPool", pool),
    ("LpPool", pool),
    ("GlobalLpPool", global_lp_pool),
    ("GridSample", grid_sample),
    ("AffineGrid", affine_grid),
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
            for (i, &kern) in kernel.iter().enumerate() {
                let s = strides.get(i).copied().unwrap_or(1).max(1);
                let dl = dil.get(i).copied().unwrap_or(1);
                let span = (kern - 1) * dl + 1;
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

/// Kernel dims of a weight `[M, C/g, k…]` (the attribute, or the weight's fixed dims).
fn kernel_of(n: &Node, ws: &[Dim]) -> NResult<Vec<i64>> {
    match n.ints("kernel_shape") {
        Some(k) => Ok(k),
        None => ws[2..]
            .iter()
            .map(|d| d.fixed().map(|v| v as i64))
            .collect::<Option<_>>()
            .ok_or_else(|| err("the kernel dims must be fixed")),
    }
}

fn u64s(v: &[i64], what: &str) -> NResult<Vec<u64>> {
    v.iter()
        .map(|&x| u64::try_from(x).map_err(|_| err(format!("{what} {v:?} must not be negative"))))
        .collect()
}

fn conv(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let w = cx.input(n, 1)?;
    let xs = cx.shape(&x)?;
    let ws = cx.shape(&w)?;
    if xs.len() < 3 {
        bad!(
            "Conv needs an input [N, C, spatial…], found rank {}",
            xs.len()
        );
    }
    let k = xs.len() - 2;
    let kernel = kernel_of(n, &ws)?;
    let strides = n.ints("strides").unwrap_or(vec![1; k]);
    let dil = n.ints("dilations").unwrap_or(vec![1; k]);
    let pads = explicit_pads(n, &xs, &kernel, &strides, &dil)?;
    let group = n.i("group", 1).max(1) as u64;
    let mut args = vec![x, w];
    if let Some(b) = cx.opt_input(n, 2)? {
        args.push(b);
    }
    let op = if k == 2 {
        // The 2-D fast path.
        let u2 = |v: &[i64], what: &str| -> NResult<[u64; 2]> {
            match v {
                [a, b] if *a >= 1 && *b >= 1 => Ok([*a as u64, *b as u64]),
                _ => bad!("{what} {v:?}"),
            }
        };
        Op::Conv2d(irops::conv2d::Conv2d {
            stride: u2(&strides, "strides")?,
            padding: [
                pads[0] as u64,
                pads[1] as u64,
                pads[2] as u64,
                pads[3] as u64,
            ],
            dilation: u2(&dil, "dilations")?,
            groups: group,
        })
    } else {
        Op::Conv(irops::conv::Conv {
            strides: u64s(&strides, "strides")?,
            pads: u64s(&pads, "pads")?,
            dilations: u64s(&dil, "dilations")?,
            group,
        })
    };
    one(cx.emit(op, &args)?)
}

/// ConvTranspose; `output_shape` (or SAME auto_pad) is turned into pads and output_padding.
fn conv_transpose(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let w = cx.input(n, 1)?;
    let xs = cx.shape(&x)?;
    let ws = cx.shape(&w)?;
    if xs.len() < 3 {
        bad!(
            "ConvTranspose needs an input [N, C, spatial…], found rank {}",
            xs.len()
        );
    }
    let k = xs.len() - 2;
    let kernel = kernel_of(n, &ws)?;
    let strides = n.ints("strides").unwrap_or(vec![1; k]);
    let dil = n.ints("dilations").unwrap_or(vec![1; k]);
    let mut out_pad = n.ints("output_padding").unwrap_or(vec![0; k]);
    let auto = n.s_or("auto_pad", "NOTSET");
    let pads: Vec<i64> = if let Some(os) = n.ints("output_shape") {
        // total = s·(in − 1) + op + ((k − 1)·d + 1) − out
        let os = &os[os.len().saturating_sub(k)..];
        let mut begin = vec![];
        let mut end = vec![];
        for i in 0..k {
            let inp = xs[2 + i]
                .fixed()
                .ok_or_else(|| err("output_shape with a symbolic spatial dim"))?
                as i64;
            let total = strides[i] * (inp - 1) + out_pad[i] + (kernel[i] - 1) * dil[i] + 1 - os[i];
            if total < 0 {
                // A larger output than the full one: the rest is output padding.
                out_pad[i] -= total;
                begin.push(0);
                end.push(0);
            } else if auto == "SAME_UPPER" {
                begin.push(total / 2);
                end.push(total - total / 2);
            } else {
                begin.push(total - total / 2);
                end.push(total / 2);
            }
        }
        begin.extend(end);
        begin
    } else if auto == "SAME_UPPER" || auto == "SAME_LOWER" {
        // Output size in·stride: total = s·(in − 1) + op + ((k − 1)·d + 1) − in·s.
        let mut begin = vec![];
        let mut end = vec![];
        for i in 0..k {
            let total = out_pad[i] + (kernel[i] - 1) * dil[i] + 1 - strides[i];
            let total = total.max(0);
            if auto == "SAME_UPPER" {
                begin.push(total / 2);
                end.push(total - total / 2);
            } else {
                begin.push(total - total / 2);
                end.push(total / 2);
            }
        }
        begin.extend(end);
        begin
    } else if auto == "VALID" {
        vec![0; 2 * k]
    } else {
        n.ints("pads").unwrap_or(vec![0; 2 * k])
    };
    let op = Op::ConvTranspose(irops::conv_transpose::ConvTranspose {
        strides: u64s(&strides, "strides")?,
        pads: u64s(&pads, "pads")?,
        dilations: u64s(&dil, "dilations")?,
        group: n.i("group", 1).max(1) as u64,
        output_padding: u64s(&out_pad, "output_padding")?,
    });
    let mut args = vec![x, w];
    if let Some(b) = cx.opt_input(n, 2)? {
        args.push(b);
    }
    one(cx.emit(op, &args)?)
}

/// MaxPool, AveragePool, LpPool (N-D, strides, pads, dilations, ceil mode, MaxPool indices).
fn pool(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    use irops::pool::{Pool, PoolKind};
    let x = cx.input(n, 0)?;
    let xs = cx.shape(&x)?;
    if xs.len() < 3 {
        bad!(
            "pooling needs an input [N, C, spatial…], found rank {}",
            xs.len()
        );
    }
    let k = xs.len() - 2;
    let Some(kernel) = n.ints("kernel_shape") else {
        bad!("missing kernel_shape")
    };
    if kernel.len() != k {
        bad!("kernel_shape {kernel:?} for {k} spatial dims");
    }
    let strides = n.ints("strides").unwrap_or(vec![1; k]);
    let dil = n.ints("dilations").unwrap_or(vec![1; k]);
    let pads = explicit_pads(n, &xs, &kernel, &strides, &dil)?;
    let kind = match n.op_type() {
        "MaxPool" => PoolKind::Max,
        "AveragePool" => PoolKind::Avg,
        _ => PoolKind::Lp,
    };
    let indices = kind == PoolKind::Max && n.wants_output(1);
    let mut p = Pool::new(kind, u64s(&kernel, "kernel_shape")?);
    p.strides = u64s(&strides, "strides")?;
    p.pads = u64s(&pads, "pads")?;
    p.dilations = u64s(&dil, "dilations")?;
    p.ceil_mode = n.flag("ceil_mode", false);
    p.count_include_pad = n.flag("count_include_pad", false);
    p.p = n.i("p", 2);
    p.indices = indices;
    p.storage_order = n.i("storage_order", 0).clamp(0, 1) as u8;
    cx.emit_multi(Op::Pool(p), &[x])
}

/// GlobalLpPool: `(Σ |x|ᵖ)^(1/p)` over the spatial dims.
fn global_lp_pool(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let (x, dt) = cx.widen(cx.input(n, 0)?)?;
    let r = cx.rank(&x)?;
    let p = n.i("p", 2) as f64;
    let a = cx.un(Op::Abs(irops::abs::Abs {}), x)?;
    let pv = cx.scalar_like(&a, p, "p")?;
    let ap = cx.bin(Op::Pow(irops::pow::Pow {}), a, pv)?;
    let s = cx.reduce(ReduceKind::Sum, ap, (2..r as i64).collect(), true)?;
    let inv = cx.scalar_like(&s, 1.0 / p, "inv_p")?;
    let y = cx.bin(Op::Pow(irops::pow::Pow {}), s, inv)?;
    one(cx.narrow(y, dt)?)
}

fn grid_sample(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    use irops::grid_sample::{GridPaddingMode, GridSample, GridSampleMode};
    let (x, g) = (cx.input(n, 0)?, cx.input(n, 1)?);
    let mode = match n
        .s_or("mode", if n.opset < 20 { "bilinear" } else { "linear" })
        .as_str()
    {
        "bilinear" | "linear" => GridSampleMode::Linear,
        "nearest" => GridSampleMode::Nearest,
        "bicubic" | "cubic" => GridSampleMode::Cubic,
        other => bad!("unknown mode `{other}`"),
    };
    let padding_mode = match n.s_or("padding_mode", "zeros").as_str() {
        "zeros" => GridPaddingMode::Zeros,
        "border" => GridPaddingMode::Border,
        "reflection" => GridPaddingMode::Reflection,
        other => bad!("unknown padding_mode `{other}`"),
    };
    let op = Op::GridSample(GridSample {
        mode,
        padding_mode,
        align_corners: n.flag("align_corners", false),
    });
    one(cx.bin(op, x, g)?)
}

/// AffineGrid: `grid[n, …, :] = θ[n] · [x, y, (z,) 1]` over a normalized base grid of `size`.
fn affine_grid(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let theta = cx.input(n, 0)?;
    let sv = cx.input(n, 1)?;
    let size = cx.ints(&sv, "size")?;
    let align = n.flag("align_corners", false);
    let sp: Vec<i64> = size.iter().skip(2).copied().collect();
    let k = sp.len();
    if !(k == 2 || k == 3) {
        bad!("size must be [N, C, H, W] or [N, C, D, H, W], found {size:?}");
    }
    let dt = cx.dtype(&theta)?;
    // Base coordinates along each spatial axis, in x, y, z order (the last axis first).
    let coords = |len: i64| -> Vec<f64> {
        (0..len)
            .map(|i| {
                if len == 1 {
                    0.0
                } else if align {
                    -1.0 + 2.0 * i as f64 / (len - 1) as f64
                } else {
                    (2.0 * i as f64 + 1.0) / len as f64 - 1.0
                }
            })
            .collect()
    };
    let total: i64 = sp.iter().product();
    let mut base = Vec::with_capacity(total as usize * (k + 1));
    let per: Vec<Vec<f64>> = sp.iter().map(|&l| coords(l)).collect();
    for flat in 0..total {
        // Row-major position over sp.
        let mut idx = vec![0i64; k];
        let mut rest = flat;
        for a in (0..k).rev() {
            idx[a] = rest % sp[a];
            rest /= sp[a];
        }
        for a in (0..k).rev() {
            base.push(per[a][idx[a] as usize]);
        }
        base.push(1.0);
    }
    let base_t = Tensor::new(dt, vec![total as usize, k + 1], base).map_err(err)?;
    let b = cx.tensor(&base_t, "base_grid");
    // [N, k, k+1] · [k+1, total] → [N, k, total] → [N, total, k] → [N, spatial…, k]
    let bt = cx.transpose(b, vec![1, 0])?;
    let g = cx.bin(Op::MatMul(irops::matmul::MatMul {}), theta, bt)?;
    let g = cx.transpose(g, vec![0, 2, 1])?;
    let mut shape = vec![Dim::from_i64(size[0])];
    shape.extend(sp.iter().map(|&v| Dim::from_i64(v)));
    shape.push(Dim::from(k as u64));
    one(cx.reshape(g, shape)?)
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

/// Resize (opsets 10–19) and Upsample (7–9): every mode, coordinate transformation and
/// nearest mode, on any axes; an integer nearest upsampling of H and W keeps its fast op.
fn resize(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    use irops::resize::{CoordinateTransformationMode as Ctm, NearestMode, Resize, ResizeMode};
    let x = cx.input(n, 0)?;
    let xs = cx.shape(&x)?;
    let r = xs.len();
    let upsample = n.op_type() == "Upsample";
    let legacy = upsample || n.opset < 11;
    let mode = match n.s_or("mode", "nearest").as_str() {
        "nearest" => ResizeMode::Nearest,
        "linear" | "bilinear" => ResizeMode::Linear,
        "cubic" | "bicubic" => ResizeMode::Cubic,
        other => bad!("unknown mode `{other}`"),
    };
    // Scales, sizes, roi and axes by opset.
    let (scales_in, sizes_in, roi_in): (Option<Val>, Option<Val>, Option<Val>) = if upsample {
        if n.opset < 9 {
            let f = n.floats("scales").ok_or_else(|| err("missing scales"))?;
            let t = Tensor::new(
                DType::F32,
                vec![f.len()],
                f.iter().map(|&v| v as f64).collect(),
            )
            .map_err(err)?;
            (Some(cx.tensor(&t, "scales")), None, None)
        } else {
            (Some(cx.input(n, 1)?), None, None)
        }
    } else if n.opset < 11 {
        (Some(cx.input(n, 1)?), None, None)
    } else {
        (
            cx.opt_input(n, 2)?,
            cx.opt_input(n, 3)?,
            cx.opt_input(n, 1)?,
        )
    };
    let axes: Vec<usize> = match n.ints("axes") {
        Some(a) => a.iter().map(|&i| axis(i, r)).collect::<NResult<_>>()?,
        None => (0..r).collect(),
    };
    let scales = match scales_in {
        Some(v) => {
            let f = cx.floats(&v, "scales")?;
            (!f.is_empty()).then_some(f)
        }
        None => None,
    };
    let sizes = match (scales.is_some(), sizes_in) {
        (false, Some(v)) => Some(cx.dims_of(&v, "sizes")?),
        _ => None,
    };
    let roi = match roi_in {
        Some(v) => cx.floats(&v, "roi")?,
        None => vec![],
    };
    let ctm_name = if legacy {
        "asymmetric".to_string()
    } else {
        n.s_or("coordinate_transformation_mode", "half_pixel")
    };
    let ctm = match ctm_name.as_str() {
        "half_pixel" => Ctm::HalfPixel,
        "half_pixel_symmetric" => Ctm::HalfPixelSymmetric,
        "pytorch_half_pixel" => Ctm::PytorchHalfPixel,
        "align_corners" => Ctm::AlignCorners,
        "asymmetric" => Ctm::Asymmetric,
        "tf_crop_and_resize" => Ctm::TfCropAndResize,
        other => unsup!("coordinate_transformation_mode `{other}`"),
    };
    let nearest_name = if legacy {
        "floor".to_string()
    } else {
        n.s_or("nearest_mode", "round_prefer_floor")
    };
    let nearest = match nearest_name.as_str() {
        "round_prefer_floor" => NearestMode::RoundPreferFloor,
        "round_prefer_ceil" => NearestMode::RoundPreferCeil,
        "floor" => NearestMode::Floor,
        "ceil" => NearestMode::Ceil,
        other => bad!("unknown nearest_mode `{other}`"),
    };
    // Per resized axis: the output size and the scale of the coordinate transformation.
    let (out_sizes, axis_scales): (Vec<Dim>, Option<Vec<f64>>) = match (&scales, &sizes) {
        (Some(sc), _) => {
            let sc: Vec<f64> = if sc.len() == axes.len() {
                sc.clone()
            } else if sc.len() == r {
                axes.iter().map(|&a| sc[a]).collect()
            } else {
                bad!("scales has {} entries for {} axes", sc.len(), axes.len())
            };
            let mut out = vec![];
            for (&a, &s) in axes.iter().zip(&sc) {
                if !(s > 0.0 && s.is_finite()) {
                    bad!("scale {s} must be positive");
                }
                out.push(match xs[a].fixed() {
                    Some(len) => Dim::from((s * len as f64).floor() as u64),
                    None if s.fract() == 0.0 => xs[a].mul_int(s as i64).map_err(err)?,
                    None if (1.0 / s).fract() == 0.0 => {
                        xs[a].div_floor((1.0 / s) as u64).map_err(err)?
                    }
                    None => unsup!("scale {s} of symbolic dim {}", xs[a]),
                });
            }
            (out, Some(sc))
        }
        (None, Some(sz)) => {
            let sz: Vec<Dim> = if sz.len() == axes.len() {
                sz.clone()
            } else if sz.len() == r {
                axes.iter().map(|&a| sz[a].clone()).collect()
            } else {
                bad!("sizes has {} entries for {} axes", sz.len(), axes.len())
            };
            let policy = n.s_or("keep_aspect_ratio_policy", "stretch");
            if policy == "stretch" {
                (sz, None)
            } else {
                // One scale for every axis: the smallest (not_larger) or largest ratio.
                let mut ratios = vec![];
                for (&a, s) in axes.iter().zip(&sz) {
                    match (s.fixed(), xs[a].fixed()) {
                        (Some(o), Some(i)) if i > 0 => ratios.push(o as f64 / i as f64),
                        _ => unsup!("keep_aspect_ratio_policy with symbolic sizes"),
                    }
                }
                let s = match policy.as_str() {
                    "not_larger" => ratios.iter().copied().fold(f64::INFINITY, f64::min),
                    "not_smaller" => ratios.iter().copied().fold(0.0, f64::max),
                    other => bad!("unknown keep_aspect_ratio_policy `{other}`"),
                };
                let out = axes
                    .iter()
                    .map(|&a| {
                        let len = xs[a].fixed().unwrap_or(0) as f64;
                        Dim::from((s * len + 0.5) as u64)
                    })
                    .collect();
                (out, Some(vec![s; axes.len()]))
            }
        }
        (None, None) => bad!("neither scales nor sizes given"),
    };
    // The fast path: integer nearest upsampling of H and W of a 4-D input, other axes kept.
    if mode == ResizeMode::Nearest && r == 4 && roi.is_empty() {
        let factor = |a: usize| -> Option<u64> {
            let pos = axes.iter().position(|&x| x == a);
            let s = match (pos, &axis_scales) {
                (None, _) => return Some(1),
                (Some(p), Some(sc)) => sc[p],
                (Some(p), None) => out_sizes[p].div_dim(&xs[a])?.fixed()? as f64,
            };
            (s >= 1.0 && s.fract() == 0.0).then_some(s as u64)
        };
        let fs: Vec<Option<u64>> = (0..4).map(factor).collect();
        let nearest_ok = match ctm {
            Ctm::HalfPixel | Ctm::PytorchHalfPixel | Ctm::HalfPixelSymmetric => {
                matches!(
                    nearest,
                    NearestMode::RoundPreferFloor | NearestMode::RoundPreferCeil
                )
            }
            Ctm::Asymmetric => nearest == NearestMode::Floor,
            _ => false,
        };
        if let [Some(1), Some(1), Some(a), Some(b)] = fs[..] {
            if a == b && (nearest_ok || a == 1) {
                if a == 1 {
                    return one(x);
                }
                let op = Op::UpsampleNearest2d(irops::upsample_nearest2d::UpsampleNearest2d {
                    scale: a,
                });
                return one(cx.un(op, x)?);
            }
        }
    }
    let mut op = Resize::new(axes.iter().map(|&a| a as i64).collect(), out_sizes);
    op.scales = axis_scales;
    op.mode = mode;
    op.coordinate_transformation_mode = ctm;
    op.nearest_mode = nearest;
    op.cubic_coeff_a = n.f("cubic_coeff_a", -0.75);
    op.exclude_outside = n.flag("exclude_outside", false);
    op.extrapolation_value = n.f("extrapolation_value", 0.0);
    op.antialias = n.flag("antialias", false);
    if ctm == Ctm::TfCropAndResize {
        op.roi = if roi.len() == 2 * axes.len() {
            roi
        } else if roi.len() == 2 * r {
            let (st, en) = roi.split_at(r);
            axes.iter()
                .map(|&a| st[a])
                .chain(axes.iter().map(|&a| en[a]))
                .collect()
        } else {
            bad!("roi has {} entries for {} axes", roi.len(), axes.len())
        };
    }
    one(cx.un(Op::Resize(op), x)?)
}
