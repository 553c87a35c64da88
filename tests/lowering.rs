//! Model-level conformance of the lowering: the built-in models (and the standard pipeline's
//! output of them) run on the reference interpreter and on the lowered CPU program (burn-ndarray,
//! f32, native kernels on and off) agree within f32 tolerance.

use fuselage_backends::{lower, CpuBackend, LowerOptions};
use fuselage_ir::sample::SymbolSizes;
use fuselage_ir::{DType, Executor, Reference, Tensor};

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

fn model_dir(name: &str) -> std::path::PathBuf {
    fuselage::frontends::assets::find_model(name).unwrap_or_else(|e| panic!("{e}"))
}

/// The cosine of each golden MiniLM sentence's embedding by `m` on the lowered CPU program to
/// the f32 golden embedding.
fn minilm_golden_cosines(dir: &std::path::Path, m: &fuselage_ir::Module) -> Vec<f64> {
    let tok = fuselage::tasks::tokenizer_for(dir.to_str().unwrap())
        .unwrap()
        .unwrap();
    let exec = fuselage::executor(m, fuselage::Backend::Cpu).unwrap();
    let golden = fuselage::npy::read_npy(&dir.join("golden/embeddings.npy")).unwrap();
    let text = std::fs::read_to_string(dir.join("golden/sentences.txt")).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let dim = golden.shape()[1];
    assert_eq!(lines.len(), golden.shape()[0]);
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let e = fuselage::tasks::embed(m, &tok, l, exec.as_ref()).unwrap();
            fuselage::tasks::cosine(&e, &golden.data()[i * dim..(i + 1) * dim])
        })
        .collect()
}

/// MiniLM-L6 on the lowered CPU program: every golden sentence's embedding within the model
/// README's cosine (≥ 0.99999, tighter than the 0.9999).
#[test]
fn minilm_embeddings_on_the_lowered_cpu_program_match_golden() {
    let dir = model_dir("minilm-l6");
    let m = fuselage::load(dir.to_str().unwrap()).unwrap();
    for (i, c) in minilm_golden_cosines(&dir, &m).into_iter().enumerate() {
        assert!(c >= 0.99999, "sentence {i}: cosine {c}");
    }
}

/// MiniLM-L6 as a bf16 program on the lowered CPU program: every golden sentence's embedding
/// within cosine 0.999 of the f32 golden (measured: 0.99986 at the worst sentence).
#[test]
fn minilm_bf16_program_embeddings_stay_close_to_golden() {
    let dir = model_dir("minilm-l6");
    let m = bf16_program(&fuselage::load(dir.to_str().unwrap()).unwrap());
    let worst = minilm_golden_cosines(&dir, &m)
        .into_iter()
        .fold(1f64, f64::min);
    assert!(worst >= 0.999, "worst cosine {worst}");
    // bf16 is not f32: the embeddings differ from the f32 golden (the pass did something).
    assert!(worst < 0.999999, "worst cosine {worst}");
}

/// The liveness plan's frees feed the program's buffer pool: from the second run on, the
/// kernel results of MiniLM take the storage of freed values instead of fresh allocations, and
/// reused buffers poisoned with NaN (kernels that promise to write every element) change no
/// output bit.
#[test]
fn freed_values_are_reused_by_later_kernel_results() {
    let dir = model_dir("minilm-l6");
    let m = fuselage::load(dir.to_str().unwrap()).unwrap();
    let entry = m.entry_name().unwrap().to_string();
    let sizes = SymbolSizes::parse("B=2,S=64").unwrap();
    let inputs = fuselage_ir::sample::sample_inputs(&m, &entry, &sizes, 3).unwrap();
    let p = lower::<CpuBackend>(&m, &entry, &Default::default(), &LowerOptions::default()).unwrap();
    let first = p.run_tensors(&inputs).unwrap();
    let s1 = p.last_run_stats();
    // Even the first run reuses: a value freed early serves a later result of its size.
    assert!(s1.pool_reused > 0, "{s1:?}");
    p.buffer_pool().set_poison(true);
    for _ in 0..2 {
        let again = p.run_tensors(&inputs).unwrap();
        for (a, b) in first.iter().zip(&again) {
            assert_eq!(a.data(), b.data());
        }
        let s = p.last_run_stats();
        eprintln!("first run {s1:?}, then {s:?}");
        assert!(
            s.pool_reused > s1.pool_reused && s.pool_fresh * 10 < s.pool_reused,
            "first run {s1:?}, then {s:?}"
        );
        assert!(
            s.pool_held_bytes > 0 && s.pool_held_bytes <= 2 * s.peak_bytes,
            "{s:?}"
        );
    }
}

