//! GEMM against a matrix packed once — a constant weight, at lowering time — into the layout its
//! micro-kernel reads, so no call copies the weight again.
//!
//! Why our own GEMM and not the `gemm` crate's: the crate packs `B` on every call and takes no
//! pre-packed operand, so a weight read by every run is copied by every run; and the INT8/FP8
//! GEMMs of the quantization passes need the same machinery (a packed weight kept in the
//! program, a micro-kernel per instruction set) for operands the crate does not have.
//!
//! Layout ([`PackedMatrix`]): `B[k, n]` is cut into blocks of [`GemmIsa::kc`] rows, each
//! block into panels of `NR` columns (the last panel zero-padded); a panel of a block is
//! `kc × NR` contiguous floats, so the micro-kernel streams it with unit stride and a panel stays
//! in L1 while it is multiplied by every row of `A`. A row-major `A` is read in place (measured
//! 5–10 % faster than packing it at these sizes); any other `A` is packed per call into
//! micro-panels of up to `MR` rows.
//!
//! Micro-kernels, picked at run time: AVX-512F (`MR = 12` rows × `NR = 32` columns, 24
//! accumulators of 16 lanes), AVX2+FMA (`6 × 16`, 12 accumulators of 8 lanes), and a portable
//! one (`6 × 16`, plain loops) everywhere else. A row count below `MR` (the last
//! rows, or a decode step's single row) has its own instance, so a batch-1 product streams each
//! panel once at the cost of one load per `NR` columns: bandwidth-bound, not packing-bound.

use super::gemm::Mat;
use super::gemm::SharedOut;
use super::registry::{Prepared, TypedIn};
use super::R;
use rayon::prelude::*;
use std::cell::RefCell;

/// Bytes of one panel of one block (`kc × NR` floats): what a micro-kernel keeps in L1 while
/// the rows of `A` pass. 24 KiB of the 32 KiB L1 of current x86 cores, leaving room for the
/// rows of `A` — measured on Zen 3 (AVX2, `kc` 384) 5–10 % faster than `kc` 128 or 256.
pub const PANEL_BYTES: usize = 24 << 10;

/// Rows of `A` per block (a multiple of every micro-kernel's `MR`): `MC × kc` floats (up to
/// 288 KiB) stay in L2 while the panels of a block pass.
const MC: usize = 192;

/// Below this many multiply-adds a product runs on the calling thread.
const PARALLEL_MIN_MACS: usize = 1 << 16;

/// The micro-kernel a [`PackedMatrix`] is laid out for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmIsa {
    /// AVX-512F: 12 × 32 tiles.
    Avx512,
    /// AVX2 with FMA: 6 × 16 tiles.
    Avx2,
    /// Plain Rust, no instruction set beyond the baseline: 6 × 16 tiles.
    Portable,
}

impl GemmIsa {
    /// The best micro-kernel this CPU runs.
    pub fn detect() -> GemmIsa {
        let f = super::cpu::CpuFeatures::get();
        if f.avx512f {
            GemmIsa::Avx512
        } else if f.avx2 && f.fma {
            GemmIsa::Avx2
        } else {
            GemmIsa::Portable
        }
    }

    /// Rows of `B` per block: [`PANEL_BYTES`] / (`NR` · 4) — 384 for AVX2, 192 for AVX-512.
    pub fn kc(self) -> usize {
        PANEL_BYTES / (self.nr() * std::mem::size_of::<f32>())
    }

    /// Columns per panel.
    pub fn nr(self) -> usize {
        match self {
            GemmIsa::Avx512 => 32,
            GemmIsa::Avx2 | GemmIsa::Portable => 16,
        }
    }

    /// Rows per micro-kernel call (at most).
    pub fn mr(self) -> usize {
        match self {
            GemmIsa::Avx512 => 12,
            GemmIsa::Avx2 | GemmIsa::Portable => 6,
        }
    }

    /// Its name in reports (`avx512 12×32`).
    pub fn describe(self) -> String {
        let name = match self {
            GemmIsa::Avx512 => "avx512",
            GemmIsa::Avx2 => "avx2",
            GemmIsa::Portable => "portable",
        };
        format!("{name} {}×{}", self.mr(), self.nr())
    }

