//! `canonicalize`: every rule fires, results verify and match the reference interpreter, the
//! extraction is as good at 400 layers as at 4, limits and rule-file errors behave.

mod support;

use fuselage_ir::ops::testing::rand_tensor;
use fuselage_ir::{verify, Dim, Executor, Graph, Module, Reference, Tensor};
use fuselage_passes::canonicalize::{Canonicalize, CanonicalizeOptions};
use fuselage_passes::rewrite::rules::{builtin_rules, parse_rules};
use fuselage_passes::rewrite::RewriteError;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use support::models::{gelu_prims, layer_norm_prims, mean, residual_chain, B};

fn histogram(m: &Module) -> BTreeMap<String, usize> {
    m.op_histogram()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// Seeded inputs for the entry function, symbolic dims bound to 3.
fn inputs(m: &Module) -> Vec<Tensor> {
    let g = m.entry().unwrap();
    g.input_types()
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let shape = t
                .shape
                .iter()
                .map(|d| d.fixed().unwrap_or(3) as usize)
                .collect();
            rand_tensor(t.dtype, shape, 100 + i as u64)
        })
        .collect()
}

/// Max relative error (against max(1, |reference|)) over all outputs.
fn max_err(a: &[Tensor], b: &[Tensor]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mut worst: f64 = 0.0;
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.shape(), y.shape());
        assert_eq!(x.dtype(), y.dtype());
        for (p, q) in x.data().iter().zip(y.data()) {
            worst = worst.max((p - q).abs() / q.abs().max(1.0));
        }
    }
    worst
}

/// Run canonicalize; check it verifies, keeps the signature and the numbers. Returns the
/// result and the rules that applied.
fn canon(m: &Module) -> (Module, BTreeSet<String>) {
    canon_with(m, CanonicalizeOptions::default())
}

fn canon_with(m: &Module, opts: CanonicalizeOptions) -> (Module, BTreeSet<String>) {
    let mut out = m.clone();
    let mut pass = Canonicalize::new(opts);
    pass.run(&mut out).unwrap();
    verify(&out).unwrap_or_else(|e| panic!("{e}\n{}", fuselage_ir::print_module(&out)));
    let (g0, g1) = (m.entry().unwrap(), out.entry().unwrap());
    assert_eq!(g0.input_types(), g1.input_types());
    assert_eq!(g0.input_names(), g1.input_names());
    assert_eq!(g0.output_types(), g1.output_types());
    let names = |g: &Graph| g.outputs.iter().map(|o| o.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(g0), names(g1));
    let xs = inputs(m);
    let want = Reference.run(m, "main", &xs).unwrap();
    let got = Reference.run(&out, "main", &xs).unwrap();
    let e = max_err(&got, &want);
    assert!(e < 2e-6, "max relative error {e}");
    let applied = pass
        .reports
        .iter()
        .flat_map(|r| r.applied.keys().cloned())
        .collect();
    (out, applied)
}

fn count(m: &Module, op: &str) -> usize {
    histogram(m).get(op).copied().unwrap_or(0)
}

