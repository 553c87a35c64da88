//! The GEMM on a weight packed once (`gemm_packed`, what a lowered program runs for a constant
//! weight) against the `gemm` crate on the same row-major weight (packed on every call; the
//! small-M path for 1 to 4 rows), at MiniLM's and SmolLM2's linear-layer shapes, alternated
//! call by call.
//!
//! `RAYON_NUM_THREADS=2 cargo run --release -p fuselage-backends --example gemm_bench [ITERS] [KC]`

use fuselage_backends::kernels::packed_gemm::{gemm_packed, GemmIsa, PackedMatrix};
use fuselage_backends::kernels::{gemm, Mat};
use std::time::Instant;

fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let iters: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(30);
    let isa = GemmIsa::detect();
    let kc: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(isa.kc());
    println!(
        "micro-kernel {}, K block {kc}, {} threads, {iters} calls each, alternated",
        isa.describe(),
        rayon::current_num_threads()
    );
    println!("| model | M×K×N | gemm crate ms | packed ms | ratio | packed GFLOP/s |");
    println!("|---|---|---|---|---|---|");
    let shapes: &[(&str, usize, usize, usize)] = &[
        ("MiniLM 1×128", 128, 384, 384),
        ("MiniLM 1×128", 128, 384, 1536),
        ("MiniLM 1×128", 128, 1536, 384),
        ("MiniLM 8×128", 1024, 384, 384),
        ("MiniLM 8×128", 1024, 384, 1536),
        ("MiniLM 8×128", 1024, 1536, 384),
        ("SmolLM2 prefill", 128, 576, 576),
        ("SmolLM2 prefill", 128, 576, 192),
        ("SmolLM2 prefill", 128, 576, 1536),
        ("SmolLM2 prefill", 128, 1536, 576),
        ("SmolLM2 decode", 1, 576, 1536),
        ("SmolLM2 decode", 1, 1536, 576),
        ("SmolLM2 decode", 1, 576, 49152),
    ];
    for &(model, m, k, n) in shapes {
        let a = data(m * k, 1);
        let b = data(k * n, 2);
        let packed = PackedMatrix::pack_blocked(Mat::row_major(&b, n), k, n, isa, kc)
            .expect("pack the weight");
        let mut c1 = vec![0f32; m * n];
        let mut c2 = vec![0f32; m * n];
        let (mut t1, mut t2) = (vec![], vec![]);
        for _ in 0..iters {
            let s = Instant::now();
            gemm(
                m,
                k,
                n,
                Mat::row_major(&a, k),
                Mat::row_major(&b, n),
                &mut c1,
                n,
                false,
                true,
            )
            .expect("gemm");
            t1.push(s.elapsed().as_secs_f64());
            let s = Instant::now();
            gemm_packed(m, Mat::row_major(&a, k), &packed, &mut c2, n, false, true)
                .expect("packed gemm");
            t2.push(s.elapsed().as_secs_f64());
        }
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
        println!(
            "| {model} | {m}×{k}×{n} | {:.3} | {:.3} | {:.2} | {:.0} |",
            m1 * 1e3,
            m2 * 1e3,
            m2 / m1,
            2.0 * (m * k * n) as f64 / m2 / 1e9
        );
    }
}