    /// Whether this CPU can run it.
    pub fn runs_here(self) -> bool {
        match self {
            GemmIsa::Avx512 => super::cpu::CpuFeatures::get().avx512f,
            GemmIsa::Avx2 => {
                let f = super::cpu::CpuFeatures::get();
                f.avx2 && f.fma
            }
            GemmIsa::Portable => true,
        }
    }
}

/// `B[k, n]` packed for [`gemm_packed`]: blocks of `kc` rows, each cut into zero-padded panels
/// of `nr` columns stored `kc × nr` contiguous.
#[derive(Clone, Debug, PartialEq)]
pub struct PackedMatrix {
    k: usize,
    n: usize,
    kc: usize,
    isa: GemmIsa,
    data: Vec<f32>,
}

impl PackedMatrix {
    /// Packs `B[k, n]` (any strides) for the micro-kernel `isa`, in blocks of
    /// [`GemmIsa::kc`] rows.
    pub fn pack(b: Mat<'_>, k: usize, n: usize, isa: GemmIsa) -> R<PackedMatrix> {
        PackedMatrix::pack_blocked(b, k, n, isa, isa.kc())
    }

    /// [`PackedMatrix::pack`] with blocks of `kc` rows (tests and tuning; `kc` ≥ 1).
    pub fn pack_blocked(
        b: Mat<'_>,
        k: usize,
        n: usize,
        isa: GemmIsa,
        kc: usize,
    ) -> R<PackedMatrix> {
        if kc == 0 {
            return Err("packed GEMM: a K block of 0 rows".into());
        }
        b.check(k, n, "B")?;
        let nr = isa.nr();
        let np = n.div_ceil(nr);
        let mut data = Vec::with_capacity(k * np * nr);
        for k0 in (0..k).step_by(kc) {
            let kcl = kc.min(k - k0);
            for j in 0..np {
                let (c0, w) = (j * nr, nr.min(n - j * nr));
                for p in k0..k0 + kcl {
                    let row = b.off + p * b.rs + c0 * b.cs;
                    if b.cs == 1 {
                        data.extend_from_slice(&b.data[row..row + w]);
                    } else {
                        data.extend((0..w).map(|c| b.data[row + c * b.cs]));
                    }
                    data.extend(std::iter::repeat_n(0.0, nr - w));
                }
            }
        }
        Ok(PackedMatrix {
            k,
            n,
            kc,
            isa,
            data,
        })
    }

    /// Rows of `B` (the contraction length).
    pub fn rows(&self) -> usize {
        self.k
    }

    /// Columns of `B`.
    pub fn cols(&self) -> usize {
        self.n
    }

    /// The micro-kernel it is laid out for.
    pub fn isa(&self) -> GemmIsa {
        self.isa
    }

    /// Bytes of the packed data (padding included).
    pub fn bytes(&self) -> usize {
        self.data.len() * std::mem::size_of::<f32>()
    }

    /// Element `(p, j)` of `B` (tests, and the reference reading of a packed weight).
    pub fn get(&self, p: usize, j: usize) -> Option<f32> {
        if p >= self.k || j >= self.n {
            return None;
        }
        let nr = self.isa.nr();
        let (kb, pp) = (p / self.kc, p % self.kc);
        let kcl = self.kc.min(self.k - kb * self.kc);
        let base = kb * self.kc * self.panels() * nr + (j / nr) * kcl * nr;
        self.data.get(base + pp * nr + j % nr).copied()
    }

    fn panels(&self) -> usize {
        self.n.div_ceil(self.isa.nr())
    }

    /// The panel `j` of block `kb`: `kcl × nr` floats.
    fn panel(&self, kb: usize, j: usize) -> &[f32] {
        let nr = self.isa.nr();
        let kcl = self.kc.min(self.k - kb * self.kc);
        let base = kb * self.kc * self.panels() * nr + j * kcl * nr;
        &self.data[base..base + kcl * nr]
    }
}

