//! Matmul (MiniLM's linear layers) and attention at MiniLM shapes: burn-ndarray's path vs
//! fuselage's native CPU kernels, both behind the same lowering (with mimalloc, the CLI's
//! allocator).
//!
//! `MATMUL_NUM_THREADS=2 RAYON_NUM_THREADS=2 cargo run --release -p fuselage-backends --example kernel_bench`

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc; // as in the `fuselage` CLI

use fuselage_backends::lower::time_runs;
use fuselage_backends::{lower, CpuBackend, LowerOptions};
use fuselage_ir::ops::testing::rand_tensor;
use fuselage_ir::{DType, Graph, Module, Op, Tensor, TensorType};

fn one_op(op: Op, inputs: &[Tensor]) -> Module {
    let m = Module::new();
    let mut g = Graph::new();
    let ids: Vec<_> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| {
            g.add_input(&format!("x{i}"), TensorType::fixed(t.dtype(), t.shape()))
                .into()
        })
        .collect();
    let n = g.add_inferred(&m, op, ids, None).unwrap();
    g.add_output("y", n.into());
    let mut m = m;
    m.functions.insert("main".into(), g);
    m
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let iters: usize = std::env::var("ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    println!("| op | shape | burn-ndarray ms | native ms | speed-up | native GFLOP/s |");
    println!("|---|---|---|---|---|---|");
    for b in [1usize, 8] {
        let rows = b * 128;
        for (k, n) in [(384usize, 384usize), (384, 1536), (1536, 384)] {
            let x = rand_tensor(DType::F32, vec![b, 128, k], 1);
            let w = rand_tensor(DType::F32, vec![k, n], 2);
            let bias = rand_tensor(DType::F32, vec![n], 3);
            let inputs = [x, w, bias];
            let m = one_op(
                Op::from_attrs("linear", serde_json::json!({})).unwrap(),
                &inputs,
            );
            let flops = 2.0 * (rows * k * n) as f64;
            report(
                &m,
                &inputs,
                iters,
                &format!("linear [{b}x128x{k}]·[{k}x{n}]"),
                flops,
            );
        }
        let q = rand_tensor(DType::F32, vec![b, 12, 128, 32], 4);
        let kk = rand_tensor(DType::F32, vec![b, 12, 128, 32], 5);
        let v = rand_tensor(DType::F32, vec![b, 12, 128, 32], 6);
        let mask = rand_tensor(DType::F32, vec![b, 1, 1, 128], 7);
        let inputs = [q, kk, v, mask];
        let m = one_op(
            Op::from_attrs("attention", serde_json::json!({})).unwrap(),
            &inputs,
        );
        let flops = 4.0 * (b * 12 * 128 * 128 * 32) as f64;
        report(
            &m,
            &inputs,
            iters,
            &format!("attention B={b} H=12 S=128 D=32 +mask"),
            flops,
        );
    }
}

fn report(m: &Module, inputs: &[Tensor], iters: usize, label: &str, flops: f64) {
    let mut ms = vec![];
    for kernels in [false, true] {
        let opts = LowerOptions {
            native_kernels: kernels,
            ..Default::default()
        };
        let p = lower::<CpuBackend>(m, "main", &Default::default(), &opts).unwrap();
        ms.push(median(time_runs(&p, inputs, 3, iters).unwrap()) * 1e3);
    }
    println!(
        "| {label} | | {:.3} | {:.3} | {:.2}× | {:.1} |",
        ms[0],
        ms[1],
        ms[0] / ms[1],
        flops / (ms[1] * 1e-3) / 1e9
    );
}