/// SmolLM2-135M on the lowered CPU program: perplexity of the golden 512 tokens within 0.5 % of
/// the golden 16.1413 (measured: 16.14130, 3e-6 relative).
#[test]
fn smollm2_perplexity_on_the_lowered_cpu_program_matches_golden() {
    let dir = model_dir("smollm2-135m");
    let gguf = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let m = fuselage::load(gguf.to_str().unwrap()).unwrap();
    let tok = fuselage::tasks::tokenizer_for(gguf.to_str().unwrap())
        .unwrap()
        .unwrap();
    let exec = fuselage::executor(&m, fuselage::Backend::Cpu).unwrap();
    let text = std::fs::read_to_string(dir.join("golden/text.txt")).unwrap();
    let (ppl, n) = fuselage::tasks::perplexity(&m, &tok, &text, None, exec.as_ref()).unwrap();
    assert_eq!(n, 511);
    let golden = 16.1413;
    assert!(
        ((ppl - golden) / golden).abs() < 0.005,
        "perplexity {ppl} vs {golden}"
    );
}

#[test]
fn constant_subexpressions_are_computed_once_at_lowering() {
    use fuselage_backends::Lowering;
    use fuselage_frontends::builder::ModelBuilder;
    use fuselage_ir::{Constant, DType, Dim};
    // y = x · transpose(w): the weight transpose an HF import keeps for zero-copy loading.
    let mut b = ModelBuilder::new(0);
    let x = b.input("x", DType::F32, &[Dim::sym("B"), Dim::from(3u64)]);
    let wv: Vec<f32> = (0..12).map(|i| i as f32 * 0.25 - 1.0).collect();
    let w = b
        .add_constant(
            "w",
            Constant::from_tensor(&Tensor::from_f32(vec![4, 3], &wv).unwrap()),
        )
        .unwrap();
    let wt = b.transpose(w, &[1, 0]).unwrap();
    let y = b.linear_with("fc", x, wt, None).unwrap();
    b.output("y", y);
    let m = b.finish().unwrap();
    let xs = Tensor::from_f32(vec![2, 3], &[1., 2., 3., -1., 0.5, 4.]).unwrap();
    let want = Reference
        .run(&m, "main", std::slice::from_ref(&xs))
        .unwrap();
    let nr = fuselage_backends::kernels::packed_gemm::GemmIsa::detect().nr() as u64;
    for (hoist, prepare) in [(true, false), (false, false), (true, true), (false, true)] {
        let opts = LowerOptions {
            hoist_constants: hoist,
            prepare_constants: prepare,
            ..Default::default()
        };
        let p = lower::<CpuBackend>(&m, "main", &Default::default(), &opts).unwrap();
        let transpose = p
            .lowering_report()
            .into_iter()
            .find(|(op, _, _)| op == "transpose")
            .unwrap();
        assert_eq!(
            transpose.1 == Lowering::Folded,
            hoist,
            "{:?}",
            p.lowering_report()
        );
        let got = p.run_tensors(std::slice::from_ref(&xs)).unwrap();
        assert_close("hoist", 0, &got[0], &want[0]);
        // Either the weight, its transpose or the packed transpose is held, never two of them:
        // packed, 3 rows of one zero-padded panel of `nr` columns.
        let want_bytes = if hoist && prepare { 3 * nr * 4 } else { 48 };
        assert_eq!(
            p.last_run_stats().constant_bytes,
            want_bytes,
            "hoist {hoist}, prepare {prepare}"
        );
    }
}

