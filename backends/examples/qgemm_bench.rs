//! The INT8 GEMM (`gemm_i8` on an i8 weight packed once, with its dequantizing epilogue) against
//! the f32 GEMM on a weight packed once (`gemm_packed`), at MiniLM's and SmolLM2's linear-layer
//! shapes, alternated call by call; throughput in GOP/s (a multiply-add counts 2).
//!
//! `RAYON_NUM_THREADS=2 cargo run --release -p fuselage-backends --example qgemm_bench [ITERS]`

use fuselage_backends::kernels::packed_gemm::{gemm_packed, GemmIsa, PackedMatrix};
use fuselage_backends::kernels::qgemm::{gemm_i8, Epilogue, PackedI8Matrix, QIsa};
use fuselage_backends::kernels::Mat;
use std::time::Instant;

fn ints(n: usize, seed: u64) -> Vec<i8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x % 255) as i64 - 127) as i8
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The machine's peak for the INT8 micro-kernel's instruction pair (`vpmaddwd` + `vpaddd` on
/// 12 independent accumulators, operands in registers), in GOP/s on one thread.
#[cfg(target_arch = "x86_64")]
fn madd_peak_gops() -> Option<f64> {
    if !std::arch::is_x86_feature_detected!("avx2") {
        return None;
    }
    #[target_feature(enable = "avx2")]
    unsafe fn run(iters: usize) -> i32 {
        use std::arch::x86_64::*;
        let b = _mm256_set1_epi32(0x0001_fffe);
        let mut acc: [__m256i; 12] =
            std::array::from_fn(|i| _mm256_set1_epi32(0x0003_0002 + i as i32));
        // Each accumulator feeds its own next product (12 independent chains of 4 cycles'
        // latency), so nothing is loop-invariant and the loop is throughput-bound.
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm256_add_epi32(*x, _mm256_madd_epi16(*x, b));
            }
        }
        let mut acc = std::hint::black_box(acc);
        let mut out = [0i32; 8];
        let mut sum = _mm256_setzero_si256();
        for x in acc.iter_mut() {
            sum = _mm256_add_epi32(sum, *x);
        }
        unsafe { _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, sum) };
        out.iter().sum()
    }
    let iters = 20_000_000;
    // SAFETY: AVX2 checked above.
    let _ = unsafe { run(iters / 10) };
    let t = Instant::now();
    let _ = std::hint::black_box(unsafe { run(iters) });
    // 12 instructions × 16 multiply-adds × 2 ops each per iteration.
    Some((iters * 12 * 16 * 2) as f64 / t.elapsed().as_secs_f64() / 1e9)
}

#[cfg(not(target_arch = "x86_64"))]
fn madd_peak_gops() -> Option<f64> {
    None
}

fn main() {
    let iters: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    println!(
        "INT8 micro-kernel {}, f32 micro-kernel {}, {} threads, {iters} calls each, alternated",
        QIsa::detect().describe(),
        GemmIsa::detect().describe(),
        rayon::current_num_threads()
    );
    if let Some(p) = madd_peak_gops() {
        println!(
            "vpmaddwd+vpaddd peak, one thread, registers only: {p:.0} GOP/s (×{} threads: {:.0})",
            rayon::current_num_threads(),
            p * rayon::current_num_threads() as f64
        );
    }
    println!("| model | M×K×N | f32 ms | INT8 ms | INT8/f32 | f32 GFLOP/s | INT8 GOP/s |");
    println!("|---|---|---|---|---|---|---|");
    let shapes: &[(&str, usize, usize, usize)] = &[
        ("MiniLM 1×128", 128, 384, 384),
        ("MiniLM 1×128", 128, 384, 1536),
        ("MiniLM 1×128", 128, 1536, 384),
        ("MiniLM 8×128", 1024, 384, 384),
        ("MiniLM 8×128", 1024, 384, 1536),
        ("MiniLM 8×128", 1024, 1536, 384),
        ("SmolLM2 prefill", 128, 576, 1536),
        ("SmolLM2 decode", 1, 576, 1536),
        ("SmolLM2 decode", 1, 576, 49152),
    ];
    for &(model, m, k, n) in shapes {
        let (a8, b8) = (ints(m * k, 1), ints(k * n, 2));
        let a: Vec<f32> = a8.iter().map(|&v| f32::from(v)).collect();
        let b: Vec<f32> = b8.iter().map(|&v| f32::from(v)).collect();
        let fp =
            PackedMatrix::pack(Mat::row_major(&b, n), k, n, GemmIsa::detect()).expect("pack f32");
        let qp = PackedI8Matrix::pack(&b8, k, n).expect("pack i8");
        let (rs, cs) = (vec![1f32; m], vec![1f32; n]);
        let ep = Epilogue {
            row_scale: &rs,
            col_scale: &cs,
            bias: None,
        };
        let (mut c1, mut c2) = (vec![0f32; m * n], vec![0f32; m * n]);
        let (mut t1, mut t2) = (vec![], vec![]);
        for _ in 0..iters {
            let s = Instant::now();
            gemm_packed(m, Mat::row_major(&a, k), &fp, &mut c1, n, false, true).expect("f32");
            t1.push(s.elapsed().as_secs_f64());
            let s = Instant::now();
            gemm_i8(m, &a8, &qp, ep, &mut c2, n, true).expect("i8");
            t2.push(s.elapsed().as_secs_f64());
        }
        // Integer products of this size are exact in f32 accumulation only approximately; the
        // INT8 result is exact, so compare loosely.
        let worst = c1
            .iter()
            .zip(&c2)
            .map(|(x, y)| (x - y).abs() / (1.0 + x.abs()))
            .fold(0f32, f32::max);
        assert!(
            worst < 1e-4,
            "{model} {m}×{k}×{n}: results differ by {worst}"
        );
        let (m1, m2) = (median(t1), median(t2));
        let ops = 2.0 * (m * k * n) as f64;
        println!(
            "| {model} | {m}×{k}×{n} | {:.3} | {:.3} | {:.2} | {:.0} | {:.0} |",
            m1 * 1e3,
            m2 * 1e3,
            m2 / m1,
            ops / m1 / 1e9,
            ops / m2 / 1e9
        );
    }
}
