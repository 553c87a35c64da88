//! The one GEMM entry point of the kernels, on the `gemm` crate.
//!
//! Why `gemm` and not burn's matmul or matrixmultiply: measured at MiniLM's shapes on the 2-core
//! AVX-512 dev machine (docs/performance.md), `gemm` 0.19 with its AVX-512 kernels runs
//! 128×384·384×1536 at ~160 GFLOP/s against ~100 for matrixmultiply; burn-ndarray's matmul on
//! the same shapes, with the weight transposed as HF stores it, was ~20 GFLOP/s.

use super::R;
use gemm::Parallelism;
use rayon::prelude::*;

/// An operand matrix: element `(i, j)` is `data[off + i·rs + j·cs]`.
#[derive(Clone, Copy, Debug)]
pub struct Mat<'a> {
    /// Backing elements.
    pub data: &'a [f32],
    /// Offset of element `(0, 0)`.
    pub off: usize,
    /// Row stride.
    pub rs: usize,
    /// Column stride.
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// A row-major matrix with `cols` columns starting at `data[0]`.
    pub fn row_major(data: &'a [f32], cols: usize) -> Mat<'a> {
        Mat {
            data,
            off: 0,
            rs: cols,
            cs: 1,
        }
    }

    pub(crate) fn check(&self, rows: usize, cols: usize, what: &str) -> R<()> {
        if rows == 0 || cols == 0 {
            return Ok(());
        }
        let last = self.off + (rows - 1) * self.rs + (cols - 1) * self.cs;
        if last >= self.data.len() {
            return Err(format!(
                "gemm: {what} [{rows}×{cols}] reaches element {last}, it holds {}",
                self.data.len()
            ));
        }
        Ok(())
    }
}

/// `Ok` when an `m × n` output (`m`, `n` ≥ 1) at row stride `ldc` fits in `len` elements;
/// otherwise an error naming `what`.
pub(crate) fn check_out(what: &str, m: usize, n: usize, ldc: usize, len: usize) -> R<()> {
    if ldc < n || (m - 1) * ldc + n > len {
        return Err(format!(
            "{what}: output [{m}×{n}] with row stride {ldc} does not fit in {len} elements"
        ));
    }
    Ok(())
}

/// Below this many multiply-adds a GEMM runs on the calling thread.
const PARALLEL_MIN_MACS: usize = 1 << 16;

/// `C = A·B` (or `C += A·B` with `accumulate`) for `A[m,k]`, `B[k,n]`; `C` is row-major with row
/// stride `ldc`. With `parallel` the work is spread over the rayon workers (pass false from
/// inside an already parallel loop). Errors when an operand is too small for its shape.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
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
    if m == 0 || n == 0 {
        return Ok(());
    }
    check_out("gemm", m, n, ldc, c.len())?;
    // A few rows against a row-major B (a decode step): bandwidth-bound, no packing.
    if super::small_m::applies(m, &b) {
        return super::small_m::small_m_gemm(m, k, n, a, b, c, ldc, accumulate, parallel);
    }
    // SAFETY: `c` holds m rows of n elements at stride ldc (checked above) and is borrowed
    // mutably for the call.
    unsafe { gemm_raw_out(m, k, n, a, b, c.as_mut_ptr(), ldc, accumulate, parallel) }
}

/// [`gemm`] writing through a raw output pointer, for kernels whose parallel tasks write
/// interleaved but disjoint parts of one buffer (so no task can hold a `&mut` slice of it).
/// Checks `A` and `B` like [`gemm`].
///
/// # Safety
/// `c` must be valid for writes (and reads with `accumulate`) of the `m` rows of `n` elements
/// at `c + i·ldc`, and no other thread may access those elements during the call.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_raw_out(
    m: usize,
    k: usize,
    n: usize,
    a: Mat<'_>,
    b: Mat<'_>,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    parallel: bool,
) -> R<()> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                // SAFETY: row r of the output is valid for writes (caller's contract).
                unsafe { std::slice::from_raw_parts_mut(c.add(r * ldc), n).fill(0.0) };
            }
        }
        return Ok(());
    }
    a.check(m, k, "A")?;
    b.check(k, n, "B")?;
    // SAFETY: operands checked above; the output is the caller's contract.
    unsafe { gemm_unchecked_out(m, k, n, a, b, c, ldc, accumulate, parallel) };
    Ok(())
}