#[test]
fn large_broadcasts_of_constants_are_not_materialized_at_lowering() {
    use fuselage_backends::Lowering;
    use fuselage_frontends::builder::ModelBuilder;
    use fuselage_ir::{Constant, DType, Dim, Op};
    // y = x + broadcast_to(c, [512, 512]): folding would store 256 Ki elements for 1 of input.
    let mut b = ModelBuilder::new(0);
    let x = b.input("x", DType::F32, &[Dim::from(512u64), Dim::from(512u64)]);
    let c = b
        .add_constant(
            "c",
            Constant::from_tensor(&Tensor::from_f32(vec![1], &[2.5]).unwrap()),
        )
        .unwrap();
    let big = b
        .op(
            Op::from_attrs("broadcast_to", serde_json::json!({"shape": [512, 512]})).unwrap(),
            &[c],
        )
        .unwrap();
    let y = b
        .op(
            Op::from_attrs("add", serde_json::json!({})).unwrap(),
            &[x, big],
        )
        .unwrap();
    b.output("y", y);
    let m = b.finish().unwrap();
    let p = lower::<CpuBackend>(&m, "main", &Default::default(), &LowerOptions::default()).unwrap();
    let report = p.lowering_report();
    assert!(
        report
            .iter()
            .any(|(op, how, _)| op == "broadcast_to" && *how != Lowering::Folded),
        "{report:?}"
    );
    let xs = Tensor::from_f32(vec![512, 512], &vec![1.0; 512 * 512]).unwrap();
    let got = p.run_tensors(&[xs]).unwrap();
    assert!(got[0].data().iter().all(|&v| v == 3.5));
    assert_eq!(p.last_run_stats().constant_bytes, 4);
}

/// The op → registry kernel each hot FP32 op of the real models must get.
fn expected_kernel(op: &str) -> Option<&'static [&'static str]> {
    Some(match op {
        "matmul" => &["matmul-f32-gemm"],
        "linear" => &["linear-f32-gemm"],
        "attention" => &["attention-f32-fused"],
        "rms_norm" => &["rms_norm-f32"],
        "layer_norm" => &["layer_norm-f32"],
        "softmax" => &["softmax-f32-rows"],
        "gelu" => &["gelu-erf-f32", "gelu-tanh-f32"],
        "silu" => &["silu-f32"],
        "rope" => &["rope-f32"],
        _ => return None,
    })
}

/// The model at `path` as a bf16 program (`precision{dtype=bf16}`; no numeric check here:
/// the accuracy tests below and `fuselage eval --pipeline precision` check the numbers).
fn bf16_program(m: &fuselage_ir::Module) -> fuselage_ir::Module {
    let opts = fuselage::CompileOptions {
        numeric_check: false,
        ..Default::default()
    };
    let pipeline = fuselage::Pipeline::parse("precision{dtype=bf16}").unwrap();
    fuselage::compile(m, &pipeline, &opts).unwrap().module
}

