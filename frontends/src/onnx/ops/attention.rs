//! Attention (opset 23/24) and RotaryEmbedding (opset 23), composed from IR ops exactly as the
//! ONNX reference defines them (scaling of both Q and K by √scale, GQA by interleaved
//! repetition of KV heads, boolean or additive masks padded to the KV length, bottom-right
//! causal alignment after a cache, softcap, fully masked rows giving 0).

use super::{one, Convert};
use crate::onnx::import::Importer;
use crate::onnx::node::{bad, err, unsup, NResult, Node};
use crate::onnx::tensor::onnx_dtype;
use crate::onnx::value::Val;
use fuselage_ir::ops::compare::Predicate;
use fuselage_ir::ops::reduce::ReduceKind;
use fuselage_ir::ops::{self as irops, Op};
use fuselage_ir::{DType, Dim, Tensor};

pub(crate) const OPS: &[(&str, Convert)] = &[
    ("Attention", attention),
    ("RotaryEmbedding", rotary_embedding),
];

fn d(n: u64) -> Dim {
    Dim::from(n)
}

fn concat(cx: &mut Importer, parts: Vec<Val>, ax: i64) -> NResult<Val> {
    cx.emit(Op::Concat(irops::concat::Concat { axis: ax }), &parts)
}

/// `[B, S, H·D]` → `[B, H, S, D]`.
fn split_heads(cx: &mut Importer, x: Val, heads: u64) -> NResult<Val> {
    let s = cx.shape(&x)?;
    let hd = s[2].div_exact(heads).map_err(|e| {
        err(format!(
            "hidden size {} is not divisible by {heads} heads: {e}",
            s[2]
        ))
    })?;
    let x = cx.reshape(x, vec![s[0].clone(), s[1].clone(), d(heads), hd])?;
    cx.transpose(x, vec![0, 2, 1, 3])
}

