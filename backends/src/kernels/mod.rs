//! Native CPU kernels used by the lowering on the CPU backend: f32 kernels for the hot float
//! ops, and the kernels of packed low-precision values ([`packed`]).
//!
//! burn-ndarray runs each op as a chain of generic array operations (one allocation and one
//! pass over memory per step) and its matmul reaches matrixmultiply without the weight layout a
//! GEMM wants; measured on MiniLM-L6 (docs/performance.md) `linear`, `attention` and `gelu` took
//! 98 % of a run. These kernels replace the hot ops
//! behind the same lowering. Which kernels exist, for which op and dtypes, and when each applies
//! is kept in one place, the [`registry`] (rendered in `docs/kernels.md`, listed by
//! `fuselage kernels`); [`cpu`] detects the CPU features the registry's guards read. Their
//! building blocks:
//!
//! - [`gemm()`]: one GEMM entry point over strided operands on the `gemm` crate (AVX-512/AVX2/FMA
//!   micro-kernels picked at run time, rayon-parallel), used by the matmul, linear and attention
//!   kernels, which read their operands in place through their strides; for 1 to 4 rows against
//!   a row-major `B` (a decode step) it takes a bandwidth-bound path without packing
//!   ([`small_m`]);
//! - the row and elementwise kernels are plain loops compiled several times for different
//!   instruction sets (`multiversion!`) so that they vectorize on AVX-512 and AVX2 machines
//!   without a `target-cpu` flag.
//!
//! Every kernel has a scalar reference in its tests and is checked against it; the lowering's
//! conformance suite checks them again against the IR's reference semantics.

pub mod attention;
pub mod buffer;
pub mod cast;
pub mod cpu;
pub mod dequantize;
pub mod gelu;
pub mod gemm;
pub mod layer_norm;
pub mod linear;
pub mod math;
pub mod matmul;
pub mod packed;
pub mod packed_gemm;
pub mod packed_move;
pub mod qgemm;
pub mod qlinear;
pub mod quantize;
pub mod registry;
pub mod rms_norm;
pub mod rope;
pub mod round;
pub mod sigmoid;
pub mod small_m;
pub mod softmax;

pub use attention::attention;
pub use gelu::{gelu_erf, gelu_tanh};
pub use gemm::{gemm, sgemm, Mat};
pub use layer_norm::layer_norm;
pub use linear::linear;
pub use matmul::batched_matmul;
pub use rms_norm::rms_norm;
pub use rope::rope;
pub use sigmoid::{sigmoid, silu};
pub use softmax::softmax_rows;

/// Results of the kernels: errors are messages the lowering attaches to the node.
pub type R<T> = Result<T, String>;

use rayon::prelude::*;

/// A read-only strided f32 tensor: element `[i0, i1, …]` is `data[Σ i·strides]`.
///
/// Every index the shape allows is inside `data` (checked by [`View::new`]), which is what makes
/// the GEMM calls on views sound.
#[derive(Clone, Debug)]
pub struct View<'a> {
    /// The elements, from the first one the view reaches to the last.
    pub data: &'a [f32],
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Strides in elements (0 for a broadcast dimension).
    pub strides: Vec<usize>,
}

impl<'a> View<'a> {
    /// A view with explicit strides; an error when an index would fall outside `data`.
    pub fn new(data: &'a [f32], shape: &[usize], strides: &[usize]) -> R<View<'a>> {
        if shape.len() != strides.len() {
            return Err(format!(
                "view: shape {shape:?} and strides {strides:?} differ in rank"
            ));
        }
        if shape.iter().all(|&d| d > 0) {
            let last: usize = shape.iter().zip(strides).map(|(d, s)| (d - 1) * s).sum();
            if last >= data.len() {
                return Err(format!(
                    "view: shape {shape:?} with strides {strides:?} reaches element {last}, \
                     the data holds {}",
                    data.len()
                ));
            }
        }
        Ok(View {
            data,
            shape: shape.to_vec(),
            strides: strides.to_vec(),
        })
    }

    /// A row-major contiguous view; an error when `data` has another length than `shape` says.
    pub fn contiguous(data: &'a [f32], shape: &[usize]) -> R<View<'a>> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(format!(
                "view: shape {shape:?} has {n} elements, the data holds {}",
                data.len()
            ));
        }
        Ok(View {
            data,
            shape: shape.to_vec(),
            strides: row_major_strides(shape),
        })
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when the view is row-major contiguous (size-1 dims may have any stride).
    pub fn is_contiguous(&self) -> bool {
        let mut expect = 1;
        for (&d, &s) in self.shape.iter().zip(&self.strides).rev() {
            if d != 1 && s != expect {
                return false;
            }
            expect *= d;
        }
        true
    }

    /// A 2-D view as a GEMM operand (its first two strides; a missing one reads as 0).
    pub fn matrix(&self) -> Mat<'a> {
        let stride = |i: usize| self.strides.get(i).copied().unwrap_or(0);
        Mat {
            data: self.data,
            off: 0,
            rs: stride(0),
            cs: stride(1),
        }
    }