/// MiniLM-L6 (safetensors folder) and SmolLM2-135M (GGUF, dequantized to f32), as imported
/// (f32) and as bf16 programs, lowered with the default options: every hot op runs on its
/// registry kernel, nothing on the host, and every weight product reads a weight packed at
/// lowering.
#[test]
fn minilm_and_smollm2_hot_ops_choose_registry_kernels() {
    use fuselage_backends::Lowering;
    let minilm = model_dir("minilm-l6");
    let smollm2 = model_dir("smollm2-135m").join("SmolLM2-135M-Instruct.Q4_1.gguf");
    for (path, must_have, bf16) in [
        (
            &minilm,
            &["linear", "attention", "layer_norm", "gelu"][..],
            false,
        ),
        (
            &smollm2,
            &["matmul", "attention", "silu", "rope"][..],
            false,
        ),
        (
            &minilm,
            &["linear", "attention", "layer_norm", "gelu"][..],
            true,
        ),
        (&smollm2, &["matmul", "attention", "silu", "rope"][..], true),
    ] {
        let imported = fuselage::load(path.to_str().unwrap()).unwrap();
        let m = if bf16 {
            bf16_program(&imported)
        } else {
            imported
        };
        let entry = m.entry_name().unwrap().to_string();
        // The program computes in the dtype it claims: its hot ops' results are bf16.
        let want_dtype = if bf16 { DType::BF16 } else { DType::F32 };
        let hot = m.functions[&entry]
            .nodes()
            .filter(|(_, n)| must_have.contains(&n.op.name()))
            .collect::<Vec<_>>();
        assert!(!hot.is_empty());
        for (id, n) in hot {
            assert_eq!(
                n.results[0].dtype,
                want_dtype,
                "{}: %{}",
                path.display(),
                id.0
            );
        }
        let p =
            lower::<CpuBackend>(&m, &entry, &Default::default(), &LowerOptions::default()).unwrap();
        let nodes = p.explain_lowering();
        let mut seen = std::collections::BTreeMap::<String, usize>::new();
        for n in &nodes {
            assert_ne!(
                n.lowering,
                Lowering::Host,
                "{} (bf16: {bf16}): {} ({}) runs on the host: {}",
                path.display(),
                n.node,
                n.op,
                n.why
            );
            let Some(want) = expected_kernel(&n.op) else {
                continue;
            };
            assert_eq!(
                n.lowering,
                Lowering::Kernel,
                "{}: {} ({}): {} {:?}",
                path.display(),
                n.node,
                n.op,
                n.why,
                n.rejected
            );
            let k = n.kernel.expect("a kernel node names its kernel");
            assert!(want.contains(&k), "{}: {} got {k}", path.display(), n.op);
            // Every weight product of these models reads a constant weight: packed once, at
            // lowering, for the GEMM's micro-kernel.
            if n.op == "linear" || n.op == "matmul" {
                assert!(
                    n.prepared
                        .as_deref()
                        .is_some_and(|p| p.contains("packed for the")),
                    "{} (bf16: {bf16}): {} ({}) has no packed weight: {:?}",
                    path.display(),
                    n.node,
                    n.op,
                    n.prepared
                );
            }
            *seen.entry(n.op.clone()).or_default() += 1;
        }
        for op in must_have {
            assert!(
                seen.get(*op).is_some_and(|&c| c > 0),
                "{}: no {op} node ({seen:?})",
                path.display()
            );
        }
        // The summary agrees with the per-node report.
        let report = p.lowering_report();
        let kernels: usize = report
            .iter()
            .filter(|(_, how, _)| *how == Lowering::Kernel)
            .map(|(_, _, n)| n)
            .sum();
        assert_eq!(kernels, seen.values().sum::<usize>(), "{report:?}");
    }
}

