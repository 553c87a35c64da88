//! ONNX importer tests: models written here with prost, checked on the reference interpreter
//! against naive computations; error reporting; corrupt input; the real ddpm-fmnist exports.

use fuselage_frontends::onnx::proto::*;
use fuselage_frontends::onnx::{load_onnx, load_onnx_bytes};
use fuselage_frontends::FrontendError;
use fuselage_ir::{Executor, Module, Reference, Tensor};
use proptest::prelude::*;
use prost::Message;

// ----- model writing helpers -----

fn attr_i(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}
fn attr_f(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Float as i32,
        f,
        ..Default::default()
    }
}
fn attr_ints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: ints.to_vec(),
        ..Default::default()
    }
}

fn node(
    op: &str,
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
    attrs: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs,
        ..Default::default()
    }
}

fn f32_tensor(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DataType::Float as i32,
        raw_data: data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn i64_tensor(name: &str, dims: &[i64], data: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: DataType::Int64 as i32,
        int64_data: data.to_vec(),
        ..Default::default()
    }
}

enum D {
    V(i64),
    P(&'static str),
}

fn value_info(name: &str, elem: DataType, dims: &[D]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: elem as i32,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| match d {
                            D::V(v) => Dimension {
                                dim_value: Some(*v),
                                ..Default::default()
                            },
                            D::P(p) => Dimension {
                                dim_param: Some(p.to_string()),
                                ..Default::default()
                            },
                        })
                        .collect(),
                }),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn model(
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
) -> Vec<u8> {
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        producer_name: "fuselage-test".into(),
        graph: Some(GraphProto {
            node: nodes,
            name: "g".into(),
            initializer: inits,
            input: inputs,
            output: outputs,
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// Deterministic pseudo-random values in [-1, 1).
fn vals(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f64 / (1u64 << 24) as f64 * 2.0 - 1.0) as f32
        })
        .collect()
}

fn node_names(m: &Module) -> Vec<String> {
    m.entry()
        .unwrap()
        .nodes()
        .filter_map(|(_, n)| n.name.clone())
        .collect()
}

fn run(m: &Module, inputs: &[Tensor]) -> Vec<Tensor> {
    Reference.run(m, "main", inputs).expect("reference run")
}

fn assert_close(got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "element {i}: got {g}, want {w}"
        );
    }
}

// ----- MLP -----

/// The model bytes and its weights w1, b1, w2, b2.
type Mlp = (Vec<u8>, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);

fn mlp_bytes() -> Mlp {
    // fc1: Gemm with transB (torch Linear layout [out, in]); fc2: Gemm with alpha/beta.
    let (w1, b1, w2, b2) = (vals(6 * 4, 1), vals(6, 2), vals(6 * 3, 3), vals(3, 4));
    let bytes = model(
        vec![
            node(
                "Gemm",
                "fc1",
                &["x", "w1", "b1"],
                &["h"],
                vec![attr_i("transB", 1)],
            ),
            node("Relu", "act", &["h"], &["hr"], vec![]),
            node(
                "Gemm",
                "fc2",
                &["hr", "w2", "b2"],
                &["y"],
                vec![attr_f("alpha", 0.5), attr_f("beta", 2.0)],
            ),
        ],
        vec![
            f32_tensor("w1", &[6, 4], &w1),
            f32_tensor("b1", &[6], &b1),
            f32_tensor("w2", &[6, 3], &w2),
            f32_tensor("b2", &[3], &b2),
        ],
        vec![value_info("x", DataType::Float, &[D::P("N"), D::V(4)])],
        vec![value_info("y", DataType::Float, &[D::P("N"), D::V(3)])],
    );
    (bytes, w1, b1, w2, b2)
}

