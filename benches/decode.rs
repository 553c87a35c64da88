//! Criterion bench of KV-cache decoding on SmolLM2-135M (lowered CPU program): one decode step
//! with 128 cached positions, against re-running the 128-token prefix (what each token costs
//! without a cache). The cache is restored before every timed step, so each step sees P = 128.
//!
//! `RAYON_NUM_THREADS=2 cargo bench --bench decode`

use criterion::{criterion_group, criterion_main, Criterion};
use fuselage::ir::{DType, Tensor};
use fuselage::tasks::{with_kv_cache, KvCachePlan, DECODE_FUNCTION};
use std::time::{Duration, Instant};

fn ids(v: &[i64]) -> Tensor {
    Tensor::new(
        DType::I64,
        vec![1, v.len()],
        v.iter().map(|&i| i as f64).collect(),
    )
    .expect("ids")
}

fn bench(c: &mut Criterion) {
    let dir = fuselage::frontends::assets::find_model("smollm2-135m").expect("smollm2-135m");
    let gguf = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let m = fuselage::load(gguf.to_str().expect("utf-8 path")).expect("load");
    let m = with_kv_cache(&m).expect("kv cache");
    let golden = fuselage::npy::read_npy(&dir.join("golden/token_ids.npy")).expect("ids");
    let toks: Vec<i64> = golden.data()[..129].iter().map(|&x| x as i64).collect();
    let plan = KvCachePlan::of(&m).expect("plan");
    let keep = plan.keep();
    let decode = fuselage::executor_for(
        &m,
        DECODE_FUNCTION,
        fuselage::Backend::Cpu,
        &Default::default(),
    )
    .expect("lower decode");
    let mut s = decode.session(&m);
    plan.reset(s.as_mut()).expect("empty cache");
    s.run(DECODE_FUNCTION, &[("input_ids", ids(&toks[..128]))], &keep)
        .expect("prefill");
    let cache: Vec<(String, Tensor)> = s
        .state_names()
        .into_iter()
        .map(|n| {
            let t = s.state(&n).expect("state").expect("present");
            (n, t)
        })
        .collect();
    let mut group = c.benchmark_group("smollm2");
    group.sample_size(20);
    group.bench_function("decode-step-at-128", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                for (n, t) in &cache {
                    s.set_state(n, t).expect("restore");
                }
                let t0 = Instant::now();
                s.run(
                    DECODE_FUNCTION,
                    &[("input_ids", ids(&toks[128..129]))],
                    &keep,
                )
                .expect("decode");
                total += t0.elapsed();
            }
            total
        })
    });
    drop(s);
    drop(decode);
    let full = fuselage::executor(&m, fuselage::Backend::Cpu).expect("lower main");
    let prefix = ids(&toks[..129]);
    group.sample_size(10);
    group.bench_function("rerun-prefix-129", |b| {
        b.iter(|| {
            full.run(&m, "main", std::slice::from_ref(&prefix))
                .expect("run")
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
