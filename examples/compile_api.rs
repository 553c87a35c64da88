//! The compile API end to end: load a built-in model, compile it with a pipeline, check the
//! outputs against the original on seeded inputs, save the result and load it back.
//!
//! `cargo run --release --example compile_api`

use fuselage::ir::sample::SymbolSizes;
use fuselage::{compile, load, run, sample_inputs, save, CompileOptions, Pipeline};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let module = load("builtin:bert-tiny")?;
    let pipeline = Pipeline::parse("dce,fixpoint(cse,fold-constants),canonicalize,dce")?;
    let compiled = compile(&module, &pipeline, &CompileOptions::default())?;
    println!("{}", compiled.report.table());

    let inputs = sample_inputs(&module, &SymbolSizes::parse("B=2,S=16")?, 42)?;
    let before = run(&module, &inputs)?;
    let after = run(&compiled.module, &inputs)?;
    for ((name, a), (_, b)) in before.iter().zip(&after) {
        let max_abs = a
            .data()
            .iter()
            .zip(b.data())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        println!("{name}: max |before - after| = {max_abs:.3e}");
    }

    let path = std::env::temp_dir().join("fuselage-compile-api.fir");
    save(&compiled.module, &path)?;
    let reloaded = load(path.to_str().ok_or("non-UTF-8 temp path")?)?;
    assert!(reloaded == compiled.module, "saved module reads back equal");
    println!("saved and reloaded {}", path.display());
    Ok(())
}