#[test]
fn mlp_gemm_relu_matches_naive() {
    let (bytes, w1, b1, w2, b2) = mlp_bytes();
    let m = load_onnx_bytes(&bytes, "mlp.onnx").unwrap();
    let g = m.entry().unwrap();
    assert_eq!(g.input_names(), vec!["x"]);
    assert_eq!(g.outputs[0].name, "y");
    let names = node_names(&m);
    for n in ["fc1", "act", "fc2"] {
        assert!(
            names.iter().any(|x| x == n),
            "node name {n} kept: {names:?}"
        );
    }
    // The weights keep their initializer names in the constant pool (w1 folded through the
    // transpose of transB).
    for c in ["w1.transpose", "b1", "w2"] {
        assert!(
            m.constants.contains_key(c),
            "constant {c}: {:?}",
            m.constants.keys()
        );
    }
    let n = 5;
    let x = vals(n * 4, 9);
    let out = run(&m, &[Tensor::from_f32(vec![n, 4], &x).unwrap()]);
    assert_eq!(out[0].shape(), &[n, 3]);
    let mut want = vec![];
    for r in 0..n {
        let h: Vec<f64> = (0..6)
            .map(|j| {
                let s: f64 = (0..4)
                    .map(|k| x[r * 4 + k] as f64 * w1[j * 4 + k] as f64)
                    .sum();
                (s + b1[j] as f64).max(0.0)
            })
            .collect();
        for o in 0..3 {
            let s: f64 = (0..6).map(|j| h[j] * w2[j * 3 + o] as f64).sum();
            want.push(0.5 * s + 2.0 * b2[o] as f64);
        }
    }
    assert_close(out[0].data(), &want, 1e-5);
}

// ----- transformer-ish block with a shape subgraph -----

