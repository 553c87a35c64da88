//! The CLI as a user drives it: the main job, the round trip through a written `.fir`, and one
//! clear error (never a panic) for each kind of bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fuselage(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fuselage"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run fuselage")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fuselage-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Fails with a single clear error line, non-zero exit, no panic.
fn assert_clear_error(o: &Output, must_contain: &[&str]) {
    let e = stderr(o);
    assert!(!o.status.success(), "expected failure, got success: {e}");
    assert!(!e.contains("panicked"), "panicked: {e}");
    assert!(e.starts_with("error: "), "{e}");
    for m in must_contain {
        assert!(e.contains(m), "`{m}` not in: {e}");
    }
}

fn read_npy(p: &Path) -> fuselage::ir::Tensor {
    fuselage::npy::read_npy(p).unwrap()
}

#[test]
fn compile_bert_tiny_with_canonicalize_then_run_the_written_fir() {
    let out = tmp("bert-canon.fir");
    let o = fuselage(&[
        "compile",
        "builtin:bert-tiny",
        "--pipeline",
        "pipelines/canonicalize.toml",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report = stdout(&o);
    assert!(report.contains("canonicalize"), "{report}");
    assert!(report.contains("ok"), "numeric check column: {report}");

    // The compiled model is smaller and fused.
    let m = fuselage::load(out.to_str().unwrap()).unwrap();
    let hist = m.op_histogram();
    assert_eq!(hist.get("layer_norm"), Some(&5), "{hist:?}");
    assert_eq!(hist.get("gelu"), Some(&2), "{hist:?}");
    assert!(!hist.contains_key("erf"), "{hist:?}");

    // Same inputs, same outputs: original vs the written .fir, through `fuselage run`.
    let run = |model: &str, tag: &str| {
        let a = tmp(&format!("{tag}-h.npy"));
        let b = tmp(&format!("{tag}-e.npy"));
        let o = fuselage(&[
            "run",
            model,
            "--bind",
            "B=2,S=7",
            "--seed",
            "3",
            "--output",
            &format!("last_hidden_state={}", a.display()),
            "--output",
            &format!("sentence_embedding={}", b.display()),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        (read_npy(&a), read_npy(&b))
    };
    let (h0, e0) = run("builtin:bert-tiny", "orig");
    let (h1, e1) = run(out.to_str().unwrap(), "canon");
    for (x, y) in [(&h0, &h1), (&e0, &e1)] {
        assert_eq!(x.shape(), y.shape());
        // Fused ops round once where the primitives rounded per step: f32-ulp-level agreement.
        for (a, b) in x.data().iter().zip(y.data()) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + a.abs()), "{a} vs {b}");
        }
    }
}

#[test]
fn written_fir_runs_bit_identically_to_the_compiled_module() {
    let out = tmp("llama-clean.fir");
    let o = fuselage(&[
        "compile",
        "builtin:llama-tiny",
        "--pipeline",
        "dce,fixpoint(cse,fold-constants)",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let a = fuselage(&["run", "builtin:llama-tiny", "--bind", "B=1,S=5"]);
    let b = fuselage(&["run", out.to_str().unwrap(), "--bind", "B=1,S=5"]);
    assert!(a.status.success() && b.status.success());
    // dce/cse/fold are exact: the printed checksums agree to the last digit.
    assert_eq!(stdout(&a), stdout(&b));
}

#[test]
fn passes_lists_every_standard_pass_with_options() {
    let o = fuselage(&["passes"]);
    assert!(o.status.success());
    let s = stdout(&o);
    for p in [
        "dce",
        "cse",
        "fold-constants",
        "shape-infer",
        "canonicalize",
        "node-limit",
    ] {
        assert!(s.contains(p), "{p} missing from:\n{s}");
    }
    let j = fuselage(&["passes", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).unwrap();
    assert!(v["passes"].as_array().unwrap().len() >= 5);
}

#[test]
fn inspect_reports_ops_parameters_and_flops() {
    let o = fuselage(&["inspect", "builtin:llama-tiny", "--bind", "S=16", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ops"]["attention"], 2);
    assert!(v["parameters"].as_u64().unwrap() > 10_000);
    assert!(v["flops_per_token"].as_f64().unwrap() > 0.0);
    assert_eq!(v["tokens"], 16);
}

#[test]
fn malformed_fir_gives_file_line_column() {
    let p = tmp("bad.fir");
    std::fs::write(
        &p,
        "module {\n  func @main(%0 \"x\": f32[2]) {\n    %1 = add(%0, %0 : f32[2]\n    return %1 \"y\"\n  }\n}\n",
    )
    .unwrap();
    let o = fuselage(&["run", p.to_str().unwrap()]);
    assert_clear_error(&o, &[&format!("{}:3:", p.display())]);
}

#[test]
fn type_error_in_fir_names_the_node_and_types() {
    let p = tmp("type.fir");
    std::fs::write(
        &p,
        "module {\n  func @main(%0 \"x\": f32[2], %1 \"w\": f32[3]) {\n    %2 = add(%0, %1) : f32[2]\n    return %2 \"y\"\n  }\n}\n",
    )
    .unwrap();
    let o = fuselage(&["run", p.to_str().unwrap()]);
    assert_clear_error(&o, &["add", "broadcast"]);
}

#[test]
fn unknown_pass_lists_the_allowed_ones() {
    let o = fuselage(&["compile", "builtin:mlp", "--pipeline", "dce,frobnicate"]);
    assert_clear_error(&o, &["frobnicate", "cse", "fold-constants"]);
}

#[test]
fn unknown_pass_option_lists_the_allowed_keys() {
    let o = fuselage(&[
        "compile",
        "builtin:mlp",
        "--pipeline",
        "canonicalize{node-limt=5}",
    ]);
    assert_clear_error(&o, &["node-limt", "node-limit"]);
}

#[test]
fn unknown_model_lists_the_builtins() {
    let o = fuselage(&["run", "builtin:gpt-5"]);
    assert_clear_error(&o, &["gpt-5", "bert-tiny", "llama-tiny"]);
    let o = fuselage(&["run", "model.onnx.txt"]);
    assert_clear_error(&o, &["builtin:NAME"]);
}

#[test]
fn wrong_inputs_name_what_the_model_takes() {
    let x = tmp("x.npy");
    fuselage::npy::write_npy(
        &x,
        &fuselage::ir::Tensor::from_f32(vec![3], &[1., 2., 3.]).unwrap(),
    )
    .unwrap();
    let o = fuselage(&[
        "run",
        "builtin:mlp",
        "--input",
        &format!("y={}", x.display()),
    ]);
    assert_clear_error(&o, &["no input named `y`", "x"]);
    let o = fuselage(&["run", "builtin:mlp", "--input", x.to_str().unwrap()]);
    assert_clear_error(&o, &["f32[B,64]"]);
}

#[test]
fn run_reads_and_writes_npy() {
    let x = tmp("mlp-x.npy");
    let y = tmp("mlp-y.npy");
    let xs: Vec<f32> = (0..128).map(|i| (i as f32 - 64.0) / 32.0).collect();
    fuselage::npy::write_npy(
        &x,
        &fuselage::ir::Tensor::from_f32(vec![2, 64], &xs).unwrap(),
    )
    .unwrap();
    let o = fuselage(&[
        "run",
        "builtin:mlp",
        "--input",
        x.to_str().unwrap(),
        "--output",
        y.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = fuselage::load("builtin:mlp").unwrap();
    let want = fuselage::run(&m, &[read_npy(&x)]).unwrap();
    assert_eq!(read_npy(&y), want[0].1);
}

/// 16-bit, unsigned and bf16 tensors go through `run` with their numpy element types (`<u2`,
/// `<i2`, `<u8`, bf16 as `<V2`) on the reference and on the CPU backend; integer results saturate.
/// (The CPU backend computes in f32: integers are exact where f32 holds them, as 2^41 here.)
#[test]
fn run_keeps_narrow_unsigned_and_bf16_npy_dtypes() {
    use fuselage::ir::{DType, Tensor};
    let p = tmp("ints.fir");
    std::fs::write(
        &p,
        "module {\n  func @main(%0 \"x\": u16[4], %1 \"y\": u16[4], %2 \"a\": i16[3], \
         %3 \"b\": bf16[2], %4 \"u\": u64[2]) {\n    %5 = sub(%0, %1) : u16[4]\n    \
         %6 = mul(%2, %2) : i16[3]\n    %7 = add(%3, %3) : bf16[2]\n    \
         %8 = add(%4, %4) : u64[2]\n    return %5 \"d\", %6 \"m\", %7 \"e\", %8 \"s\"\n  }\n}\n",
    )
    .unwrap();
    let ins = [
        (
            "x",
            Tensor::new(DType::U16, vec![4], vec![0.0, 5.0, 65535.0, 9.0]).unwrap(),
        ),
        (
            "y",
            Tensor::new(DType::U16, vec![4], vec![1.0, 2.0, 0.0, 9.0]).unwrap(),
        ),
        (
            "a",
            Tensor::new(DType::I16, vec![3], vec![-200.0, 3.0, 181.0]).unwrap(),
        ),
        (
            "b",
            Tensor::new(DType::BF16, vec![2], vec![1.5, -3.0]).unwrap(),
        ),
        (
            "u",
            Tensor::new(DType::U64, vec![2], vec![1099511627776.0, 7.0]).unwrap(),
        ),
    ];
    let want = [
        ("d", DType::U16, vec![0.0, 3.0, 65535.0, 0.0], "'<u2'"),
        ("m", DType::I16, vec![32767.0, 9.0, 32761.0], "'<i2'"),
        ("e", DType::BF16, vec![3.0, -6.0], "'<V2'"),
        ("s", DType::U64, vec![2199023255552.0, 14.0], "'<u8'"),
    ];
    let mut args = vec!["run".to_string(), p.display().to_string()];
    for (name, t) in &ins {
        let f = tmp(&format!("ints-{name}.npy"));
        fuselage::npy::write_npy(&f, t).unwrap();
        args.extend(["--input".into(), format!("{name}={}", f.display())]);
    }
    for backend in ["reference", "cpu"] {
        let mut a = args.clone();
        for (name, ..) in &want {
            let f = tmp(&format!("ints-{backend}-{name}.out.npy"));
            a.extend(["--output".into(), format!("{name}={}", f.display())]);
        }
        a.extend(["--backend".into(), backend.into()]);
        let o = fuselage(&a.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(o.status.success(), "{backend}: {}", stderr(&o));
        for (name, dtype, vals, descr) in &want {
            let f = tmp(&format!("ints-{backend}-{name}.out.npy"));
            let bytes = std::fs::read(&f).unwrap();
            let head = String::from_utf8_lossy(&bytes[..64]).to_string();
            assert!(head.contains(descr), "{backend} {name}: {head}");
            let t = read_npy(&f);
            assert_eq!(t.dtype(), *dtype, "{backend} {name}");
            assert_eq!(t.data(), &vals[..], "{backend} {name}");
        }
    }
}

#[test]
fn dump_dir_and_print_ir_after_and_max_steps() {
    let d = tmp("dumps");
    let _ = std::fs::remove_dir_all(&d);
    let o = fuselage(&[
        "compile",
        "builtin:mlp",
        "--pipeline",
        "dce,cse,fold-constants",
        "--dump-dir",
        d.to_str().unwrap(),
        "--print-ir-after",
        "cse",
        "--max-steps",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("IR after cse"), "{}", stderr(&o));
    let files: Vec<String> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(files.iter().any(|f| f.contains("cse")), "{files:?}");
    assert!(
        !files.iter().any(|f| f.contains("fold")),
        "max-steps 2 must stop before fold: {files:?}"
    );
    assert!(
        stdout(&o).to_lowercase().contains("stopped"),
        "{}",
        stdout(&o)
    );
}

fn model_dir(name: &str) -> String {
    fuselage::frontends::assets::find_model(name)
        .unwrap_or_else(|e| panic!("{e}"))
        .display()
        .to_string()
}

#[test]
fn run_text_on_an_encoder_folder_prints_a_unit_embedding() {
    let dir = model_dir("minilm-l6");
    let o = fuselage(&["run", &dir, "--text", "A man is eating food.", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let e: Vec<f64> = serde_json::from_value(v["embedding"].clone()).unwrap();
    assert_eq!(e.len(), 384);
    let norm = e.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-6, "{norm}");
}

#[test]
fn eval_perplexity_on_the_gguf_decoder() {
    let dir = model_dir("smollm2-135m");
    let gguf = format!("{dir}/SmolLM2-135M-Instruct.Q4_1.gguf");
    // Public-domain prose (the opening of Pride and Prejudice), written here so the test needs
    // no golden folder: the fetched models carry none.
    let text = std::env::temp_dir().join(format!("fuselage-ppl-{}.txt", std::process::id()));
    std::fs::write(
        &text,
        "It is a truth universally acknowledged, that a single man in possession of a good \
         fortune, must be in want of a wife. However little known the feelings or views of such \
         a man may be on his first entering a neighbourhood, this truth is so well fixed in the \
         minds of the surrounding families, that he is considered the rightful property of some \
         one or other of their daughters.\n",
    )
    .unwrap();
    let text = text.display().to_string();
    let o = fuselage(&[
        "eval",
        &gguf,
        "--perplexity",
        &text,
        "--tokens",
        "24",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let ppl = v["perplexity"].as_f64().unwrap();
    assert_eq!(v["tokens"], 23);
    // A trained model on English prose: far below the uniform 49152.
    assert!(ppl > 1.0 && ppl < 200.0, "{ppl}");
    let _ = std::fs::remove_file(&text);
}

#[test]
fn generate_streams_json_lines_then_a_summary() {
    let dir = model_dir("smollm2-135m");
    let gguf = format!("{dir}/SmolLM2-135M-Instruct.Q4_1.gguf");
    let prompt = "The capital of France is";
    let o = fuselage(&[
        "generate",
        &gguf,
        "--prompt",
        prompt,
        "--max-tokens",
        "5",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6, "five tokens and a summary");
    for (i, l) in lines[..5].iter().enumerate() {
        assert_eq!(l["step"], i + 1);
    }
    let s = &lines[5];
    assert!(s.get("step").is_none());
    assert_eq!(s["kv_cache"], true);
    assert_eq!(s["generated_tokens"], 5);
    let pieces: String = lines[..5]
        .iter()
        .map(|l| l["text"].as_str().unwrap())
        .collect();
    assert_eq!(s["continuation"].as_str().unwrap(), pieces);
    assert!(s["prefill_ms"].as_f64().unwrap() > 0.0);
    assert!(s["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
    // The same tokens without the cache.
    let o = fuselage(&[
        "generate",
        &gguf,
        "--prompt",
        prompt,
        "--max-tokens",
        "5",
        "--json",
        "--no-cache",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let last: serde_json::Value = serde_json::from_str(stdout(&o).lines().last().unwrap()).unwrap();
    assert_eq!(last["kv_cache"], false);
    assert_eq!(last["tokens"], s["tokens"]);
    // An encoder has no KV cache: a clear error.
    let minilm = model_dir("minilm-l6");
    let o = fuselage(&["generate", &minilm, "--prompt", "hi"]);
    assert_clear_error(&o, &["no KV cache"]);
}

#[test]
fn text_input_without_a_tokenizer_is_a_clear_error() {
    let o = fuselage(&["run", "builtin:bert-tiny", "--text", "hello"]);
    assert_clear_error(&o, &["no tokenizer"]);
}

#[test]
fn gguf_model_spec_loads_and_a_truncated_gguf_is_a_clear_error() {
    let dir =
        fuselage::frontends::assets::find_model("smollm2-135m").unwrap_or_else(|e| panic!("{e}"));
    let gguf = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let o = fuselage(&["inspect", gguf.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ops"]["attention"], 30);
    // Exactly the model card's 134,515,008 weights (RMSNorm is one op; its epsilon an attribute).
    assert_eq!(v["parameters"], 134_515_008u64);
    assert_eq!(v["ops"]["rms_norm"], 61);
    // The first 100 kB of the file: the tokenizer arrays are cut off.
    let bytes = std::fs::read(&gguf).unwrap();
    let p = tmp("cut.gguf");
    std::fs::write(&p, &bytes[..100_000]).unwrap();
    let o = fuselage(&["inspect", p.to_str().unwrap()]);
    assert_clear_error(&o, &["cut.gguf", "truncated"]);
}

#[test]
fn bench_reports_figures_and_a_per_op_profile() {
    let o = fuselage(&[
        "bench",
        "builtin:bert-tiny",
        "--batch",
        "2",
        "--seq",
        "8",
        "--warmup",
        "1",
        "--runs",
        "3",
        "--profile",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("one JSON object");
    for k in ["median_ms", "p90_ms", "min_ms", "mean_ms"] {
        assert!(v[k].as_f64().is_some_and(|x| x > 0.0), "{k} in {v}");
    }
    assert_eq!(v["backend"], "cpu");
    assert_eq!(v["runs"], 3);
    let profile = v["profile"].as_array().expect("profile");
    let keys: Vec<&str> = profile.iter().filter_map(|p| p["op"].as_str()).collect();
    // Kernel instructions are keyed `op [kernel]`.
    assert!(
        keys.contains(&"attention [attention-f32-fused]")
            && keys.contains(&"matmul [matmul-f32-gemm]"),
        "{keys:?}"
    );
    let ops: Vec<&str> = keys
        .iter()
        .map(|k| fuselage::backends::profile_op_name(k))
        .collect();
    assert!(
        ops.contains(&"attention") && ops.contains(&"add"),
        "{ops:?}"
    );
    for p in profile {
        // Every op kind ran the same number of times in each of the 3 timed runs.
        let calls = p["calls"].as_u64().unwrap();
        assert!(calls > 0 && calls % 3 == 0, "{p}");
        assert!(p["seconds"].as_f64().unwrap() >= 0.0);
    }
    // Slowest first.
    let secs: Vec<f64> = profile
        .iter()
        .map(|p| p["seconds"].as_f64().unwrap())
        .collect();
    assert!(secs.windows(2).all(|w| w[0] >= w[1]), "{secs:?}");
    assert_eq!(v["kernels"], true);
    // burn's own ops for every op: the same figures, kernels off.
    let o = fuselage(&[
        "bench",
        "builtin:bert-tiny",
        "--batch",
        "1",
        "--seq",
        "4",
        "--warmup",
        "0",
        "--runs",
        "1",
        "--no-kernels",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("one JSON object");
    assert_eq!(v["kernels"], false);
    assert!(v.get("profile").is_none(), "{v}");
    // The text form prints the table.
    let o = fuselage(&[
        "bench",
        "builtin:mlp",
        "--runs",
        "2",
        "--warmup",
        "0",
        "--batch",
        "2",
        "--profile",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("calls/run"), "{}", stdout(&o));
}

#[test]
fn kernels_lists_the_registry_and_the_cpu_features_as_json() {
    let o = fuselage(&["kernels", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("one JSON object");
    let features = v["cpu_features"].as_object().expect("cpu_features");
    for f in [
        "avx2",
        "fma",
        "avx512f",
        "avx512_bf16",
        "amx_tile",
        "amx_bf16",
    ] {
        assert!(
            features.get(f).is_some_and(|b| b.is_boolean()),
            "{f} in {v}"
        );
    }
    let kernels = v["kernels"].as_array().expect("kernels");
    assert_eq!(
        kernels.len(),
        fuselage::backends::kernels::registry::KERNELS.len()
    );
    let names: Vec<&str> = kernels.iter().filter_map(|k| k["name"].as_str()).collect();
    for want in [
        "linear-f32-gemm",
        "attention-f32-fused",
        "gelu-erf-f32",
        "rope-f32",
    ] {
        assert!(names.contains(&want), "{names:?}");
    }
    for k in kernels {
        for key in ["op", "signature", "requires", "doc"] {
            assert!(
                k[key].as_str().is_some_and(|s| !s.is_empty()),
                "{key} in {k}"
            );
        }
        assert!(k["cost"].as_u64().is_some(), "{k}");
        assert!(k["available"].is_boolean(), "{k}");
    }
    // The Markdown form is the registry's table; the text form names the features.
    let o = fuselage(&["kernels", "--markdown"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        fuselage::backends::kernels::registry::markdown_table()
    );
    let o = fuselage(&["kernels"]);
    assert!(stdout(&o).starts_with("CPU features: "), "{}", stdout(&o));
}

#[test]
fn bench_explain_lowering_reports_each_node_as_json() {
    let args = |extra: &[&'static str]| {
        let mut a = vec![
            "bench",
            "builtin:bert-tiny",
            "--batch",
            "1",
            "--seq",
            "4",
            "--warmup",
            "0",
            "--runs",
            "1",
            "--explain-lowering",
            "--json",
        ];
        a.extend_from_slice(extra);
        a
    };
    let o = fuselage(&args(&[]));
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("one JSON object");
    assert!(v["median_ms"].as_f64().is_some(), "{v}");
    let nodes = v["lowering"].as_array().expect("lowering");
    let ops = |n: &serde_json::Value| n["op"].as_str().unwrap_or("").to_string();
    let matmuls: Vec<&serde_json::Value> = nodes.iter().filter(|n| ops(n) == "matmul").collect();
    assert!(!matmuls.is_empty(), "{v}");
    for n in &matmuls {
        assert_eq!(n["lowering"], "kernel", "{n}");
        assert_eq!(n["kernel"], "matmul-f32-gemm", "{n}");
    }
    for n in nodes {
        for key in ["function", "node", "op", "lowering", "why"] {
            assert!(n[key].is_string(), "{key} in {n}");
        }
        assert!(n["rejected"].is_array(), "{n}");
        assert_ne!(n["lowering"], "host", "{n}");
    }
    // Kernels off: no kernels, and the reason says so.
    let o = fuselage(&args(&["--no-kernels"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("one JSON object");
    let nodes = v["lowering"].as_array().expect("lowering");
    assert!(nodes
        .iter()
        .all(|n| n["kernel"].is_null() && n["lowering"] != "kernel"));
    let m = nodes.iter().find(|n| ops(n) == "matmul").expect("a matmul");
    assert!(
        m["why"]
            .as_str()
            .unwrap()
            .contains("native kernels are off"),
        "{m}"
    );
    // Without --explain-lowering there is no `lowering` key; on the reference it is an error.
    let o = fuselage(&[
        "bench",
        "builtin:mlp",
        "--runs",
        "1",
        "--warmup",
        "0",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("one JSON object");
    assert!(v.get("lowering").is_none(), "{v}");
    let o = fuselage(&[
        "bench",
        "builtin:mlp",
        "--backend",
        "reference",
        "--explain-lowering",
    ]);
    assert_clear_error(&o, &["--explain-lowering", "cpu"]);
}

#[test]
fn hero_w8a8_on_minilm_eval_and_quant_report() {
    let dir = model_dir("minilm-l6");
    let sentences = tmp("hero-sentences.txt");
    std::fs::write(
        &sentences,
        "A man is eating food.\nA man is riding a white horse on an enclosed ground.\n\
         The new movie is awesome.\nA cheetah is running behind its prey.\n\
         Two men pushed carts through the woods.\nThe cat sits outside.\n",
    )
    .unwrap();
    let s = sentences.display().to_string();
    let o = fuselage(&[
        "eval",
        &dir,
        "--pipeline",
        "pipelines/hero-w8a8.toml",
        "--backend",
        "cpu",
        "--embeddings",
        &s,
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let c = v["against_uncompiled"]["cosine_mean"].as_f64().unwrap();
    assert!(c > 0.99 && c < 1.0, "W8A8 embeddings vs FP32: cosine {c}");

    let o = fuselage(&[
        "quant-report",
        &dir,
        "--pipeline",
        "pipelines/hero-w8a8.toml",
        "--text",
        &s,
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let layers = r["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 36, "every linear layer of the 6 blocks");
    assert_eq!(r["inputs"], 6);
    let sqnr: Vec<f64> = layers
        .iter()
        .map(|l| l["sqnr_db"].as_f64().unwrap())
        .collect();
    assert!(
        sqnr.windows(2).all(|w| w[0] <= w[1]),
        "worst first: {sqnr:?}"
    );
    assert!(sqnr[0] > 10.0, "{sqnr:?}");

    // m2 needs calibration text: without it a clear error, with it static feature-wise scales.
    let o = fuselage(&[
        "compile",
        &dir,
        "--pipeline",
        "pipelines/hero-m2.toml",
        "--no-numeric-check",
    ]);
    assert_clear_error(&o, &["no calibration inputs", "--calibration"]);
    let o = fuselage(&[
        "compile",
        &dir,
        "--pipeline",
        "pipelines/hero-m2.toml",
        "--calibration",
        &s,
        "--check-text",
        &s,
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let hero = r["passes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "hero-quantize")
        .unwrap();
    assert_eq!(hero["stats"]["calibration-inputs"], 6);
    assert_eq!(
        hero["stats"]["calibrated-activations"], 12,
        "attention out and FC2 of 6 blocks"
    );
    let gemms = hero["details"]["gemms"].as_array().unwrap();
    let fwq = gemms
        .iter()
        .filter(|g| g["activations"] == "feature-wise static")
        .count();
    assert_eq!(fwq, 12);

    let empty = tmp("hero-empty.txt");
    std::fs::write(&empty, "\n\n").unwrap();
    let o = fuselage(&[
        "quant-report",
        &dir,
        "--pipeline",
        "pipelines/hero-w8a8.toml",
        "--text",
        &empty.display().to_string(),
    ]);
    assert_clear_error(&o, &["calibration text", "empty"]);
    let _ = std::fs::remove_file(&sentences);
    let _ = std::fs::remove_file(&empty);
}