/// Runs the GEMM on the calling thread or split over the rayon workers. Safety: `a` and `b` are
/// checked, `k > 0`, and `c` is valid for the `m × n` output at row stride `ldc`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_unchecked_out(
    m: usize,
    k: usize,
    n: usize,
    a: Mat<'_>,
    b: Mat<'_>,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    parallel: bool,
) {
    let threads = super::threads();
    if parallel && threads > 1 && m * n * k >= PARALLEL_MIN_MACS {
        // Split the output into one block per worker, each a single-threaded GEMM: measured
        // 5–25 % faster than the crate's own `Parallelism::Rayon` at MiniLM's shapes (fewer
        // synchronization points; each worker packs only its part of B). Columns when there
        // are enough of them (blocks stay multiples of 32 wide), rows otherwise.
        let out = SharedOut(c);
        let out = &out;
        if n >= SPLIT_MIN * threads {
            let per = (n.div_ceil(threads)).div_ceil(32) * 32;
            (0..n.div_ceil(per)).into_par_iter().for_each(|t| {
                let (j0, w) = (t * per, per.min(n - t * per));
                let bt = Mat {
                    off: b.off + j0 * b.cs,
                    ..b
                };
                // SAFETY: columns j0..j0+w of the caller's output, disjoint across tasks.
                unsafe {
                    call(
                        m,
                        k,
                        w,
                        a,
                        bt,
                        out.0.add(j0),
                        ldc,
                        accumulate,
                        Parallelism::None,
                    )
                };
            });
            return;
        }
        if m >= SPLIT_MIN * threads {
            let per = m.div_ceil(threads);
            (0..m.div_ceil(per)).into_par_iter().for_each(|t| {
                let (i0, h) = (t * per, per.min(m - t * per));
                let at = Mat {
                    off: a.off + i0 * a.rs,
                    ..a
                };
                // SAFETY: rows i0..i0+h of the caller's output, disjoint across tasks.
                unsafe {
                    call(
                        h,
                        k,
                        n,
                        at,
                        b,
                        out.0.add(i0 * ldc),
                        ldc,
                        accumulate,
                        Parallelism::None,
                    )
                };
            });
            return;
        }
        // SAFETY: forwarded caller contract.
        unsafe {
            call(
                m,
                k,
                n,
                a,
                b,
                c,
                ldc,
                accumulate,
                Parallelism::Rayon(threads),
            )
        };
        return;
    }
    // SAFETY: forwarded caller contract.
    unsafe { call(m, k, n, a, b, c, ldc, accumulate, Parallelism::None) };
}

/// Smallest block (rows or columns) a parallel split hands to one worker.
const SPLIT_MIN: usize = 64;

/// The output pointer shared by the tasks of a split GEMM (each writes its own elements; the
/// packed and INT8 GEMMs use it too).
pub(crate) struct SharedOut(pub(crate) *mut f32);
// SAFETY: the tasks sharing it write disjoint blocks of the output.
unsafe impl Sync for SharedOut {}