#[test]
fn attention_block_with_shape_subgraph() {
    let (d, h, dh) = (8usize, 2usize, 4usize);
    let (wq, wk, wv) = (vals(d * d, 11), vals(d * d, 12), vals(d * d, 13));
    let (ln_s, ln_b) = (vals(d, 14), vals(d, 15));
    let scale = 1.0 / (dh as f32).sqrt();
    let mut nodes = vec![
        node(
            "LayerNormalization",
            "ln",
            &["x", "ln_s", "ln_b"],
            &["xn"],
            vec![attr_f("epsilon", 1e-5)],
        ),
        node("MatMul", "q_proj", &["xn", "wq"], &["q"], vec![]),
        node("MatMul", "k_proj", &["xn", "wk"], &["k"], vec![]),
        node("MatMul", "v_proj", &["xn", "wv"], &["v"], vec![]),
        // shape subgraph: [B, S, h, dh] from Shape(x)
        node("Shape", "shape_x", &["x"], &["sx"], vec![]),
        node(
            "Gather",
            "get_b",
            &["sx", "i0"],
            &["b"],
            vec![attr_i("axis", 0)],
        ),
        node(
            "Gather",
            "get_s",
            &["sx", "i1"],
            &["s"],
            vec![attr_i("axis", 0)],
        ),
        node("Unsqueeze", "b_1d", &["b", "ax0"], &["b1"], vec![]),
        node("Unsqueeze", "s_1d", &["s", "ax0"], &["s1"], vec![]),
        node(
            "Concat",
            "heads_shape",
            &["b1", "s1", "hd"],
            &["hs"],
            vec![attr_i("axis", 0)],
        ),
        node(
            "Concat",
            "merge_shape",
            &["b1", "s1", "dm"],
            &["ms"],
            vec![attr_i("axis", 0)],
        ),
    ];
    for t in ["q", "k", "v"] {
        let (r, tr) = (format!("{t}_r"), format!("{t}_t"));
        nodes.push(node(
            "Reshape",
            &format!("{t}_split_heads"),
            &[t, "hs"],
            &[&r],
            vec![],
        ));
        let perm: &[i64] = if t == "k" {
            &[0, 2, 3, 1]
        } else {
            &[0, 2, 1, 3]
        };
        nodes.push(node(
            "Transpose",
            &format!("{t}_transpose"),
            &[&r],
            &[&tr],
            vec![attr_ints("perm", perm)],
        ));
    }
    nodes.extend([
        node("MatMul", "scores", &["q_t", "k_t"], &["sc"], vec![]),
        node("Mul", "scale", &["sc", "scale_c"], &["scs"], vec![]),
        node(
            "Softmax",
            "probs",
            &["scs"],
            &["p"],
            vec![attr_i("axis", -1)],
        ),
        node("MatMul", "context", &["p", "v_t"], &["c"], vec![]),
        node(
            "Transpose",
            "ctx_t",
            &["c"],
            &["ct"],
            vec![attr_ints("perm", &[0, 2, 1, 3])],
        ),
        node("Reshape", "merge_heads", &["ct", "ms"], &["cm"], vec![]),
        node("Add", "residual", &["x", "cm"], &["y"], vec![]),
    ]);
    let bytes = model(
        nodes,
        vec![
            f32_tensor("wq", &[8, 8], &wq),
            f32_tensor("wk", &[8, 8], &wk),
            f32_tensor("wv", &[8, 8], &wv),
            f32_tensor("ln_s", &[8], &ln_s),
            f32_tensor("ln_b", &[8], &ln_b),
            f32_tensor("scale_c", &[], &[scale]),
            i64_tensor("i0", &[], &[0]),
            i64_tensor("i1", &[], &[1]),
            i64_tensor("ax0", &[1], &[0]),
            i64_tensor("hd", &[2], &[h as i64, dh as i64]),
            i64_tensor("dm", &[1], &[d as i64]),
        ],
        vec![value_info(
            "x",
            DataType::Float,
            &[D::P("B"), D::P("S"), D::V(8)],
        )],
        vec![value_info(
            "y",
            DataType::Float,
            &[D::P("B"), D::P("S"), D::V(8)],
        )],
    );
    let m = load_onnx_bytes(&bytes, "block.onnx").unwrap();
    let g = m.entry().unwrap();
    // The shape subgraph folded away: no gather/concat/shape nodes in the IR, symbolic dims kept.
    let hist = m.op_histogram();
    assert!(
        !hist.contains_key("gather") && !hist.contains_key("concat"),
        "{hist:?}"
    );
    assert_eq!(
        g.output_types()[0].as_ref().unwrap().to_string(),
        "f32[B,S,8]"
    );
    let names = node_names(&m);
    for n in [
        "ln",
        "q_proj",
        "q_split_heads",
        "scores",
        "probs",
        "merge_heads",
        "residual",
    ] {
        assert!(names.iter().any(|x| x == n), "node {n} kept: {names:?}");
    }
    let (b, s) = (2usize, 3usize);
    let x = vals(b * s * d, 21);
    let out = run(&m, &[Tensor::from_f32(vec![b, s, d], &x).unwrap()]);
    assert_eq!(out[0].shape(), &[b, s, d]);
    // naive
    let mut want = vec![0.0f64; b * s * d];
    for bi in 0..b {
        let mut xn = vec![vec![0.0f64; d]; s];
        for si in 0..s {
            let row: Vec<f64> = (0..d).map(|j| x[(bi * s + si) * d + j] as f64).collect();
            let mean = row.iter().sum::<f64>() / d as f64;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d as f64;
            for j in 0..d {
                xn[si][j] = (row[j] - mean) / (var + 1e-5).sqrt() * ln_s[j] as f64 + ln_b[j] as f64;
            }
        }
        let proj = |w: &[f32]| -> Vec<Vec<f64>> {
            (0..s)
                .map(|si| {
                    (0..d)
                        .map(|o| (0..d).map(|j| xn[si][j] * w[j * d + o] as f64).sum())
                        .collect()
                })
                .collect()
        };
        let (q, k, v) = (proj(&wq), proj(&wk), proj(&wv));
        for hi in 0..h {
            for i in 0..s {
                let sc: Vec<f64> = (0..s)
                    .map(|j| {
                        (0..dh)
                            .map(|e| q[i][hi * dh + e] * k[j][hi * dh + e])
                            .sum::<f64>()
                            * scale as f64
                    })
                    .collect();
                let mx = sc.iter().cloned().fold(f64::MIN, f64::max);
                let ex: Vec<f64> = sc.iter().map(|v| (v - mx).exp()).collect();
                let z: f64 = ex.iter().sum();
                for e in 0..dh {
                    let c: f64 = (0..s).map(|j| ex[j] / z * v[j][hi * dh + e]).sum();
                    want[(bi * s + i) * d + hi * dh + e] =
                        x[(bi * s + i) * d + hi * dh + e] as f64 + c;
                }
            }
        }
    }
    assert_close(out[0].data(), &want, 1e-4);
}