/// Weights packed at lowering (`LowerOptions::prepare_constants`, the default) give MiniLM's
/// outputs within f32 rounding of the program whose GEMM packs them per call, and the program
/// keeps only the packed form: its constants take no more bytes than the unpacked program's
/// (padding to whole panels aside), not twice as many.
#[test]
fn constant_weights_are_packed_once_at_lowering() {
    let dir = model_dir("minilm-l6");
    let m = fuselage::load(dir.to_str().unwrap()).unwrap();
    let entry = m.entry_name().unwrap().to_string();
    let sizes = SymbolSizes::parse("B=2,S=16").unwrap();
    let inputs = fuselage_ir::sample::sample_inputs(&m, &entry, &sizes, 3).unwrap();
    let run = |prepare_constants: bool| {
        let opts = LowerOptions {
            prepare_constants,
            ..Default::default()
        };
        let p = lower::<CpuBackend>(&m, &entry, &Default::default(), &opts).unwrap();
        let packed = p
            .explain_lowering()
            .iter()
            .filter(|n| n.prepared.is_some())
            .count();
        let out = p.run_tensors(&inputs).unwrap();
        (out, packed, p.last_run_stats().constant_bytes)
    };
    let (on, packed_on, bytes_on) = run(true);
    let (off, packed_off, bytes_off) = run(false);
    // 6 layers × (q, k, v, output, intermediate, output) linears, and the pooler's.
    assert!(packed_on >= 36, "{packed_on} weights packed");
    assert_eq!(packed_off, 0);
    assert!(
        bytes_on <= bytes_off + bytes_off / 100,
        "constants {bytes_on} bytes packed against {bytes_off} unpacked"
    );
    assert!(
        bytes_on * 2 > bytes_off,
        "{bytes_on} against {bytes_off}: the packed weights are not counted"
    );
    for (k, (a, b)) in on.iter().zip(&off).enumerate() {
        assert_eq!(a.shape(), b.shape());
        let scale = b.data().iter().fold(0f64, |x, y| x.max(y.abs())).max(1e-3);
        for (i, (x, y)) in a.data().iter().zip(b.data()).enumerate() {
            assert!(
                (x - y).abs() <= 1e-5 * scale,
                "output {k} element {i}: packed {x} vs unpacked {y}"
            );
        }
    }
}

/// An i16 `linear` next to an f32 one: the f32 kernel takes the f32 node and rejects the i16
/// one naming the dtype; with native kernels off no node gets a kernel. Profiles key kernel
/// instructions `op [kernel]`.
#[test]
fn explain_lowering_reports_kernels_and_rejections() {
    use fuselage_backends::{profile_op_name, render_explain, Lowering};
    use fuselage_frontends::builder::ModelBuilder;
    use fuselage_ir::{DType, Dim, Executor, Op};
    let mut b = ModelBuilder::new(0);
    let dims = |r: u64, c: u64| [Dim::from(r), Dim::from(c)];
    let xb = b.input("xb", DType::I16, &dims(2, 3));
    let wb = b.input("wb", DType::I16, &dims(3, 4));
    let x = b.input("x", DType::F32, &dims(2, 3));
    let w = b.input("w", DType::F32, &dims(3, 4));
    let linear = || Op::from_attrs("linear", serde_json::json!({})).unwrap();
    let yb = b.op(linear(), &[xb, wb]).unwrap();
    let y = b.op(linear(), &[x, w]).unwrap();
    b.output("yb", yb);
    b.output("y", y);
    let m = b.finish().unwrap();
    let p = lower::<CpuBackend>(&m, "main", &Default::default(), &LowerOptions::default()).unwrap();
    let nodes = p.explain_lowering();
    let linears: Vec<_> = nodes.iter().filter(|n| n.op == "linear").collect();
    assert_eq!(linears.len(), 2, "{nodes:?}");
    let (i16, f32) = (linears[0], linears[1]);
    assert_eq!(i16.lowering, Lowering::Native);
    assert_eq!(i16.kernel, None);
    assert_eq!(i16.rejected.len(), 1, "{i16:?}");
    assert_eq!(i16.rejected[0].kernel, "linear-f32-gemm");
    assert_eq!(i16.rejected[0].reason, "operand 0 is i16");
    assert!(i16.why.contains("no kernel"), "{}", i16.why);
    assert_eq!(f32.lowering, Lowering::Kernel);
    assert_eq!(f32.kernel, Some("linear-f32-gemm"));
    assert!(f32.rejected.is_empty());
    let text = render_explain(&nodes);
    assert!(
        text.contains("rejected linear-f32-gemm: operand 0 is i16"),
        "{text}"
    );
    assert!(text.contains("Kernel linear-f32-gemm"), "{text}");
    // Both run, and the profile names the kernel of the f32 node.
    let inputs: Vec<Tensor> = [("xb", 6), ("wb", 12), ("x", 6), ("w", 12)]
        .iter()
        .map(|&(n, len)| {
            let shape = if n.starts_with('x') {
                vec![2, 3]
            } else {
                vec![3, 4]
            };
            let (dt, step) = if n.ends_with('b') {
                (DType::I16, 1.0)
            } else {
                (DType::F32, 0.25)
            };
            let v: Vec<f64> = (0..len).map(|i| i as f64 * step - 1.0).collect();
            Tensor::new(dt, shape, v).unwrap()
        })
        .collect();
    p.set_profiling(true);
    let got = p.run_tensors(&inputs).unwrap();
    let want = Reference.run(&m, "main", &inputs).unwrap();
    for (k, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_close("i16/f32 linear", k, g, w);
    }
    let keys: Vec<String> = p.op_profile().into_iter().map(|t| t.op).collect();
    assert!(
        keys.contains(&"linear [linear-f32-gemm]".to_string()),
        "{keys:?}"
    );
    assert!(keys.contains(&"linear".to_string()), "{keys:?}");
    assert!(
        keys.iter().all(|k| profile_op_name(k) == "linear"),
        "{keys:?}"
    );
    // Kernels off: no node gets one, and none is considered.
    let off = LowerOptions {
        native_kernels: false,
        ..Default::default()
    };
    let p = lower::<CpuBackend>(&m, "main", &Default::default(), &off).unwrap();
    for n in p.explain_lowering() {
        assert_ne!(n.lowering, Lowering::Kernel, "{n:?}");
        assert_eq!(n.kernel, None);
        assert!(n.rejected.is_empty(), "{n:?}");
        if n.op == "linear" {
            assert!(n.why.contains("native kernels are off"), "{}", n.why);
        }
    }
}