fn attention(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let (q, k, v) = (cx.input(n, 0)?, cx.input(n, 1)?, cx.input(n, 2)?);
    let mask = cx.opt_input(n, 3)?;
    let past_k = cx.opt_input(n, 4)?;
    let past_v = cx.opt_input(n, 5)?;
    let nonpad = if n.opset >= 24 {
        cx.opt_input(n, 6)?
    } else {
        None
    };
    if past_k.is_some() != past_v.is_some() {
        bad!("past_key and past_value must be given together");
    }
    if nonpad.is_some() && past_k.is_some() {
        bad!("nonpad_kv_seqlen cannot be combined with past_key/past_value");
    }
    let (left, right) = (n.i("left_window_size", -1), n.i("right_window_size", -1));
    if left < -1 || right < -1 {
        bad!("left/right_window_size must be -1 or >= 0, found {left}/{right}");
    }
    let rank = cx.rank(&q)?;
    if cx.rank(&k)? != rank || cx.rank(&v)? != rank {
        bad!("Q, K and V must have the same rank");
    }
    let dt = cx.dtype(&q)?;
    let (q, k, v) = match rank {
        3 => {
            let (qh, kvh) = (n.i("q_num_heads", 0), n.i("kv_num_heads", 0));
            if qh < 1 || kvh < 1 {
                bad!("3-D inputs need q_num_heads and kv_num_heads");
            }
            (
                split_heads(cx, q, qh as u64)?,
                split_heads(cx, k, kvh as u64)?,
                split_heads(cx, v, kvh as u64)?,
            )
        }
        4 => (q, k, v),
        r => bad!("Q must have rank 3 or 4, found {r}"),
    };
    let qs = cx.shape(&q)?;
    // Scale: √scale applied to Q and to K (rounded to Q's dtype), as the reference does.
    let scale = if n.has("scale") {
        n.f("scale", 1.0)
    } else {
        let hd = qs[3]
            .fixed()
            .ok_or_else(|| err("the head size must be fixed when scale is not given"))?;
        1.0 / (hd as f64).sqrt()
    };
    let s = cx.scalar(dt, scale.sqrt(), "scale");
    // The cache.
    let past_len = match &past_k {
        Some(p) => Some(cx.shape(p)?[2].clone()),
        None => None,
    };
    let k = match past_k {
        Some(p) => concat(cx, vec![p, k], 2)?,
        None => k,
    };
    let v = match past_v {
        Some(p) => concat(cx, vec![p, v], 2)?,
        None => v,
    };
    let (present_k, present_v) = (k.clone(), v.clone());
    let ks = cx.shape(&k)?;
    let (sq, skv) = (qs[2].clone(), ks[2].clone());
    // The additive bias [.., q, kv], None meaning all zeros.
    let neg_inf = cx.scalar(dt, f64::NEG_INFINITY, "neg_inf");
    let zero = cx.scalar(dt, 0.0, "zero");
    let mut bias: Option<Val> = None;
    if let Some(m) = mask {
        let ms = cx.shape(&m)?;
        let last = ms
            .last()
            .cloned()
            .ok_or_else(|| err("attn_mask is a scalar"))?;
        let is_bool = cx.dtype(&m)? == DType::Bool;
        // Pad the mask's last dim to the KV length with "masked".
        let m = if last != skv {
            let pad = skv.sub(&last).map_err(err)?;
            let mut ps = ms.clone();
            let r = ps.len();
            ps[r - 1] = pad;
            let fill = if is_bool {
                cx.tensor(&Tensor::scalar(DType::Bool, 0.0), "mask_pad")
            } else {
                neg_inf.clone()
            };
            let fill = cx.broadcast(fill, ps)?;
            concat(cx, vec![m, fill], -1)?
        } else {
            m
        };
        bias = Some(if is_bool {
            cx.select(m, zero.clone(), neg_inf.clone())?
        } else {
            cx.cast_to(m, dt)?
        });
    }
    // The query frontier `i + offset` ([q, kv], or [B, q, kv] with a per-batch offset).
    let frontier = |cx: &mut Importer| -> NResult<(Val, Val)> {
        let i = cx.iota(vec![sq.clone(), skv.clone()], 0, DType::I64)?;
        let j = cx.iota(vec![sq.clone(), skv.clone()], 1, DType::I64)?;
        let f = match (&past_len, &nonpad) {
            (Some(p), _) => {
                let pv = cx.sym_vector(vec![p.clone()]);
                let pv = cx.reshape(pv, vec![])?;
                cx.add(i, pv)?
            }
            (None, Some(np)) => {
                // Per batch: offset[b] = nonpad[b] − q_len, shape [B, 1, 1].
                let np = cx.cast_to(np.clone(), DType::I64)?;
                let b = cx.shape(&np)?;
                let np = cx.reshape(np, vec![b[0].clone(), d(1), d(1)])?;
                let ql = cx.sym_vector(vec![sq.clone()]);
                let ql = cx.reshape(ql, vec![])?;
                let off = cx.sub(np, ql)?;
                cx.add(i, off)?
            }
            (None, None) => i,
        };
        Ok((f, j))
    };
    // An allowed-mask as an additive bias; a per-batch one gets the head axis.
    let as_bias = |cx: &mut Importer, allowed: Val| -> NResult<Val> {
        let b = cx.select(allowed, zero.clone(), neg_inf.clone())?;
        let bs = cx.shape(&b)?;
        if bs.len() == 3 {
            cx.reshape(b, vec![bs[0].clone(), d(1), bs[1].clone(), bs[2].clone()])
        } else {
            Ok(b)
        }
    };
    if n.flag("is_causal", false) {
        // allowed iff j <= i + offset
        let (f, j) = frontier(cx)?;
        let allowed = cx.compare(Predicate::Le, j, f)?;
        let causal = as_bias(cx, allowed)?;
        bias = Some(match bias {
            Some(b) => cx.add(b, causal)?,
            None => causal,
        });
    }
    if left >= 0 || right >= 0 {
        // allowed iff −right <= (i + offset) − j <= left (a side of −1 is unbounded)
        let (f, j) = frontier(cx)?;
        let diff = cx.sub(f, j)?;
        let mut allowed: Option<Val> = None;
        for (lim, sign) in [(left, 1.0), (right, -1.0)] {
            if lim < 0 {
                continue;
            }
            let sd = cx.scalar(DType::I64, sign, "sign");
            let x = cx.mul(diff.clone(), sd)?;
            let l = cx.scalar(DType::I64, lim as f64, "window");
            let ok = cx.compare(Predicate::Le, x, l)?;
            allowed = Some(match allowed {
                Some(a) => cx.bin(
                    Op::Logical(irops::logical::Logical {
                        kind: irops::logical::LogicalKind::And,
                    }),
                    a,
                    ok,
                )?,
                None => ok,
            });
        }
        if let Some(a) = allowed {
            let w = as_bias(cx, a)?;
            bias = Some(match bias {
                Some(b) => cx.add(b, w)?,
                None => w,
            });
        }
    }
    if let Some(np) = &nonpad {
        // Padding mask: key j is valid iff j < nonpad[b].
        let np = cx.cast_to(np.clone(), DType::I64)?;
        let b = cx.shape(&np)?;
        let np = cx.reshape(np, vec![b[0].clone(), d(1), d(1), d(1)])?;
        let j = cx.iota(vec![d(1), d(1), d(1), skv.clone()], 3, DType::I64)?;
        let valid = cx.compare(Predicate::Lt, j, np)?;
        let pm = cx.select(valid, zero.clone(), neg_inf.clone())?;
        bias = Some(match bias {
            Some(bb) => cx.add(bb, pm)?,
            None => pm,
        });
    }
    // GQA: repeat each KV head h times, interleaved ([h0, h0, h1, h1, …]).
    let (hq, hk) = (qs[1].clone(), ks[1].clone());
    let (k, v) = if hq != hk {
        let (Some(a), Some(b)) = (hq.fixed(), hk.fixed()) else {
            unsup!("grouped-query attention with symbolic head counts ({hq} vs {hk})");
        };
        if b == 0 || a % b != 0 {
            bad!("{a} query heads are not a multiple of {b} KV heads");
        }
        let rep = a / b;
        let mut out = vec![];
        for t in [k, v] {
            let s = cx.shape(&t)?;
            let t = cx.reshape(
                t,
                vec![s[0].clone(), s[1].clone(), d(1), s[2].clone(), s[3].clone()],
            )?;
            let t = cx.broadcast(
                t,
                vec![
                    s[0].clone(),
                    s[1].clone(),
                    d(rep),
                    s[2].clone(),
                    s[3].clone(),
                ],
            )?;
            out.push(cx.reshape(
                t,
                vec![s[0].clone(), hq.clone(), s[2].clone(), s[3].clone()],
            )?);
        }
        let v = out.pop().ok_or_else(|| err("internal"))?;
        let k = out.pop().ok_or_else(|| err("internal"))?;
        (k, v)
    } else {
        (k, v)
    };
    let mm = Op::MatMul(irops::matmul::MatMul {});
    let qs_ = cx.mul(q, s.clone())?;
    let kt = cx.transpose(k, vec![0, 1, 3, 2])?;
    let ks_ = cx.mul(kt, s)?;
    let mut qk = cx.bin(mm.clone(), qs_, ks_)?;
    let softcap = n.f("softcap", 0.0);
    if softcap > 0.0 {
        let c = cx.scalar(dt, softcap, "softcap");
        let t = cx.div(qk, c.clone())?;
        let t = cx.un(Op::Tanh(irops::tanh::Tanh {}), t)?;
        qk = cx.mul(t, c)?;
    }
    let with_bias = match &bias {
        Some(b) => cx.add(qk.clone(), b.clone())?,
        None => qk.clone(),
    };
    let mode = n.i("qk_matmul_output_mode", 0);
    let mut qk_out = if mode == 2 { with_bias.clone() } else { qk };
    let sm_dt = if n.has("softmax_precision") {
        onnx_dtype(n.i("softmax_precision", 1) as i32)
            .map_err(crate::onnx::node::NodeErr::Unsupported)?
    } else {
        dt
    };
    let logits = cx.cast_to(with_bias, sm_dt)?;
    let mut p = if sm_dt == DType::F32 || sm_dt == DType::F64 {
        cx.un(Op::Softmax(irops::softmax::Softmax { axis: -1 }), logits)?
    } else {
        // Softmax precision is the input's (the attribute absent) or a 16-bit type: every
        // step in that precision, as the ONNX reference computes it.
        cx.stepwise_softmax(logits, -1)?
    };
    if let Some(b) = &bias {
        // Rows whose bias is all −∞ attend nothing: 0.
        let m = cx.reduce(ReduceKind::Max, b.clone(), vec![-1], true)?;
        let ninf = cx.scalar_like(&m, f64::NEG_INFINITY, "neg_inf")?;
        let dead = cx.compare(Predicate::Eq, m, ninf)?;
        let z = cx.scalar_like(&p, 0.0, "zero")?;
        p = cx.select(dead, z, p)?;
    }
    if mode == 3 {
        qk_out = p.clone();
    }
    let p = cx.cast_to(p, dt)?;
    let mut y = cx.bin(mm, p, v)?;
    if rank == 3 {
        y = cx.transpose(y, vec![0, 2, 1, 3])?;
        let ys = cx.shape(&y)?;
        let hidden = ys[2].mul(&ys[3]).map_err(err)?;
        y = cx.reshape(y, vec![ys[0].clone(), ys[1].clone(), hidden])?;
    }
    let qk_out = cx.cast_to(qk_out, dt)?;
    Ok(vec![y, present_k, present_v, qk_out])
}