/// The right operand of a GEMM: a matrix read through its strides (packed per call), or one
/// packed at lowering time.
#[derive(Clone, Copy, Debug)]
pub enum Rhs<'a> {
    /// Read in place: the `gemm` crate (or the small-M path) runs.
    Strided(Mat<'a>),
    /// Packed once: [`gemm_packed`] runs.
    Packed(&'a PackedMatrix),
}

impl Rhs<'_> {
    /// `C = A·B` (or `C += A·B`) for `A[m, k]`, `B[k, n]`; `C` row-major with row stride
    /// `ldc`. Errors when an operand does not hold its shape (a packed `B` must be `k × n`).
    #[allow(clippy::too_many_arguments)]
    pub fn product(
        &self,
        m: usize,
        k: usize,
        n: usize,
        a: Mat<'_>,
        c: &mut [f32],
        ldc: usize,
        accumulate: bool,
        parallel: bool,
    ) -> R<()> {
        match self {
            Rhs::Strided(b) => super::gemm(m, k, n, a, *b, c, ldc, accumulate, parallel),
            Rhs::Packed(p) if p.rows() == k && p.cols() == n => {
                gemm_packed(m, a, p, c, ldc, accumulate, parallel)
            }
            Rhs::Packed(p) => Err(format!(
                "packed GEMM: B was packed as [{}, {}], the product needs [{k}, {n}]",
                p.rows(),
                p.cols()
            )),
        }
    }
}

/// The [preparation](super::registry::Preparation) of `linear` and `matmul`: operand 1, when
/// it is a constant matrix, packed for this CPU's micro-kernel.
pub(crate) fn prepare_rhs(operands: &[Option<TypedIn<'_>>]) -> R<Option<Prepared>> {
    let Some(Some(TypedIn::F32(w))) = operands.get(1) else {
        return Ok(None);
    };
    if w.shape.len() != 2 {
        return Ok(None);
    }
    let (k, n) = (w.shape[0], w.shape[1]);
    let isa = GemmIsa::detect();
    let packed = PackedMatrix::pack(w.matrix(), k, n, isa)?;
    let bytes = packed.bytes();
    Ok(Some(Prepared {
        replaces: vec![1],
        what: format!(
            "weight [{k}, {n}] packed for the {} micro-kernel ({:.1} MiB)",
            isa.describe(),
            bytes as f64 / (1 << 20) as f64
        ),
        bytes,
        data: Box::new(packed),
    }))
}

/// `C = A·B` (or `C += A·B` with `accumulate`) for `A[m, k]` (any strides) and a packed `B`;
/// `C` is row-major with row stride `ldc`. With `parallel` the work is spread over the rayon
/// workers (pass false from inside an already parallel loop). Errors when `A` or `C` is too
/// small for its shape or `B` was packed for a micro-kernel this CPU lacks.
#[allow(clippy::too_many_arguments)]
pub fn gemm_packed(
    m: usize,
    a: Mat<'_>,
    b: &PackedMatrix,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    parallel: bool,
) -> R<()> {
    let (k, n) = (b.k, b.n);
    if m == 0 || n == 0 {
        return Ok(());
    }
    super::gemm::check_out("packed GEMM", m, n, ldc, c.len())?;
    if !b.isa.runs_here() {
        return Err(format!(
            "packed GEMM: B was packed for the {} micro-kernel, which this CPU cannot run",
            b.isa.describe()
        ));
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                c[r * ldc..r * ldc + n].fill(0.0);
            }
        }
        return Ok(());
    }
    a.check(m, k, "A")?;
    let (mr, np) = (b.isa.mr(), b.panels());
    let threads = if parallel && m * n * k >= PARALLEL_MIN_MACS {
        super::threads()
    } else {
        1
    };
    let out = SharedOut(c.as_mut_ptr());
    let out = &out;
    let job = Job {
        a,
        b,
        ldc,
        accumulate,
    };
    // Rows per worker once each gets a whole block of A (it then packs only its own rows);
    // panels per worker below that (A is packed by each, B read once).
    let by_rows = m >= threads * MC || np < threads;
    if threads > 1 && !by_rows {
        // Panels (column strips) per worker: each reads only its part of B, once.
        let per = np.div_ceil(threads);
        (0..np.div_ceil(per)).into_par_iter().for_each(|t| {
            let panels = t * per..(t * per + per).min(np);
            // SAFETY: the columns of these panels, disjoint across tasks; the output was
            // checked to hold m rows of n elements at stride ldc.
            unsafe { job.run(0..m, panels, out.0) };
        });
    } else if threads > 1 && m >= 2 * mr {
        // Rows per worker (whole micro-panels): each reads all of B.
        let per = m.div_ceil(threads).div_ceil(mr) * mr;
        (0..m.div_ceil(per)).into_par_iter().for_each(|t| {
            let rows = t * per..(t * per + per).min(m);
            // SAFETY: these rows of the output, disjoint across tasks (checked above).
            unsafe { job.run(rows, 0..np, out.0) };
        });
    } else {
        // SAFETY: the whole output, checked above, borrowed mutably for the call.
        unsafe { job.run(0..m, 0..np, out.0) };
    }
    Ok(())
}

