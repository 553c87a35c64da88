//! Criterion bench of the canonicalize pipeline: a 24-layer BERT-large-shaped encoder written
//! in primitives (targets: < 200 ms) and a 400-layer residual chain (< 2 s).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use fuselage_passes::canonicalize::Canonicalize;

#[path = "../tests/support/models.rs"]
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
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