// ----- errors -----

#[test]
fn all_unsupported_ops_reported_at_once() {
    let mut custom = node("FancyOp", "my_custom", &["a"], &["b"], vec![]);
    custom.domain = "com.example".into();
    let bytes = ModelProto {
        ir_version: 8,
        opset_import: vec![
            OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            },
            OperatorSetIdProto {
                domain: "com.example".into(),
                version: 3,
            },
        ],
        graph: Some(GraphProto {
            node: vec![
                node("Det", "det_node", &["x"], &["a0"], vec![]),
                node("Relu", "fine", &["x"], &["a"], vec![]),
                custom,
                node("NonZero", "nonzero_node", &["a"], &["c"], vec![]),
                node("Add", "after", &["b", "c"], &["y"], vec![]),
            ],
            input: vec![value_info("x", DataType::Float, &[D::V(2), D::V(2)])],
            output: vec![value_info("y", DataType::Float, &[D::V(2), D::V(2)])],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec();
    let e = load_onnx_bytes(&bytes, "three.onnx").unwrap_err();
    let msg = e.to_string();
    let FrontendError::OnnxUnsupported { file, ops, .. } = &e else {
        panic!("wrong error: {msg}")
    };
    assert_eq!(file, "three.onnx");
    let got: Vec<(String, i64, String)> = ops
        .iter()
        .map(|o| (o.op_type.clone(), o.opset, o.node.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("Det".to_string(), 17, "det_node".to_string()),
            (
                "com.example::FancyOp".to_string(),
                3,
                "my_custom".to_string()
            ),
            ("NonZero".to_string(), 17, "nonzero_node".to_string()),
        ]
    );
    for s in [
        "Det (opset 17) at node `det_node`",
        "com.example::FancyOp (opset 3)",
        "NonZero (opset 17) at node `nonzero_node`: the size of its output depends on the values",
    ] {
        assert!(msg.contains(s), "{msg}");
    }
}

#[test]
fn unsupported_configuration_is_reported_with_reason() {
    // Dropout in training mode with a non-zero ratio is random: a known op in a form the
    // importer does not map.
    let bytes = model(
        vec![node("Dropout", "drop", &["x", "r", "t"], &["y"], vec![])],
        vec![
            f32_tensor("r", &[], &[0.5]),
            TensorProto {
                name: "t".into(),
                dims: vec![],
                data_type: DataType::Bool as i32,
                int32_data: vec![1],
                ..Default::default()
            },
        ],
        vec![value_info("x", DataType::Float, &[D::V(2), D::V(2)])],
        vec![value_info("y", DataType::Float, &[D::V(2), D::V(2)])],
    );
    let msg = load_onnx_bytes(&bytes, "d.onnx").unwrap_err().to_string();
    assert!(
        msg.contains("Dropout (opset 17) at node `drop`: training-mode dropout with ratio 0.5"),
        "{msg}"
    );
}

#[test]
fn raw_data_size_mismatch_names_the_tensor() {
    let mut t = f32_tensor("encoder.weight", &[4, 4], &[0.5; 15]);
    let bytes = model(
        vec![node(
            "MatMul",
            "mm",
            &["x", "encoder.weight"],
            &["y"],
            vec![],
        )],
        vec![t.clone()],
        vec![value_info("x", DataType::Float, &[D::V(1), D::V(4)])],
        vec![value_info("y", DataType::Float, &[D::V(1), D::V(4)])],
    );
    let msg = load_onnx_bytes(&bytes, "w.onnx").unwrap_err().to_string();
    assert!(
        msg.contains("w.onnx") && msg.contains("`encoder.weight`") && msg.contains("60 bytes"),
        "{msg}"
    );
    // Typed data with the wrong count, and a shape that overflows.
    t.raw_data.clear();
    t.float_data = vec![1.0; 3];
    let bytes = model(vec![], vec![t.clone()], vec![], vec![]);
    let msg = load_onnx_bytes(&bytes, "w.onnx").unwrap_err().to_string();
    assert!(
        msg.contains("`encoder.weight`") && msg.contains("float_data holds 3"),
        "{msg}"
    );
    t.dims = vec![1 << 40, 1 << 40];
    let bytes = model(vec![], vec![t], vec![], vec![]);
    let msg = load_onnx_bytes(&bytes, "w.onnx").unwrap_err().to_string();
    assert!(
        msg.contains("`encoder.weight`") && msg.contains("overflows"),
        "{msg}"
    );
}

#[test]
fn truncated_and_garbage_bytes_are_clear_errors() {
    let (bytes, ..) = mlp_bytes();
    let msg = load_onnx_bytes(&bytes[..bytes.len() / 2], "half.onnx")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("half.onnx") && msg.contains("not a valid ONNX protobuf"),
        "{msg}"
    );
    let msg = load_onnx_bytes(b"\xff\xff\xff\xff", "junk.onnx")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("junk.onnx"), "{msg}");
    let msg = load_onnx("/nonexistent/model.onnx")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("/nonexistent/model.onnx"), "{msg}");
    // A model without a graph.
    let e = load_onnx_bytes(&ModelProto::default().encode_to_vec(), "empty.onnx").unwrap_err();
    assert!(e.to_string().contains("has no graph"), "{e}");
}

