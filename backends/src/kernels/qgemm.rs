//! INT8 GEMM with a dequantizing epilogue: `C[m, n] = acc[m, n] · xs[m] · ws[n] (+ bias[n])`
//! for `acc = A·B` over i8 operands, accumulated exactly in i32, against a weight packed once
//! at lowering ([`PackedI8Matrix`]).
//!
//! Exactness: the products of two i8 values are summed in pairs by `vpmaddwd` (i16 × i16 → i32,
//! exact for every i8 pair, −128·−128 included) and then in i32, so the integer part equals the
//! reference's for `K` below 2^17 (`|acc| < 2^31`); the epilogue is f32 (one product per scale
//! and the bias add). Not `vpmaddubsw`: its u8 × s8 pair sums saturate at i16 (the known
//! AVX2 INT8 pitfall), which would break that equality.
//!
//! Layout: `B[k, n]` in panels of 16 columns; a panel holds, for each pair of rows `(2p, 2p+1)`,
//! the 16 columns' two values interleaved as i16 (`[c0k0, c0k1, c1k0, c1k1, …]`, 32 i16), rows
//! padded with zeros to an even count and columns to a whole panel. `A` is packed per call into
//! i32 words holding its value pairs. Micro-kernels: AVX2 (6 rows × 16 columns, 12 i32
//! accumulators) picked at run time, a portable one (scalar i32) everywhere else.
//! (AVX-512 VNNI / AMX-INT8 kernels, 4 and 64 products per instruction and lane, are not
//! written yet: no machine here to check them on.)

use super::gemm::SharedOut;
use super::R;
use rayon::prelude::*;

/// Columns per panel.
const NR: usize = 16;

/// The bytes of A's i32 pairs a block of rows may take (half a 512 KiB L2).
const A_BLOCK_BYTES: usize = 256 << 10;

/// Below this many multiply-adds a product runs on the calling thread.
const PARALLEL_MIN_MACS: usize = 1 << 16;

/// The micro-kernel a product runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QIsa {
    /// AVX2: `vpmaddwd` on i16 pairs, 6 × 16 tiles.
    Avx2,
    /// Scalar i32 arithmetic, 4 × 16 tiles.
    Portable,
}

impl QIsa {
    /// The best micro-kernel this CPU runs.
    pub fn detect() -> QIsa {
        if super::cpu::CpuFeatures::get().avx2 {
            QIsa::Avx2
        } else {
            QIsa::Portable
        }
    }

    /// Rows per micro-kernel call (at most).
    fn mr(self) -> usize {
        match self {
            QIsa::Avx2 => 6,
            QIsa::Portable => 4,
        }
    }

    /// Whether this CPU runs it.
    pub fn runs_here(self) -> bool {
        match self {
            QIsa::Avx2 => super::cpu::CpuFeatures::get().avx2,
            QIsa::Portable => true,
        }
    }

    /// Its name in reports (`avx2 6×16 (i16 pairs)`).
    pub fn describe(self) -> String {
        match self {
            QIsa::Avx2 => "avx2 6×16 i16-pair".into(),
            QIsa::Portable => "portable 4×16".into(),
        }
    }
}

/// An i8 `B[k, n]` packed for [`gemm_i8`] (see the module docs for the layout).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedI8Matrix {
    k: usize,
    n: usize,
    data: Vec<i16>,
}

impl PackedI8Matrix {
    /// Packs `B[k, n]`, row-major i8 values.
    pub fn pack(b: &[i8], k: usize, n: usize) -> R<PackedI8Matrix> {
        if b.len() != k * n {
            return Err(format!(
                "INT8 GEMM: B [{k}×{n}] needs {} values, found {}",
                k * n,
                b.len()
            ));
        }
        let (kp, np) = (k.div_ceil(2), n.div_ceil(NR));
        let mut data = vec![0i16; np * kp * 2 * NR];
        for j in 0..np {
            let panel = &mut data[j * kp * 2 * NR..(j + 1) * kp * 2 * NR];
            for p in 0..k {
                for c in 0..NR.min(n - j * NR) {
                    panel[(p / 2) * 2 * NR + c * 2 + p % 2] = i16::from(b[p * n + j * NR + c]);
                }
            }
        }
        Ok(PackedI8Matrix { k, n, data })
    }

    /// Rows of `B`.
    pub fn rows(&self) -> usize {
        self.k
    }

    /// Columns of `B`.
    pub fn cols(&self) -> usize {
        self.n
    }

