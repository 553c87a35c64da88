//! Real ONNX exports with symbolic batch and sequence (or spatial) dims — HF BERT and Llama
//! through torch's TorchScript exporter (opset 14/17, shape subgraphs) and its dynamo exporter
//! (opset 20), an SD-style UNet (opset 18, both exporters), and an int8 BERT made by ONNX
//! Runtime's `quantize_dynamic` — imported once and run for several bindings of their symbols on
//! the reference interpreter and on the lowered CPU program, against ONNX Runtime's outputs
//! (`frontends/tests/fixtures/onnx-exports`, made by `scripts/onnx-exports.py`).

use fuselage_ir::{Module, Tensor};
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("frontends/tests/fixtures/onnx-exports")
}

fn npys(dir: &Path) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "npy"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, fuselage_ir::npy::read_npy(&p).unwrap())
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Largest |got − want| relative to the largest |want|.
fn rel_err(got: &Tensor, want: &Tensor) -> f64 {
    assert_eq!(got.shape(), want.shape());
    let scale = want
        .data()
        .iter()
        .fold(0f64, |a, b| a.max(b.abs()))
        .max(1e-6);
    let err = got
        .data()
        .iter()
        .zip(want.data())
        .fold(0f64, |a, (g, w)| a.max((g - w).abs()));
    err / scale
}

/// Run every case of one exported model on both executors; returns the worst relative error.
fn check(model: &str) -> f64 {
    let dir = fixtures().join(model);
    let m: Module = fuselage::load(dir.join("model.onnx").to_str().unwrap())
        .unwrap_or_else(|e| panic!("{model}: {e}"));
    // Symbolic inputs: the model is typed once for every binding.
    let entry = m.entry().unwrap();
    assert!(
        entry.input_types().iter().any(|t| !t.symbols().is_empty()),
        "{model}: expected symbolic input dims"
    );
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 2, "{model}: at least two bindings");
    let mut worst = 0f64;
    for backend in [fuselage::Backend::Reference, fuselage::Backend::Cpu] {
        let exec = fuselage::executor(&m, backend).unwrap();
        for case in &cases {
            let inputs = npys(&case.join("in"));
            let want = npys(&case.join("out"));
            let given = inputs.into_iter().map(|(n, t)| (Some(n), t)).collect();
            let inputs = fuselage::bind_named_inputs(&m, given).unwrap();
            let got = fuselage::run_with(&m, &inputs, exec.as_ref())
                .unwrap_or_else(|e| panic!("{model} {}: {e}", case.display()));
            for (name, w) in &want {
                let (_, g) = got
                    .iter()
                    .find(|(n, _)| n == name)
                    .unwrap_or_else(|| panic!("{model}: no output {name}"));
                let e = rel_err(g, w);
                assert!(
                    e <= 1e-4,
                    "{model} {} output {name} on {backend:?}: relative error {e:e} (ONNX Runtime \
                     vs fuselage)",
                    case.display()
                );
                worst = worst.max(e);
            }
        }
    }
    println!("{model}: worst relative error vs ONNX Runtime {worst:.2e}");
    worst
}

#[test]
fn bert_torchscript_opset14_matches_onnx_runtime() {
    check("bert-legacy-opset14");
}

#[test]
fn bert_torchscript_opset17_matches_onnx_runtime() {
    check("bert-legacy-opset17");
}

#[test]
fn bert_dynamo_matches_onnx_runtime() {
    check("bert-dynamo");
}

#[test]
fn bert_int8_quantize_dynamic_matches_onnx_runtime() {
    check("bert-legacy-opset14-int8");
}

#[test]
fn llama_torchscript_matches_onnx_runtime() {
    check("llama-legacy");
}

#[test]
fn llama_dynamo_matches_onnx_runtime() {
    check("llama-dynamo");
}

#[test]
fn sd_unet_torchscript_matches_onnx_runtime() {
    check("unet-sd");
}

#[test]
fn sd_unet_dynamo_matches_onnx_runtime() {
    check("unet-sd-dynamo");
}

/// The UNet runs only for even spatial sizes (a stride-2 downsample is concatenated with an
/// upsample): the importer records `height % 2 == 0` and an odd size is a clear error when
/// inputs are bound, not a wrong answer or a shape error deep in the graph.
#[test]
fn unet_assumption_is_checked_at_binding() {
    let path = fixtures().join("unet-sd/model.onnx");
    let im = fuselage_frontends::onnx::load_onnx_with(&path, &Default::default()).unwrap();
    assert!(
        im.notes.iter().any(|n| n.contains("height % 2 == 0")),
        "{:?}",
        im.notes
    );
    let m = im.module;
    let case = fixtures().join("unet-sd/case_0/in");
    let mut given = vec![];
    for (n, t) in npys(&case) {
        let t = if n == "sample" {
            // [1, 4, 8, 8] → [1, 4, 7, 8]
            let s = t.shape().to_vec();
            let data: Vec<f64> = t.data()[..s[0] * s[1] * 7 * s[3]].to_vec();
            Tensor::new(t.dtype(), vec![s[0], s[1], 7, s[3]], data).unwrap()
        } else {
            t
        };
        given.push((Some(n), t));
    }
    let inputs = fuselage::bind_named_inputs(&m, given).unwrap();
    let exec = fuselage::executor(&m, fuselage::Backend::Reference).unwrap();
    let e = fuselage::run_with(&m, &inputs, exec.as_ref())
        .unwrap_err()
        .to_string();
    assert!(e.contains("height = 7 violates height % 2 == 0"), "{e}");
}