/// One product's operands, shared by its tasks.
struct Job<'a> {
    a: Mat<'a>,
    b: &'a PackedMatrix,
    ldc: usize,
    accumulate: bool,
}

thread_local! {
    /// Each worker's packed block of `A` (reused across calls).
    static PACKED_A: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl Job<'_> {
    /// Rows `rows` × panels `panels` of the output.
    ///
    /// # Safety
    /// `c` must be valid for reads and writes of the output rows `rows` and the columns of
    /// `panels` at row stride `ldc`, which no other thread accesses during the call; `A` was
    /// checked for `m × k`.
    unsafe fn run(
        &self,
        rows: std::ops::Range<usize>,
        panels: std::ops::Range<usize>,
        c: *mut f32,
    ) {
        let b = self.b;
        let (isa, k, n) = (b.isa, b.k, b.n);
        let (mr, nr, kc) = (isa.mr(), isa.nr(), b.kc);
        PACKED_A.with(|buf| {
            let mut guard = buf.borrow_mut();
            let abuf: &mut Vec<f32> = &mut guard;
            for ic in rows.clone().step_by(MC) {
                let mc = MC.min(rows.end - ic);
                for (kb, k0) in (0..k).step_by(kc).enumerate() {
                    let kcl = kc.min(k - k0);
                    // A row-major A is read in place; any other is packed.
                    let direct = self.a.cs == 1;
                    if !direct {
                        pack_a(&self.a, ic, mc, k0, kcl, mr, abuf);
                    }
                    let load = self.accumulate || kb > 0;
                    for j in panels.clone() {
                        let bp = b.panel(kb, j).as_ptr();
                        let cols = nr.min(n - j * nr);
                        for ir in (0..mc).step_by(mr) {
                            let rq = mr.min(mc - ir);
                            let a = if direct {
                                APanel {
                                    // SAFETY: element (ic + ir, k0) of the checked A.
                                    ptr: unsafe {
                                        self.a
                                            .data
                                            .as_ptr()
                                            .add(self.a.off + (ic + ir) * self.a.rs + k0)
                                    },
                                    rs: self.a.rs,
                                    cs: 1,
                                }
                            } else {
                                APanel {
                                    // SAFETY: micro-panel `ir / mr` of the packed block.
                                    ptr: unsafe { abuf.as_ptr().add(ir * kcl) },
                                    rs: 1,
                                    cs: rq,
                                }
                            };
                            // SAFETY: the A panel holds rq rows × kcl (see above), the B
                            // panel kcl × nr; the output tile is inside the caller's region.
                            unsafe {
                                micro(
                                    isa,
                                    rq,
                                    Tile {
                                        kc: kcl,
                                        a,
                                        b: bp,
                                        c: c.add((ic + ir) * self.ldc + j * nr),
                                        ldc: self.ldc,
                                        load,
                                        cols,
                                    },
                                )
                            };
                        }
                    }
                }
            }
        });
    }
}

/// Packs rows `i0..i0+mc`, columns `k0..k0+kcl` of `A` into micro-panels of `mr` rows (the
/// last may be shorter): panel `q` starts at `q·mr·kcl` and holds element `(p, r)` at
/// `p·rows + r`.
fn pack_a(a: &Mat<'_>, i0: usize, mc: usize, k0: usize, kcl: usize, mr: usize, buf: &mut Vec<f32>) {
    buf.clear();
    buf.resize(mc * kcl, 0.0);
    for ir in (0..mc).step_by(mr) {
        let rq = mr.min(mc - ir);
        let dst = &mut buf[ir * kcl..(ir + rq) * kcl];
        for r in 0..rq {
            let base = a.off + (i0 + ir + r) * a.rs + k0 * a.cs;
            if a.cs == 1 {
                let src = &a.data[base..base + kcl];
                for (p, &x) in src.iter().enumerate() {
                    dst[p * rq + r] = x;
                }
            } else {
                for p in 0..kcl {
                    dst[p * rq + r] = a.data[base + p * a.cs];
                }
            }
        }
    }
}