    /// The elements in row-major order: borrowed when contiguous, gathered otherwise.
    pub fn to_contiguous(&self) -> std::borrow::Cow<'a, [f32]> {
        let n = self.numel();
        if self.is_contiguous() {
            return std::borrow::Cow::Borrowed(&self.data[..n]);
        }
        let mut out = Vec::with_capacity(n);
        let rank = self.shape.len();
        if n == 0 {
            return std::borrow::Cow::Owned(out);
        }
        // Whole rows of the last dim at a time when they are contiguous (the usual case: a
        // permutation of the leading dims), element by element otherwise.
        let (row, row_stride) = (self.shape[rank - 1], self.strides[rank - 1]);
        let lead = &self.shape[..rank - 1];
        let mut idx = vec![0usize; lead.len()];
        for _ in 0..n / row {
            let off: usize = idx.iter().zip(&self.strides).map(|(i, s)| i * s).sum();
            if row_stride == 1 {
                out.extend_from_slice(&self.data[off..off + row]);
            } else {
                out.extend((0..row).map(|j| self.data[off + j * row_stride]));
            }
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < lead[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        std::borrow::Cow::Owned(out)
    }
}

/// Row-major strides of `shape`.
pub fn row_major_strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![0; shape.len()];
    let mut acc = 1;
    for i in (0..shape.len()).rev() {
        s[i] = acc;
        acc *= shape[i];
    }
    s
}

/// Numpy broadcasting of two shapes (the IR's rule).
pub(crate) fn broadcast(a: &[usize], b: &[usize]) -> R<Vec<usize>> {
    fuselage_ir::ops::util::broadcast_shapes("matmul batch", a, b).map_err(|e| e.0)
}

/// Applies the chunk function `f(input, output)` over `x` into a new buffer: on the calling
/// thread for small inputs, in chunks of 16 Ki elements over the rayon workers otherwise.
pub(crate) fn map_elementwise(x: &[f32], f: fn(&[f32], &mut [f32])) -> Vec<f32> {
    const CHUNK: usize = 16 * 1024;
    let mut y = buffer::for_overwrite(x.len());
    if x.len() < PARALLEL_MIN_ELEMENTS {
        f(x, &mut y);
        return y;
    }
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(o, i)| f(i, o));
    y
}

/// Runs `row(input_row, output_row)` over the rows of `n` elements of `x` into a new buffer:
/// on the calling thread for small inputs, spread over the rayon workers otherwise. Errors
/// when `x` is not whole rows.
pub(crate) fn map_rows(
    x: &[f32],
    n: usize,
    what: &str,
    row: impl Fn(&[f32], &mut [f32]) + Sync,
) -> R<Vec<f32>> {
    let mut y = buffer::for_overwrite(x.len());
    if n == 0 {
        return Ok(y);
    }
    if !x.len().is_multiple_of(n) {
        return Err(format!("{what}: {} elements are not rows of {n}", x.len()));
    }
    if x.len() < PARALLEL_MIN_ELEMENTS {
        for (o, i) in y.chunks_mut(n).zip(x.chunks(n)) {
            row(i, o);
        }
        return Ok(y);
    }
    let per_task = (4096 / n).max(1) * n;
    y.par_chunks_mut(per_task)
        .zip(x.par_chunks(per_task))
        .for_each(|(o, i)| {
            for (orow, irow) in o.chunks_mut(n).zip(i.chunks(n)) {
                row(irow, orow);
            }
        });
    Ok(y)
}

/// Strides that read a tensor of `shape`/`strides` as if broadcast to `out` (right-aligned;
/// broadcast dims get stride 0).
pub(crate) fn broadcast_strides(
    shape: &[usize],
    strides: &[usize],
    out: &[usize],
) -> R<Vec<usize>> {
    if shape.len() > out.len() {
        return Err(format!("{shape:?} does not broadcast to {out:?}"));
    }
    let lead = out.len() - shape.len();
    let mut st = vec![0; out.len()];
    for i in 0..shape.len() {
        if shape[i] == out[lead + i] {
            st[lead + i] = if shape[i] == 1 { 0 } else { strides[i] };
        } else if shape[i] != 1 {
            return Err(format!("{shape:?} does not broadcast to {out:?}"));
        }
    }
    Ok(st)
}

