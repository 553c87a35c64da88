//! Huge or hostile shapes are clear errors before anything is allocated: constants and inputs
//! whose declared size overflows or exceeds the memory budget (`.fir` and ONNX), values that a
//! binding would make too large, and a lowering handed a module that does not verify.

use fuselage_backends::{lower, CpuBackend, LowerOptions};
use fuselage_frontends::onnx::proto::*;
use fuselage_ir::{Executor, Reference, Tensor};
use prost::Message;

fn fir(body: &str) -> String {
    format!("module {{\n{body}\n}}\n")
}

#[test]
fn fir_constant_of_2_pow_61_elements_is_an_error_not_a_panic() {
    let text = fir(concat!(
        r#"  const @"w" : f32[2305843009213693952] = {"kind":"seeded","seed":1,"dist":"full","value":1.0}"#,
        "\n",
        r#"  func @main(%0 "x": f32[1]) {"#,
        "\n    %1 = constant {\"name\":\"w\"} : f32[2305843009213693952]\n    return %1 \"y\"\n  }"
    ));
    let e = fuselage_ir::parse_module(&text, "huge.fir")
        .unwrap_err()
        .to_string();
    assert!(e.contains("memory budget"), "{e}");
}

#[test]
fn fir_constant_of_2_pow_40_elements_is_an_error_before_allocation() {
    let text = fir(concat!(
        r#"  const @"w" : f32[1024,1073741824] = {"kind":"seeded","seed":1,"dist":"normal","mean":0.0,"std":1.0}"#,
        "\n",
        r#"  func @main(%0 "x": f32[1]) {"#,
        "\n    %1 = constant {\"name\":\"w\"} : f32[1024,1073741824]\n    return %1 \"y\"\n  }"
    ));
    let e = fuselage_ir::parse_module(&text, "big.fir")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("memory budget") && e.contains("1099511627776 elements"),
        "{e}"
    );
}

#[test]
fn fir_input_and_intermediate_over_the_budget_are_errors() {
    let text = fir(concat!(
        r#"  func @main(%0 "x": f32[4096,4096,4096,4096]) {"#,
        "\n    return %0 \"y\"\n  }"
    ));
    let e = fuselage_ir::parse_module(&text, "in.fir")
        .unwrap_err()
        .to_string();
    assert!(e.contains("memory budget"), "{e}");
    let text = fir(concat!(
        r#"  func @main(%0 "x": f32[1]) {"#,
        "\n    %1 = broadcast_to(%0) {\"shape\":[65536,65536,65536]} : f32[65536,65536,65536]\n    return %1 \"y\"\n  }"
    ));
    let e = fuselage_ir::parse_module(&text, "bc.fir")
        .unwrap_err()
        .to_string();
    assert!(e.contains("memory budget"), "{e}");
}

/// A symbolic shape is fine to declare; a binding that makes it too large is an error on both
/// executors, naming the node, before the value is allocated.
#[test]
fn a_binding_that_makes_a_value_too_large_is_an_error() {
    let text = fir(concat!(
        r#"  func @main(%0 "x": f32[S]) {"#,
        "\n    %1 = broadcast_to(%0) {\"shape\":[\"S\",\"S\",\"S\",\"S\"]} : f32[S,S,S,S]\n    return %1 \"y\"\n  }"
    ));
    let m = fuselage_ir::parse_module(&text, "sym.fir").unwrap();
    let x = Tensor::zeros(fuselage_ir::DType::F32, vec![100_000]);
    let e = Reference
        .run(&m, "main", std::slice::from_ref(&x))
        .unwrap_err()
        .to_string();
    assert!(e.contains("%1") && e.contains("memory budget"), "{e}");
    let p = lower::<CpuBackend>(&m, "main", &Default::default(), &LowerOptions::default()).unwrap();
    let e = p
        .run_tensors(std::slice::from_ref(&x))
        .unwrap_err()
        .to_string();
    assert!(e.contains("%1") && e.contains("memory budget"), "{e}");
}