/// One small model per rule family; returns the rules that fired across all of them.
#[test]
fn every_rule_fires() {
    let mut fired: BTreeSet<String> = BTreeSet::new();
    let h = 8;
    let row = [Dim::sym("S"), Dim::from(h as u64)];

    // x·1, 1·x, x+0, 0+x.
    let mut b = B::new();
    let x = b.input("x", &row);
    let one = b.scalar(1.0);
    let zero = b.scalar(0.0);
    let a = b.op("mul", json!({}), &[x, one]);
    let c = b.op("mul", json!({}), &[one, a]);
    let d = b.op("add", json!({}), &[c, zero]);
    let e = b.op("add", json!({}), &[zero, d]);
    let f = b.op("exp", json!({}), &[e]);
    let (out, rules) = canon(&b.finish(&[f]));
    assert_eq!(
        histogram(&out),
        BTreeMap::from([("exp".into(), 1), ("input".into(), 1)])
    );
    fired.extend(rules);

    // Broadcasting ones are kept: x[8]·ones[S,8] is not x.
    let mut b = B::new();
    let x = b.input("x", &[Dim::from(h as u64)]);
    let ones = b.constant("ones", &[2, h], Some(1.0));
    let y = b.op("mul", json!({}), &[x, ones]);
    let (out, _) = canon(&b.finish(&[y]));
    assert_eq!(count(&out, "mul"), 1);

    // transpose∘transpose: composed, and identity removed.
    let mut b = B::new();
    let x = b.input("x", &[Dim::from(2u64), Dim::from(3u64), Dim::from(4u64)]);
    let t1 = b.op("transpose", json!({"perm": [1, 2, 0]}), &[x]);
    let t2 = b.op("transpose", json!({"perm": [2, 0, 1]}), &[t1]);
    let t3 = b.op("transpose", json!({"perm": [1, 0, 2]}), &[x]);
    let t4 = b.op("transpose", json!({"perm": [0, 2, 1]}), &[t3]);
    let (out, rules) = canon(&b.finish(&[t2, t4]));
    assert_eq!(
        count(&out, "transpose"),
        1,
        "{}",
        fuselage_ir::print_module(&out)
    );
    let g = out.entry().unwrap();
    assert_eq!(
        g.outputs[0].value,
        g.inputs[0].into(),
        "identity transpose removed"
    );
    fired.extend(rules);

    // reshape∘reshape, and a reshape back to the same shape removed.
    let mut b = B::new();
    let x = b.input("x", &[Dim::from(2u64), Dim::from(3u64), Dim::from(4u64)]);
    let r1 = b.op("reshape", json!({"shape": [6, 4]}), &[x]);
    let r2 = b.op("reshape", json!({"shape": [4, -1]}), &[r1]);
    let flat = b.op("reshape", json!({"shape": [24]}), &[x]);
    let r3 = b.op("reshape", json!({"shape": [2, 3, 4]}), &[flat]);
    let (out, rules) = canon(&b.finish(&[r2, r3]));
    assert_eq!(
        count(&out, "reshape"),
        1,
        "{}",
        fuselage_ir::print_module(&out)
    );
    fired.extend(rules);

    // matmul + bias, bias + matmul.
    let mut b = B::new();
    let x = b.input("x", &row);
    let bias_in = b.input("bias", &[Dim::from(4u64)]);
    let w = b.constant("w", &[h, 4], None);
    let bias = b.constant("b", &[4], None);
    let mm = b.op("matmul", json!({}), &[x, w]);
    let y1 = b.op("add", json!({}), &[mm, bias]);
    let w2 = b.constant("w2", &[4, 4], None);
    let mm2 = b.op("matmul", json!({}), &[y1, w2]);
    let y2 = b.op("add", json!({}), &[bias_in, mm2]);
    let (out, rules) = canon(&b.finish(&[y2]));
    assert_eq!(count(&out, "linear"), 2);
    assert_eq!(count(&out, "matmul") + count(&out, "add"), 0);
    fired.extend(rules);

    // Every GELU variant.
    for v in 0..6 {
        let mut b = B::new();
        let x = b.input("x", &row);
        let y = gelu_prims(&mut b, x, v);
        let (out, rules) = canon(&b.finish(&[y]));
        assert_eq!(
            histogram(&out),
            BTreeMap::from([("gelu".into(), 1), ("input".into(), 1)]),
            "variant {v}: {}",
            fuselage_ir::print_module(&out)
        );
        fired.extend(rules);
    }

    // Every LayerNorm variant.
    for v in 0..4 {
        let mut b = B::new();
        let x = b.input("x", &row);
        let y = layer_norm_prims(&mut b, x, h, v, "ln");
        let (out, rules) = canon(&b.finish(&[y]));
        assert_eq!(count(&out, "layer_norm"), 1, "variant {v}");
        assert_eq!(
            out.entry().unwrap().len(),
            4,
            "variant {v}: x, scale, bias, layer_norm"
        );
        fired.extend(rules);
    }

    // RMSNorm.
    let mut b = B::new();
    let x = b.input("x", &row);
    let sq = b.op("mul", json!({}), &[x, x]);
    let ms = mean(&mut b, sq);
    let eps = b.scalar(1e-6);
    let ve = b.op("add", json!({}), &[ms, eps]);
    let r = b.op("rsqrt", json!({}), &[ve]);
    let n = b.op("mul", json!({}), &[x, r]);
    let w = b.constant("w", &[h], None);
    let y = b.op("mul", json!({}), &[n, w]);
    let (out, rules) = canon(&b.finish(&[y]));
    assert_eq!(count(&out, "rms_norm"), 1);
    assert_eq!(out.entry().unwrap().len(), 3);
    fired.extend(rules);

    // Each activation after an INT8 GEMM, with and without a bias → the GEMM's epilogue.
    for (act, attrs, fused) in [
        ("gelu", json!({"approximate": "none"}), "gelu"),
        ("gelu", json!({"approximate": "tanh"}), "gelu_tanh"),
        ("silu", json!({}), "silu"),
        ("relu", json!({}), "relu"),
    ] {
        for with_bias in [false, true] {
            let mut b = B::new();
            let x = b.input("x", &row);
            let q = b.op(
                "quantize",
                json!({"dtype": "i8", "granularity": {"kind": "per_token"}}),
                &[x],
            );
            let xs = fuselage_ir::ValueId::new(q.node, 1);
            let w = b.constant("w", &[h, 4], None);
            let wq = b.op(
                "quantize",
                json!({"dtype": "i8", "granularity": {"kind": "per_channel", "axis": 1}}),
                &[w],
            );
            let ws = fuselage_ir::ValueId::new(wq.node, 1);
            let mut args = vec![q, xs, wq, ws];
            if with_bias {
                args.push(b.constant("bias", &[4], None));
            }
            let y = b.op("qlinear", json!({}), &args);
            let z = b.op(act, attrs.clone(), &[y]);
            let (out, rules) = canon(&b.finish(&[z]));
            assert_eq!(count(&out, act), 0, "{act} {attrs} fused");
            let g = out.entry().unwrap();
            let ql = g
                .nodes()
                .find_map(|(_, n)| match &n.op {
                    fuselage_ir::Op::QLinear(q) => Some(q.activation),
                    _ => None,
                })
                .unwrap();
            assert_eq!(
                serde_json::to_value(ql).unwrap(),
                json!(fused),
                "{act} {attrs} with bias {with_bias}"
            );
            fired.extend(rules);
        }
    }

    let all: BTreeSet<String> = builtin_rules()
        .unwrap()
        .iter()
        .map(|r| r.name.clone())
        .collect();
    let missing: Vec<_> = all.difference(&fired).collect();
    assert!(missing.is_empty(), "rules that never fired: {missing:?}");
}

