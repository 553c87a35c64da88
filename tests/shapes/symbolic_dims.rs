//! A model whose types need dim expressions — the guidance batch `2*B` of a sampler, heads
//! folded into the batch `B*H`, a sequence split over ranks `S/P` — printed, parsed back and run
//! on the reference interpreter and the lowered CPU program for several bindings, against a
//! naive computation.

use fuselage_backends::{lower, CpuBackend, LowerOptions};
use fuselage_ir::{Dim, Executor, Reference, Tensor};

/// `x: [B, S, 8]`:
/// - `g = concat([x, x], 0)`: `[2*B, S, 8]` (guidance batch), `g2 = g·2`;
/// - `h = reshape(x, [B, S, 2, 4])` → transpose → `[B, 2, S, 4]` → reshape `[2*B, S, 4]`
///   (B·H with H = 2);
/// - `c = reshape(x, [B, S/4, 4, 8])` → sum over the chunk axis → `[B, S/4, 8]` (S/P with P = 4);
/// - `s = slice(x, axis 1, 1..)`: `[B, S-1, 8]`.
const MODEL: &str = r#"
module {
  assume B >= 1
  assume S >= 4
  assume S % 4 == 0
  const @"two" : f32[] = {"kind":"seeded","seed":0,"dist":"full","value":2.0}
  func @main(%0 "x": f32[B,S,8]) {
    %1 = concat(%0, %0) {"axis":0} : f32[2*B,S,8]
    %2 = constant {"name":"two"} : f32[]
    %3 = mul(%1, %2) : f32[2*B,S,8]
    %4 = reshape(%0) {"shape":["B","S",2,4]} : f32[B,S,2,4]
    %5 = transpose(%4) {"perm":[0,2,1,3]} : f32[B,2,S,4]
    %6 = reshape(%5) {"shape":[-1,"S",4]} : f32[2*B,S,4]
    %7 = reshape(%0) {"shape":["B","S/4",4,8]} : f32[B,S/4,4,8]
    %8 = reduce(%7) {"axes":[2],"kind":"sum"} : f32[B,S/4,8]
    %9 = slice(%0) {"axis":1,"start":1,"end":9223372036854775807} : f32[B,S-1,8]
    return %3 "guided", %6 "heads", %8 "chunks", %9 "tail"
  }
}
"#;

fn parse(text: &str) -> fuselage_ir::Module {
    fuselage_ir::parse_module(text, "symbolic.fir").unwrap_or_else(|e| panic!("{e}"))
}

fn naive(x: &Tensor) -> Vec<Vec<f64>> {
    let (b, s) = (x.shape()[0], x.shape()[1]);
    let at = |i: usize, j: usize, k: usize| x.at(&[i, j, k]);
    let mut guided = vec![];
    for _ in 0..2 {
        for i in 0..b {
            for j in 0..s {
                for k in 0..8 {
                    guided.push(2.0 * at(i, j, k));
                }
            }
        }
    }
    let mut heads = vec![];
    for i in 0..b {
        for h in 0..2 {
            for j in 0..s {
                for d in 0..4 {
                    heads.push(at(i, j, h * 4 + d));
                }
            }
        }
    }
    let mut chunks = vec![];
    for i in 0..b {
        for c in 0..s / 4 {
            for k in 0..8 {
                chunks.push((0..4).map(|r| at(i, c * 4 + r, k)).sum::<f64>());
            }
        }
    }
    let mut tail = vec![];
    for i in 0..b {
        for j in 1..s {
            for k in 0..8 {
                tail.push(at(i, j, k));
            }
        }
    }
    vec![guided, heads, chunks, tail]
}

#[test]
fn expression_dims_print_parse_and_run() {
    let m = parse(MODEL);
    // The types are the expressions, in canonical form.
    let g = &m.functions["main"];
    let out_types = g.output_types();
    let shown: Vec<String> = out_types
        .iter()
        .map(|t| t.as_ref().unwrap().to_string())
        .collect();
    assert_eq!(
        shown,
        [
            "f32[2*B,S,8]",
            "f32[2*B,S,4]",
            "f32[B,S/4,8]",
            "f32[B,S-1,8]"
        ]
    );
    assert_eq!(
        out_types[0].as_ref().unwrap().shape[0],
        Dim::parse("B+B").unwrap()
    );
    // Print → parse gives the same module; JSON too.
    let printed = fuselage_ir::print_module(&m);
    assert!(printed.contains("assume S % 4 == 0"), "{printed}");
    assert_eq!(parse(&printed), m);
    assert_eq!(
        fuselage_ir::from_json(&fuselage_ir::to_json(&m)).unwrap(),
        m
    );
    let program =
        lower::<CpuBackend>(&m, "main", &Default::default(), &LowerOptions::default()).unwrap();
    for (b, s) in [(1usize, 4usize), (3, 8), (2, 12)] {
        let x = fuselage_ir::ops::testing::rand_tensor(fuselage_ir::DType::F32, vec![b, s, 8], 9);
        let want = naive(&x);
        let reference = Reference.run(&m, "main", std::slice::from_ref(&x)).unwrap();
        let lowered = program.run_tensors(std::slice::from_ref(&x)).unwrap();
        for (k, w) in want.iter().enumerate() {
            for (name, got) in [("reference", &reference[k]), ("cpu", &lowered[k])] {
                assert_eq!(got.numel(), w.len(), "{name} output {k} at B={b} S={s}");
                for (i, (a, e)) in got.data().iter().zip(w).enumerate() {
                    assert!(
                        (a - e).abs() <= 1e-5 * e.abs().max(1.0),
                        "{name} output {k} element {i} at B={b} S={s}: {a} vs {e}"
                    );
                }
            }
        }
        assert_eq!(reference[0].shape(), &[2 * b, s, 8]);
        assert_eq!(reference[2].shape(), &[b, s / 4, 8]);
    }
    // A binding the facts exclude is a clear error on both executors.
    let x = Tensor::zeros(fuselage_ir::DType::F32, vec![1, 6, 8]);
    let e = Reference
        .run(&m, "main", std::slice::from_ref(&x))
        .unwrap_err()
        .to_string();
    assert!(e.contains("S = 6 violates S % 4 == 0"), "{e}");
    let e = program
        .run_tensors(std::slice::from_ref(&x))
        .unwrap_err()
        .to_string();
    assert!(e.contains("S = 6 violates S % 4 == 0"), "{e}");
}

/// Without the divisibility fact, `S/4` is still a valid type; a binding that does not divide
/// is caught where the division happens, naming the node.
#[test]
fn inexact_division_is_a_run_time_error_naming_the_node() {
    let text = MODEL.replace("  assume S % 4 == 0\n", "");
    let m = parse(&text);
    let x = Tensor::zeros(fuselage_ir::DType::F32, vec![1, 6, 8]);
    let e = Reference
        .run(&m, "main", std::slice::from_ref(&x))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("%7") && e.contains("not an exact division"),
        "{e}"
    );
}
