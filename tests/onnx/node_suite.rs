//! A fixed subset of the ONNX project's node conformance tests (the suite ONNX Runtime and tract
//! run), checked in under `frontends/tests/fixtures/onnx-node-suite` by
//! `scripts/onnx-suite-subset.py`: for every op type, the smallest cases fuselage passes and the
//! smallest it reports as unsupported. Each case runs as `fuselage run MODEL --input NAME=FILE …`
//! does (inputs whose values determine shapes specialize the model), on the reference
//! interpreter, and is compared as `../shared/peers/onnx_node_suite.py` compares: floats with
//! numpy's `allclose` at the case's tolerances (NaN equal to NaN), everything else (integers,
//! bools, bf16 bit patterns) exactly. Expected passes must pass; expected errors must be clean
//! errors — never a wrong answer or a panic.

use fuselage_ir::{DType, Tensor};
use std::path::{Path, PathBuf};

fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("frontends/tests/fixtures/onnx-node-suite")
}

fn npys(dir: &Path) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "npy"))
            .map(|p| {
                let name = p.file_stem().unwrap().to_string_lossy().into_owned();
                (name, fuselage_ir::npy::read_npy(&p).unwrap())
            })
            .collect(),
        Err(_) => vec![],
    };
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Pass,
    Error(String),
    Wrong(String),
}

fn close(got: &Tensor, want: &Tensor, rtol: f64, atol: f64) -> Result<(), String> {
    if got.shape() != want.shape() {
        return Err(format!("shape {:?}, want {:?}", got.shape(), want.shape()));
    }
    let float = |d: DType| d.is_float() && d != DType::BF16 && d.bits() >= 16;
    for (i, (g, w)) in got.data().iter().zip(want.data()).enumerate() {
        let ok = if float(got.dtype()) || float(want.dtype()) {
            (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= atol + rtol * w.abs()
        } else {
            // Exact (integers, bools, bf16 bits: NaN only equals NaN).
            g == w || (g.is_nan() && w.is_nan())
        };
        if !ok {
            return Err(format!("element {i}: {g} vs {w}"));
        }
    }
    Ok(())
}

fn run_case(dir: &Path, rtol: f64, atol: f64) -> Outcome {
    let inputs = npys(&dir.join("in"));
    let options = fuselage::LoadOptions {
        input_values: inputs.iter().cloned().collect(),
    };
    let loaded = match fuselage::load_with(dir.join("model.onnx").to_str().unwrap(), &options) {
        Ok(l) => l,
        Err(e) => return Outcome::Error(e.to_string()),
    };
    let given = inputs
        .into_iter()
        .filter(|(n, _)| !loaded.specialized.contains(n))
        .map(|(n, t)| (Some(n), t))
        .collect();
    let m = loaded.module;
    let run = || -> Result<Vec<(String, Tensor)>, String> {
        let inputs = fuselage::bind_named_inputs(&m, given).map_err(|e| e.to_string())?;
        let exec =
            fuselage::executor(&m, fuselage::Backend::Reference).map_err(|e| e.to_string())?;
        fuselage::run_with(&m, &inputs, exec.as_ref()).map_err(|e| e.to_string())
    };
    let got = match run() {
        Ok(g) => g,
        Err(e) => return Outcome::Error(e),
    };
    for (name, want) in npys(&dir.join("out")) {
        let Some((_, g)) = got.iter().find(|(n, _)| *n == name) else {
            return Outcome::Wrong(format!("no output {name}"));
        };
        if let Err(m) = close(g, &want, rtol, atol) {
            return Outcome::Wrong(format!("output {name}: {m}"));
        }
    }
    Outcome::Pass
}

#[test]
fn node_suite_subset_passes_with_no_wrong_answers_or_panics() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(suite_dir())
        .expect("the checked-in node suite subset")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("case.json").is_file())
        .collect();
    cases.sort();
    assert!(cases.len() > 300, "subset has {} cases", cases.len());
    let (mut pass, mut errors) = (0, 0);
    let mut failures = vec![];
    for dir in &cases {
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
        let rtol = meta["rtol"].as_f64().unwrap_or(1e-3);
        let atol = meta["atol"].as_f64().unwrap_or(1e-7);
        let expect = meta["expect"].as_str().unwrap_or("pass");
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let outcome = std::panic::catch_unwind(|| run_case(dir, rtol, atol))
            .unwrap_or_else(|_| Outcome::Wrong("panicked".into()));
        match (expect, &outcome) {
            ("pass", Outcome::Pass) => pass += 1,
            ("error", Outcome::Error(_)) => errors += 1,
            // An unsupported case that now passes is good news, not a failure.
            ("error", Outcome::Pass) => pass += 1,
            _ => failures.push(format!("{name} (expected {expect}): {outcome:?}")),
        }
    }
    println!(
        "ONNX node suite subset: {} cases, {pass} pass, {errors} clean errors",
        cases.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