// ----- 16/32/64-bit integer element types -----

/// int16, uint16, uint32 and uint64 keep their dtype through import (no widening): inputs,
/// initializers from the typed fields, elementwise ops, comparisons and casts.
#[test]
fn narrow_and_unsigned_integer_types_keep_their_dtype() {
    use fuselage_ir::DType;
    let u16_two = TensorProto {
        name: "two".into(),
        dims: vec![1],
        data_type: DataType::Uint16 as i32,
        int32_data: vec![2],
        ..Default::default()
    };
    let u64_k = TensorProto {
        name: "k".into(),
        dims: vec![3],
        data_type: DataType::Uint64 as i32,
        uint64_data: vec![1 << 40, 0, 7],
        ..Default::default()
    };
    let bytes = model(
        vec![
            node("Add", "add", &["x", "y"], &["s"], vec![]),
            node("Div", "div", &["s", "two"], &["q"], vec![]),
            node("Less", "lt", &["x", "y"], &["lt"], vec![]),
            node("Max", "max", &["u", "k"], &["m"], vec![]),
            node("Sub", "sub", &["a", "b"], &["d"], vec![]),
            node(
                "Cast",
                "cast",
                &["x"],
                &["c"],
                vec![attr_i("to", DataType::Uint32 as i64)],
            ),
        ],
        vec![u16_two, u64_k],
        vec![
            value_info("x", DataType::Uint16, &[D::V(3)]),
            value_info("y", DataType::Uint16, &[D::V(3)]),
            value_info("u", DataType::Uint64, &[D::V(3)]),
            value_info("a", DataType::Int16, &[D::V(3)]),
            value_info("b", DataType::Int16, &[D::V(3)]),
        ],
        vec![
            value_info("s", DataType::Uint16, &[D::V(3)]),
            value_info("q", DataType::Uint16, &[D::V(3)]),
            value_info("lt", DataType::Bool, &[D::V(3)]),
            value_info("m", DataType::Uint64, &[D::V(3)]),
            value_info("d", DataType::Int16, &[D::V(3)]),
            value_info("c", DataType::Uint32, &[D::V(3)]),
        ],
    );
    let m = load_onnx_bytes(&bytes, "ints.onnx").unwrap();
    let g = m.entry().unwrap();
    let in_types: Vec<DType> = g.input_types().iter().map(|t| t.dtype).collect();
    assert_eq!(
        in_types,
        [DType::U16, DType::U16, DType::U64, DType::I16, DType::I16]
    );
    let t = |d, v: &[f64]| Tensor::new(d, vec![v.len()], v.to_vec()).unwrap();
    let p53 = (1u64 << 53) as f64;
    let out = run(
        &m,
        &[
            t(DType::U16, &[65535.0, 7.0, 100.0]),
            t(DType::U16, &[0.0, 9.0, 101.0]),
            t(DType::U64, &[p53, 3.0, 6.0]),
            t(DType::I16, &[-32768.0, 32767.0, -5.0]),
            t(DType::I16, &[0.0, -1.0, 5.0]),
        ],
    );
    let dts: Vec<DType> = out.iter().map(|t| t.dtype()).collect();
    assert_eq!(
        dts,
        [
            DType::U16,
            DType::U16,
            DType::Bool,
            DType::U64,
            DType::I16,
            DType::U32
        ]
    );
    assert_eq!(out[0].data(), &[65535.0, 16.0, 201.0]);
    assert_eq!(out[1].data(), &[32767.0, 8.0, 100.0]);
    assert_eq!(out[2].data(), &[0.0, 1.0, 1.0]);
    assert_eq!(out[3].data(), &[p53, 3.0, 7.0]);
    assert_eq!(out[4].data(), &[-32768.0, 32767.0, -10.0]);
    assert_eq!(out[5].data(), &[65535.0, 7.0, 100.0]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn truncation_never_panics(cut in 0usize..1000) {
        let (bytes, ..) = mlp_bytes();
        let cut = cut % bytes.len();
        // Decoding either fails with an ONNX error or (for cuts at message boundaries) yields a
        // smaller model that imports or fails cleanly — never a panic.
        if let Err(e) = load_onnx_bytes(&bytes[..cut], "cut.onnx") {
            prop_assert!(e.to_string().contains("cut.onnx"));
        }
    }

    #[test]
    fn mutation_never_panics(edits in proptest::collection::vec((0usize..1000, any::<u8>()), 1..8)) {
        let (mut bytes, ..) = mlp_bytes();
        let n = bytes.len();
        for (i, b) in edits {
            bytes[i % n] = b;
        }
        if let Err(e) = load_onnx_bytes(&bytes, "mut.onnx") {
            prop_assert!(e.to_string().contains("mut.onnx"));
        }
    }
}

// ----- real exports -----

fn ddpm_dir() -> std::path::PathBuf {
    fuselage_frontends::assets::find_model("ddpm-fmnist").unwrap_or_else(|e| panic!("{e}"))
}

/// A little-endian f32 or i64 `.npy` file as f64 values and shape.
fn read_npy(path: &std::path::Path) -> (Vec<usize>, Vec<f64>) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&b[..6], b"\x93NUMPY");
    let (hl, start) = if b[6] == 1 {
        (u16::from_le_bytes([b[8], b[9]]) as usize, 10)
    } else {
        (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12)
    };
    let header = std::str::from_utf8(&b[start..start + hl]).unwrap();
    let shape_s = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape: Vec<usize> = shape_s
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let data = &b[start + hl..];
    let v = if header.contains("<f4") {
        data.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect()
    } else if header.contains("<i8") {
        data.chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect()
    } else {
        panic!("unsupported npy header {header}")
    };
    (shape, v)
}