fn rotary_embedding(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let (cos, sin) = (cx.input(n, 1)?, cx.input(n, 2)?);
    let pos = cx.opt_input(n, 3)?;
    let xs = cx.shape(&x)?;
    let rank = xs.len();
    // To [B, S, H, D].
    let x4 = match rank {
        4 => cx.transpose(x.clone(), vec![0, 2, 1, 3])?,
        3 => {
            let h = n.i("num_heads", 0);
            if h < 1 {
                bad!("3-D input needs num_heads");
            }
            let hd = xs[2].div_exact(h as u64).map_err(err)?;
            cx.reshape(
                x.clone(),
                vec![xs[0].clone(), xs[1].clone(), d(h as u64), hd],
            )?
        }
        r => bad!("input must have rank 3 or 4, found {r}"),
    };
    let s4 = cx.shape(&x4)?;
    let head = s4[3]
        .fixed()
        .ok_or_else(|| err("the head size must be fixed"))?;
    let rd = match n.i("rotary_embedding_dim", 0) {
        0 => head,
        r if r > 0 && r as u64 <= head && r % 2 == 0 => r as u64,
        r => bad!("rotary_embedding_dim {r} for head size {head}"),
    };
    let half = rd / 2;
    let (cos, sin) = match pos {
        Some(p) => {
            let g = Op::Gather(irops::gather::Gather { axis: 0 });
            (cx.bin(g.clone(), cos, p.clone())?, cx.bin(g, sin, p)?)
        }
        None => (cos, sin),
    };
    // [B, S, half] → [B, S, 1, half]
    let add_head = |cx: &mut Importer, t: Val| -> NResult<Val> {
        let s = cx.shape(&t)?;
        let mut s2 = s.clone();
        let r = s2.len();
        if r < 1 || s[r - 1].fixed() != Some(half) {
            bad!("the cos/sin cache's last dim must be rotary_embedding_dim/2 = {half}");
        }
        s2.insert(r - 1, d(1));
        cx.reshape(t, s2)
    };
    let cos = add_head(cx, cos)?;
    let sin = add_head(cx, sin)?;
    let rot = cx.slice_axis(x4.clone(), 3, d(0), d(rd), 1)?;
    let interleaved = n.flag("interleaved", false);
    let (x1, x2) = if interleaved {
        (
            cx.slice_axis(rot.clone(), 3, d(0), d(rd), 2)?,
            cx.slice_axis(rot, 3, d(1), d(rd), 2)?,
        )
    } else {
        (
            cx.slice_axis(rot.clone(), 3, d(0), d(half), 1)?,
            cx.slice_axis(rot, 3, d(half), d(rd), 1)?,
        )
    };
    let c1 = cx.mul(cos.clone(), x1.clone())?;
    let s2 = cx.mul(sin.clone(), x2.clone())?;
    let real = cx.sub(c1, s2)?;
    let s1 = cx.mul(sin, x1)?;
    let c2 = cx.mul(cos, x2)?;
    let imag = cx.add(s1, c2)?;
    let rotated = if interleaved {
        let rs = cx.shape(&real)?;
        let mut e = rs.clone();
        e.push(d(1));
        let re = cx.reshape(real, e.clone())?;
        let im = cx.reshape(imag, e)?;
        let c = concat(cx, vec![re, im], -1)?;
        let mut out = rs;
        let l = out.len();
        out[l - 1] = d(rd);
        cx.reshape(c, out)?
    } else {
        concat(cx, vec![real, imag], -1)?
    };
    let y4 = if rd < head {
        let rest = cx.slice_axis(x4, 3, d(rd), d(head), 1)?;
        concat(cx, vec![rotated, rest], -1)?
    } else {
        rotated
    };
    one(match rank {
        4 => cx.transpose(y4, vec![0, 2, 1, 3])?,
        _ => cx.reshape(y4, xs)?,
    })
}