    /// Bytes of the packed data.
    pub fn bytes(&self) -> usize {
        self.data.len() * std::mem::size_of::<i16>()
    }

    fn panel(&self, j: usize) -> &[i16] {
        let len = self.k.div_ceil(2) * 2 * NR;
        &self.data[j * len..(j + 1) * len]
    }
}

/// The epilogue of [`gemm_i8`]: `C[i, j] = acc · row_scale[i] · col_scale[j] + bias[j]`.
#[derive(Clone, Copy, Debug)]
pub struct Epilogue<'a> {
    /// One scale per row of `A` (`m` values).
    pub row_scale: &'a [f32],
    /// One scale per column of `B` (`n` values).
    pub col_scale: &'a [f32],
    /// Added per column (`n` values), if any.
    pub bias: Option<&'a [f32]>,
}

/// `C[m, n] = (A·B) · row_scale ⊗ col_scale + bias` for a row-major i8 `A[m, k]`, a packed `B`,
/// `C` row-major with row stride `ldc`; the integer product is exact (module docs). With
/// `parallel` the columns are split over the rayon workers.
pub fn gemm_i8(
    m: usize,
    a: &[i8],
    b: &PackedI8Matrix,
    epilogue: Epilogue<'_>,
    c: &mut [f32],
    ldc: usize,
    parallel: bool,
) -> R<()> {
    gemm_i8_with(QIsa::detect(), m, a, b, epilogue, c, ldc, parallel)
}

/// [`gemm_i8`] on the micro-kernel `isa` (tests compare the kernels).
#[allow(clippy::too_many_arguments)]
pub fn gemm_i8_with(
    isa: QIsa,
    m: usize,
    a: &[i8],
    b: &PackedI8Matrix,
    epilogue: Epilogue<'_>,
    c: &mut [f32],
    ldc: usize,
    parallel: bool,
) -> R<()> {
    let (k, n) = (b.k, b.n);
    if m == 0 || n == 0 {
        return Ok(());
    }
    super::gemm::check_out("INT8 GEMM", m, n, ldc, c.len())?;
    if a.len() != m * k {
        return Err(format!(
            "INT8 GEMM: A [{m}×{k}] needs {} values, found {}",
            m * k,
            a.len()
        ));
    }
    if epilogue.row_scale.len() != m
        || epilogue.col_scale.len() != n
        || epilogue.bias.is_some_and(|b| b.len() != n)
    {
        return Err(format!(
            "INT8 GEMM: epilogue of {} row scales, {} column scales and {:?} biases for [{m}×{n}]",
            epilogue.row_scale.len(),
            epilogue.col_scale.len(),
            epilogue.bias.map(<[f32]>::len)
        ));
    }
    if !isa.runs_here() {
        return Err(format!("INT8 GEMM: this CPU cannot run {}", isa.describe()));
    }
    // A's value pairs as i32 words (low half the even column), rows padded to whole pairs.
    let kp = k.div_ceil(2);
    let mut pairs = vec![0i32; m * kp];
    for (row, out) in a.chunks(k.max(1)).zip(pairs.chunks_mut(kp.max(1))) {
        for (p, w) in out.iter_mut().enumerate() {
            let lo = i32::from(row[2 * p]) & 0xffff;
            let hi = row.get(2 * p + 1).map_or(0, |&v| i32::from(v));
            *w = lo | (hi << 16);
        }
    }
    let np = n.div_ceil(NR);
    let job = QJob {
        isa,
        m,
        kp,
        pairs: &pairs,
        b,
        epilogue,
        ldc,
    };
    let out = SharedOut(c.as_mut_ptr());
    let out = &out;
    let threads = if parallel && m * n * k >= PARALLEL_MIN_MACS {
        super::threads().min(np)
    } else {
        1
    };
    if threads > 1 {
        let per = np.div_ceil(threads);
        (0..np.div_ceil(per)).into_par_iter().for_each(|t| {
            // SAFETY: the columns of panels t·per.., disjoint across tasks; the output was
            // checked to hold m rows of n elements at stride ldc.
            unsafe { job.run(t * per..(t * per + per).min(np), out.0) };
        });
    } else {
        // SAFETY: the whole output, checked above and borrowed mutably.
        unsafe { job.run(0..np, out.0) };
    }
    Ok(())
}