/// The `gemm` crate call. Safety: every element of `a` (`m × k`) and `b` (`k × n`) is inside its
/// slice, and `c` is valid for the `m × n` output at row stride `ldc`, which no one else
/// accesses during the call.
#[allow(clippy::too_many_arguments)]
unsafe fn call(
    m: usize,
    k: usize,
    n: usize,
    a: Mat<'_>,
    b: Mat<'_>,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    par: Parallelism,
) {
    // SAFETY: the caller checked every element gemm reads (A and B: non-negative strides, last
    // element inside each slice) and guarantees the ones it writes (C).
    unsafe {
        gemm::gemm::<f32>(
            m,
            n,
            k,
            c,
            1,
            ldc as isize,
            accumulate,
            a.data.as_ptr().add(a.off),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr().add(b.off),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// `C[m,n] = A[m,k] · B[k,n]`, all row-major and contiguous.
pub fn sgemm(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) -> R<()> {
    gemm(
        m,
        k,
        n,
        Mat::row_major(a, k),
        Mat::row_major(b, n),
        c,
        n,
        false,
        true,
    )
}

#[cfg(test)]
mod tests {
    use super::super::testing::{close, data, naive_mm};
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn sgemm_matches_naive(m in 1usize..70, k in 0usize..70, n in 1usize..70, seed in 0u64..100) {
            let (a, b) = (data(m * k, seed), data(k * n, seed + 1));
            let mut c = vec![7f32; m * n];
            sgemm(m, k, n, &a, &b, &mut c).unwrap();
            close(&c, &naive_mm(m, k, n, &a, &b), 1e-5);
        }

        #[test]
        fn strided_operands_and_accumulation(m in 1usize..20, k in 1usize..20, n in 1usize..20) {
            // A stored transposed ([k, m] row-major), B with a padded row stride, C accumulated.
            let at = data(k * m, 1);
            let b = data(k * (n + 3), 2);
            let mut c = data(m * n, 3);
            let c0 = c.clone();
            gemm(m, k, n, Mat { data: &at, off: 0, rs: 1, cs: m },
                 Mat { data: &b, off: 0, rs: n + 3, cs: 1 }, &mut c, n, true, true).unwrap();
            let a: Vec<f32> = (0..m * k).map(|i| at[(i % k) * m + i / k]).collect();
            let bc: Vec<f32> = (0..k * n).map(|i| b[(i / n) * (n + 3) + i % n]).collect();
            let r: Vec<f64> = naive_mm(m, k, n, &a, &bc).iter().zip(&c0).map(|(x, y)| x + *y as f64).collect();
            close(&c, &r, 1e-5);
        }
    }

    #[test]
    fn split_gemms_match_naive() {
        // Large enough for the column split (n ≥ 128), the row split (m ≥ 128, n small) and a
        // strided, accumulated output; run inside a 2-worker pool so the splits happen.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        pool.install(|| {
            for &(m, k, n) in &[(130usize, 50usize, 300usize), (300, 40, 40), (129, 7, 257)] {
                let (a, b) = (data(m * k, 1), data(k * n, 2));
                let mut c = vec![0f32; m * (n + 5)];
                gemm(
                    m,
                    k,
                    n,
                    Mat::row_major(&a, k),
                    Mat::row_major(&b, n),
                    &mut c,
                    n + 5,
                    false,
                    true,
                )
                .unwrap();
                let got: Vec<f32> = (0..m * n).map(|i| c[(i / n) * (n + 5) + i % n]).collect();
                close(&got, &naive_mm(m, k, n, &a, &b), 1e-5);
                // Accumulating on top of the first result doubles it.
                gemm(
                    m,
                    k,
                    n,
                    Mat::row_major(&a, k),
                    Mat::row_major(&b, n),
                    &mut c,
                    n + 5,
                    true,
                    true,
                )
                .unwrap();
                let twice: Vec<f64> = naive_mm(m, k, n, &a, &b).iter().map(|x| 2.0 * x).collect();
                let got: Vec<f32> = (0..m * n).map(|i| c[(i / n) * (n + 5) + i % n]).collect();
                close(&got, &twice, 1e-5);
            }
        });
    }

    #[test]
    fn out_of_bounds_operands_are_errors() {
        let a = [0f32; 5];
        let mut c = [0f32; 4];
        assert!(sgemm(2, 3, 2, &a, &[0.0; 6], &mut c).is_err());
        assert!(sgemm(2, 3, 2, &[0.0; 6], &[0.0; 6], &mut c[..3]).is_err());
    }
}
