//! GEMM for a few rows of `A` (batch-1 decoding: `M` = 1 to [`SMALL_M`]) against a row-major
//! `B`, bound by the bandwidth of reading `B` once.
//!
//! Why not the `gemm` crate: for `M = 1` it packs the `B` panel it multiplies (a copy of the
//! whole weight per call) and runs a micro-kernel shaped for many rows; a decode step reads each
//! weight once, so the copy doubles the memory traffic that bounds it. Here each row of `B` is
//! streamed once, contiguous, and multiplied into `M` accumulator rows; the rows of `B` are
//! split into one contiguous range per rayon worker, whose partial sums are added at the end. The inner loop is
//! plain slices compiled for AVX-512, AVX2 and the baseline (`multiversion!`).

use super::gemm::Mat;
use super::{multiversion, R};
use rayon::prelude::*;

/// Largest `M` this path takes.
pub const SMALL_M: usize = 4;

/// Fewest rows of B one parallel task takes.
const MIN_ROWS_PER_TASK: usize = 64;

/// Below this many multiply-adds the product runs on the calling thread.
const PARALLEL_MIN_MACS: usize = 1 << 15;

multiversion! {
    /// `acc[i, :] += Σ_p a[i, p] · b[p, :]` for a product of `[m, k, w]` (`acc` holds
    /// `m` rows of `w`): `a` row `i` element `p` is `a[i * a_rs + p * a_cs]` with
    /// `[a_rs, a_cs] = a_strides`, row `p` of `b` starts at `b[p * b_rs]`.
    fn block(
        dims: [usize; 3],
        a: &[f32],
        a_strides: [usize; 2],
        b: &[f32],
        b_rs: usize,
        acc: &mut [f32],
    ) {
        let [m, k, w] = dims;
        let [a_rs, a_cs] = a_strides;
        for p in 0..k {
            let row = &b[p * b_rs..p * b_rs + w];
            for i in 0..m {
                let coef = a[i * a_rs + p * a_cs];
                let out = &mut acc[i * w..(i + 1) * w];
                for (o, &x) in out.iter_mut().zip(row) {
                    *o += coef * x;
                }
            }
        }
    }
}

/// Whether [`small_m_gemm`] takes this product: few rows, `B` row-major (unit column stride).
pub fn applies(m: usize, b: &Mat<'_>) -> bool {
    (1..=SMALL_M).contains(&m) && b.cs == 1
}

/// `C = A·B` (or `C += A·B`) for `A[m,k]` (any strides), row-major `B[k,n]`, `C` row-major
/// with row stride `ldc`; `m` ≤ [`SMALL_M`]. Operands are checked like the GEMM's.
#[allow(clippy::too_many_arguments)]
pub fn small_m_gemm(
    m: usize,
    k: usize,
    n: usize,
    a: Mat<'_>,
    b: Mat<'_>,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    parallel: bool,
) -> R<()> {
    if m > SMALL_M || b.cs != 1 {
        return Err(format!(
            "small-M GEMM: takes at most {SMALL_M} rows of A and a row-major B (found m = {m}, B column stride {})",
            b.cs
        ));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    super::gemm::check_out("small-M GEMM", m, n, ldc, c.len())?;
    if k > 0 {
        let last_a = a.off + (m - 1) * a.rs + (k - 1) * a.cs;
        let last_b = b.off + (k - 1) * b.rs + (n - 1);
        if last_a >= a.data.len() || last_b >= b.data.len() {
            return Err(format!(
                "small-M GEMM: A [{m}×{k}] or B [{k}×{n}] reaches outside its data ({} / {} elements)",
                a.data.len(),
                b.data.len()
            ));
        }
    }
    // Each task takes a range of rows of B (all columns) and sums into its own accumulators:
    // every task then streams one contiguous region of B, which is what keeps the prefetchers
    // at full bandwidth (column strips of a row-major B measured ~10 % slower on a decode step).
    let tasks = if parallel && m * n * k >= PARALLEL_MIN_MACS {
        super::threads().min(k.div_ceil(MIN_ROWS_PER_TASK)).max(1)
    } else {
        1
    };
    let per = k.div_ceil(tasks).max(1);
    let ranges: Vec<(usize, usize)> = (0..k)
        .step_by(per)
        .map(|p0| (p0, per.min(k - p0)))
        .collect();
    let run = |&(p0, len): &(usize, usize)| -> Vec<f32> {
        let mut acc = vec![0f32; m * n];
        let a_data = &a.data[a.off + p0 * a.cs..];
        let b_data = &b.data[b.off + p0 * b.rs..];
        block([m, len, n], a_data, [a.rs, a.cs], b_data, b.rs, &mut acc);
        acc
    };
    let partials: Vec<Vec<f32>> = if ranges.len() > 1 {
        ranges.par_iter().map(run).collect()
    } else {
        ranges.iter().map(run).collect()
    };
    for i in 0..m {
        let dst = &mut c[i * ldc..i * ldc + n];
        if !accumulate {
            dst.fill(0.0);
        }
        for acc in &partials {
            for (d, s) in dst.iter_mut().zip(&acc[i * n..(i + 1) * n]) {
                *d += s;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::{close, data, naive_mm};
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]
        #[test]
        fn small_m_matches_naive(m in 1usize..=SMALL_M, k in 0usize..300, n in 1usize..700, acc in any::<bool>(), at in any::<bool>()) {
            // A row-major or stored transposed; B row-major with a padded row stride.
            let a0 = data(m * k, 1);
            let a = if at { (0..m * k).map(|i| a0[(i % m) * k + i / m]).collect() } else { a0.clone() };
            let am = if at { Mat { data: &a, off: 0, rs: 1, cs: m } } else { Mat::row_major(&a, k) };
            let b = data(k * (n + 3) + 1, 2);
            let bm = Mat { data: &b, off: 1, rs: n + 3, cs: 1 };
            let mut c = data(m * n, 3);
            let c0 = c.clone();
            small_m_gemm(m, k, n, am, bm, &mut c, n, acc, true).unwrap();
            let bc: Vec<f32> = (0..k * n).map(|i| b[1 + (i / n) * (n + 3) + i % n]).collect();
            let mut r = naive_mm(m, k, n, &a0, &bc);
            if acc {
                for (x, y) in r.iter_mut().zip(&c0) { *x += *y as f64; }
            }
            close(&c, &r, 1e-5);
        }
    }

    #[test]
    fn bad_operands_are_errors() {
        let a = [0f32; 4];
        let b = [0f32; 12];
        let mut c = [0f32; 6];
        let bm = Mat::row_major(&b, 3);
        assert!(small_m_gemm(2, 4, 3, Mat::row_major(&a, 4), bm, &mut c, 3, false, true).is_err());
        assert!(small_m_gemm(
            1,
            4,
            3,
            Mat::row_major(&a, 4),
            bm,
            &mut c[..2],
            3,
            false,
            true
        )
        .is_err());
        let bt = Mat {
            data: &b,
            off: 0,
            rs: 1,
            cs: 4,
        };
        assert!(small_m_gemm(1, 4, 3, Mat::row_major(&a, 4), bt, &mut c, 3, false, true).is_err());
        assert!(small_m_gemm(5, 1, 3, Mat::row_major(&a, 1), bm, &mut c, 3, false, true).is_err());
        small_m_gemm(1, 4, 3, Mat::row_major(&a, 4), bm, &mut c, 3, false, true).unwrap();
    }
}