/// One product's operands, shared by its tasks.
struct QJob<'a> {
    isa: QIsa,
    m: usize,
    kp: usize,
    pairs: &'a [i32],
    b: &'a PackedI8Matrix,
    epilogue: Epilogue<'a>,
    ldc: usize,
}

impl QJob<'_> {
    /// All rows × the columns of `panels`.
    ///
    /// # Safety
    /// `c` must be valid for writes of every row's columns of `panels` at stride `ldc`, which
    /// no other thread accesses during the call.
    unsafe fn run(&self, panels: std::ops::Range<usize>, c: *mut f32) {
        let mr = self.isa.mr();
        // Rows in blocks whose A pairs stay in L2 while every panel of this task passes over
        // them; without the blocks A is re-read from memory for each panel.
        let block = (A_BLOCK_BYTES / (4 * self.kp.max(1))).max(mr) / mr * mr;
        for i0 in (0..self.m).step_by(block) {
            let rows_end = (i0 + block).min(self.m);
            for j in panels.clone() {
                // SAFETY: panel j of the caller's range, rows of the output it owns.
                unsafe { self.panel_rows(j, i0..rows_end, c) };
            }
        }
    }

    /// Rows `rows` × the columns of panel `j`.
    ///
    /// # Safety
    /// As [`QJob::run`] for a panel of the caller's range.
    unsafe fn panel_rows(&self, j: usize, rows: std::ops::Range<usize>, c: *mut f32) {
        let mr = self.isa.mr();
        let n = self.b.n;
        {
            let cols = NR.min(n - j * NR);
            let panel = self.b.panel(j);
            let mut ws = [0f32; NR];
            let mut bias = [0f32; NR];
            ws[..cols].copy_from_slice(&self.epilogue.col_scale[j * NR..j * NR + cols]);
            if let Some(b) = self.epilogue.bias {
                bias[..cols].copy_from_slice(&b[j * NR..j * NR + cols]);
            }
            for i in rows.clone().step_by(mr) {
                let rows = mr.min(rows.end - i);
                let mut tile = [0f32; 6 * NR];
                let t = QTile {
                    kp: self.kp,
                    a: &self.pairs[i * self.kp..(i + rows) * self.kp],
                    b: panel,
                    row_scale: &self.epilogue.row_scale[i..i + rows],
                    col_scale: &ws,
                    bias: &bias,
                };
                match self.isa {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: the CPU has AVX2 (checked by the caller); the tile holds rows × 16.
                    QIsa::Avx2 => unsafe { avx2_tile(&t, rows, &mut tile) },
                    #[cfg(not(target_arch = "x86_64"))]
                    QIsa::Avx2 => unreachable!("no AVX2 outside x86-64 (runs_here is false)"),
                    QIsa::Portable => portable_tile(&t, rows, &mut tile),
                }
                for r in 0..rows {
                    // SAFETY: row i + r, columns j·16 .. j·16 + cols of the caller's region.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(c.add((i + r) * self.ldc + j * NR), cols)
                    };
                    dst.copy_from_slice(&tile[r * NR..r * NR + cols]);
                }
            }
        }
    }
}

/// The operands of one tile: `rows` pairs-rows of A (`kp` words each), one panel of B, the
/// epilogue's scales and bias for these rows and 16 columns.
struct QTile<'a> {
    kp: usize,
    a: &'a [i32],
    b: &'a [i16],
    row_scale: &'a [f32],
    col_scale: &'a [f32; NR],
    bias: &'a [f32; NR],
}

/// The portable tile: exact i32 sums, then the epilogue, into `out` (rows × 16).
fn portable_tile(t: &QTile<'_>, rows: usize, out: &mut [f32; 6 * NR]) {
    for r in 0..rows {
        let mut acc = [0i32; NR];
        for p in 0..t.kp {
            let w = t.a[r * t.kp + p];
            let (a0, a1) = (i32::from(w as i16), w >> 16);
            let bp = &t.b[p * 2 * NR..(p + 1) * 2 * NR];
            for (c, acc) in acc.iter_mut().enumerate() {
                *acc += a0 * i32::from(bp[2 * c]) + a1 * i32::from(bp[2 * c + 1]);
            }
        }
        for c in 0..NR {
            out[r * NR + c] = acc[c] as f32 * t.row_scale[r] * t.col_scale[c] + t.bias[c];
        }
    }
}