#[test]
fn ddpm_classifier_judges_golden_samples() {
    let dir = ddpm_dir();
    let m = load_onnx(dir.join("classifier.onnx")).unwrap();
    let (shape, x) = read_npy(&dir.join("golden/ddim_s50_w3_p00.npy"));
    let (_, labels) = read_npy(&dir.join("golden/labels.npy"));
    let n = 10; // half the samples keep the test short on the reference interpreter
    let per = shape[1..].iter().product::<usize>();
    let xs: Vec<f64> = x[..n * per].iter().map(|v| v.clamp(-1.0, 1.0)).collect();
    let t = Tensor::new(fuselage_ir::DType::F32, vec![n, 1, 32, 32], xs).unwrap();
    let out = run(&m, &[t]);
    assert_eq!(out[0].shape(), &[n, 10]);
    let mut correct = 0;
    for (i, &label) in labels.iter().enumerate().take(n) {
        let row = &out[0].data()[i * 10..(i + 1) * 10];
        let arg = (0..10).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
        correct += usize::from(arg as f64 == label);
    }
    // The README: the classifier gets all 20 DDIM p=0 samples right.
    assert_eq!(correct, n, "classifier accuracy on golden samples");
}

#[test]
fn ddpm_unet_predicts_the_noise() {
    let dir = ddpm_dir();
    let m = load_onnx(dir.join("unet.onnx")).unwrap();
    let g = m.entry().unwrap();
    assert_eq!(g.input_names(), vec!["x", "t", "y"]);
    assert_eq!(
        g.output_types()[0].as_ref().unwrap().to_string(),
        "f32[batch,1,32,32]"
    );
    // Noise a clean golden sample to t = 300 and ask the model for the noise, conditioned on
    // the right class: a working network recovers most of it.
    let (_, x0) = read_npy(&dir.join("golden/ddim_s50_w3_p00.npy"));
    let (_, labels) = read_npy(&dir.join("golden/labels.npy"));
    let t_step = 300usize;
    let abar: f64 = (0..=t_step)
        .map(|i| 1.0 - (1e-4 + (0.02 - 1e-4) * i as f64 / 999.0))
        .product();
    let eps: Vec<f64> = vals(1024, 77).iter().map(|&v| v as f64 * 1.7).collect();
    let xt: Vec<f64> = (0..1024)
        .map(|i| abar.sqrt() * x0[i].clamp(-1.0, 1.0) + (1.0 - abar).sqrt() * eps[i])
        .collect();
    let out = run(
        &m,
        &[
            Tensor::new(fuselage_ir::DType::F32, vec![1, 1, 32, 32], xt).unwrap(),
            Tensor::new(fuselage_ir::DType::I64, vec![1], vec![t_step as f64]).unwrap(),
            Tensor::new(fuselage_ir::DType::I64, vec![1], vec![labels[0]]).unwrap(),
        ],
    );
    let pred = out[0].data();
    let mse: f64 = pred
        .iter()
        .zip(&eps)
        .map(|(p, e)| (p - e).powi(2))
        .sum::<f64>()
        / 1024.0;
    let var: f64 = eps.iter().map(|e| e * e).sum::<f64>() / 1024.0;
    eprintln!("ddpm unet: noise-prediction mse {mse:.4} vs noise variance {var:.4}");
    assert!(
        mse < 0.2 * var,
        "noise prediction mse {mse} vs noise variance {var}"
    );
}

/// `docs/onnx.md`'s op coverage table is the importer's op table: one row per family file,
/// the op types each converts, in table order.
#[test]
fn coverage_table_lists_exactly_the_supported_ops() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/onnx.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let section = text
        .split("## Op coverage")
        .nth(1)
        .expect("an `## Op coverage` section");
    let rows: Vec<(String, Vec<String>)> = section
        .lines()
        .skip_while(|l| !l.starts_with("| `"))
        .take_while(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            let family = cells[0].trim_matches('`').to_string();
            let ops = cells[1].split_whitespace().map(str::to_string).collect();
            (family, ops)
        })
        .collect();
    let want: Vec<(String, Vec<String>)> = fuselage_frontends::onnx::supported_ops_by_family()
        .into_iter()
        .map(|(f, ops)| (f.to_string(), ops.into_iter().map(str::to_string).collect()))
        .collect();
    assert_eq!(
        rows, want,
        "docs/onnx.md's coverage table differs from the op tables"
    );
}
