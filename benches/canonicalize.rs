//! Criterion bench of canonicalization: a 24-layer BERT-large-shaped encoder written in
//! primitives (target: < 200 ms) and a 400-layer residual chain whose layers cycle through the
//! LayerNorm and GELU spellings (target: < 2 s). Weights are seeded constants, never
//! materialized. Two measurements per graph: the `canonicalize` pass alone, and the whole
//! `pipelines/canonicalize.toml` pipeline through the compile API (verification after every
//! pass included; the numeric check is off because it runs the model, which is not what this
//! bench measures).
//!
//! `cargo bench --bench canonicalize`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use fuselage_passes::canonicalize::Canonicalize;

#[path = "../passes/tests/support/models.rs"]
mod models;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("canonicalize");
    g.sample_size(10);
    for (name, m) in [
        ("bert-large-24", models::bert_large(24)),
        ("residual-chain-400", models::residual_chain(400)),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || m.clone(),
                |mut m| {
                    Canonicalize::default().run(&mut m).expect("canonicalize");
                    m
                },
                BatchSize::LargeInput,
            )
        });
    }
    let pipeline = fuselage::Pipeline::from_file(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/pipelines/canonicalize.toml"
    ))
    .expect("pipeline");
    let opts = fuselage::CompileOptions {
        numeric_check: false,
        ..Default::default()
    };
    for (name, m) in [
        ("pipeline/bert-large-24", models::bert_large(24)),
        ("pipeline/residual-chain-400", models::residual_chain(400)),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| fuselage::compile(&m, &pipeline, &opts).expect("compile"))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