/// The AVX2 tile: `vpmaddwd` of each A pair (broadcast) with 8 columns' pairs, summed in i32
/// accumulators (2 per row), then the epilogue in f32.
///
/// # Safety
/// AVX2 on this CPU; `rows ≤ 6`; `t.a` holds `rows × kp` words and `t.b` `kp × 32` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2_tile(t: &QTile<'_>, rows: usize, out: &mut [f32; 6 * NR]) {
    match rows {
        1 => unsafe { avx2_rows::<1>(t, out) },
        2 => unsafe { avx2_rows::<2>(t, out) },
        3 => unsafe { avx2_rows::<3>(t, out) },
        4 => unsafe { avx2_rows::<4>(t, out) },
        5 => unsafe { avx2_rows::<5>(t, out) },
        _ => unsafe { avx2_rows::<6>(t, out) },
    }
}

/// [`avx2_tile`] for `MR` rows.
///
/// # Safety
/// As [`avx2_tile`] with `rows = MR`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2_rows<const MR: usize>(t: &QTile<'_>, out: &mut [f32; 6 * NR]) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_si256(); 2]; MR];
    let (a, b) = (t.a.as_ptr(), t.b.as_ptr());
    for p in 0..t.kp {
        unsafe {
            let b0 = _mm256_loadu_si256(b.add(p * 32) as *const __m256i);
            let b1 = _mm256_loadu_si256(b.add(p * 32 + 16) as *const __m256i);
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = _mm256_set1_epi32(*a.add(r * t.kp + p));
                acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(av, b0));
                acc[1] = _mm256_add_epi32(acc[1], _mm256_madd_epi16(av, b1));
            }
        }
    }
    unsafe {
        let ws = [
            _mm256_loadu_ps(t.col_scale.as_ptr()),
            _mm256_loadu_ps(t.col_scale.as_ptr().add(8)),
        ];
        let bias = [
            _mm256_loadu_ps(t.bias.as_ptr()),
            _mm256_loadu_ps(t.bias.as_ptr().add(8)),
        ];
        for (r, acc) in acc.iter().enumerate() {
            let xs = _mm256_set1_ps(t.row_scale[r]);
            for h in 0..2 {
                let scaled = _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc[h]), xs), ws[h]);
                _mm256_storeu_ps(
                    out.as_mut_ptr().add(r * NR + h * 8),
                    _mm256_add_ps(scaled, bias[h]),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn i8s(n: usize, seed: u64) -> Vec<i8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 256) as u8 as i8
            })
            .collect()
    }

    fn isas() -> Vec<QIsa> {
        [QIsa::Avx2, QIsa::Portable]
            .into_iter()
            .filter(|i| i.runs_here())
            .collect()
    }

    /// The integer products, exactly, and the epilogue in f64.
    fn reference(
        m: usize,
        k: usize,
        n: usize,
        a: &[i8],
        b: &[i8],
        e: &Epilogue<'_>,
    ) -> (Vec<i64>, Vec<f64>) {
        let mut acc = vec![0i64; m * n];
        let mut y = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                acc[i * n + j] = (0..k)
                    .map(|p| i64::from(a[i * k + p]) * i64::from(b[p * n + j]))
                    .sum();
                y[i * n + j] =
                    acc[i * n + j] as f64 * f64::from(e.row_scale[i]) * f64::from(e.col_scale[j])
                        + e.bias.map_or(0.0, |b| f64::from(b[j]));
            }
        }
        (acc, y)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn integer_part_is_exact_and_epilogue_close(
            m in 1usize..20, k in 1usize..70, n in 1usize..50, bias: bool, seed in 0u64..200,
        ) {
            let (a, b) = (i8s(m * k, seed), i8s(k * n, seed + 1));
            let rs: Vec<f32> = (0..m).map(|i| 0.01 + i as f32 * 0.003).collect();
            let cs: Vec<f32> = (0..n).map(|j| 0.02 + j as f32 * 0.001).collect();
            let bv: Vec<f32> = (0..n).map(|j| j as f32 * 0.5 - 3.0).collect();
            let pb = PackedI8Matrix::pack(&b, k, n).unwrap();
            let ones_m = vec![1f32; m];
            let ones_n = vec![1f32; n];
            for isa in isas() {
                // Unit scales, no bias: C is the integer product itself, which must be exact
                // (|acc| ≤ 128²·69 < 2^24, so f32 holds it exactly).
                let e1 = Epilogue { row_scale: &ones_m, col_scale: &ones_n, bias: None };
                let mut c = vec![f32::NAN; m * n];
                gemm_i8_with(isa, m, &a, &pb, e1, &mut c, n, true).unwrap();
                let (acc, _) = reference(m, k, n, &a, &b, &e1);
                for (x, y) in c.iter().zip(&acc) {
                    prop_assert_eq!(*x as i64, *y, "{:?}", isa);
                }
                let e = Epilogue { row_scale: &rs, col_scale: &cs, bias: bias.then_some(&bv[..]) };
                let mut c = vec![f32::NAN; m * (n + 3)];
                gemm_i8_with(isa, m, &a, &pb, e, &mut c, n + 3, true).unwrap();
                let (_, y) = reference(m, k, n, &a, &b, &e);
                for i in 0..m {
                    for j in 0..n {
                        let (got, want) = (f64::from(c[i * (n + 3) + j]), y[i * n + j]);
                        prop_assert!((got - want).abs() <= 1e-5 * (1.0 + want.abs()), "{isa:?} [{i},{j}]: {got} vs {want}");
                    }
                    // Row padding untouched.
                    prop_assert!(c[i * (n + 3) + n..(i + 1) * (n + 3)].iter().all(|x| x.is_nan()));
                }
            }
        }
    }

    #[test]
    fn several_row_blocks_and_ragged_edges_are_exact() {
        // K = 2000: a row block holds 256 KiB / (4 · 1000) = 65 → 60 rows, so 133 rows take
        // three blocks (the last ragged), over 2 workers and 3 panels (the last ragged).
        let (m, k, n) = (133, 2000, 37);
        let (a, b) = (i8s(m * k, 7), i8s(k * n, 8));
        let pb = PackedI8Matrix::pack(&b, k, n).unwrap();
        let (ones_m, ones_n) = (vec![1f32; m], vec![1f32; n]);
        let e = Epilogue {
            row_scale: &ones_m,
            col_scale: &ones_n,
            bias: None,
        };
        let (acc, _) = reference(m, k, n, &a, &b, &e);
        for isa in isas() {
            let mut c = vec![f32::NAN; m * n];
            gemm_i8_with(isa, m, &a, &pb, e, &mut c, n, true).unwrap();
            for (i, (x, y)) in c.iter().zip(&acc).enumerate() {
                // |acc| ≤ 128²·2000 < 2^25 may exceed f32's exact integers: the kernel's one
                // conversion (unit scales, no bias) must give the f32 rounding of the exact sum.
                assert_eq!(*x, *y as f32, "{isa:?} element {i}");
            }
        }
    }

    #[test]
    fn extreme_values_do_not_saturate() {
        // Every product −128·−128 (a pair sums to 2^15, which i16 cannot hold): exact in i32.
        let (m, k, n) = (3, 1000, 20);
        let a = vec![-128i8; m * k];
        let b = vec![-128i8; k * n];
        let pb = PackedI8Matrix::pack(&b, k, n).unwrap();
        let (rs, cs) = (vec![1f32; m], vec![1f32; n]);
        for isa in isas() {
            let mut c = vec![0f32; m * n];
            let e = Epilogue {
                row_scale: &rs,
                col_scale: &cs,
                bias: None,
            };
            gemm_i8_with(isa, m, &a, &pb, e, &mut c, n, false).unwrap();
            assert!(
                c.iter().all(|&x| x == 16384.0 * 1000.0),
                "{isa:?}: {:?}",
                &c[..3]
            );
        }
    }

    #[test]
    fn bad_operands_are_errors() {
        assert!(PackedI8Matrix::pack(&[0; 5], 2, 3).is_err());
        let pb = PackedI8Matrix::pack(&[1; 6], 2, 3).unwrap();
        let (rs, cs) = (vec![1f32; 2], vec![1f32; 3]);
        let e = Epilogue {
            row_scale: &rs,
            col_scale: &cs,
            bias: None,
        };
        let mut c = vec![0f32; 6];
        assert!(gemm_i8(2, &[1; 3], &pb, e, &mut c, 3, false).is_err());
        assert!(gemm_i8(2, &[1; 4], &pb, e, &mut c[..5], 3, false).is_err());
        let short = Epilogue {
            row_scale: &rs[..1],
            ..e
        };
        assert!(gemm_i8(2, &[1; 4], &pb, short, &mut c, 3, false).is_err());
        gemm_i8(2, &[1; 4], &pb, e, &mut c, 3, false).unwrap();
        assert_eq!(c, vec![2.0; 6]);
    }
}
