//! Native f32 CPU kernels used by the lowering on the CPU backend: GEMM through
//! `matrixmultiply::sgemm` (blocked, AVX-512/AVX2/FMA kernels picked at run time, threaded by
//! `MATMUL_NUM_THREADS`), batched matmul with numpy batch broadcasting, `linear` with a fused
//! bias, and a fused attention (per batch·head: `S = Q·Kᵀ` by GEMM on strided views, scale,
//! biases, causal mask and softmax in one pass over each row, then `O = P·V` by GEMM), the heads
//! spread over threads.
//!
//! Every kernel has a scalar reference in this module's tests and is checked against it.

use rayon::prelude::*;

/// Row-block size used when tiling attention over queries (bounds the score buffer).
pub const MR: usize = 256;

type R<T> = Result<T, String>;

/// `C[m,n] = A[m,k] · B[k,n]` (row-major, contiguous), overwriting `c`.
pub fn sgemm(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    sgemm_strided(m, k, n, a, (k as isize, 1), b, (n as isize, 1), c, 0.0);
}

/// `C = A·B + beta·C` with explicit (row, column) strides of `A` and `B`; `C` is row-major `[m, n]`.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_strided(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    (rsa, csa): (isize, isize),
    b: &[f32],
    (rsb, csb): (isize, isize),
    c: &mut [f32],
    beta: f32,
) {
    assert!(c.len() >= m * n, "sgemm output too small");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for x in &mut c[..m * n] {
            *x *= beta;
        }
        return;
    }
    let last =
        |rs: isize, cs: isize, r: usize, cc: usize| (r - 1) as isize * rs + (cc - 1) as isize * cs;
    assert!(
        last(rsa, csa, m, k) < a.len() as isize && last(rsb, csb, k, n) < b.len() as isize,
        "sgemm operand too small"
    );
    // SAFETY: the asserts above bound every index matrixmultiply reads (non-negative strides,
    // last element inside each slice) and writes (`c` holds m·n elements, row-major).
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa,
            csa,
            b.as_ptr(),
            rsb,
            csb,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// Numpy broadcasting of two batch shapes.
fn broadcast(a: &[usize], b: &[usize]) -> R<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let x = if i + a.len() >= r {
            a[i + a.len() - r]
        } else {
            1
        };
        let y = if i + b.len() >= r {
            b[i + b.len() - r]
        } else {
            1
        };
        out[i] = if x == y || y == 1 {
            x
        } else if x == 1 {
            y
        } else {
            return Err(format!("batch dims {a:?} and {b:?} do not broadcast"));
        };
    }
    Ok(out)
}

/// Offset of batch index `flat` (of `out` batch shape) inside a tensor with batch shape `src`
/// broadcast to `out`, in matrices.
fn batch_offset(flat: usize, out: &[usize], src: &[usize]) -> usize {
    let mut rem = flat;
    let mut off = 0;
    let mut stride = 1;
    for i in (0..out.len()).rev() {
        let idx = rem % out[i];
        rem /= out[i];
        let j = i as isize - (out.len() - src.len()) as isize;
        if j >= 0 {
            let s = src[j as usize];
            if s != 1 {
                off += idx * stride;
            }
            stride *= s;
        }
    }
    off
}

/// `a[..., M, K] · b[..., K, N]` with batch broadcasting. Returns the data and shape.
pub fn batched_matmul(
    a: &[f32],
    sa: &[usize],
    b: &[f32],
    sb: &[usize],
) -> R<(Vec<f32>, Vec<usize>)> {
    let (ra, rb) = (sa.len(), sb.len());
    if ra < 2 || rb < 2 || sa[ra - 1] != sb[rb - 2] {
        return Err(format!("matmul: shapes {sa:?} · {sb:?} do not contract"));
    }
    let (m, k, n) = (sa[ra - 2], sa[ra - 1], sb[rb - 1]);
    let batch = broadcast(&sa[..ra - 2], &sb[..rb - 2])?;
    let nb: usize = batch.iter().product();
    let mut shape = batch.clone();
    shape.extend([m, n]);
    let mut out = vec![0f32; nb * m * n];
    if rb == 2 && sa[..ra - 2].iter().product::<usize>() == nb {
        // One GEMM with the batch folded into the rows.
        sgemm(nb * m, k, n, a, b, &mut out);
        return Ok((out, shape));
    }
    for (i, c) in out.chunks_mut((m * n).max(1)).enumerate().take(nb) {
        let oa = batch_offset(i, &batch, &sa[..ra - 2]) * m * k;
        let ob = batch_offset(i, &batch, &sb[..rb - 2]) * k * n;
        sgemm(m, k, n, &a[oa..oa + m * k], &b[ob..ob + k * n], c);
    }
    Ok((out, shape))
}