/// The lowering checks the module it is given (a node whose declared type is wrong).
#[test]
fn the_lowering_verifies_its_module() {
    let text = fir(concat!(
        r#"  func @main(%0 "x": f32[3]) {"#,
        "\n    %1 = add(%0, %0) : f32[3]\n    return %1 \"y\"\n  }"
    ));
    let mut m = fuselage_ir::parse_module(&text, "ok.fir").unwrap();
    let g = m.functions.get_mut("main").unwrap();
    let id = g.node_ids().last().unwrap();
    g.node_mut(id).unwrap().results[0] =
        fuselage_ir::TensorType::fixed(fuselage_ir::DType::F32, &[4]);
    let Err(e) = lower::<CpuBackend>(&m, "main", &Default::default(), &LowerOptions::default())
    else {
        panic!("a module that does not verify was lowered");
    };
    let e = e.to_string();
    assert!(e.contains("does not verify") && e.contains("f32[4]"), "{e}");
}

fn onnx_model(nodes: Vec<NodeProto>, inits: Vec<TensorProto>, input_dims: &[i64]) -> Vec<u8> {
    let vi = |name: &str, dims: &[i64]| ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: DataType::Float as i32,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&v| Dimension {
                            dim_value: Some(v),
                            ..Default::default()
                        })
                        .collect(),
                }),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(GraphProto {
            node: nodes,
            name: "g".into(),
            initializer: inits,
            input: vec![vi("x", input_dims)],
            output: vec![vi("y", &[])],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[test]
fn onnx_initializer_and_input_over_the_budget_are_errors() {
    // An initializer declaring 2^40 floats (with a few bytes of data).
    let w = TensorProto {
        name: "w".into(),
        dims: vec![1 << 20, 1 << 20],
        data_type: DataType::Float as i32,
        raw_data: vec![0; 16],
        ..Default::default()
    };
    let bytes = onnx_model(vec![node("Add", &["x", "w"], &["y"])], vec![w], &[1]);
    let e = fuselage_frontends::onnx::load_onnx_bytes(&bytes, "init.onnx")
        .unwrap_err()
        .to_string();
    assert!(e.contains("`w`") && e.contains("memory budget"), "{e}");
    // An initializer whose dims overflow.
    let w = TensorProto {
        name: "w".into(),
        dims: vec![1 << 40, 1 << 40],
        data_type: DataType::Float as i32,
        ..Default::default()
    };
    let bytes = onnx_model(vec![node("Add", &["x", "w"], &["y"])], vec![w], &[1]);
    let e = fuselage_frontends::onnx::load_onnx_bytes(&bytes, "overflow.onnx")
        .unwrap_err()
        .to_string();
    assert!(e.contains("overflows"), "{e}");
    // A graph input of 2^48 elements.
    let bytes = onnx_model(
        vec![node("Relu", &["x"], &["y"])],
        vec![],
        &[1 << 24, 1 << 24],
    );
    let e = fuselage_frontends::onnx::load_onnx_bytes(&bytes, "input.onnx")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("graph input `x`") && e.contains("memory budget"),
        "{e}"
    );
}

#[test]
fn onnx_constant_of_shape_too_large_is_an_error_at_import() {
    let shape = TensorProto {
        name: "shape".into(),
        dims: vec![3],
        data_type: DataType::Int64 as i32,
        int64_data: vec![1 << 20, 1 << 20, 1 << 20],
        ..Default::default()
    };
    let nodes = vec![
        node("ConstantOfShape", &["shape"], &["c"]),
        node("Add", &["x", "c"], &["y"]),
    ];
    let bytes = onnx_model(nodes, vec![shape], &[1]);
    let e = fuselage_frontends::onnx::load_onnx_bytes(&bytes, "cos.onnx")
        .unwrap_err()
        .to_string();
    assert!(e.contains("memory budget"), "{e}");
}