#[test]
fn deep_residual_chain_is_as_fused_as_a_shallow_one() {
    let (small, _) = canon(&residual_chain(4));
    let deep = {
        let mut m = residual_chain(400);
        Canonicalize::default().run(&mut m).unwrap();
        verify(&m).unwrap();
        m
    };
    let (hs, hd) = (histogram(&small), histogram(&deep));
    assert_eq!(hs.get("layer_norm"), Some(&4));
    assert_eq!(hs.get("linear"), Some(&4));
    assert_eq!(hs.get("gelu"), Some(&4));
    for (op, n) in &hs {
        let per = if op == "input" { *n } else { n * 100 };
        assert_eq!(hd.get(op), Some(&per), "{op}: {hs:?} vs {hd:?}");
    }
    assert_eq!(hs.keys().collect::<Vec<_>>(), hd.keys().collect::<Vec<_>>());
}

#[test]
fn limits_stop_early_and_still_give_a_correct_graph() {
    let m = residual_chain(3);
    for opts in [
        CanonicalizeOptions {
            iter_limit: 1,
            ..Default::default()
        },
        CanonicalizeOptions {
            node_limit: 10,
            ..Default::default()
        },
    ] {
        let (out, _) = canon_with(&m, opts);
        assert!(out.entry().unwrap().len() <= m.entry().unwrap().len());
    }
}

#[test]
fn options_are_kebab_case_and_reject_unknown_keys() {
    let o: CanonicalizeOptions =
        serde_json::from_value(json!({"node-limit": 5, "iter-limit": 2, "time-limit-ms": 7}))
            .unwrap();
    assert_eq!((o.node_limit, o.iter_limit, o.time_limit_ms), (5, 2, 7));
    let e = serde_json::from_value::<CanonicalizeOptions>(json!({"node_limit": 5}))
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field"), "{e}");
}

#[test]
fn unchanged_graph_reports_no_change() {
    let mut b = B::new();
    let x = b.input("x", &[Dim::from(4u64)]);
    let y = b.op("exp", json!({}), &[x]);
    let mut m = b.finish(&[y]);
    let before = m.clone();
    assert!(!Canonicalize::default().run(&mut m).unwrap());
    assert_eq!(m, before);
}

#[test]
fn names_of_surviving_nodes_are_kept() {
    let mut b = B::new();
    let x = b.input("x", &[Dim::from(2u64), Dim::from(8u64)]);
    let e = b.op("exp", json!({}), &[x]);
    let mut m = b.finish(&[e]);
    let g = m.functions.get_mut("main").unwrap();
    g.node_mut(e.node).unwrap().name = Some("the_exp".into());
    let (out, _) = canon(&m);
    let g = out.entry().unwrap();
    assert_eq!(
        g.node(g.outputs[0].value.node).unwrap().name.as_deref(),
        Some("the_exp")
    );
}

