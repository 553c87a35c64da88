//! Fused attention on strided `q`, `k`, `v` views (GQA, additive biases, causal mask).

use super::gemm::gemm_raw_out;
use super::registry::{all_f32, any_cpu, wrong_op, KernelEntry, KernelOut, KernelRun};
use super::softmax::softmax_row;
use super::{broadcast_strides, gemm, multiversion, Mat, View, R};
use fuselage_ir::ops::attention::AttnMask;
use fuselage_ir::Op;
use rayon::prelude::*;

multiversion! {
    fn scale_row(row: &mut [f32], scale: f32) {
        for x in row.iter_mut() {
            *x *= scale;
        }
    }
}

multiversion! {
    fn add_row(row: &mut [f32], bias: &[f32]) {
        for (x, b) in row.iter_mut().zip(bias) {
            *x += b;
        }
    }
}

/// Query rows processed per block (bounds the score buffer of one head).
pub const QUERY_BLOCK: usize = 256;

/// `softmax(q·kᵀ·scale + biases [+ causal mask])·v` for `q[B,H,Sq,D]`, `k[B,Hk,Sk,D]`,
/// `v[B,Hk,Sk,Dv]` (head `h` reads kv head `h / (H/Hk)`), read in place through their strides
/// (the `[B,S,H,D]→[B,H,S,D]` transposes of a model are not copied). Biases broadcast to
/// `[B,H,Sq,Sk]`; the causal mask lets query `i` see keys `j <= i + Sk − Sq`; a row with no
/// visible key gives zeros. `scale` defaults to `1/sqrt(D)`.
///
/// Returns the data, the shape `[B,H,Sq,Dv]` and its strides: the data is laid out
/// `[B,Sq,H,Dv]` (strides `[Sq·H·Dv, Dv, H·Dv, 1]`), the order in which models read attention
/// back (`transpose` to `[B,S,H,D]`, then merge the heads), so that this is a free view there.
pub fn attention(
    q: &View<'_>,
    k: &View<'_>,
    v: &View<'_>,
    biases: &[View<'_>],
    causal: bool,
    scale: Option<f64>,
) -> R<(Vec<f32>, Vec<usize>, Vec<usize>)> {
    let (sq_, sk_, sv_) = (&q.shape, &k.shape, &v.shape);
    if sq_.len() != 4 || sk_.len() != 4 || sv_.len() != 4 {
        return Err("attention expects rank-4 q, k, v".into());
    }
    let (b, h, sq, d) = (sq_[0], sq_[1], sq_[2], sq_[3]);
    let (hk, sk, dv) = (sk_[1], sk_[2], sv_[3]);
    if sk_[0] != b || sv_[0] != b || sk_[3] != d || sv_[1] != hk || sv_[2] != sk {
        return Err(format!(
            "attention: q {sq_:?}, k {sk_:?}, v {sv_:?} disagree"
        ));
    }
    if hk == 0 || !h.is_multiple_of(hk) {
        return Err(format!("attention: {hk} kv heads do not divide {h} heads"));
    }
    let rep = h / hk;
    let ls = [b, h, sq, sk];
    let bs: Vec<(&[f32], Vec<usize>)> = biases
        .iter()
        .map(|bv| {
            broadcast_strides(&bv.shape, &bv.strides, &ls)
                .map(|st| (bv.data, st))
                .map_err(|e| format!("attention bias: {e}"))
        })
        .collect::<R<_>>()?;
    let scale = scale.unwrap_or(1.0 / (d as f64).sqrt()) as f32;
    let shift = sk as i64 - sq as i64;
    let shape = vec![b, h, sq, dv];
    let strides = vec![sq * h * dv, dv, h * dv, 1];
    let mut out = super::buffer::zeroed(b * h * sq * dv);
    if out.is_empty() {
        return Ok((out, shape, strides));
    }
    let (qs, ks, vs) = (&q.strides, &k.strides, &v.strides);
    let out_ptr = SendPtr(out.as_mut_ptr());
    (0..b * h).into_par_iter().try_for_each(|bh| -> R<()> {
        let out_ptr = &out_ptr;
        let (bi, hi) = (bh / h, bh % h);
        let kvh = hi / rep;
        let qm = q.data;
        let q_off = bi * qs[0] + hi * qs[1];
        let k_off = bi * ks[0] + kvh * ks[1];
        let v_off = bi * vs[0] + kvh * vs[1];
        let mut s = vec![0f32; QUERY_BLOCK.min(sq) * sk];
        for i0 in (0..sq).step_by(QUERY_BLOCK) {
            let rows = QUERY_BLOCK.min(sq - i0);
            let sbuf = &mut s[..rows * sk];
            // S = Q_blk · Kᵀ (K read through transposed strides).
            gemm(
                rows,
                d,
                sk,
                Mat {
                    data: qm,
                    off: q_off + i0 * qs[2],
                    rs: qs[2],
                    cs: qs[3],
                },
                Mat {
                    data: k.data,
                    off: k_off,
                    rs: ks[3],
                    cs: ks[2],
                },
                sbuf,
                sk,
                false,
                false,
            )?;
            for (r, row) in sbuf.chunks_mut(sk.max(1)).enumerate() {
                let i = i0 + r;
                let visible = if causal {
                    (i as i64 + shift + 1).clamp(0, sk as i64) as usize
                } else {
                    sk
                };
                scale_row(row, scale);
                for (bd, st) in &bs {
                    let base = bi * st[0] + hi * st[1] + i * st[2];
                    if st[3] == 1 {
                        add_row(row, &bd[base..base + sk]);
                    } else {
                        for (j, x) in row.iter_mut().enumerate() {
                            *x += bd[base + j * st[3]];
                        }
                    }
                }
                row[visible..].fill(f32::NEG_INFINITY);
                softmax_row(row);
            }
            // O_blk = P · V, into rows i0.. of head hi: element (i, c) at
            // ((bi·Sq + i)·H + hi)·Dv + c.
            let vm = Mat {
                data: v.data,
                off: v_off,
                rs: vs[2],
                cs: vs[3],
            };
            // SAFETY: the buffer holds B·Sq·H·Dv elements; this task writes only the
            // elements of head `hi` of batch `bi` (rows i0..i0+rows, columns hi·Dv..+Dv),
            // which no other task writes, and `out` outlives the parallel loop.
            unsafe {
                gemm_raw_out(
                    rows,
                    sk,
                    dv,
                    Mat::row_major(sbuf, sk),
                    vm,
                    out_ptr.0.add(((bi * sq + i0) * h + hi) * dv),
                    h * dv,
                    false,
                    false,
                )?;
            }
        }
        Ok(())
    })?;
    Ok((out, shape, strides))
}

/// The output pointer shared by the head tasks (each writes its own elements).
struct SendPtr(*mut f32);
// SAFETY: the tasks sharing it write disjoint elements (see the SAFETY comment at its use).
unsafe impl Sync for SendPtr {}
// SAFETY: as above.
unsafe impl Send for SendPtr {}

/// The registry entry of [`attention()`].
pub(crate) const ENTRY: KernelEntry = KernelEntry {
    name: "attention-f32-fused",
    op: "attention",
    signature: "float q, k, v[, float biases…] -> float",
    doc: "Fused `softmax(q·kᵀ·scale + biases [+ causal mask])·v` per batch·head (GQA), heads over threads; writes `[B,S,H,D]` memory behind a `[B,H,S,D]` view.",
    applies: |_, operands, results| all_f32(operands, results),
    cost: 10,
    requires: "any",
    guard: any_cpu,
    prepare: None,
    run: KernelRun::F32(|op, v| {
        const NAME: &str = "attention-f32-fused";
        let Op::Attention(a) = op else {
            return Err(wrong_op(NAME, op));
        };
        if v.len() < 3 {
            return Err("attention needs q, k, v".into());
        }
        let (data, shape, strides) = attention(
            &v[0],
            &v[1],
            &v[2],
            &v[3..],
            a.mask == AttnMask::Causal,
            a.scale,
        )?;
        Ok(KernelOut {
            data,
            shape,
            strides: Some(strides),
        })
    }),
};

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // the scalar reference indexes like the math
mod tests {
    use super::super::testing::{close, data};
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn attention_matches_naive(b in 1usize..3, hk in 1usize..3, rep in 1usize..3, sq in 1usize..7,
                                   sk in 1usize..7, d in 1usize..6, dv in 1usize..6, causal in any::<bool>(),
                                   with_bias in any::<bool>(), q_transposed in any::<bool>()) {
            let h = hk * rep;
            let q = data(b * h * sq * d, 11);
            let k = data(b * hk * sk * d, 12);
            let v = data(b * hk * sk * dv, 13);
            let bias = data(h * sq * sk, 14);
            // With `q_transposed` q is stored [B, Sq, H, D] and read as [B, H, Sq, D].
            let qv = if q_transposed {
                View::new(&q, &[b, h, sq, d], &[sq * h * d, d, h * d, 1]).unwrap()
            } else {
                View::contiguous(&q, &[b, h, sq, d]).unwrap()
            };
            let qc = qv.to_contiguous();
            let biases = if with_bias { vec![View::contiguous(&bias, &[1, h, sq, sk]).unwrap()] } else { vec![] };
            let (o, s, st) = attention(&qv, &View::contiguous(&k, &[b, hk, sk, d]).unwrap(),
                                   &View::contiguous(&v, &[b, hk, sk, dv]).unwrap(), &biases, causal, None).unwrap();
            prop_assert_eq!(&s, &vec![b, h, sq, dv]);
            let o = View::new(&o, &s, &st).unwrap().to_contiguous().into_owned();
            let scale = 1.0 / (d as f64).sqrt();
            let shift = sk as i64 - sq as i64;
            let mut r = vec![0f64; b * h * sq * dv];
            for bi in 0..b { for hi in 0..h { for i in 0..sq {
                let kh = hi / rep;
                let mut l = vec![f64::NEG_INFINITY; sk];
                for j in 0..sk {
                    if causal && j as i64 > i as i64 + shift { continue; }
                    let mut dot = 0.0;
                    for x in 0..d {
                        dot += qc[((bi * h + hi) * sq + i) * d + x] as f64 * k[((bi * hk + kh) * sk + j) * d + x] as f64;
                    }
                    l[j] = dot * scale + if with_bias { bias[(hi * sq + i) * sk + j] as f64 } else { 0.0 };
                }
                let m = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                if m == f64::NEG_INFINITY { continue; }
                let z: f64 = l.iter().map(|x| (x - m).exp()).sum();
                for c in 0..dv {
                    let mut acc = 0.0;
                    for j in 0..sk {
                        acc += (l[j] - m).exp() / z * v[((bi * hk + kh) * sk + j) * dv + c] as f64;
                    }
                    r[((bi * h + hi) * sq + i) * dv + c] = acc;
                }
            }}}
            close(&o, &r, 1e-5);
        }
    }

    #[test]
    fn shape_errors_are_errors() {
        // Two kv heads do not divide three query heads.
        let z = [0f32; 12];
        assert!(attention(
            &View::contiguous(&z, &[1, 3, 1, 4]).unwrap(),
            &View::contiguous(&z[..8], &[1, 2, 1, 4]).unwrap(),
            &View::contiguous(&z[..8], &[1, 2, 1, 4]).unwrap(),
            &[],
            false,
            None
        )
        .is_err());
    }
}
