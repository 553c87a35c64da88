//! The patterns of PyTorch's dynamo export of MiniLM-L6 (BERT) that need more than a one-op
//! mapping, reproduced in small models written here (always run):
//!
//! - `Slice(position_ids, [0], Shape(input_ids)[1:2], [1])`: a slice whose end is the symbolic
//!   sequence length → `gather(position_ids, iota [S], axis 1)`;
//! - the padding mask `GatherND(Cast(mask, bool), Concat(Unsqueeze(Expand(arange(B)[:,None,None,
//!   None])), Unsqueeze(Expand(arange(S)[None,None,None,:]))))` → `reshape(mask, [B,1,1,S])`;
//!
//! and the real export checked against the golden hidden states (opt-in, see
//! [`minilm_dynamo_export_matches_golden`]).

use fuselage_frontends::onnx::proto::*;
use fuselage_frontends::onnx::{load_onnx, load_onnx_bytes};
use fuselage_ir::{DType, Executor, Module, Reference, Tensor};
use prost::Message;
use std::path::{Path, PathBuf};

// ----- model writing helpers -----

fn attr_i(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}

fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn with(mut n: NodeProto, attrs: Vec<AttributeProto>) -> NodeProto {
    n.attribute = attrs;
    n
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

/// A dim: fixed size or `dim_param`.
enum D {
    V(i64),
    P(&'static str),
}

fn value_info(name: &str, elem: DataType, dims: &[D]) -> ValueInfoProto {
    let dim = dims
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
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: elem as i32,
                shape: Some(TensorShapeProto { dim }),
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

fn run(m: &Module, inputs: &[Tensor]) -> Result<Vec<Tensor>, String> {
    Reference.run(m, "main", inputs).map_err(|e| e.to_string())
}

fn i64s(shape: &[usize], v: &[i64]) -> Tensor {
    Tensor::new(
        DType::I64,
        shape.to_vec(),
        v.iter().map(|&x| x as f64).collect(),
    )
    .unwrap()
}

fn output_types(m: &Module) -> Vec<String> {
    m.entry()
        .unwrap()
        .output_types()
        .iter()
        .map(|t| t.as_ref().unwrap().to_string())
        .collect()
}

// ----- the export's patterns -----

/// The two nodes of the dynamo MiniLM export, with the same node names, inputs and shape
/// helpers: `positions = position_ids[:, :S]` and the `[B,1,1,S]` padding mask.
fn minilm_patterns() -> Vec<u8> {
    let positions: Vec<i64> = (0..8).map(|i| 100 + 3 * i).collect();
    let nodes = vec![
        // position_ids[:, :S]
        with(
            node("Shape", "node_Shape_4", &["token_type_ids"], &["val_4"]),
            vec![attr_i("start", 1), attr_i("end", 2)],
        ),
        node(
            "Slice",
            "node_slice_1",
            &["position_ids", "val_9", "val_4", "val_15", "val_15"],
            &["positions"],
        ),
        // arange(B)[:, None, None, None]
        with(
            node("Shape", "node_Shape_3", &["input_ids"], &["val_3"]),
            vec![attr_i("start", 0), attr_i("end", 1)],
        ),
        node("Squeeze", "node_sym_size_int_10", &["val_3"], &["b"]),
        node("Range", "node_arange", &["zero", "b", "one"], &["arange"]),
        node(
            "Unsqueeze",
            "node_Unsqueeze_21",
            &["arange", "ax12"],
            &["u1"],
        ),
        node("Unsqueeze", "node_unsqueeze_2", &["u1", "ax3"], &["u2"]),
        // arange(S)[None, None, None, :]
        node("Squeeze", "node_sym_size_int_11", &["val_4"], &["s"]),
        node(
            "Range",
            "node_arange_2",
            &["zero", "s", "one"],
            &["arange_2"],
        ),
        node(
            "Unsqueeze",
            "node_Unsqueeze_23",
            &["arange_2", "ax01"],
            &["u7"],
        ),
        node("Unsqueeze", "node_unsqueeze_11", &["u7", "ax2"], &["u11"]),
        // broadcast both to [B,1,1,S], stack on a new last axis, GatherND into the mask
        node("Max", "node_Max_44", &["u2", "u11"], &["mx"]),
        with(
            node("Shape", "node_Shape_45", &["mx"], &["val_47"]),
            vec![attr_i("start", 0)],
        ),
        node("Expand", "node_Expand_46", &["u2", "val_47"], &["e1"]),
        node("Unsqueeze", "node_Unsqueeze_48", &["e1", "minus1"], &["i1"]),
        node("Expand", "node_Expand_49", &["u11", "val_47"], &["e2"]),
        node("Unsqueeze", "node_Unsqueeze_50", &["e2", "minus1"], &["i2"]),
        with(
            node("Concat", "node_Concat_51", &["i1", "i2"], &["val_53"]),
            vec![attr_i("axis", -1)],
        ),
        with(
            node("Cast", "node__to_copy", &["attention_mask"], &["mask_b"]),
            vec![attr_i("to", DataType::Bool as i64)],
        ),
        with(
            node(
                "GatherND",
                "node_GatherND_52",
                &["mask_b", "val_53"],
                &["mask4"],
            ),
            vec![attr_i("batch_dims", 0)],
        ),
    ];
    let inits = vec![
        i64_tensor("position_ids", &[1, 8], &positions),
        i64_tensor("val_9", &[1], &[0]),
        i64_tensor("val_15", &[1], &[1]),
        i64_tensor("zero", &[], &[0]),
        i64_tensor("one", &[], &[1]),
        i64_tensor("ax12", &[2], &[1, 2]),
        i64_tensor("ax3", &[1], &[3]),
        i64_tensor("ax01", &[2], &[0, 1]),
        i64_tensor("ax2", &[1], &[2]),
        i64_tensor("minus1", &[1], &[-1]),
    ];
    let bs = || [D::P("batch"), D::P("sequence")];
    model(
        nodes,
        inits,
        vec![
            value_info("input_ids", DataType::Int64, &bs()),
            value_info("attention_mask", DataType::Int64, &bs()),
            value_info("token_type_ids", DataType::Int64, &bs()),
        ],
        vec![
            value_info("positions", DataType::Int64, &[D::V(1), D::P("sequence")]),
            value_info(
                "mask4",
                DataType::Bool,
                &[D::P("batch"), D::V(1), D::V(1), D::P("sequence")],
            ),
        ],
    )
}

#[test]
fn position_slice_and_padding_mask_gather_nd_match_onnx_semantics() {
    let m = load_onnx_bytes(&minilm_patterns(), "patterns.onnx").unwrap();
    assert_eq!(
        output_types(&m),
        vec!["i64[1,sequence]", "bool[batch,1,1,sequence]"]
    );
    // The slice keeps the node's name; slicing the 8 stored positions to `sequence` assumes
    // `sequence <= 8`, which makes its type `[1, sequence]`. The GatherND is the general op.
    let g = m.entry().unwrap();
    let named = |name: &str| {
        g.nodes()
            .find(|(_, n)| n.name.as_deref() == Some(name))
            .map(|(_, n)| n.op.name().to_string())
    };
    assert_eq!(named("node_slice_1").as_deref(), Some("slice"));
    assert_eq!(named("node_GatherND_52").as_deref(), Some("gather_nd"));
    assert_eq!(m.facts.get("sequence").max, Some(8));

    for (b, s) in [(2usize, 3usize), (1, 8), (3, 1)] {
        let ids = i64s(&[b, s], &vec![7; b * s]);
        // A mask with a different padding length per row.
        let mask: Vec<i64> = (0..b * s)
            .map(|f| i64::from(f % s < s - (f / s) % s))
            .collect();
        let out = run(
            &m,
            &[
                ids.clone(),
                i64s(&[b, s], &mask),
                i64s(&[b, s], &vec![0; b * s]),
            ],
        )
        .unwrap();
        // positions = position_ids[:, :s]
        assert_eq!(out[0].shape(), &[1, s]);
        let want: Vec<f64> = (0..s).map(|i| (100 + 3 * i) as f64).collect();
        assert_eq!(out[0].data(), &want[..]);
        // mask4[b, 0, 0, j] = mask[b, j] != 0
        assert_eq!(out[1].shape(), &[b, 1, 1, s]);
        assert_eq!(out[1].dtype(), DType::Bool);
        let want: Vec<f64> = mask.iter().map(|&v| (v != 0) as i64 as f64).collect();
        assert_eq!(out[1].data(), &want[..], "mask for batch {b} x seq {s}");
    }

    // Past the 8 stored positions the model cannot run (ONNX would clamp the slice to 8 rows
    // and fail later): binding sequence = 9 is a clear error naming the assumed fact.
    let (b, s) = (1, 9);
    let z = i64s(&[b, s], &vec![1; b * s]);
    let e = run(&m, &[z.clone(), z.clone(), z]).unwrap_err();
    assert!(e.contains("sequence = 9 violates sequence <= 8"), "{e}");
}

/// `out[p0, p1, :] = data[p1, p0, :]`: a grid whose components run over the output axes in the
/// other order (a transpose), along symbolic dims, from dims of the data's own shape.
#[test]
fn gather_nd_over_a_transposed_index_grid() {
    let nodes = vec![
        node("Shape", "shape", &["data"], &["sh"]),
        node("Gather", "ga", &["sh", "i0"], &["na"]),
        node("Gather", "gb", &["sh", "i1"], &["nb"]),
        node("Range", "ra", &["zero", "na", "one"], &["ra"]),
        node("Range", "rb", &["zero", "nb", "one"], &["rb"]),
        node("Unsqueeze", "ua", &["ra", "ax0"], &["ua"]), // [1, a]
        node("Unsqueeze", "ub", &["rb", "ax1"], &["ub"]), // [b, 1]
        node("Unsqueeze", "nb1", &["nb", "ax0"], &["nbv"]),
        node("Unsqueeze", "na1", &["na", "ax0"], &["nav"]),
        with(
            node("Concat", "target", &["nbv", "nav"], &["ba"]),
            vec![attr_i("axis", 0)],
        ),
        node("Expand", "ea", &["ua", "ba"], &["ea"]), // [b, a]: p1
        node("Expand", "eb", &["ub", "ba"], &["eb"]), // [b, a]: p0
        node("Unsqueeze", "ia", &["ea", "minus1"], &["ia"]),
        node("Unsqueeze", "ib", &["eb", "minus1"], &["ib"]),
        with(
            node("Concat", "stack", &["ia", "ib"], &["idx"]),
            vec![attr_i("axis", -1)],
        ),
        node("GatherND", "gnd", &["data", "idx"], &["y"]),
    ];
    let inits = vec![
        i64_tensor("i0", &[], &[0]),
        i64_tensor("i1", &[], &[1]),
        i64_tensor("zero", &[], &[0]),
        i64_tensor("one", &[], &[1]),
        i64_tensor("ax0", &[1], &[0]),
        i64_tensor("ax1", &[1], &[1]),
        i64_tensor("minus1", &[1], &[-1]),
    ];
    let bytes = model(
        nodes,
        inits,
        vec![value_info(
            "data",
            DataType::Float,
            &[D::P("a"), D::P("b"), D::V(2)],
        )],
        vec![value_info(
            "y",
            DataType::Float,
            &[D::P("b"), D::P("a"), D::V(2)],
        )],
    );
    let m = load_onnx_bytes(&bytes, "grid.onnx").unwrap();
    assert_eq!(output_types(&m), vec!["f32[b,a,2]"]);
    let (a, b) = (3, 4);
    let data: Vec<f64> = (0..a * b * 2).map(|i| i as f64 * 0.5 - 3.0).collect();
    let x = Tensor::new(DType::F32, vec![a, b, 2], data.clone()).unwrap();
    let out = run(&m, &[x]).unwrap();
    assert_eq!(out[0].shape(), &[b, a, 2]);
    for p0 in 0..b {
        for p1 in 0..a {
            for r in 0..2 {
                assert_eq!(
                    out[0].data()[(p0 * a + p1) * 2 + r],
                    data[(p1 * b + p0) * 2 + r],
                    "out[{p0},{p1},{r}]"
                );
            }
        }
    }
}

/// Constant index tuples (negative ones included) into fixed dims; an out-of-range tuple is an
/// import error naming the node.
#[test]
fn gather_nd_with_constant_indices() {
    let build = |idx: &[i64]| {
        model(
            vec![node("GatherND", "pick", &["data", "idx"], &["y"])],
            vec![i64_tensor("idx", &[2, 2, 2], idx)],
            vec![value_info(
                "data",
                DataType::Float,
                &[D::V(3), D::V(4), D::P("n")],
            )],
            vec![value_info(
                "y",
                DataType::Float,
                &[D::V(2), D::V(2), D::P("n")],
            )],
        )
    };
    let tuples = [0, 0, 2, 3, -1, 1, 1, -4];
    let m = load_onnx_bytes(&build(&tuples), "nd.onnx").unwrap();
    assert_eq!(output_types(&m), vec!["f32[2,2,n]"]);
    let n = 5;
    let data: Vec<f64> = (0..3 * 4 * n).map(|i| i as f64).collect();
    let x = Tensor::new(DType::F32, vec![3, 4, n], data.clone()).unwrap();
    let out = run(&m, &[x]).unwrap();
    assert_eq!(out[0].shape(), &[2, 2, n]);
    let rows = [(0, 0), (2, 3), (2, 1), (1, 0)];
    let want: Vec<f64> = rows
        .iter()
        .flat_map(|&(i, j)| data[(i * 4 + j) * n..(i * 4 + j + 1) * n].to_vec())
        .collect();
    assert_eq!(out[0].data(), &want[..]);

    let msg = load_onnx_bytes(&build(&[0, 0, 3, 0, 0, 0, 0, 0]), "bad.onnx")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("bad.onnx") && msg.contains("`pick`") && msg.contains("out of range"),
        "{msg}"
    );
}

/// Forms an earlier importer refused: GatherND with run-time indices and with `batch_dims`, and a
/// slice from 1 to a symbolic end (type `[s-1, 4]`).
#[test]
fn gather_nd_with_runtime_indices_and_symbolic_slices_run() {
    let bytes = model(
        vec![
            node("GatherND", "runtime_idx", &["data", "idx"], &["y1"]),
            with(
                node("GatherND", "batched", &["data", "idx1"], &["y2"]),
                vec![attr_i("batch_dims", 1)],
            ),
            with(
                node("Shape", "shape", &["data"], &["sh"]),
                vec![attr_i("start", 0), attr_i("end", 1)],
            ),
            node("Slice", "from_one", &["data", "one", "sh", "zero"], &["y3"]),
        ],
        vec![
            i64_tensor("one", &[1], &[1]),
            i64_tensor("zero", &[1], &[0]),
        ],
        vec![
            value_info("data", DataType::Float, &[D::P("s"), D::V(4)]),
            value_info("idx", DataType::Int64, &[D::P("k"), D::V(2)]),
            value_info("idx1", DataType::Int64, &[D::P("s"), D::V(1)]),
        ],
        vec![
            value_info("y1", DataType::Float, &[D::P("k")]),
            value_info("y2", DataType::Float, &[D::P("s")]),
            value_info("y3", DataType::Float, &[D::P("s"), D::V(4)]),
        ],
    );
    let m = load_onnx_bytes(&bytes, "u.onnx").unwrap();
    assert_eq!(output_types(&m), vec!["f32[k]", "f32[s]", "f32[s-1,4]"]);
    let s = 3;
    let data: Vec<f64> = (0..s * 4).map(|i| i as f64).collect();
    let x = Tensor::new(DType::F32, vec![s, 4], data.clone()).unwrap();
    let idx = i64s(&[2, 2], &[2, 3, 0, -1]);
    let idx1 = i64s(&[s, 1], &[1, 0, 3]);
    let out = run(&m, &[x, idx, idx1]).unwrap();
    assert_eq!(out[0].data(), &[data[2 * 4 + 3], data[3]]);
    assert_eq!(out[1].data(), &[data[1], data[4], data[2 * 4 + 3]]);
    assert_eq!(out[2].data(), &data[4..]);
}

// ----- the real export (opt-in) -----

/// Where the dynamo export of MiniLM-L6 is looked for: `$FUSELAGE_MINILM_ONNX`, then
/// `$FUSELAGE_PEERS_CACHE/minilm-l6/…` (default `~/.cache/fuselage-peers/minilm-l6/…`), where
/// `../shared/peers/ort_minilm.py` writes it.
fn minilm_onnx_candidates() -> Vec<PathBuf> {
    const FILE: &str = "minilm-l6.fp32.dynamo-opset17.onnx";
    let mut c = vec![];
    if let Some(p) = std::env::var_os("FUSELAGE_MINILM_ONNX") {
        c.push(PathBuf::from(p));
    }
    let cache = std::env::var_os("FUSELAGE_PEERS_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/fuselage-peers"))
        });
    if let Some(d) = cache {
        c.push(d.join("minilm-l6").join(FILE));
    }
    c
}