fn rule_err(text: &str) -> String {
    match parse_rules("t.rules", text) {
        Err(e @ (RewriteError::Rule { .. } | RewriteError::Syntax { .. })) => e.to_string(),
        other => panic!("expected a rule error, got {other:?}"),
    }
}

#[test]
fn bad_rule_files_are_clear_errors() {
    let e = rule_err("\n;; ok\n(rule a (mul ?x ?y) => ?z)\n");
    assert!(
        e.starts_with("t.rules:3: rule `a`:") && e.contains("`?z` is not bound"),
        "{e}"
    );
    let e = rule_err("(rule nodoc (mul ?x ?y) => ?x)");
    assert!(e.contains("rule `nodoc`") && e.contains("comment"), "{e}");
    let e = rule_err(";; c\n(rule u (frobnicate ?x) => ?x)");
    assert!(e.contains("rule `u`") && e.contains("frobnicate"), "{e}");
    let e = rule_err(";; c\n(rule c (mul ?x ?y) => ?x if (is-purple ?y))");
    assert!(e.contains("unknown condition `is-purple`"), "{e}");
    let e = rule_err(";; c\n(rule t (transpose ?x) => ?x)");
    assert!(e.contains("rule `t`") && e.contains("perm"), "{e}");
    let e = rule_err(";; c\n\n\n(rule p (mul ?x ?y) => ?x");
    assert!(e.starts_with("t.rules:4:") && e.contains("unclosed"), "{e}");
    let e = rule_err(";; c\n(rule d (mul ?x ?y) => ?x)\n;; c\n(rule d (add ?x ?y) => ?x)");
    assert!(e.contains("duplicate") && e.contains("line 2"), "{e}");
    let e = rule_err(";; c\n(rule f (add ?x ?y) => (add :(mystery ?x) ?x ?y))");
    assert!(e.contains("unknown attribute function `mystery`"), "{e}");
}

#[test]
fn builtin_rules_are_named_and_documented() {
    let rules = builtin_rules().unwrap();
    assert!(rules.len() >= 20);
    for r in rules {
        assert!(!r.doc.is_empty(), "{}", r.name);
        assert!(
            r.name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{}",
            r.name
        );
    }
}

#[test]
fn bert_large_shaped_graph_fuses_every_layer() {
    let mut m = support::models::bert_large(2);
    let before = m.entry().unwrap().len();
    let t = std::time::Instant::now();
    Canonicalize::default().run(&mut m).unwrap();
    eprintln!(
        "bert-large x2 canonicalize (dev profile): {:?}",
        t.elapsed()
    );
    verify(&m).unwrap();
    let h = histogram(&m);
    assert_eq!(h.get("layer_norm"), Some(&4), "{h:?}");
    assert_eq!(h.get("linear"), Some(&12), "{h:?}");
    assert_eq!(h.get("gelu"), Some(&2), "{h:?}");
    for op in ["reduce", "sub", "erf", "rsqrt", "div"] {
        assert_eq!(h.get(op), None, "{op} left: {h:?}");
    }
    assert!(m.entry().unwrap().len() < before);
}

#[test]
fn runs_in_a_pipeline_with_the_numeric_check() {
    use fuselage_passes::{PassManager, PassManagerOptions, Pipeline};
    let mut m = residual_chain(3);
    let p = Pipeline::parse("canonicalize{node-limit=50000,iter-limit=20,time-limit-ms=5000},dce")
        .unwrap();
    let report = PassManager::new(PassManagerOptions::default())
        .run(&p, &mut m)
        .unwrap();
    assert!(report
        .passes
        .iter()
        .all(|p| p.numeric.as_ref().is_none_or(|n| n.passed)));
    assert_eq!(count(&m, "layer_norm"), 3);
    let e = Pipeline::parse("canonicalize{node-limt=5}")
        .and_then(|p| {
            PassManager::new(PassManagerOptions::default())
                .run(&p, &mut m)
                .map(|_| ())
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("node-limt") && e.contains("node-limit"), "{e}");
}

#[test]
fn a_dangling_operand_is_an_error_not_a_panic() {
    let mut b = B::new();
    let x = b.input("x", &[Dim::from(4u64)]);
    let y = b.op("exp", json!({}), &[x]);
    let mut m = b.finish(&[y]);
    let g = m.functions.get_mut("main").unwrap();
    g.node_mut(y.node).unwrap().operands[0].slot = 3;
    let e = Canonicalize::default().run(&mut m).unwrap_err().to_string();
    assert!(
        e.contains("canonicalize @main") && e.contains("does not exist"),
        "{e}"
    );
}