/// `x[..., K] · w[K, N] + bias[N]`.
pub fn linear(
    x: &[f32],
    sx: &[usize],
    w: &[f32],
    sw: &[usize],
    bias: Option<&[f32]>,
) -> R<(Vec<f32>, Vec<usize>)> {
    if sx.is_empty() || sw.len() != 2 || sx[sx.len() - 1] != sw[0] {
        return Err(format!("linear: shapes {sx:?} · {sw:?} do not contract"));
    }
    let (k, n) = (sw[0], sw[1]);
    let rows: usize = sx[..sx.len() - 1].iter().product();
    let mut out = vec![0f32; rows * n];
    let beta = match bias {
        Some(b) if b.len() == n => {
            for r in out.chunks_mut(n.max(1)) {
                r.copy_from_slice(b);
            }
            1.0
        }
        Some(b) => {
            return Err(format!(
                "linear: bias has {} elements, expected {n}",
                b.len()
            ))
        }
        None => 0.0,
    };
    sgemm_strided(
        rows,
        k,
        n,
        x,
        (k as isize, 1),
        w,
        (n as isize, 1),
        &mut out,
        beta,
    );
    let mut shape = sx[..sx.len() - 1].to_vec();
    shape.push(n);
    Ok((out, shape))
}

/// Broadcast strides of `shape` (right-aligned) against a rank-4 `[B,H,Sq,Sk]` logits shape.
fn bias_strides(shape: &[usize], out: &[usize; 4]) -> R<[usize; 4]> {
    if shape.len() > 4 {
        return Err(format!("attention bias {shape:?} has rank > 4"));
    }
    let mut st = [0usize; 4];
    let mut s = 1;
    for i in (0..shape.len()).rev() {
        let j = 4 - shape.len() + i;
        if shape[i] == out[j] {
            st[j] = if shape[i] == 1 { 0 } else { s };
        } else if shape[i] != 1 {
            return Err(format!(
                "attention bias {shape:?} does not broadcast to {out:?}"
            ));
        }
        s *= shape[i];
    }
    Ok(st)
}

