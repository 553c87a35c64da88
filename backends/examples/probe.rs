use fuselage_backends::kernels;
use std::time::Instant;
fn med(mut f: impl FnMut()) -> f64 {
    for _ in 0..5 {
        f();
    }
    let mut v = vec![];
    for _ in 0..40 {
        let t = Instant::now();
        f();
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    v.sort_by(f64::total_cmp);
    v[20]
}
fn main() {
    for n in [128 * 1536usize, 1024 * 1536] {
        let x: Vec<f32> = (0..n).map(|i| ((i % 97) as f32 - 48.0) * 0.05).collect();
        let t = med(|| {
            std::hint::black_box(kernels::gelu_erf(&x));
        });
        let t2 = med(|| {
            std::hint::black_box(x.iter().map(|v| v * 2.0).collect::<Vec<f32>>());
        });
        println!(
            "gelu {n}: {t:.3} ms ({:.2} ns/elem); copy-map {t2:.3} ms",
            t * 1e6 / n as f64
        );
    }
    for rows in [128usize, 1024] {
        let x: Vec<f32> = (0..rows * 384)
            .map(|i| ((i % 97) as f32 - 48.0) * 0.05)
            .collect();
        let g = vec![1f32; 384];
        let t = med(|| {
            std::hint::black_box(kernels::layer_norm(&x, 384, Some(&g), Some(&g), 1e-12).unwrap());
        });
        println!("layer_norm {rows}x384: {t:.3} ms");
    }
}