/// The rows of `A` one micro-kernel call reads: element `(r, p)` at `ptr + r·rs + p·cs` (a
/// packed micro-panel: `rs = 1`, `cs = rows`; a row-major `A` read in place: `rs = lda`,
/// `cs = 1`).
#[derive(Clone, Copy)]
struct APanel {
    ptr: *const f32,
    rs: usize,
    cs: usize,
}

/// One micro-kernel call: `C[rows, cols] (+)= A · B` over `kc`, the `A` rows of `a`, the
/// `kc × NR` panel at `b`, `C` at `c` with row stride `ldc`, read first when `load`.
#[derive(Clone, Copy)]
struct Tile {
    kc: usize,
    a: APanel,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    load: bool,
    cols: usize,
}

/// Expands to a `match` of a run-time row count onto the micro-kernel instance of that many rows.
macro_rules! by_rows {
    ($rows:expr, $f:ident, $args:tt, [$($n:literal)*]) => {
        match $rows {
            $($n => $f::<$n> $args,)*
            _ => unreachable!("micro-kernel rows are 1..=MR"),
        }
    };
}

/// One `rows × NR` tile: `C[rows, cols] (+)= Apanel · Bpanel` over `kc`.
///
/// # Safety
/// `t.a` reaches `rows × kc` floats, `t.b` holds `kc × NR`; `t.c` is valid for `rows` rows of
/// `cols` elements at stride `ldc`; `isa` runs on this CPU; `1 ≤ rows ≤ MR`, `1 ≤ cols ≤ NR`.
unsafe fn micro(isa: GemmIsa, rows: usize, t: Tile) {
    let Tile {
        c, ldc, load, cols, ..
    } = t;
    match isa {
        #[cfg(target_arch = "x86_64")]
        GemmIsa::Avx512 => unsafe {
            by_rows!(
                rows,
                avx512_tile,
                (t),
                [1 2 3 4 5 6 7 8 9 10 11 12]
            )
        },
        #[cfg(target_arch = "x86_64")]
        GemmIsa::Avx2 if cols < 16 => {
            // An edge tile: computed on a full 16-column copy, then the columns copied back.
            let mut tile = [0f32; 6 * 16];
            if load {
                for r in 0..rows {
                    for j in 0..cols {
                        tile[r * 16 + j] = unsafe { *c.add(r * ldc + j) };
                    }
                }
            }
            unsafe {
                by_rows!(
                    rows,
                    avx2_tile,
                    (Tile {
                        c: tile.as_mut_ptr(),
                        ldc: 16,
                        cols: 16,
                        ..t
                    }),
                    [1 2 3 4 5 6]
                )
            };
            for r in 0..rows {
                for j in 0..cols {
                    unsafe { *c.add(r * ldc + j) = tile[r * 16 + j] };
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        GemmIsa::Avx2 => unsafe {
            by_rows!(
                rows,
                avx2_tile,
                (t),
                [1 2 3 4 5 6]
            )
        },
        #[cfg(not(target_arch = "x86_64"))]
        GemmIsa::Avx512 | GemmIsa::Avx2 => {
            unreachable!("no AVX outside x86-64 (runs_here is false)")
        }
        GemmIsa::Portable => unsafe {
            by_rows!(
                rows,
                portable_tile,
                (t),
                [1 2 3 4 5 6]
            )
        },
    }
}

/// The AVX-512 tile: `MR` rows × 32 columns in 2·`MR` accumulators; the columns beyond `cols`
/// are masked off on load and store.
///
/// # Safety
/// As [`micro`], with AVX-512F on this CPU.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn avx512_tile<const MR: usize>(t: Tile) {
    let Tile {
        kc,
        a,
        b,
        c,
        ldc,
        load,
        cols,
    } = t;
    use std::arch::x86_64::*;
    let mask = |w: usize| -> __mmask16 {
        if w >= 16 {
            0xFFFF
        } else {
            ((1u32 << w) - 1) as u16
        }
    };
    let (m0, m1) = (mask(cols), mask(cols.saturating_sub(16)));
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    if load {
        for (r, acc) in acc.iter_mut().enumerate() {
            // Masked-off lanes are not read (no fault past the row's end).
            let row = c.wrapping_add(r * ldc);
            unsafe {
                acc[0] = _mm512_maskz_loadu_ps(m0, row);
                acc[1] = _mm512_maskz_loadu_ps(m1, row.wrapping_add(16));
            }
        }
    }
    let (mut ap, mut bp) = (a.ptr, b);
    for _ in 0..kc {
        unsafe {
            let b0 = _mm512_loadu_ps(bp);
            let b1 = _mm512_loadu_ps(bp.add(16));
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*ap.add(r * a.rs));
                acc[0] = _mm512_fmadd_ps(av, b0, acc[0]);
                acc[1] = _mm512_fmadd_ps(av, b1, acc[1]);
            }
            ap = ap.add(a.cs);
            bp = bp.add(32);
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        let row = c.wrapping_add(r * ldc);
        unsafe {
            _mm512_mask_storeu_ps(row, m0, acc[0]);
            _mm512_mask_storeu_ps(row.wrapping_add(16), m1, acc[1]);
        }
    }
}

/// The AVX2+FMA tile: `MR` rows × 16 columns in 2·`MR` accumulators, all 16 columns stored
/// (edge tiles go through a full-width copy, see [`micro`]).
///
/// # Safety
/// As [`micro`] with `cols` = 16, with AVX2 and FMA on this CPU.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_tile<const MR: usize>(t: Tile) {
    let Tile {
        kc,
        a,
        b,
        c,
        ldc,
        load,
        ..
    } = t;
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    if load {
        for (r, acc) in acc.iter_mut().enumerate() {
            unsafe {
                acc[0] = _mm256_loadu_ps(c.add(r * ldc));
                acc[1] = _mm256_loadu_ps(c.add(r * ldc + 8));
            }
        }
    }
    let (mut ap, mut bp) = (a.ptr, b);
    for _ in 0..kc {
        unsafe {
            let b0 = _mm256_loadu_ps(bp);
            let b1 = _mm256_loadu_ps(bp.add(8));
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = _mm256_broadcast_ss(&*ap.add(r * a.rs));
                acc[0] = _mm256_fmadd_ps(av, b0, acc[0]);
                acc[1] = _mm256_fmadd_ps(av, b1, acc[1]);
            }
            ap = ap.add(a.cs);
            bp = bp.add(16);
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        unsafe {
            _mm256_storeu_ps(c.add(r * ldc), acc[0]);
            _mm256_storeu_ps(c.add(r * ldc + 8), acc[1]);
        }
    }
}