/// A little-endian `<f4`, `<i4` or `<i8` `.npy` file: shape and values.
fn read_npy(path: &Path) -> (Vec<usize>, Vec<f64>) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&b[..6], b"\x93NUMPY", "{}", path.display());
    let (hl, start) = if b[6] == 1 {
        (u16::from_le_bytes([b[8], b[9]]) as usize, 10)
    } else {
        (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12)
    };
    let header = std::str::from_utf8(&b[start..start + hl]).unwrap();
    assert!(header.contains("'fortran_order': False"), "{header}");
    let shape_s = header.split("'shape': (").nth(1).unwrap();
    let shape: Vec<usize> = shape_s
        .split(')')
        .next()
        .unwrap()
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let data = &b[start + hl..];
    let v: Vec<f64> = if header.contains("<f4") {
        data.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect()
    } else if header.contains("<i4") {
        data.chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect()
    } else if header.contains("<i8") {
        data.chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect()
    } else {
        panic!("{}: unsupported npy header {header}", path.display())
    };
    assert_eq!(
        v.len(),
        shape.iter().product::<usize>(),
        "{}",
        path.display()
    );
    (shape, v)
}

/// The real dynamo export (`Slice` to the symbolic sequence length, the `GatherND` padding
/// mask) imports and reproduces the golden `last_hidden_state` within the README's 1e-3: every
/// golden sentence alone, and sentences of different lengths as padded, masked batches.
///
/// Opt-in: runs when `FUSELAGE_PEER_TESTS=1` (the export needs torch, which CI does not have);
/// with the variable set, a missing file fails the test with the command that creates it.
#[test]
fn minilm_dynamo_export_matches_golden() {
    if std::env::var("FUSELAGE_PEER_TESTS").as_deref() != Ok("1") {
        eprintln!(
            "minilm_dynamo_export_matches_golden: not run (opt-in: set FUSELAGE_PEER_TESTS=1)"
        );
        return;
    }
    let cands = minilm_onnx_candidates();
    let Some(path) = cands.iter().find(|p| p.is_file()) else {
        panic!(
            "FUSELAGE_PEER_TESTS=1 but the MiniLM dynamo export was not found; looked in {}. \
             Create it (needs network for pip) from the workspace root with \
             `bash ../shared/peers/setup.sh VENV && VENV/bin/python \
             ../shared/peers/ort_minilm.py --variants fp32 --skip-accuracy --runs 1`, or point \
             FUSELAGE_MINILM_ONNX at an existing file",
            cands
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let m = load_onnx(path).unwrap_or_else(|e| panic!("{e}"));
    let g = m.entry().unwrap();
    assert_eq!(
        g.input_names(),
        vec!["input_ids", "attention_mask", "token_type_ids"]
    );
    assert_eq!(output_types(&m), vec!["f32[batch,sequence,384]"]);

    let golden = fuselage_frontends::assets::find_model("minilm-l6")
        .unwrap_or_else(|e| panic!("{e}"))
        .join("golden");
    let (_, ids) = read_npy(&golden.join("token_ids.npy"));
    let (_, offsets) = read_npy(&golden.join("offsets.npy"));
    let (hs_shape, hidden) = read_npy(&golden.join("last_hidden_state.npy"));
    let d = hs_shape[1];
    let sentence = |i: usize| (offsets[i] as usize, offsets[i + 1] as usize);

    let mut max_err: f64 = 0.0;
    // (sentences in one batch); padded to the longest with [PAD] = 0 and mask 0.
    let mut batches: Vec<Vec<usize>> = (0..offsets.len() - 1).map(|i| vec![i]).collect();
    batches.push(vec![2, 5]);
    batches.push(vec![31, 14, 0]);
    for batch in batches {
        let s = batch
            .iter()
            .map(|&i| sentence(i).1 - sentence(i).0)
            .max()
            .unwrap();
        let b = batch.len();
        let mut tok = vec![0i64; b * s];
        let mut mask = vec![0i64; b * s];
        for (r, &i) in batch.iter().enumerate() {
            let (lo, hi) = sentence(i);
            for t in 0..hi - lo {
                tok[r * s + t] = ids[lo + t] as i64;
                mask[r * s + t] = 1;
            }
        }
        let out = Reference
            .run(
                &m,
                "main",
                &[
                    i64s(&[b, s], &tok),
                    i64s(&[b, s], &mask),
                    i64s(&[b, s], &vec![0; b * s]),
                ],
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out[0].shape(), &[b, s, d]);
        for (r, &i) in batch.iter().enumerate() {
            let (lo, hi) = sentence(i);
            for t in 0..hi - lo {
                for e in 0..d {
                    let got = out[0].data()[(r * s + t) * d + e];
                    let want = hidden[(lo + t) * d + e];
                    max_err = max_err.max((got - want).abs());
                }
            }
        }
    }
    eprintln!("MiniLM dynamo export vs golden last_hidden_state: max abs error {max_err:.3e}");
    assert!(max_err <= 1e-3, "max abs error {max_err} > 1e-3");
}
