//! Model-level conformance of the lowering: the built-in models (and the standard pipeline's
//! output of them) run on the reference interpreter and on the lowered CPU program (burn-ndarray,
//! f32, native kernels on and off) agree within f32 tolerance.

use fuselage_backends::{lower, CpuBackend, LowerOptions};
use fuselage_ir::sample::SymbolSizes;
use fuselage_ir::{Executor, Reference, Tensor};

fn check(name: &str, sizes: &str) {
    let m = fuselage_frontends::builtin::builtin(name).unwrap();
    let entry = m.entry_name().unwrap().to_string();
    let inputs =
        fuselage_ir::sample::sample_inputs(&m, &entry, &SymbolSizes::parse(sizes).unwrap(), 7)
            .unwrap();
    let want = Reference.run(&m, &entry, &inputs).unwrap();
    for kernels in [true, false] {
        let opts = LowerOptions {
            native_kernels: kernels,
            ..Default::default()
        };
        let p = lower::<CpuBackend>(&m, &entry, &Default::default(), &opts).unwrap();
        let got = p.run_tensors(&inputs).unwrap();
        assert_eq!(got.len(), want.len());
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.shape(), w.shape(), "{name} output {k}");
            assert_close(name, k, g, w);
        }
        let plan = p.memory_plan(&SymbolSizes::parse(sizes).unwrap()).unwrap();
        assert!(plan.planned_bytes < plan.naive_bytes, "{name}: {plan:?}");
        assert!(p.last_run_stats().peak_bytes > 0);
    }
}

fn assert_close(name: &str, k: usize, g: &Tensor, w: &Tensor) {
    // f32 through a few layers: 1e-4 relative to the output's scale.
    let scale = w.data().iter().fold(0f64, |a, b| a.max(b.abs())).max(1e-3);
    for (i, (a, b)) in g.data().iter().zip(w.data()).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 * scale,
            "{name} output {k} element {i}: lowered {a} vs reference {b} (scale {scale})"
        );
    }
}

#[test]
fn bert_tiny_lowered_matches_reference() {
    check("bert-tiny", "B=2,S=7");
}

#[test]
fn llama_tiny_lowered_matches_reference() {
    check("llama-tiny", "B=2,S=6");
}

#[test]
fn mlp_lowered_matches_reference() {
    check("mlp", "B=3");
}