/// The portable tile, `MR` rows × 16 columns, plain loops for CPUs without AVX2+FMA.
///
/// # Safety
/// As [`micro`].
unsafe fn portable_tile<const MR: usize>(t: Tile) {
    // SAFETY: the caller's contract.
    unsafe { portable_body::<MR>(t) }
}

/// The loops of [`portable_tile`].
///
/// # Safety
/// As [`micro`].
#[inline(always)]
unsafe fn portable_body<const MR: usize>(t: Tile) {
    let Tile {
        kc,
        a,
        b,
        c,
        ldc,
        load,
        cols,
    } = t;
    const NR: usize = 16;
    let mut acc = [[0f32; NR]; MR];
    if load {
        for (r, acc) in acc.iter_mut().enumerate() {
            for (j, x) in acc.iter_mut().enumerate().take(cols) {
                // SAFETY: row r, column j < cols of the caller's tile.
                *x = unsafe { *c.add(r * ldc + j) };
            }
        }
    }
    for p in 0..kc {
        // SAFETY: row p of the panel (kc × NR) and of the A micro-panel (kc × MR).
        let bv: &[f32; NR] = unsafe { &*(b.add(p * NR) as *const [f32; NR]) };
        for (r, acc) in acc.iter_mut().enumerate() {
            let av = unsafe { *a.ptr.add(p * a.cs + r * a.rs) };
            for (x, &bj) in acc.iter_mut().zip(bv) {
                *x += av * bj;
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        for (j, &x) in acc.iter().enumerate().take(cols) {
            // SAFETY: as above.
            unsafe { *c.add(r * ldc + j) = x };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{close, data, naive_mm};
    use super::*;
    use proptest::prelude::*;

    fn isas() -> Vec<GemmIsa> {
        [GemmIsa::Avx512, GemmIsa::Avx2, GemmIsa::Portable]
            .into_iter()
            .filter(|i| i.runs_here())
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn packed_gemm_matches_naive(
            m in 1usize..40, k in 0usize..60, n in 1usize..80, kc in 1usize..24,
            acc in any::<bool>(), a_t in any::<bool>(), b_t in any::<bool>(), seed in 0u64..50,
        ) {
            // A row-major or stored transposed; B row-major or stored transposed ([n, k]).
            let a0 = data(m * k, seed);
            let b0 = data(k * n, seed + 1);
            let a_store: Vec<f32> = if a_t { (0..m * k).map(|i| a0[(i % m) * k + i / m]).collect() } else { a0.clone() };
            let am = if a_t { Mat { data: &a_store, off: 0, rs: 1, cs: m } } else { Mat::row_major(&a_store, k) };
            let b_store: Vec<f32> = if b_t { (0..k * n).map(|i| b0[(i % k) * n + i / k]).collect() } else { b0.clone() };
            let bm = if b_t { Mat { data: &b_store, off: 0, rs: 1, cs: k } } else { Mat::row_major(&b_store, n) };
            for isa in isas() {
                let pb = PackedMatrix::pack_blocked(bm, k, n, isa, kc).unwrap();
                for p in 0..k { for j in 0..n { prop_assert_eq!(pb.get(p, j), Some(b0[p * n + j])); } }
                let mut c = data(m * (n + 2), seed + 2);
                let c0 = c.clone();
                gemm_packed(m, am, &pb, &mut c, n + 2, acc, true).unwrap();
                let r = naive_mm(m, k, n, &a0, &b0);
                for i in 0..m {
                    let want: Vec<f64> = (0..n).map(|j| r[i * n + j] + if acc { c0[i * (n + 2) + j] as f64 } else { 0.0 }).collect();
                    close(&c[i * (n + 2)..i * (n + 2) + n], &want, 1e-5);
                    // The padding between rows is not touched.
                    prop_assert_eq!(&c[i * (n + 2) + n..(i + 1) * (n + 2)], &c0[i * (n + 2) + n..(i + 1) * (n + 2)]);
                }
            }
        }
    }

    #[test]
    fn split_products_match_naive() {
        // Panel splits (many columns, few rows: a decode step), row splits (few panels) and
        // several K blocks and row blocks, inside a 2-worker pool so the splits happen.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        pool.install(|| {
            for &(m, k, n) in &[
                (1usize, 600usize, 700usize),
                (3, 300, 64),
                (400, 300, 40),
                (130, 520, 300),
            ] {
                let (a, b) = (data(m * k, 1), data(k * n, 2));
                for isa in isas() {
                    let pb = PackedMatrix::pack(Mat::row_major(&b, n), k, n, isa).unwrap();
                    let mut c = vec![f32::NAN; m * n];
                    gemm_packed(m, Mat::row_major(&a, k), &pb, &mut c, n, false, true).unwrap();
                    close(&c, &naive_mm(m, k, n, &a, &b), 1e-5);
                }
            }
        });
    }

    #[test]
    fn bad_operands_are_errors() {
        let b = data(12, 1);
        let pb = PackedMatrix::pack(Mat::row_major(&b, 3), 4, 3, GemmIsa::Portable).unwrap();
        let a = [0f32; 8];
        let mut c = [0f32; 6];
        assert!(gemm_packed(2, Mat::row_major(&a[..7], 4), &pb, &mut c, 3, false, true).is_err());
        assert!(gemm_packed(2, Mat::row_major(&a, 4), &pb, &mut c[..5], 3, false, true).is_err());
        gemm_packed(2, Mat::row_major(&a, 4), &pb, &mut c, 3, false, true).unwrap();
        assert!(PackedMatrix::pack(Mat::row_major(&b, 3), 5, 3, GemmIsa::Portable).is_err());
        assert!(
            PackedMatrix::pack_blocked(Mat::row_major(&b, 3), 4, 3, GemmIsa::Portable, 0).is_err()
        );
        assert_eq!(pb.get(4, 0), None);
        assert_eq!(pb.bytes(), 4 * 16 * 4);
    }
}
