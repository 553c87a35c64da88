use super::*;
use crate::constant::Init;
use crate::dtype::ALL_DTYPES;
use crate::ops::{add::Add, constant::Constant as ConstOp, matmul::MatMul};
use crate::tensor::Tensor;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

const WEIRD: &str = "we\"ird\\ name\n\t ü 😀 // not a comment, %1 = @x";

fn add(g: &mut Graph, m: &Module, a: ValueId, b: ValueId, name: Option<&str>) -> NodeId {
    g.add_inferred(m, Op::Add(Add {}), vec![a, b], name.map(String::from))
        .unwrap()
}

fn konst(g: &mut Graph, m: &Module, name: &str) -> NodeId {
    g.add_inferred(m, Op::Constant(ConstOp { name: name.into() }), vec![], None)
        .unwrap()
}

/// An op with several results (`top_k`), built by name so this file does not depend on the op's
/// Rust type, with its operand type.
fn multi_result_op() -> (Op, TensorType) {
    let x = TensorType::new(DType::F32, ["B".into(), 4u64.into()]);
    let op = Op::from_attrs(
        "top_k",
        serde_json::json!({"k": 2, "axis": -1, "largest": true}),
    )
    .unwrap();
    (op, x)
}

/// Build a node from an op name and attributes, inferring its types.
fn node_of(
    g: &mut Graph,
    m: &Module,
    op: &str,
    attrs: serde_json::Value,
    args: &[ValueId],
) -> NodeId {
    let op = Op::from_attrs(op, attrs).unwrap();
    g.add_inferred(m, op, args.to_vec(), None).unwrap()
}

/// A module using a variety of ops with attributes (fuzzing material).
fn rich_module() -> Module {
    use serde_json::json;
    let m = Module::new();
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::new(DType::F32, ["B".into(), 8u64.into()]));
    let mask = g.add_input(
        "mask",
        TensorType::new(DType::Bool, ["B".into(), 8u64.into()]),
    );
    let s = node_of(&mut g, &m, "softmax", json!({"axis": -1}), &[x.into()]);
    let ge = node_of(
        &mut g,
        &m,
        "gelu",
        json!({"approximate": "tanh"}),
        &[s.into()],
    );
    let w = node_of(
        &mut g,
        &m,
        "where",
        json!({}),
        &[mask.into(), ge.into(), x.into()],
    );
    let r = node_of(
        &mut g,
        &m,
        "reduce",
        json!({"kind": "sum", "axes": [1], "keepdims": true}),
        &[w.into()],
    );
    let c = node_of(&mut g, &m, "cast", json!({"dtype": "f16"}), &[r.into()]);
    let t = node_of(
        &mut g,
        &m,
        "top_k",
        json!({"k": 3, "axis": 1, "largest": false}),
        &[x.into()],
    );
    let cmp = node_of(
        &mut g,
        &m,
        "compare",
        json!({"predicate": "lt"}),
        &[x.into(), w.into()],
    );
    g.add_output("c", c.into());
    g.add_output("idx", ValueId::new(t, 1));
    g.add_output("lt", cmp.into());
    let mut m = m;
    m.functions.insert("main".into(), g);
    verify(&m).unwrap();
    m
}