/// Fused attention: `q[B,H,Sq,D]`, `k[B,Hk,Sk,D]`, `v[B,Hk,Sk,Dv]` (GQA: head `h` reads kv head
/// `h / (H/Hk)`), additive biases broadcast to `[B,H,Sq,Sk]`, optional causal mask (query `i`
/// sees keys `j <= i + Sk - Sq`); rows with no visible key give zeros.
pub fn attention(
    (q, sq_): (&[f32], &[usize]),
    (k, sk_): (&[f32], &[usize]),
    (v, sv_): (&[f32], &[usize]),
    biases: &[(&[f32], &[usize])],
    causal: bool,
    scale: Option<f64>,
) -> R<(Vec<f32>, Vec<usize>)> {
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
    let bs: Vec<(&[f32], [usize; 4])> = biases
        .iter()
        .map(|(d, s)| bias_strides(s, &ls).map(|st| (*d, st)))
        .collect::<R<_>>()?;
    let scale = scale.unwrap_or(1.0 / (d as f64).sqrt()) as f32;
    let shift = sk as i64 - sq as i64;
    let mut out = vec![0f32; b * h * sq * dv];
    out.par_chunks_mut((sq * dv).max(1))
        .enumerate()
        .for_each(|(bh, o)| {
            let (bi, hi) = (bh / h, bh % h);
            let kvh = bi * hk + hi / rep;
            let qm = &q[bh * sq * d..(bh + 1) * sq * d];
            let km = &k[kvh * sk * d..(kvh + 1) * sk * d];
            let vm = &v[kvh * sk * dv..(kvh + 1) * sk * dv];
            let mut s = vec![0f32; MR.min(sq) * sk];
            for i0 in (0..sq).step_by(MR) {
                let rows = MR.min(sq - i0);
                let sbuf = &mut s[..rows * sk];
                // S = Q_blk · Kᵀ (K read through transposed strides).
                sgemm_strided(
                    rows,
                    d,
                    sk,
                    &qm[i0 * d..],
                    (d as isize, 1),
                    km,
                    (1, d as isize),
                    sbuf,
                    0.0,
                );
                for (r, row) in sbuf.chunks_mut(sk.max(1)).enumerate() {
                    let i = i0 + r;
                    let visible = if causal {
                        (i as i64 + shift + 1).clamp(0, sk as i64) as usize
                    } else {
                        sk
                    };
                    let mut m = f32::NEG_INFINITY;
                    for (j, x) in row.iter_mut().enumerate() {
                        if j >= visible {
                            *x = f32::NEG_INFINITY;
                            continue;
                        }
                        let mut y = *x * scale;
                        for (bd, st) in &bs {
                            y += bd[bi * st[0] + hi * st[1] + i * st[2] + j * st[3]];
                        }
                        *x = y;
                        m = m.max(y);
                    }
                    if m == f32::NEG_INFINITY {
                        row.fill(0.0);
                        continue;
                    }
                    let mut z = 0f32;
                    for x in row.iter_mut() {
                        *x = (*x - m).exp();
                        z += *x;
                    }
                    let inv = 1.0 / z;
                    for x in row.iter_mut() {
                        *x *= inv;
                    }
                }
                // O_blk = P · V.
                sgemm(rows, sk, dv, sbuf, vm, &mut o[i0 * dv..(i0 + rows) * dv]);
            }
        });
    Ok((out, vec![b, h, sq, dv]))
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // scalar references index like the math
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn data(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn naive_mm(m: usize, k: usize, n: usize, a: &[f32], b: &[f32]) -> Vec<f64> {
        let mut c = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                for l in 0..k {
                    c[i * n + j] += a[i * k + l] as f64 * b[l * n + j] as f64;
                }
            }
        }
        c
    }

    fn close(a: &[f32], b: &[f64], tol: f64) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (*x as f64 - y).abs() <= tol * (1.0 + y.abs()),
                "element {i}: {x} vs {y}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn sgemm_matches_naive(m in 1usize..40, k in 0usize..40, n in 1usize..40, seed in 0u64..100) {
            let (a, b) = (data(m * k, seed), data(k * n, seed + 1));
            let mut c = vec![0f32; m * n];
            sgemm(m, k, n, &a, &b, &mut c);
            close(&c, &naive_mm(m, k, n, &a, &b), 1e-5);
        }

        #[test]
        fn batched_matmul_broadcasts(b1 in 1usize..3, b2 in 1usize..3, m in 1usize..6, k in 1usize..6, n in 1usize..6) {
            // a: [b1, 1, m, k], b: [b2, k, n] → [b1, b2, m, n]
            let a = data(b1 * m * k, 3);
            let bb = data(b2 * k * n, 4);
            let (c, s) = batched_matmul(&a, &[b1, 1, m, k], &bb, &[b2, k, n]).unwrap();
            prop_assert_eq!(s, vec![b1, b2, m, n]);
            for i in 0..b1 {
                for j in 0..b2 {
                    let r = naive_mm(m, k, n, &a[i * m * k..(i + 1) * m * k], &bb[j * k * n..(j + 1) * k * n]);
                    let o = (i * b2 + j) * m * n;
                    close(&c[o..o + m * n], &r, 1e-5);
                }
            }
        }

        #[test]
        fn linear_matches_naive(rows in 1usize..20, k in 1usize..20, n in 1usize..20, bias in any::<bool>()) {
            let x = data(rows * k, 5);
            let w = data(k * n, 6);
            let bv = data(n, 7);
            let (c, s) = linear(&x, &[rows, k], &w, &[k, n], bias.then_some(bv.as_slice())).unwrap();
            prop_assert_eq!(s, vec![rows, n]);
            let mut r = naive_mm(rows, k, n, &x, &w);
            if bias {
                for i in 0..rows { for j in 0..n { r[i * n + j] += bv[j] as f64; } }
            }
            close(&c, &r, 1e-5);
        }

        #[test]
        fn attention_matches_naive(b in 1usize..3, hk in 1usize..3, rep in 1usize..3, sq in 1usize..7,
                                   sk in 1usize..7, d in 1usize..6, dv in 1usize..6, causal in any::<bool>(),
                                   with_bias in any::<bool>()) {
            let h = hk * rep;
            let q = data(b * h * sq * d, 11);
            let k = data(b * hk * sk * d, 12);
            let v = data(b * hk * sk * dv, 13);
            let bias = data(h * sq * sk, 14);
            let bias_shape = [1, h, sq, sk];
            let biases: Vec<(&[f32], &[usize])> = if with_bias {
                vec![(&bias, &bias_shape[..])]
            } else { vec![] };
            let (o, s) = attention((&q, &[b, h, sq, d]), (&k, &[b, hk, sk, d]), (&v, &[b, hk, sk, dv]),
                                   &biases, causal, None).unwrap();
            prop_assert_eq!(s, vec![b, h, sq, dv]);
            // Scalar reference.
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
                        dot += q[((bi * h + hi) * sq + i) * d + x] as f64 * k[((bi * hk + kh) * sk + j) * d + x] as f64;
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
        assert!(batched_matmul(&[0.0; 6], &[2, 3], &[0.0; 6], &[2, 3]).is_err());
        assert!(linear(&[0.0; 6], &[2, 3], &[0.0; 6], &[3, 2], Some(&[0.0; 3])).is_err());
        assert!(attention(
            (&[0.0; 4], &[1, 3, 1, 4]),
            (&[0.0; 8], &[1, 2, 1, 4]),
            (&[0.0; 8], &[1, 2, 1, 4]),
            &[],
            false,
            None
        )
        .is_err());
    }
}