/// A session's state replaced by the run is moved into it (the program may update it in place):
/// `w ← w − g` three times on the lowered program keeps the right values; a run missing a
/// state fails before touching any other state.
#[test]
fn session_state_replaced_by_a_run_is_updated() {
    use fuselage_frontends::builder::ModelBuilder;
    use fuselage_ir::Dim;
    let n = 50_000usize;
    let mut b = ModelBuilder::new(0);
    let w = b.input("w", DType::F32, &[Dim::from(n as u64)]);
    let g = b.input("g", DType::F32, &[Dim::from(n as u64)]);
    let v = b.input("v", DType::F32, &[Dim::from(n as u64)]);
    let w2 = b.sub(w, g).unwrap();
    let v2 = b.sub(v, g).unwrap();
    b.output("w_new", w2);
    b.output("v_new", v2);
    let m = b.finish().unwrap();
    let p = lower::<CpuBackend>(&m, "main", &Default::default(), &LowerOptions::default()).unwrap();
    let mut s = p.session(&m);
    let ramp: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let ones = Tensor::from_f32(vec![n], &vec![1.0; n]).unwrap();
    s.set_state("w", &Tensor::from_f32(vec![n], &ramp).unwrap())
        .unwrap();
    s.set_state("v", &Tensor::from_f32(vec![n], &ramp).unwrap())
        .unwrap();
    for _ in 0..3 {
        let out = s
            .run(
                "main",
                &[("g", ones.clone())],
                &[("w_new", "w"), ("v_new", "v")],
            )
            .unwrap();
        assert!(out.is_empty());
    }
    let w = s.state("w").unwrap().unwrap();
    assert_eq!(w.data()[7], 4.0);
    assert_eq!(w.data()[n - 1], (n - 4) as f64);
    // Without `v` the run fails up front and `w` is still there.
    let mut s2 = p.session(&m);
    s2.set_state("w", &Tensor::from_f32(vec![n], &ramp).unwrap())
        .unwrap();
    let e = s2
        .run("main", &[("g", ones)], &[("w_new", "w"), ("v_new", "v")])
        .unwrap_err()
        .to_string();
    assert!(e.contains('v'), "{e}");
    assert!(s2.state("w").unwrap().is_some());
}