/// Offset of the `flat`-th index of `shape` (row-major enumeration) under `strides`.
pub(crate) fn offset_of(mut flat: usize, shape: &[usize], strides: &[usize]) -> usize {
    let mut off = 0;
    for i in (0..shape.len()).rev() {
        let d = shape[i].max(1);
        off += (flat % d) * strides[i];
        flat /= d;
    }
    off
}

/// Below this many elements a row or elementwise kernel runs on the calling thread: waking the
/// rayon workers costs more than the work (measured on LayerNorm at 128×384).
pub(crate) const PARALLEL_MIN_ELEMENTS: usize = 1 << 16;

/// Number of rayon workers the kernels may use.
pub(crate) fn threads() -> usize {
    rayon::current_num_threads().max(1)
}

/// Defines a function whose body is compiled three times — for AVX-512, for AVX2+FMA and for
/// the baseline — and picks the best version the CPU supports at run time. The body is
/// written as plain loops over slices; LLVM vectorizes each copy for its instruction set.
/// (The `multiversion` crate does the same with a proc macro; this keeps the dependency out.)
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512dq,avx512vl,avx2,fma")]
                fn v4($($arg: $ty),*) { body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                fn v3($($arg: $ty),*) { body($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                {
                    // SAFETY: the CPU has every feature `v4` was compiled for.
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has every feature `v3` was compiled for.
                    return unsafe { v3($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}
pub(crate) use multiversion;

#[cfg(test)]
pub(crate) mod testing {
    //! Deterministic data and comparison helpers of the kernel tests.

    /// `n` values in [-1, 1) from a fixed LCG.
    pub fn data(n: usize, seed: u64) -> Vec<f32> {
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

    /// `C = A·B` in f64, row-major.
    pub fn naive_mm(m: usize, k: usize, n: usize, a: &[f32], b: &[f32]) -> Vec<f64> {
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

    /// Elementwise `|a - b| <= tol · (1 + |b|)`.
    pub fn close(a: &[f32], b: &[f64], tol: f64) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (*x as f64 - y).abs() <= tol * (1.0 + y.abs()),
                "element {i}: {x} vs {y}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_check_their_bounds() {
        let d = [0f32; 6];
        assert!(View::new(&d, &[2, 3], &[3, 1]).is_ok());
        assert!(View::new(&d, &[2, 3], &[4, 1]).is_err());
        assert!(View::new(&d, &[3, 2], &[1, 3]).is_ok());
        assert!(View::contiguous(&d, &[2, 2]).is_err());
        assert!(View::new(&d, &[2], &[1, 1]).is_err());
    }

    #[test]
    fn transposed_view_gathers_in_row_major_order() {
        let d = [1f32, 2., 3., 4., 5., 6.];
        let v = View::new(&d, &[3, 2], &[1, 3]).unwrap();
        assert!(!v.is_contiguous());
        assert_eq!(&*v.to_contiguous(), &[1., 4., 2., 5., 3., 6.]);
        let c = View::contiguous(&d, &[2, 3]).unwrap();
        assert!(c.is_contiguous());
        // [B,S,H,D] memory read as [B,H,S,D] (whole rows copied).
        let m: Vec<f32> = (0..24).map(|i| i as f32).collect();
        let v = View::new(&m, &[2, 3, 2, 2], &[12, 2, 6, 1]).unwrap();
        let mut want = vec![];
        for b in 0..2 {
            for h in 0..3 {
                for s in 0..2 {
                    for d in 0..2 {
                        want.push(m[b * 12 + s * 6 + h * 2 + d]);
                    }
                }
            }
        }
        assert_eq!(&*v.to_contiguous(), &want[..]);
    }

    #[test]
    fn broadcast_strides_zero_the_broadcast_dims() {
        assert_eq!(
            broadcast_strides(&[1, 4], &[4, 1], &[2, 3, 4]).unwrap(),
            vec![0, 0, 1]
        );
        assert!(broadcast_strides(&[3], &[1], &[2, 4]).is_err());
        assert_eq!(offset_of(5, &[2, 3], &[10, 1]), 12);
    }
}
