//! Every built-in model builds, verifies, prints/parses back equal, and runs on the reference
//! interpreter with finite outputs of the declared shapes.

use fuselage_frontends::{builtin, BUILTINS};
use fuselage_ir::sample::{sample_inputs, SymbolSizes};
use fuselage_ir::{Executor, Reference};

#[test]
fn every_builtin_builds_round_trips_and_runs() {
    for (name, _) in BUILTINS {
        let m = builtin(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        fuselage_ir::verify::verify(&m).unwrap();
        let text = fuselage_ir::text::print_module(&m);
        let back = fuselage_ir::text::parse_module(&text, name).unwrap();
        assert!(back == m, "{name}: text round trip differs");
        let sizes = SymbolSizes::parse("B=2,S=5").unwrap();
        let inputs = sample_inputs(&m, "main", &sizes, 1).unwrap();
        let out = Reference.run(&m, "main", &inputs).unwrap();
        assert_eq!(out.len(), m.functions["main"].outputs.len());
        for t in &out {
            assert!(
                t.data().iter().all(|x| x.is_finite()),
                "{name}: non-finite output"
            );
            assert_eq!(t.shape()[0], 2, "{name}: batch dim");
        }
    }
}

#[test]
fn unknown_builtin_lists_the_available_ones() {
    let e = builtin("bert-huge").unwrap_err().to_string();
    assert!(e.contains("bert-tiny") && e.contains("llama-tiny"), "{e}");
}

#[test]
fn llama_tiny_is_causal() {
    // Changing the last token must not change the logits of earlier positions.
    let m = builtin("llama-tiny").unwrap();
    let sizes = SymbolSizes::parse("B=1,S=6").unwrap();
    let a = sample_inputs(&m, "main", &sizes, 3).unwrap();
    let mut data = a[0].data().to_vec();
    data[5] = (data[5] + 1.0) % 256.0;
    let b = fuselage_ir::Tensor::new(a[0].dtype(), a[0].shape().to_vec(), data).unwrap();
    let la = Reference.run(&m, "main", &a).unwrap();
    let lb = Reference.run(&m, "main", &[b]).unwrap();
    let v = 256;
    assert_eq!(la[0].data()[..5 * v], lb[0].data()[..5 * v]);
    assert_ne!(la[0].data()[5 * v..], lb[0].data()[5 * v..]);
}