/// W8A8 through the lowering: `quantize` (per token) of the input and of a constant weight
/// (per output channel, computed once at lowering), then `qlinear` on the INT8 GEMM kernel with
/// the i8 weight packed at lowering: the i8 values never leave their packed form (no
/// widening), the program keeps only the packed weight, and the output matches the reference
/// semantics.
#[test]
fn int8_linear_runs_on_packed_values_with_its_weight_packed_at_lowering() {
    use fuselage_backends::Lowering;
    use fuselage_frontends::builder::ModelBuilder;
    use fuselage_ir::ops::testing::rand_tensor;
    use fuselage_ir::{Dim, Op};
    let (k, n) = (64usize, 48usize);
    let mut b = ModelBuilder::new(0);
    let x = b.input("x", DType::F32, &[Dim::sym("B"), Dim::from(k as u64)]);
    let w = b
        .constant("w", &rand_tensor(DType::F32, vec![k, n], 1))
        .unwrap();
    let bias = b
        .constant("b", &rand_tensor(DType::F32, vec![n], 2))
        .unwrap();
    let quantize = |g: serde_json::Value| {
        Op::from_attrs(
            "quantize",
            serde_json::json!({"dtype": "i8", "granularity": g}),
        )
        .unwrap()
    };
    let xq = b
        .op_multi(
            quantize(serde_json::json!({"kind": "per_token"})),
            &[x],
            None,
        )
        .unwrap();
    let wq = b
        .op_multi(
            quantize(serde_json::json!({"kind": "per_channel", "axis": 1})),
            &[w],
            None,
        )
        .unwrap();
    let qlinear = Op::from_attrs("qlinear", serde_json::json!({"activation": "gelu"})).unwrap();
    let y = b.op(qlinear, &[xq[0], xq[1], wq[0], wq[1], bias]).unwrap();
    b.output("y", y);
    let m = b.finish().unwrap();
    let xs = rand_tensor(DType::F32, vec![5, k], 3);
    let want = Reference
        .run(&m, "main", std::slice::from_ref(&xs))
        .unwrap();
    let p = lower::<CpuBackend>(&m, "main", &Default::default(), &LowerOptions::default()).unwrap();
    let nodes = p.explain_lowering();
    let q = nodes.iter().find(|n| n.op == "qlinear").unwrap();
    assert_eq!(q.lowering, Lowering::Kernel, "{q:?}");
    assert_eq!(q.kernel, Some("qlinear-i8-gemm"));
    assert!(
        q.prepared
            .as_deref()
            .is_some_and(|p| p.contains("i8 weight [64, 48] packed")),
        "{q:?}"
    );
    let quantizes: Vec<_> = nodes.iter().filter(|n| n.op == "quantize").collect();
    assert_eq!(quantizes.len(), 2);
    assert!(quantizes.iter().any(|n| n.lowering == Lowering::Folded));
    assert!(quantizes
        .iter()
        .any(|n| n.kernel == Some("quantize-packed")));
    let got = p.run_tensors(std::slice::from_ref(&xs)).unwrap();
    assert_close("qlinear", 0, &got[0], &want[0]);
    let stats = p.last_run_stats();
    assert_eq!(stats.packed_widened, 0, "{stats:?}");
    // Held: the packed weight (i16 pairs: 32 × 3 panels × 32 values × 2 bytes), its 48 scales
    // and the 48 biases — not the f32 weight, nor its i8 codes.
    assert_eq!(
        stats.constant_bytes,
        32 * 3 * 32 * 2 + 48 * 4 + 48 * 4,
        "{stats:?}"
    );
}