/// A module with every feature of the text form: dense (packed, scalar) and seeded constants,
/// quoted names with any characters, holes, node ids out of arena order, every dtype, scalars,
/// symbolic and quoted symbolic dims, named input nodes, inputs in non-id order, several
/// functions (one empty), and a multi-result node when such an op exists.
pub(super) fn sample_module() -> Module {
    let mut m = Module::new();
    m.add_constant(
        "emb.weight",
        Constant::seeded(
            TensorType::fixed(DType::F32, &[3, 4]),
            1,
            Init::Normal {
                mean: 0.0,
                std: 0.02,
            },
        ),
    );
    m.add_constant(
        WEIRD,
        Constant::from_tensor(&Tensor::new(DType::F4E2M1, vec![3], vec![0.5, -6.0, 1.5]).unwrap()),
    );
    m.add_constant("s", Constant::from_tensor(&Tensor::scalar(DType::F16, 0.1)));
    m.add_constant(
        "u",
        Constant::seeded(
            TensorType::fixed(DType::BF16, &[2]),
            u64::MAX,
            Init::Uniform {
                low: -1e-300,
                high: 3.5,
            },
        ),
    );
    m.add_constant(
        "full",
        Constant::seeded(
            TensorType::fixed(DType::I4, &[5]),
            0,
            Init::Full { value: -3.0 },
        ),
    );

    // main: matmul with a constant, a hole, ids out of arena order.
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::new(DType::F32, ["B".into(), 3u64.into()]));
    let w = konst(&mut g, &m, "emb.weight");
    let y = g
        .add_inferred(
            &m,
            Op::MatMul(MatMul {}),
            vec![x.into(), w.into()],
            Some(WEIRD.into()),
        )
        .unwrap();
    let dead = add(&mut g, &m, y.into(), y.into(), None);
    g.remove_node(dead);
    let z = add(&mut g, &m, y.into(), y.into(), Some("z"));
    let ty = g.value_type(z.into()).unwrap().clone();
    g.insert_node_at(
        NodeId(20),
        Node {
            op: Op::Add(Add {}),
            operands: vec![z.into(), z.into()],
            results: vec![ty.clone()],
            name: None,
        },
    )
    .unwrap();
    g.insert_node_at(
        NodeId(15),
        Node {
            op: Op::Add(Add {}),
            operands: vec![NodeId(20).into(), z.into()],
            results: vec![ty],
            name: Some(String::new()),
        },
    )
    .unwrap();
    g.add_output("out", z.into());
    g.add_output(WEIRD, NodeId(15).into());
    g.add_output("x echo", x.into());
    let (op, xty) = multi_result_op();
    let a = g.add_input("multi", xty);
    let s = g.add_inferred(&m, op, vec![a.into()], None).unwrap();
    g.add_output("second", ValueId::new(s, 1));
    g.add_output("first", ValueId::new(s, 0));
    m.functions.insert("main".into(), g);

    // Every dtype as an input, in reversed order, with odd symbols.
    let mut g = Graph::new();
    for (i, d) in ALL_DTYPES.iter().enumerate() {
        let shape: Vec<Dim> = match i % 4 {
            0 => vec![],
            1 => vec!["B".into(), 7u64.into()],
            2 => vec![Dim::sym("3d"), Dim::sym(WEIRD), Dim::sym("12")],
            _ => vec![0u64.into(), u64::MAX.into()],
        };
        let id = g.add_input(&format!("in{i}"), TensorType::new(*d, shape));
        g.add_output(&format!("{d}"), id.into());
    }
    g.inputs.reverse();
    let first = g.inputs[0];
    g.node_mut(first).unwrap().name = Some(WEIRD.into());
    m.functions.insert("all dtypes".into(), g);

    // A scalar constant.
    let mut g = Graph::new();
    let c = konst(&mut g, &m, "s");
    let s = add(&mut g, &m, c.into(), c.into(), Some("twice"));
    let u = konst(&mut g, &m, "u");
    let f = konst(&mut g, &m, "full");
    let f2 = add(&mut g, &m, f.into(), f.into(), None);
    let q = konst(&mut g, &m, WEIRD);
    g.add_output("s", s.into());
    g.add_output("u", u.into());
    g.add_output("f", f2.into());
    g.add_output("q", q.into());
    m.functions.insert(WEIRD.into(), g);

    m.functions.insert("empty".into(), Graph::new());
    verify(&m).unwrap();
    m
}

/// A small module: `main(x: f32[2,3]) = add(x·w, x·w)` with a seeded `w`.
fn small_module() -> Module {
    let mut m = Module::new();
    m.add_constant(
        "w",
        Constant::seeded(
            TensorType::fixed(DType::F32, &[3, 3]),
            7,
            Init::Uniform {
                low: -1.0,
                high: 1.0,
            },
        ),
    );
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::fixed(DType::F32, &[2, 3]));
    let w = konst(&mut g, &m, "w");
    let y = g
        .add_inferred(
            &m,
            Op::MatMul(MatMul {}),
            vec![x.into(), w.into()],
            Some("proj".into()),
        )
        .unwrap();
    let z = add(&mut g, &m, y.into(), y.into(), None);
    g.add_output("out", z.into());
    m.functions.insert("main".into(), g);
    m
}

const GOLDEN: &str = r#"// RUN: fuselage compile %s --pipeline dce
// A hand-written module.
module {
  const @w : f32[3,3] = {"kind":"seeded","seed":7,"dist":"uniform","low":-1.0,"high":1.0}
  // comment between items
  func @main(%0 "x": f32[2,3]) { // trailing comment
    %1 = constant {"name":"w"} : f32[3,3]
    %2 "proj" = matmul(%0, %1) : f32[2,3]
    %3 = add(%2, %2) : f32[2,3]
    return %3 "out"
  }
}
"#;

#[test]
fn prints_the_documented_format() {
    let want = r#"module {
  const @w : f32[3,3] = {"kind":"seeded","seed":7,"dist":"uniform","low":-1.0,"high":1.0}
  func @main(%0 "x": f32[2,3]) {
    %1 = constant {"name":"w"} : f32[3,3]
    %2 "proj" = matmul(%0, %1) : f32[2,3]
    %3 = add(%2, %2) : f32[2,3]
    return %3 "out"
  }
}
"#;
    assert_eq!(print_module(&small_module()), want);
}

#[test]
fn parses_golden_with_comments() {
    let m = parse_module(GOLDEN, "golden.fir").unwrap();
    assert_eq!(m, small_module());
}

#[test]
fn round_trip_of_every_feature() {
    let m = sample_module();
    let text = print_module(&m);
    let back = parse_module(&text, "sample.fir").unwrap();
    assert_eq!(back, m, "{text}");
    assert_eq!(print_module(&back), text);
    // Holes and ids survive.
    let g = &back.functions["main"];
    assert!(g.node(NodeId(3)).is_none());
    assert_eq!(g.arena_len(), m.functions["main"].arena_len());
    // %20 is printed before %15, which uses it.
    let p20 = text.find("    %20 = ").unwrap();
    let p15 = text.find("    %15 \"\" = ").unwrap();
    assert!(p20 < p15, "{text}");
    // Quoted symbols and names.
    assert!(text.contains(r#"func @"all dtypes"("#), "{text}");
    assert!(text.contains(r#"f16["3d","we\"ird\\ name\n\t ü 😀 // not a comment, %1 = @x","12"]"#));
    assert!(text.contains("f64[]"), "{text}");
    assert!(text.contains("func @empty() {\n    return\n  }"), "{text}");
    assert!(text.contains(r#"{"kind":"dense","bytes":"#), "{text}");
}

#[test]
fn round_trip_of_ops_with_attributes() {
    let m = rich_module();
    let text = print_module(&m);
    assert!(
        text.contains(r#"gelu(%2) {"approximate":"tanh"}"#),
        "{text}"
    );
    assert_eq!(parse_module(&text, "rich.fir").unwrap(), m);
    assert_eq!(from_json(&to_json(&m)).unwrap(), m);
}

#[test]
fn json_round_trip_of_every_feature() {
    let m = sample_module();
    let back = from_json(&to_json(&m)).unwrap();
    assert_eq!(back, m);
}

#[test]
fn multi_result_nodes_print_and_parse() {
    // Syntax level (`add` has one result, so the type check must reject this module).
    let mut m = Module::new();
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::fixed(DType::F32, &[2]));
    let ty = TensorType::fixed(DType::F32, &[2]);
    let two = g.add_node(Node {
        op: Op::Add(Add {}),
        operands: vec![x.into(), x.into()],
        results: vec![ty.clone(), ty.clone()],
        name: None,
    });
    let none = g.add_node(Node {
        op: Op::Add(Add {}),
        operands: vec![ValueId::new(two, 1), two.into()],
        results: vec![],
        name: None,
    });
    g.add_output("b", ValueId::new(two, 1));
    m.functions.insert("main".into(), g);
    let text = print_module(&m);
    assert!(
        text.contains("%1:2 = add(%0, %0) : f32[2], f32[2]"),
        "{text}"
    );
    assert!(text.contains("%2:0 = add(%1#1, %1) : ()"), "{text}");
    assert!(text.contains("return %1#1 \"b\""), "{text}");
    let (back, _, _) = parse_unchecked(&text, "m.fir").unwrap();
    assert_eq!(back, m);
    let e = parse_module(&text, "m.fir").unwrap_err().to_string();
    assert!(
        e.contains(
            "m.fir:3:26: type mismatch in %1 (add): written f32[2], f32[2], inferred f32[2]"
        ),
        "{e}"
    );
    let _ = none;
    // Full check with a real multi-result op.
    let (op, xty) = multi_result_op();
    let mut m = Module::new();
    let mut g = Graph::new();
    let x = g.add_input("x", xty);
    let s = g.add_inferred(&m, op, vec![x.into()], None).unwrap();
    g.add_output("b", ValueId::new(s, 1));
    m.functions.insert("main".into(), g);
    let text = print_module(&m);
    assert!(
        text.contains(r#"%1:2 = top_k(%0) {"axis":-1,"k":2,"largest":true} : f32[B,2], i64[B,2]"#),
        "{text}"
    );
    assert_eq!(parse_module(&text, "m.fir").unwrap(), m);
}

/// (line, column, message) of a parse error.
fn perr(src: &str) -> (usize, usize, String) {
    match parse_module(src, "t.fir") {
        Err(IrError::Parse {
            file,
            line,
            column,
            message,
        }) => {
            assert_eq!(file, "t.fir");
            (line, column, message)
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
}

fn with_body(body: &str) -> String {
    format!(
        "module {{\n  const @w : f32[3,3] = {{\"kind\":\"seeded\",\"seed\":7,\"dist\":\"full\",\"value\":1.0}}\n  func @main(%0 \"x\": f32[2,3], %1 \"h\": f16[2,3]) {{\n{body}\n  }}\n}}\n"
    )
}

#[test]
fn error_unknown_op() {
    let (l, c, m) = perr(&with_body("    %2 = frobnicate(%0) : f32[2,3]\n    return"));
    assert_eq!((l, c), (4, 10), "{m}");
    assert!(
        m.starts_with("unknown op `frobnicate` (known ops: input, constant, add, matmul"),
        "{m}"
    );
}

#[test]
fn error_bad_attribute_field() {
    let (l, c, m) = perr(&with_body(
        "    %2 = constant {\"nme\":\"w\"} : f32[3,3]\n    return",
    ));
    assert_eq!((l, c), (4, 19), "{m}");
    assert!(
        m.contains("bad attributes for op `constant`: unknown field `nme`"),
        "{m}"
    );
    let (l, c, m) = perr(&with_body("    %2 = constant : f32[3,3]\n    return"));
    assert_eq!((l, c), (4, 19), "{m}");
    assert!(m.contains("missing field `name`"), "{m}");
}

#[test]
fn error_invalid_json_attributes() {
    let (l, c, m) = perr(&with_body(
        "    %2 = constant {\"name\" \"w\"} : f32[3,3]\n    return",
    ));
    assert_eq!((l, c), (4, 27), "{m}");
    assert!(m.starts_with("invalid JSON: expected `:`"), "{m}");
}

#[test]
fn error_type_mismatch() {
    let (l, c, m) = perr(&with_body(
        "    %2 = add(%0, %0) : f32[3,2]\n    return %2 \"y\"",
    ));
    assert_eq!((l, c), (4, 24), "{m}");
    assert_eq!(
        m,
        "type mismatch in %2 (add): written f32[3,2], inferred f32[2,3]"
    );
}

#[test]
fn error_inference_failure() {
    let (l, c, m) = perr(&with_body("    %2 = add(%0, %1) : f32[2,3]\n    return"));
    assert_eq!((l, c), (4, 10), "{m}");
    assert!(m.starts_with("type error in %2 (add): "), "{m}");
    assert!(m.contains("dtype"), "{m}");
}

#[test]
fn error_undefined_value() {
    let (l, c, m) = perr(&with_body("    %2 = add(%0, %7) : f32[2,3]\n    return"));
    assert_eq!((l, c), (4, 18), "{m}");
    assert!(m.contains("use of undefined value %7"), "{m}");
    let (l, c, m) = perr(&with_body("    %2 = add(%0, %0#1) : f32[2,3]\n    return"));
    assert_eq!((l, c), (4, 18), "{m}");
    assert!(m.contains("%0 has 1 result(s); %0#1 does not exist"), "{m}");
    let (l, c, m) = perr(&with_body("    return %9 \"out\""));
    assert_eq!((l, c), (4, 12), "{m}");
    assert!(m.contains("use of undefined value %9"), "{m}");
}

#[test]
fn error_duplicate_id() {
    let (l, c, m) = perr(&with_body(
        "    %2 = add(%0, %0) : f32[2,3]\n    %2 = add(%0, %0) : f32[2,3]\n    return",
    ));
    assert_eq!((l, c), (5, 5), "{m}");
    assert_eq!(m, "%2 is already defined at 4:5");
    let (l, c, m) = perr(&with_body("    %0 = add(%1, %1) : f16[2,3]\n    return"));
    assert_eq!((l, c), (4, 5), "{m}");
    assert_eq!(m, "%0 is already defined at 3:14");
}

#[test]
fn error_bad_dtype() {
    let (l, c, m) = perr(&with_body("    %2 = add(%0, %0) : f33[2,3]\n    return"));
    assert_eq!((l, c), (4, 24), "{m}");
    assert!(
        m.starts_with("unknown dtype `f33` (allowed: f64, f32,"),
        "{m}"
    );
}

#[test]
fn error_unterminated_string() {
    let (l, c, m) = perr(&with_body(
        "    %2 \"abc = add(%0, %0) : f32[2,3]\n    return",
    ));
    assert_eq!((l, c), (4, 8), "{m}");
    assert!(m.starts_with("unterminated string"), "{m}");
    let (l, c, m) = perr("module {\n  func @\"abc");
    assert_eq!(
        (l, c, m.starts_with("unterminated string")),
        (2, 9, true),
        "{m}"
    );
}

#[test]
fn error_dim_with_a_backslash_at_the_end_of_the_input() {
    // Found by `mutated_text_never_panics` in CI: the text ends inside a quoted dim, right
    // after an escaping `\\` (`... f16["3d","we\"ird\\`); the dim scan stepped past the end.
    let src = mutate(
        &goldens()[0],
        &[(174, 14932577649687521241, 0), (46, 8935091711968676902, 0)],
    );
    assert!(src.ends_with('\\'), "{}", &src[src.len() - 40..]);
    let e = parse_module(&src, "t.fir").unwrap_err();
    assert!(matches!(e, IrError::Parse { .. }), "{e:?}");
}

#[test]
fn error_truncated_file() {
    let full = with_body("    %2 = add(%0, %0) : f32[2,3]\n    return %2 \"y\"");
    let cut = &full[..full.find(": f32[2,3]\n    return").unwrap() + 5];
    let (l, c, m) = perr(cut);
    assert_eq!((l, c), (4, 27), "{m}");
    assert_eq!(m, "expected `[` after the dtype `f32`, found end of file");
    let (l, c, m) = perr(&full[..full.len() - 2]);
    assert_eq!((l, c), (7, 1), "{m}");
    assert_eq!(
        m,
        "expected `assume`, `const`, `func` or `}`, found end of file"
    );
    let (l, c, m) = perr("");
    assert_eq!(
        (l, c, m.as_str()),
        (1, 1, "expected `module`, found end of file")
    );
}

#[test]
fn error_misc_structure() {
    let (l, c, m) = perr(&with_body(
        "    %2 = input {\"name\":\"q\"} : f32[2]\n    return",
    ));
    assert_eq!((l, c), (4, 10), "{m}");
    assert!(m.contains("declared in the function's parameters"), "{m}");
    let (l, c, m) = perr(&with_body("    %2:2 = add(%0, %0) : f32[2,3]\n    return"));
    assert_eq!((l, c), (4, 26), "{m}");
    assert_eq!(m, "%2 declares 2 result(s) but 1 type(s) are written");
    let (l, c, m) = perr("module {\n}\ntrailing");
    assert_eq!((l, c), (3, 1), "{m}");
    assert_eq!(
        m,
        "expected end of file after the module's `}`, found `trailing`"
    );
    let (l, c, m) = perr("module {\n  func @f() { return }\n  func @f() { return }\n}");
    assert_eq!(
        (l, c, m.as_str()),
        (3, 3, "function @f is already defined at 2:3")
    );
    let (l, c, m) = perr(&with_body(
        "    %99999999 = add(%0, %0) : f32[2,3]\n    return",
    ));
    assert_eq!((l, c), (4, 5), "{m}");
    assert!(m.contains("is too large"), "{m}");
    let (l, c, m) = perr(&with_body(
        "    %2 = add(%0, %0) : f32[18446744073709551616]\n    return",
    ));
    assert_eq!((l, c), (4, 28), "{m}");
    assert!(m.contains("integer too large"), "{m}");
    let (_, _, m) = perr(&with_body("    %2 = add(%0 %0) : f32[2,3]\n    return"));
    assert_eq!(m, "expected `,` or `)` after an operand, found `%`");
    let (_, _, m) = perr(&with_body("    %2 = add(%0, %0) : f32[2,3]\n    %3 ~"));
    assert_eq!(m, "expected `=` after the node id, found `~`");
}

#[test]
fn error_bad_constants() {
    let (l, c, m) =
        perr("module {\n  const @w : f32[2] = {\"kind\":\"dense\",\"bytes\":\"0000\"}\n}");
    assert_eq!((l, c), (2, 23), "{m}");
    assert_eq!(m, "constant `w`: f32[2] needs 8 bytes, storage has 2");
    let (_, _, m) =
        perr("module {\n  const @w : f32[2] = {\"kind\":\"dense\",\"bytes\":\"0g\"}\n}");
    assert!(m.contains("bad hex digit"), "{m}");
    let (_, _, m) = perr("module {\n  const @w : f32[B] = {\"kind\":\"seeded\",\"seed\":1,\"dist\":\"full\",\"value\":1}\n}");
    assert!(m.contains("must have fixed dims"), "{m}");
    let (_, _, m) = perr(
        "module {\n  const @w : f32[2] = {\"kind\":\"seeded\",\"seed\":1,\"dist\":\"gauss\"}\n}",
    );
    assert!(
        m.starts_with("bad constant storage: unknown variant `gauss`"),
        "{m}"
    );
    let (l, c, m) = perr(&with_body(
        "    %2 = constant {\"name\":\"v\"} : f32[3,3]\n    return",
    ));
    assert_eq!((l, c), (4, 10), "{m}");
    assert!(m.contains("no constant named `v`"), "{m}");
}

#[test]
fn errors_display_as_file_line_col() {
    let e = parse_module("module {\n  bogus\n}", "a/b.fir").unwrap_err();
    assert_eq!(
        e.to_string(),
        "a/b.fir:2:3: expected `assume`, `const`, `func` or `}`, found `bogus`"
    );
}

#[test]
fn from_json_rejects_bad_input() {
    let e = from_json("{\"functions\": 3").unwrap_err();
    assert!(matches!(e, IrError::Json(_)), "{e:?}");
    let mut m = small_module();
    let g = m.functions.get_mut("main").unwrap();
    g.node_mut(NodeId(3)).unwrap().results[0] = TensorType::fixed(DType::F32, &[9]);
    let e = from_json(&to_json(&m)).unwrap_err().to_string();
    assert!(
        e.contains("declared result types f32[9] but `add` infers f32[2,3]"),
        "{e}"
    );
    let j = to_json(&small_module()).replace("\"matmul\"", "\"matmul2\"");
    let e = from_json(&j).unwrap_err().to_string();
    assert!(e.contains("unknown op `matmul2`"), "{e}");
    let j = to_json(&small_module()).replace("\"seed\": 7", "\"seed\": -7");
    assert!(from_json(&j).is_err());
}

// ---------------------------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------------------------

/// A random valid module built from a seed and a pool of names (any characters).
fn random_module(seed: u64, names: &[String]) -> Module {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let pick = |rng: &mut rand_chacha::ChaCha8Rng| names[rng.gen_range(0..names.len())].clone();
    let numeric: Vec<DType> = ALL_DTYPES
        .iter()
        .copied()
        .filter(|d| *d != DType::Bool)
        .collect();
    let mut m = Module::new();
    for _ in 0..rng.gen_range(0..3) {
        let d = ALL_DTYPES[rng.gen_range(0..ALL_DTYPES.len())];
        let shape: Vec<usize> = (0..rng.gen_range(0..3))
            .map(|_| rng.gen_range(1..4))
            .collect();
        let c = if rng.gen_bool(0.5) {
            Constant::from_tensor(&crate::ops::testing::rand_tensor(d, shape, rng.gen()))
        } else {
            Constant::seeded(
                TensorType::fixed(d, &shape),
                rng.gen(),
                Init::Normal {
                    mean: rng.gen_range(-1.0..1.0),
                    std: rng.gen_range(0.0..2.0),
                },
            )
        };
        m.add_constant(pick(&mut rng), c);
    }
    for _ in 0..rng.gen_range(1..4) {
        let mut g = Graph::new();
        let mut values: Vec<ValueId> = vec![];
        for _ in 0..rng.gen_range(0..4) {
            let d = numeric[rng.gen_range(0..numeric.len())];
            let shape: Vec<Dim> = (0..rng.gen_range(0..4))
                .map(|_| {
                    let name = pick(&mut rng);
                    if rng.gen_bool(0.5) || name.is_empty() {
                        Dim::from(rng.gen_range(0..5u64))
                    } else if rng.gen_bool(0.7) {
                        Dim::sym(&name)
                    } else {
                        // An expression over the symbol: 2*N+1, N/2, min(N,3).
                        let n = Dim::sym(&name);
                        match rng.gen_range(0..3) {
                            0 => n.mul_int(2).unwrap().add(&Dim::from(1u64)).unwrap(),
                            1 => n.div_exact(2).unwrap(),
                            _ => n.minimum(&Dim::from(3u64)).unwrap(),
                        }
                    }
                })
                .collect();
            let id = g.add_input(&pick(&mut rng), TensorType::new(d, shape));
            if rng.gen_bool(0.3) {
                g.node_mut(id).unwrap().name = Some(pick(&mut rng));
            }
            values.push(id.into());
        }
        let consts: Vec<String> = m.constants.keys().cloned().collect();
        for _ in 0..rng.gen_range(0..8) {
            let name = rng.gen_bool(0.5).then(|| pick(&mut rng));
            let choice = rng.gen_range(0..3);
            let id = if choice == 0 && !consts.is_empty() {
                let c = consts[rng.gen_range(0..consts.len())].clone();
                g.add_inferred(&m, Op::Constant(ConstOp { name: c }), vec![], name)
                    .unwrap()
            } else if !values.is_empty() {
                let a = values[rng.gen_range(0..values.len())];
                let ta = g.value_type(a).unwrap().clone();
                let same: Vec<ValueId> = values
                    .iter()
                    .copied()
                    .filter(|v| g.value_type(*v) == Some(&ta))
                    .collect();
                let b = same[rng.gen_range(0..same.len())];
                match g.add_inferred(&m, Op::Add(Add {}), vec![a, b], name) {
                    Ok(id) => id,
                    Err(_) => continue,
                }
            } else {
                continue;
            };
            if rng.gen_bool(0.2) {
                g.remove_node(id); // a hole
            } else {
                values.push(id.into());
            }
        }
        for _ in 0..rng.gen_range(0..3) {
            if !values.is_empty() {
                let v = values[rng.gen_range(0..values.len())];
                g.add_output(&pick(&mut rng), v);
            }
        }
        let n = g.inputs.len();
        if n > 1 {
            g.inputs.swap(0, rng.gen_range(0..n));
        }
        m.functions.insert(pick(&mut rng), g);
    }
    m
}

/// Tokens that mutations insert.
const TOKENS: &[&str] = &[
    "%",
    "%0",
    "%1#1",
    "%2:2",
    "%99",
    ":",
    ",",
    "(",
    ")",
    "{",
    "}",
    "[",
    "]",
    "\"",
    "\\",
    "=",
    "@",
    "#",
    "//",
    "\n",
    " ",
    "f32",
    "i4",
    "bool",
    "B",
    "add",
    "matmul",
    "constant",
    "input",
    "return",
    "func",
    "module",
    "const",
    "{\"name\":\"w\"}",
    "{}",
    "-1",
    "0",
    "65536",
    "18446744073709551616",
    "é",
    "😀",
    "\u{0}",
    "{\"kind\":\"dense\",\"bytes\":\"0\"}",
    "null",
    "[[[[[[[[[[",
    "{\"a\":",
    "f32[]",
    "()",
    "\"\\u12\"",
    "\"\\ud800\"",
];

fn mutate(src: &str, muts: &[(u8, usize, usize)]) -> String {
    let mut chars: Vec<char> = src.chars().collect();
    for &(kind, pos, k) in muts {
        let len = chars.len();
        let at = if len == 0 { 0 } else { pos % (len + 1) };
        let tok: Vec<char> = TOKENS[k % TOKENS.len()].chars().collect();
        match kind % 8 {
            0 => {
                let end = (at + k % 8 + 1).min(len);
                chars.drain(at..end);
            }
            1 => {
                chars.splice(at..at, tok);
            }
            2 => {
                let end = (at + 1).min(len);
                chars.splice(at..end, tok);
            }
            3..=5 => {
                let s: String = chars.iter().collect();
                let mut lines: Vec<&str> = s.split('\n').collect();
                let n = lines.len();
                let (i, j) = (pos % n, k % n);
                match kind % 8 {
                    3 => lines.swap(i, j),
                    4 => {
                        let l = lines[i];
                        lines.insert(j, l);
                    }
                    _ => {
                        lines.remove(i);
                    }
                }
                chars = lines.join("\n").chars().collect();
            }
            6 => chars.truncate(at),
            _ => {
                // Replace a digit run or word at `at` by another token.
                let end = (at..len)
                    .find(|&i| !chars[i].is_alphanumeric())
                    .unwrap_or(len)
                    .max((at + 1).min(len));
                chars.splice(at..end, tok);
            }
        }
    }
    chars.into_iter().collect()
}

fn goldens() -> Vec<String> {
    vec![
        print_module(&sample_module()),
        print_module(&small_module()),
        GOLDEN.to_string(),
        print_module(&rich_module()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn random_modules_round_trip(
        seed in any::<u64>(),
        names in proptest::collection::vec(any::<String>(), 1..6),
    ) {
        let m = random_module(seed, &names);
        verify(&m).unwrap();
        let text = print_module(&m);
        let back = parse_module(&text, "r.fir");
        prop_assert!(back.is_ok(), "{:?}\n{}", back.err(), text);
        let back = back.unwrap();
        prop_assert_eq!(&back, &m);
        prop_assert_eq!(print_module(&back), text);
        prop_assert_eq!(&from_json(&to_json(&m)).unwrap(), &m);
    }

    #[test]
    fn mutated_text_never_panics(
        which in 0usize..4,
        muts in proptest::collection::vec((any::<u8>(), any::<usize>(), any::<usize>()), 1..5),
    ) {
        let src = mutate(&goldens()[which], &muts);
        match parse_module(&src, "fuzz.fir") {
            Ok(m) => {
                // Whatever parses verifies and round-trips.
                prop_assert!(verify(&m).is_ok());
                let again = parse_module(&print_module(&m), "again.fir");
                prop_assert_eq!(again.ok(), Some(m));
            }
            Err(e) => {
                // A syntax error, or text that parses into a module the verifier rejects (a
                // mutated shape over the memory budget, say): both name where.
                let clear = matches!(e, IrError::Parse { .. } | IrError::Verify { .. });
                prop_assert!(clear, "{:?}", e);
                let _ = e.to_string();
            }
        }
    }

    #[test]
    fn mutated_json_never_panics(
        muts in proptest::collection::vec((any::<u8>(), any::<usize>(), any::<usize>()), 1..4),
    ) {
        let src = mutate(&to_json(&small_module()), &muts);
        if let Ok(m) = from_json(&src) {
            prop_assert!(verify(&m).is_ok());
            let _ = print_module(&m);
        }
    }
}

#[test]
fn file_storage_round_trips_through_text_and_json() {
    let mut m = Module::new();
    m.add_constant(
        "w",
        Constant::new(
            TensorType::fixed(DType::F32, &[2, 3]),
            crate::Storage::file("/weights dir/\"odd\" ü.safetensors", 1024, 24),
        ),
    );
    let mut g = Graph::new();
    let w = konst(&mut g, &m, "w");
    g.add_output("w", w.into());
    m.functions.insert("main".into(), g);
    let text = print_module(&m);
    assert!(
        text.contains(
            r#"{"kind":"file","path":"/weights dir/\"odd\" ü.safetensors","offset":1024,"len":24}"#
        ),
        "{text}"
    );
    assert_eq!(parse_module(&text, "t.fir").unwrap(), m);
    let j = crate::to_json(&m);
    assert_eq!(crate::from_json(&j).unwrap(), m);
    // A length that disagrees with the type is a parse error at the constant.
    let bad = text.replace(r#""len":24"#, r#""len":20"#);
    let e = parse_module(&bad, "t.fir").unwrap_err().to_string();
    assert!(e.contains("needs 24 bytes, storage has 20"), "{e}");
}
