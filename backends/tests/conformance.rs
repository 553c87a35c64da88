//! Conformance: ONE table of op cases, each run on the reference interpreter (f64, the oracle)
//! and on the lowered CPU program (burn-ndarray, f32), with the native CPU kernels on and off.
//!
//! Tolerances per result dtype: `|lowered − ref| ≤ atol + rtol·|ref|` with
//! f32/f64: rtol = atol = 1e-5 (the lowered program computes in f32; ops with long reductions
//! get 1e-4 via the case's `tol`); f16: 2^-10 relative (one ulp: the f32 value may round to
//! the other neighbour at a tie); bf16: 2^-7; integers and bools: exact.

use fuselage_backends::{lower, CpuBackend, LowerOptions, Lowering};
use fuselage_ir::ops::testing::rand_tensor;
use fuselage_ir::{DType, Dim, Executor, Graph, Module, Op, Reference, Tensor, TensorType};
use serde_json::json;

/// One operand: dtype, declared dims (`"B"` symbolic, numbers fixed), concrete shape, values.
#[derive(Clone)]
struct In {
    dtype: DType,
    dims: Vec<Dim>,
    shape: Vec<usize>,
    /// `Some(n)`: integer values in `0..n` (indices); `None`: random of the dtype.
    below: Option<u64>,
    /// With `below = Some(n)`: values in `-n..n` instead (negative indices count from the end).
    signed: bool,
    positive: bool,
    /// Zeros replaced by 1 (integer divisors).
    nonzero: bool,
}

fn dims(spec: &str) -> Vec<Dim> {
    spec.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| match s.parse::<u64>() {
            Ok(n) => Dim::from(n),
            Err(_) => Dim::sym(s),
        })
        .collect()
}

/// `t("f32", "B,4", &[2,4])`.
fn t(dtype: &str, spec: &str, shape: &[usize]) -> In {
    In {
        dtype: dtype.parse().unwrap(),
        dims: dims(spec),
        shape: shape.to_vec(),
        below: None,
        signed: false,
        positive: false,
        nonzero: false,
    }
}

/// Fixed-shape operand.
fn f(dtype: &str, shape: &[usize]) -> In {
    let spec: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    t(dtype, &spec.join(","), shape)
}

fn idx(dtype: &str, shape: &[usize], below: u64) -> In {
    In {
        below: Some(below),
        ..f(dtype, shape)
    }
}

/// Indices in `-below..below`.
fn sidx(dtype: &str, shape: &[usize], below: u64) -> In {
    In {
        signed: true,
        ..idx(dtype, shape, below)
    }
}

fn pos(mut i: In) -> In {
    i.positive = true;
    i
}

fn nonzero(mut i: In) -> In {
    i.nonzero = true;
    i
}

struct Case {
    name: String,
    op: Op,
    inputs: Vec<In>,
    tol: f64,
}

fn op(name: &str, attrs: serde_json::Value) -> Op {
    Op::from_attrs(name, attrs).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn case(name: &str, o: Op, inputs: Vec<In>) -> Case {
    Case {
        name: name.into(),
        op: o,
        inputs,
        tol: 1e-5,
    }
}

fn cases() -> Vec<Case> {
    let mut v = vec![];
    let e = json!({});
    // Element-wise binary, with broadcasting and symbolic dims.
    for name in ["add", "sub", "mul", "maximum", "minimum"] {
        v.push(case(
            name,
            op(name, e.clone()),
            vec![f("f32", &[3, 4]), f("f32", &[3, 4])],
        ));
        v.push(case(
            &format!("{name}/broadcast-sym"),
            op(name, e.clone()),
            vec![t("f32", "B,1,4", &[2, 1, 4]), f("f32", &[3, 1])],
        ));
    }
    v.push(case(
        "div",
        op("div", e.clone()),
        vec![f("f32", &[5, 3]), pos(f("f32", &[3]))],
    ));
    v.push(case(
        "pow",
        op("pow", e.clone()),
        vec![pos(f("f32", &[4, 3])), f("f32", &[4, 3])],
    ));
    v.push(case(
        "add/i64",
        op("add", e.clone()),
        vec![f("i64", &[6]), f("i64", &[6])],
    ));
    v.push(case(
        "mul/i8-saturates",
        op("mul", e.clone()),
        vec![f("i8", &[16]), f("i8", &[16])],
    ));
    v.push(case(
        "add/f16",
        op("add", e.clone()),
        vec![f("f16", &[8]), f("f16", &[8])],
    ));
    v.push(case(
        "mul/bf16",
        op("mul", e.clone()),
        vec![f("bf16", &[8]), f("bf16", &[8])],
    ));
    // 16/32/64-bit integers: exact, saturating at the dtype's bounds (u16 0 - 5 = 0), integer
    // division truncating toward zero.
    v.push(case(
        "add/u16",
        op("add", e.clone()),
        vec![f("u16", &[3, 4]), f("u16", &[4])],
    ));
    v.push(case(
        "sub/u16-saturates",
        op("sub", e.clone()),
        vec![f("u16", &[16]), f("u16", &[16])],
    ));
    v.push(case(
        "mul/i16",
        op("mul", e.clone()),
        vec![f("i16", &[16]), f("i16", &[16])],
    ));
    v.push(case(
        "div/i16-truncates",
        op("div", e.clone()),
        vec![f("i16", &[16]), pos(f("i16", &[16]))],
    ));
    v.push(case(
        "div/u32-truncates",
        op("div", e.clone()),
        vec![f("u32", &[16]), pos(f("u32", &[16]))],
    ));
    v.push(case(
        "maximum/u64",
        op("maximum", e.clone()),
        vec![f("u64", &[3, 4]), f("u64", &[3, 1])],
    ));
    v.push(case(
        "compare/u32",
        op("compare", json!({"predicate":"le"})),
        vec![f("u32", &[3, 4]), f("u32", &[4])],
    ));
    v.push(case(
        "where/i16",
        op("where", e.clone()),
        vec![f("bool", &[3, 1]), f("i16", &[3, 4]), f("i16", &[4])],
    ));
    // Unary.
    for name in [
        "neg", "abs", "exp", "tanh", "erf", "sin", "cos", "relu", "sigmoid", "silu",
    ] {
        v.push(case(
            name,
            op(name, e.clone()),
            vec![t("f32", "B,5", &[3, 5])],
        ));
    }
    for name in ["log", "sqrt", "rsqrt"] {
        v.push(case(
            name,
            op(name, e.clone()),
            vec![pos(f("f32", &[3, 5]))],
        ));
    }
    v.push(case("gelu", op("gelu", e.clone()), vec![f("f32", &[4, 6])]));
    // `math`: every function on f32 (values in [-2, 2): the domain errors give NaN on both
    // sides), acosh on [0.25, 2.25), the integer-accepting ones on integers, bf16 rounding.
    for func in [
        "floor", "ceil", "round", "sign", "tan", "asin", "acos", "atan", "sinh", "cosh", "asinh",
        "atanh",
    ] {
        v.push(case(
            &format!("math/{func}"),
            op("math", json!({ "fn": func })),
            vec![t("f32", "B,5", &[3, 5])],
        ));
    }
    v.push(case(
        "math/acosh",
        op("math", json!({"fn": "acosh"})),
        vec![pos(f("f32", &[3, 5]))],
    ));
    for (func, dt) in [
        ("sign", "i32"),
        ("floor", "i64"),
        ("round", "u8"),
        ("ceil", "i8"),
    ] {
        v.push(case(
            &format!("math/{func}-{dt}"),
            op("math", json!({ "fn": func })),
            vec![f(dt, &[4, 5])],
        ));
    }
    v.push(case(
        "math/cosh-bf16",
        op("math", json!({"fn": "cosh"})),
        vec![f("bf16", &[16])],
    ));
    // `mod` and `bitwise` (host: exact).
    for (fmod, dt) in [(false, "i32"), (true, "i32"), (false, "i8"), (true, "i64")] {
        v.push(case(
            &format!("mod/{dt}-fmod-{fmod}"),
            op("mod", json!({ "fmod": fmod })),
            vec![f(dt, &[3, 4]), nonzero(f(dt, &[4]))],
        ));
    }
    for fmod in [false, true] {
        v.push(case(
            &format!("mod/f32-fmod-{fmod}"),
            op("mod", json!({ "fmod": fmod })),
            vec![t("f32", "B,4", &[3, 4]), pos(f("f32", &[1, 4]))],
        ));
    }
    for (kind, dt) in [("and", "i32"), ("or", "u8"), ("xor", "i64"), ("and", "i8")] {
        v.push(case(
            &format!("bitwise/{kind}-{dt}"),
            op("bitwise", json!({ "kind": kind })),
            vec![f(dt, &[3, 4]), f(dt, &[1, 4])],
        ));
    }
    v.push(case(
        "bitwise/not-i32",
        op("bitwise", json!({"kind": "not"})),
        vec![t("i32", "B,4", &[2, 4])],
    ));
    for kind in ["shl", "shr"] {
        v.push(case(
            &format!("bitwise/{kind}-u8"),
            op("bitwise", json!({ "kind": kind })),
            vec![f("u8", &[3, 4]), idx("u8", &[4], 10)],
        ));
        v.push(case(
            &format!("bitwise/{kind}-i32"),
            op("bitwise", json!({ "kind": kind })),
            vec![f("i32", &[5]), idx("i32", &[5], 34)],
        ));
    }
    v.push(case(
        "gelu/tanh",
        op("gelu", json!({"approximate":"tanh"})),
        vec![f("f32", &[4, 6])],
    ));
    v.push(case(
        "clamp",
        op("clamp", json!({"min":-0.5,"max":0.75})),
        vec![f("f32", &[4, 6])],
    ));
    v.push(case(
        "clamp/min-only",
        op("clamp", json!({"min":0.0})),
        vec![f("f32", &[7])],
    ));
    // Compare / logical / where / cast.
    for p in ["eq", "ne", "lt", "le", "gt", "ge"] {
        v.push(case(
            &format!("compare/{p}"),
            op("compare", json!({ "predicate": p })),
            vec![f("i32", &[3, 4]), f("i32", &[4])],
        ));
    }
    v.push(case(
        "compare/f32",
        op("compare", json!({"predicate":"lt"})),
        vec![f("f32", &[3, 4]), f("f32", &[3, 1])],
    ));
    for k in ["and", "or", "xor"] {
        v.push(case(
            &format!("logical/{k}"),
            op("logical", json!({ "kind": k })),
            vec![f("bool", &[3, 4]), f("bool", &[1, 4])],
        ));
    }
    v.push(case("not", op("not", e.clone()), vec![f("bool", &[9])]));
    v.push(case(
        "where",
        op("where", e.clone()),
        vec![f("bool", &[3, 1]), f("f32", &[3, 4]), f("f32", &[4])],
    ));
    for (from, to) in [
        ("f32", "i32"),
        ("f32", "i8"),
        ("f32", "f16"),
        ("f32", "bf16"),
        ("f32", "f8e4m3fn"),
        ("f32", "f4e2m1"),
        ("f32", "bool"),
        ("i64", "f32"),
        ("bool", "f32"),
        ("i32", "u8"),
        ("f32", "u16"),
        ("f32", "i16"),
        ("i16", "u16"),
        ("u32", "f32"),
        ("u64", "i16"),
        ("i64", "u32"),
    ] {
        v.push(case(
            &format!("cast/{from}-{to}"),
            op("cast", json!({ "dtype": to })),
            vec![f(from, &[4, 5])],
        ));
    }
    v.push(case(
        "iota",
        op("iota", json!({"shape":[2, 5], "axis": 1, "dtype": "i64"})),
        vec![],
    ));
    v.push(case(
        "dims",
        op(
            "dims",
            json!({"values": [3, "2*5", -4], "shape": [3], "dtype": "i64"}),
        ),
        vec![],
    ));
    v.push(case(
        "iota/f32-axis0",
        op("iota", json!({"shape":[3, 5], "axis": 0, "dtype": "f32"})),
        vec![],
    ));
    // Reductions, softmax, norms.
    v.push(case(
        "softmax",
        op("softmax", json!({"axis": -1})),
        vec![t("f32", "B,7", &[3, 7])],
    ));
    v.push(case(
        "softmax/axis0",
        op("softmax", json!({"axis": 0})),
        vec![f("f32", &[4, 3])],
    ));
    for k in ["sum", "mean", "max", "min", "prod"] {
        v.push(case(
            &format!("reduce/{k}"),
            op("reduce", json!({"kind": k, "axes": [1], "keepdims": false})),
            vec![t("f32", "B,6,3", &[2, 6, 3])],
        ));
        v.push(case(
            &format!("reduce/{k}-multi-keep"),
            op(
                "reduce",
                json!({"kind": k, "axes": [0, -1], "keepdims": true}),
            ),
            vec![f("f32", &[4, 3, 5])],
        ));
    }
    for k in ["sum", "mean", "max", "min", "prod"] {
        v.push(case(
            &format!("reduce/{k}-empty"),
            op("reduce", json!({"kind": k, "axes": [1], "keepdims": true})),
            vec![f("f32", &[2, 0, 3])],
        ));
    }
    for k in ["max", "min", "prod"] {
        v.push(case(
            &format!("reduce/{k}-empty-i32"),
            op("reduce", json!({"kind": k, "axes": [-1]})),
            vec![f("i32", &[3, 0])],
        ));
    }
    v.push(case(
        "reduce/prod-i32",
        op("reduce", json!({"kind": "prod", "axes": [0, 1]})),
        // Values 1..=4: the product stays below 2^24, exact in the lowered f32 values.
        vec![nonzero(idx("i32", &[2, 3, 2], 5))],
    ));
    v.push(case(
        "reduce/max-f8-empty",
        op("reduce", json!({"kind": "max", "axes": [0]})),
        vec![f("f8e4m3fn", &[0, 4])],
    ));
    v.push(case(
        "argmax",
        op("argmax", json!({"axis": 1})),
        vec![f("f32", &[3, 7])],
    ));
    for name in ["argmax", "argmin"] {
        // Small integers: many ties.
        for last in [false, true] {
            v.push(case(
                &format!("{name}/i32-last-{last}"),
                op(name, json!({"axis": -1, "select_last_index": last})),
                vec![idx("i32", &[4, 9], 3)],
            ));
        }
        v.push(case(
            &format!("{name}/f32-keep-last"),
            op(
                name,
                json!({"axis": 0, "keepdims": true, "select_last_index": true}),
            ),
            vec![t("f32", "4,B", &[4, 3])],
        ));
    }
    v.push(case(
        "argmin",
        op("argmin", json!({"axis": 1})),
        vec![f("f32", &[3, 7])],
    ));
    // Scans.
    for kind in ["sum", "prod"] {
        for (exclusive, reverse) in [(false, false), (true, false), (false, true), (true, true)] {
            v.push(case(
                &format!("cumulative/{kind}-excl-{exclusive}-rev-{reverse}"),
                op(
                    "cumulative",
                    json!({"kind": kind, "axis": 1, "exclusive": exclusive, "reverse": reverse}),
                ),
                vec![t("f32", "B,6,3", &[2, 6, 3])],
            ));
        }
    }
    v.push(case(
        "cumulative/sum-i32-neg-axis",
        op(
            "cumulative",
            json!({"kind": "sum", "axis": -1, "exclusive": true}),
        ),
        vec![f("i32", &[3, 5])],
    ));
    v.push(case(
        "cumulative/prod-length-1",
        op(
            "cumulative",
            json!({"kind": "prod", "axis": 0, "exclusive": true, "reverse": true}),
        ),
        vec![f("f32", &[1, 4])],
    ));
    v.push(case(
        "cumulative/sum-f16-empty",
        op("cumulative", json!({"kind": "sum", "axis": 0})),
        vec![f("f16", &[0, 3])],
    ));
    v.push(case(
        "argmax/keep",
        op("argmax", json!({"axis": 0, "keepdims": true})),
        vec![f("f32", &[5, 2])],
    ));
    v.push(case(
        "top_k",
        op("top_k", json!({"k": 3, "axis": -1})),
        vec![f("f32", &[2, 8])],
    ));
    v.push(case(
        "layer_norm",
        op("layer_norm", json!({"eps": 1e-5})),
        vec![
            t("f32", "B,S,16", &[2, 3, 16]),
            f("f32", &[16]),
            f("f32", &[16]),
        ],
    ));
    v.push(case(
        "layer_norm/two-dims-no-affine",
        op("layer_norm", json!({"axis": 1, "eps": 1e-6})),
        vec![f("f32", &[3, 4, 5])],
    ));
    v.push(case(
        "rms_norm",
        op("rms_norm", json!({"eps": 1e-6})),
        vec![t("f32", "B,16", &[3, 16]), f("f32", &[16])],
    ));
    v.push(case(
        "group_norm",
        op("group_norm", json!({"groups": 2, "eps": 1e-5})),
        vec![f("f32", &[2, 4, 3, 3]), f("f32", &[4]), f("f32", &[4])],
    ));
    // Linear algebra.
    v.push(case(
        "linear",
        op("linear", e.clone()),
        vec![
            t("f32", "B,S,32", &[2, 5, 32]),
            f("f32", &[32, 24]),
            f("f32", &[24]),
        ],
    ));
    v.push(case(
        "linear/no-bias",
        op("linear", e.clone()),
        vec![f("f32", &[7, 16]), f("f32", &[16, 3])],
    ));
    v.push(case(
        "matmul",
        op("matmul", e.clone()),
        vec![f("f32", &[9, 17]), f("f32", &[17, 5])],
    ));
    v.push(case(
        "matmul/batched-broadcast",
        op("matmul", e.clone()),
        vec![t("f32", "B,1,4,8", &[2, 1, 4, 8]), f("f32", &[3, 8, 6])],
    ));
    v.push(case(
        "matmul/rank3",
        op("matmul", e.clone()),
        vec![f("f32", &[3, 4, 8]), f("f32", &[3, 8, 2])],
    ));
    v.push(case(
        "matmul/i32",
        op("matmul", e.clone()),
        vec![f("i32", &[3, 4]), f("i32", &[4, 2])],
    ));
    // Layout.
    v.push(case(
        "transpose",
        op("transpose", json!({"perm": [0, 2, 1, 3]})),
        vec![t("f32", "B,3,4,5", &[2, 3, 4, 5])],
    ));
    v.push(case(
        "reshape",
        op("reshape", json!({"shape": ["B", -1, 2]})),
        vec![t("f32", "B,3,4", &[2, 3, 4])],
    ));
    v.push(case(
        "broadcast_to",
        op("broadcast_to", json!({"shape": ["B", 3, 4]})),
        vec![t("f32", "B,1,4", &[2, 1, 4])],
    ));
    v.push(case(
        "concat",
        op("concat", json!({"axis": 1})),
        vec![f("f32", &[2, 3]), f("f32", &[2, 1]), f("f32", &[2, 4])],
    ));
    v.push(case(
        "slice",
        op("slice", json!({"axis": 1, "start": 1, "end": -1})),
        vec![t("f32", "B,6", &[3, 6])],
    ));
    v.push(case(
        "slice/step",
        op(
            "slice",
            json!({"axis": 0, "start": 0, "end": i64::MAX, "step": 2}),
        ),
        vec![f("f32", &[7, 2])],
    ));
    v.push(case(
        "slice/negative-step",
        op(
            "slice",
            json!({"axis": -1, "start": -1, "end": -8, "step": -2}),
        ),
        vec![f("f32", &[2, 7])],
    ));
    v.push(case(
        "split",
        op("split", json!({"axis": -1, "sizes": [2, 3, 1]})),
        vec![f("f32", &[3, 6])],
    ));
    v.push(case(
        "gather/embedding",
        op("gather", json!({"axis": 0})),
        vec![f("f32", &[10, 4]), idx("i64", &[2, 3], 10)],
    ));
    v.push(case(
        "gather/axis1",
        op("gather", json!({"axis": 1})),
        vec![f("f32", &[3, 5, 2]), idx("i32", &[4], 5)],
    ));
    // Indexing, scatter, padding (ONNX GatherElements, ScatterElements, GatherND, ScatterND,
    // Pad, Trilu).
    v.push(case(
        "gather_elements",
        op("gather_elements", json!({"axis": 1})),
        vec![f("f32", &[3, 5, 2]), sidx("i64", &[3, 4, 2], 5)],
    ));
    v.push(case(
        "gather_elements/smaller-index-dims",
        op("gather_elements", json!({"axis": 0})),
        vec![f("i32", &[4, 3]), idx("i32", &[6, 2], 4)],
    ));
    v.push(case(
        "gather_elements/symbolic",
        op("gather_elements", json!({"axis": -1})),
        vec![t("f16", "B,6", &[2, 6]), sidx("i64", &[2, 3], 6)],
    ));
    for red in ["none", "add", "mul", "max", "min"] {
        // Few destinations, many updates: duplicates on every reduction.
        v.push(case(
            &format!("scatter_elements/{red}"),
            op("scatter_elements", json!({"axis": 1, "reduction": red})),
            vec![
                f("f32", &[3, 4]),
                sidx("i64", &[3, 6], 4),
                f("f32", &[3, 6]),
            ],
        ));
        v.push(case(
            &format!("scatter_nd/{red}"),
            op("scatter_nd", json!({"reduction": red})),
            vec![
                f("f32", &[4, 3, 2]),
                sidx("i64", &[5, 1], 4),
                f("f32", &[5, 3, 2]),
            ],
        ));
    }
    v.push(case(
        "scatter_elements/smaller-index-dims-add-i32",
        op("scatter_elements", json!({"axis": 0, "reduction": "add"})),
        vec![f("i32", &[4, 3]), idx("i64", &[5, 2], 4), f("i32", &[5, 2])],
    ));
    v.push(case(
        "scatter_nd/add-bool",
        op("scatter_nd", json!({"reduction": "add"})),
        vec![
            f("bool", &[3, 2]),
            idx("i64", &[4, 1], 3),
            f("bool", &[4, 2]),
        ],
    ));
    v.push(case(
        "scatter_nd/full-tuples-bf16",
        op("scatter_nd", json!({})),
        vec![
            f("bf16", &[3, 4]),
            idx("i32", &[2, 3, 2], 3),
            f("bf16", &[2, 3]),
        ],
    ));
    v.push(case(
        "gather_nd",
        op("gather_nd", json!({})),
        vec![f("f32", &[4, 3, 2]), sidx("i64", &[2, 3, 2], 3)],
    ));
    v.push(case(
        "gather_nd/batch-dims-2",
        op("gather_nd", json!({"batch_dims": 2})),
        vec![f("f32", &[2, 3, 4, 5]), sidx("i64", &[2, 3, 6, 1], 4)],
    ));
    v.push(case(
        "gather_nd/symbolic-batch",
        op("gather_nd", json!({"batch_dims": 1})),
        vec![t("f32", "B,5,2", &[3, 5, 2]), idx("i64", &[3, 4, 1], 5)],
    ));
    for mode in ["constant", "reflect", "edge", "wrap"] {
        v.push(case(
            &format!("pad/{mode}"),
            op(
                "pad",
                json!({"pads": [1, 0, 2, 2, 3, 1], "mode": mode, "value": 0.3}),
            ),
            vec![f("f32", &[3, 4, 5])],
        ));
        v.push(case(
            &format!("pad/{mode}-crop"),
            op(
                "pad",
                json!({"pads": [-1, 2, 1, -2], "mode": mode, "value": -7.0}),
            ),
            vec![f("f32", &[4, 5])],
        ));
    }
    v.push(case(
        "pad/symbolic-f16",
        op(
            "pad",
            json!({"pads": [0, 1, 0, "S-1"], "mode": "constant", "value": 0.1}),
        ),
        vec![t("f16", "B,S", &[2, 3])],
    ));
    v.push(case(
        "pad/i64-empty-axis",
        op("pad", json!({"pads": [2, 0, 1, 0], "value": 9.0})),
        vec![f("i64", &[0, 3])],
    ));
    for (upper, k) in [(true, 0), (true, 2), (false, -1), (false, 7)] {
        v.push(case(
            &format!("trilu/upper-{upper}-k{k}"),
            op("trilu", json!({"upper": upper, "k": k})),
            vec![f("f32", &[2, 4, 5])],
        ));
    }
    v.push(case(
        "trilu/i32",
        op("trilu", json!({"upper": false})),
        vec![f("i32", &[6, 3])],
    ));
    // Transformer ops.
    v.push(case(
        "rope/half",
        op("rope", json!({"style": "half", "theta": 10000.0})),
        vec![f("f32", &[1, 2, 5, 8]), idx("i64", &[5], 50)],
    ));
    v.push(case(
        "rope/interleaved-partial",
        op(
            "rope",
            json!({"style": "interleaved", "theta": 500.0, "rotary_dim": 4}),
        ),
        vec![f("f32", &[2, 5, 6]), idx("i64", &[2, 5], 20)],
    ));
    let qkv = |b, h, hk, sq, sk, d| {
        vec![
            f("f32", &[b, h, sq, d]),
            f("f32", &[b, hk, sk, d]),
            f("f32", &[b, hk, sk, d]),
        ]
    };
    v.push(case(
        "attention",
        op("attention", e.clone()),
        qkv(2, 2, 2, 5, 5, 8),
    ));
    v.push(case(
        "attention/causal-gqa",
        op("attention", json!({"mask": "causal"})),
        qkv(1, 4, 2, 6, 6, 8),
    ));
    v.push(case(
        "attention/causal-decode",
        op("attention", json!({"mask": "causal", "scale": 0.5})),
        qkv(1, 2, 1, 2, 7, 4),
    ));
    v.push(case(
        "attention/causal-more-queries",
        op("attention", json!({"mask": "causal"})),
        qkv(1, 1, 1, 5, 3, 4),
    ));
    let mut with_bias = qkv(2, 2, 1, 4, 4, 8);
    with_bias.push(f("f32", &[2, 1, 1, 4]));
    with_bias.push(f("f32", &[2, 4, 4]));
    v.push(case(
        "attention/biases",
        op("attention", e.clone()),
        with_bias,
    ));
    v.push(case(
        "attention/symbolic",
        op("attention", e.clone()),
        vec![
            t("f32", "B,2,S,8", &[2, 2, 3, 8]),
            t("f32", "B,2,S,8", &[2, 2, 3, 8]),
            t("f32", "B,2,S,8", &[2, 2, 3, 8]),
        ],
    ));
    let mut mm = qkv(1, 2, 2, 5, 5, 4);
    mm.push(idx("i64", &[1, 5], 3));
    v.push(case("mmca_attention", op("mmca_attention", e.clone()), mm));
    // Vision.
    v.push(case(
        "conv2d",
        op("conv2d", json!({"stride": [1, 1], "padding": [1, 1, 1, 1]})),
        vec![
            f("f32", &[1, 3, 5, 5]),
            f("f32", &[4, 3, 3, 3]),
            f("f32", &[4]),
        ],
    ));
    v.push(case(
        "conv2d/asym-pad-stride-groups-dilation",
        op(
            "conv2d",
            json!({"stride": [2, 1], "padding": [0, 1, 2, 0], "dilation": [1, 2], "groups": 2}),
        ),
        vec![f("f32", &[2, 4, 6, 5]), f("f32", &[2, 2, 3, 2])],
    ));
    v.push(case(
        "upsample_nearest2d",
        op("upsample_nearest2d", json!({"scale": 2})),
        vec![f("f32", &[1, 2, 3, 4])],
    ));
    v.push(case(
        "avg_pool2d",
        op("avg_pool2d", json!({"kernel": [2, 2], "stride": [2, 2]})),
        vec![f("f32", &[1, 2, 4, 6])],
    ));
    v.push(case(
        "avg_pool2d/pad-exclude",
        op(
            "avg_pool2d",
            json!({"kernel": [3, 3], "stride": [1, 2], "padding": [1, 1, 1, 1], "count_include_pad": false}),
        ),
        vec![f("f32", &[1, 2, 5, 5])],
    ));
    v.push(case(
        "avg_pool2d/asym-pad-exclude",
        op(
            "avg_pool2d",
            json!({"kernel": [2, 3], "stride": [2, 2], "padding": [0, 1, 1, 0], "count_include_pad": false}),
        ),
        vec![f("f32", &[1, 1, 5, 6])],
    ));
    v.push(case(
        "avg_pool2d/asym-pad-include",
        op(
            "avg_pool2d",
            json!({"kernel": [2, 2], "stride": [1, 1], "padding": [1, 0, 0, 1], "count_include_pad": true}),
        ),
        vec![f("f32", &[1, 1, 4, 4])],
    ));
    // N-D vision ops (ONNX Conv, ConvTranspose, pools, Resize, GridSample).
    v.push(case(
        "conv/1d-groups-stride-dilation-asym",
        op(
            "conv",
            json!({"strides": [2], "pads": [1, 2], "dilations": [2], "group": 2}),
        ),
        vec![f("f32", &[2, 4, 9]), f("f32", &[6, 2, 3]), f("f32", &[6])],
    ));
    v.push(case(
        "conv/2d-symmetric",
        op("conv", json!({"pads": [1, 1, 1, 1]})),
        vec![
            t("f32", "B,3,H,5", &[2, 3, 6, 5]),
            f("f32", &[4, 3, 3, 3]),
            f("f32", &[4]),
        ],
    ));
    v.push(case(
        "conv/2d-asym-pad-stride-dilation",
        op(
            "conv",
            json!({"strides": [2, 1], "pads": [0, 1, 2, 0], "dilations": [1, 2]}),
        ),
        vec![f("f32", &[1, 2, 7, 6]), f("f32", &[3, 2, 3, 2])],
    ));
    v.push(case(
        "conv/3d",
        op(
            "conv",
            json!({"strides": [1, 2, 1], "pads": [1, 0, 1, 0, 1, 1]}),
        ),
        vec![
            f("f32", &[1, 2, 4, 5, 4]),
            f("f32", &[3, 2, 2, 3, 2]),
            f("f32", &[3]),
        ],
    ));
    v.push(case(
        "conv/4d-host",
        op("conv", json!({})),
        vec![f("f32", &[1, 1, 3, 3, 3, 3]), f("f32", &[2, 1, 2, 2, 2, 2])],
    ));
    v.push(case(
        "conv/f16",
        op("conv", json!({"pads": [1, 1]})),
        vec![f("f16", &[1, 2, 8]), f("f16", &[2, 2, 3])],
    ));
    v.push(case(
        "conv_transpose/1d-stride-outpad-asym",
        op(
            "conv_transpose",
            json!({"strides": [3], "pads": [1, 2], "output_padding": [2]}),
        ),
        vec![f("f32", &[2, 3, 4]), f("f32", &[3, 2, 3]), f("f32", &[2])],
    ));
    v.push(case(
        "conv_transpose/2d-groups-dilation",
        op(
            "conv_transpose",
            json!({"strides": [2, 1], "pads": [1, 0, 0, 1], "dilations": [1, 2], "group": 2, "output_padding": [1, 0]}),
        ),
        vec![
            t("f32", "B,4,H,3", &[2, 4, 3, 3]),
            f("f32", &[4, 3, 2, 3]),
            f("f32", &[6]),
        ],
    ));
    v.push(case(
        "conv_transpose/3d",
        op(
            "conv_transpose",
            json!({"strides": [2, 2, 1], "pads": [0, 1, 0, 0, 0, 1]}),
        ),
        vec![f("f32", &[1, 2, 2, 3, 2]), f("f32", &[2, 1, 2, 2, 2])],
    ));
    v.push(case(
        "pool/max-1d-indices",
        op(
            "pool",
            json!({"kind": "max", "kernel": [3], "strides": [2], "pads": [1, 1], "indices": true}),
        ),
        vec![f("f32", &[2, 3, 9])],
    ));
    v.push(case(
        "pool/max-2d-dilation-indices",
        op(
            "pool",
            json!({"kind": "max", "kernel": [2, 3], "strides": [1, 2], "pads": [1, 1, 1, 1], "dilations": [2, 1], "indices": true}),
        ),
        vec![t("f32", "B,2,6,7", &[2, 2, 6, 7])],
    ));
    v.push(case(
        "pool/max-1d-window-without-input-cells",
        op(
            "pool",
            json!({"kind": "max", "kernel": [2], "dilations": [2], "pads": [1, 1], "indices": true}),
        ),
        vec![f("f32", &[2, 2, 1])],
    ));
    v.push(case(
        "pool/max-2d-ceil",
        op(
            "pool",
            json!({"kind": "max", "kernel": [3, 3], "strides": [2, 2], "ceil_mode": true}),
        ),
        vec![f("f32", &[1, 2, 6, 6])],
    ));
    v.push(case(
        "pool/max-2d-ceil-last-window-rule",
        op(
            "pool",
            json!({"kind": "max", "kernel": [1, 1], "strides": [2, 2], "ceil_mode": true, "indices": true}),
        ),
        vec![f("f32", &[1, 1, 2, 2])],
    ));
    v.push(case(
        "pool/max-2d-asym-storage-order",
        op(
            "pool",
            json!({"kind": "max", "kernel": [2, 2], "pads": [0, 1, 1, 0], "indices": true, "storage_order": 1}),
        ),
        vec![f("f32", &[1, 2, 4, 5])],
    ));
    v.push(case(
        "pool/max-3d",
        op(
            "pool",
            json!({"kind": "max", "kernel": [2, 2, 2], "indices": true}),
        ),
        vec![f("f32", &[1, 2, 3, 4, 3])],
    ));
    v.push(case(
        "pool/max-u8",
        op(
            "pool",
            json!({"kind": "max", "kernel": [2, 2], "strides": [2, 2]}),
        ),
        vec![f("u8", &[1, 1, 4, 4])],
    ));
    v.push(case(
        "pool/avg-1d",
        op(
            "pool",
            json!({"kind": "avg", "kernel": [3], "pads": [1, 1]}),
        ),
        vec![f("f32", &[2, 2, 7])],
    ));
    v.push(case(
        "pool/avg-2d-count-include-pad-ceil",
        op(
            "pool",
            json!({"kind": "avg", "kernel": [3, 2], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": true, "ceil_mode": true}),
        ),
        vec![f("f32", &[1, 3, 6, 7])],
    ));
    v.push(case(
        "pool/avg-2d-asym-dilation",
        op(
            "pool",
            json!({"kind": "avg", "kernel": [2, 2], "pads": [1, 0, 0, 1], "dilations": [2, 1]}),
        ),
        vec![f("f32", &[1, 2, 5, 5])],
    ));
    v.push(case(
        "pool/lp-2d",
        op(
            "pool",
            json!({"kind": "lp", "kernel": [2, 2], "p": 3, "pads": [1, 1, 1, 1], "strides": [2, 2]}),
        ),
        vec![f("f32", &[1, 2, 4, 5])],
    ));
    v.push(case(
        "resize/nearest-upsample-symbolic",
        op(
            "resize",
            json!({"axes": [2, 3], "sizes": ["2*H", "2*W"], "scales": [2.0, 2.0], "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}),
        ),
        vec![t("f32", "B,2,H,W", &[1, 2, 3, 4])],
    ));
    v.push(case(
        "resize/nearest-half-pixel-down-exclude",
        op(
            "resize",
            json!({"axes": [-1, -2], "sizes": [3, 2], "exclude_outside": true, "nearest_mode": "round_prefer_ceil"}),
        ),
        vec![f("f32", &[1, 2, 5, 7])],
    ));
    v.push(case(
        "resize/linear-half-pixel",
        op(
            "resize",
            json!({"axes": [2, 3], "sizes": [7, 5], "mode": "linear"}),
        ),
        vec![f("f32", &[1, 2, 4, 3])],
    ));
    v.push(case(
        "resize/linear-align-corners-3d",
        op(
            "resize",
            json!({"axes": [2, 3, 4], "sizes": [3, 5, 2], "mode": "linear", "coordinate_transformation_mode": "align_corners"}),
        ),
        vec![f("f32", &[1, 1, 2, 3, 4])],
    ));
    v.push(case(
        "resize/cubic-antialias-down",
        op(
            "resize",
            json!({"axes": [2, 3], "sizes": [3, 2], "mode": "cubic", "antialias": true, "scales": [0.5, 0.4]}),
        ),
        vec![f("f32", &[1, 2, 6, 5])],
    ));
    v.push(case(
        "resize/cubic-exclude-outside-u8",
        op(
            "resize",
            json!({"axes": [1], "sizes": [9], "mode": "cubic", "exclude_outside": true, "cubic_coeff_a": -0.5}),
        ),
        vec![f("u8", &[2, 4])],
    ));
    v.push(case(
        "resize/tf-crop-and-resize",
        op(
            "resize",
            json!({"axes": [2, 3], "sizes": [3, 4], "mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize", "roi": [0.2, -0.3, 0.9, 0.8], "extrapolation_value": 10.0}),
        ),
        vec![f("f32", &[1, 2, 4, 4])],
    ));
    v.push(case(
        "grid_sample/bilinear-zeros",
        op("grid_sample", json!({})),
        vec![f("f32", &[2, 3, 4, 5]), f("f32", &[2, 3, 2, 2])],
    ));
    v.push(case(
        "grid_sample/bicubic-reflection-align",
        op(
            "grid_sample",
            json!({"mode": "bicubic", "padding_mode": "reflection", "align_corners": true}),
        ),
        vec![f("f32", &[1, 2, 4, 4]), f("f32", &[1, 3, 3, 2])],
    ));
    v.push(case(
        "grid_sample/nearest-border-3d",
        op(
            "grid_sample",
            json!({"mode": "nearest", "padding_mode": "border"}),
        ),
        vec![f("f32", &[1, 2, 3, 3, 4]), f("f32", &[1, 2, 2, 3, 3])],
    ));
    // Quantization (exact codecs, host).
    v.push(case(
        "quantize/i8-per-token",
        op(
            "quantize",
            json!({"dtype": "i8", "granularity": {"kind": "per_token"}}),
        ),
        vec![f("f32", &[4, 8])],
    ));
    for (dt, gran) in [
        ("i4", json!({"kind": "per_channel", "axis": 0})),
        (
            "f8e4m3fn",
            json!({"kind": "per_group", "axis": 1, "size": 4}),
        ),
        ("f8e5m2", json!({"kind": "per_token"})),
        ("f4e2m1", json!({"kind": "per_group", "axis": 1, "size": 2})),
    ] {
        v.push(case(
            &format!("quantize/{dt}"),
            op("quantize", json!({"dtype": dt, "granularity": gran})),
            vec![f("f32", &[4, 8])],
        ));
    }
    v.push(case(
        "dequantize/i8-per-tensor",
        op("dequantize", json!({"dtype": "f32"})),
        vec![f("i8", &[4, 8]), pos(f("f32", &[1, 1]))],
    ));
    // Collectives at world = 1.
    v.push(case(
        "all_gather",
        op(
            "all_gather",
            json!({"axis": 0, "mesh_axis": "tp", "world": 1}),
        ),
        vec![f("f32", &[2, 3])],
    ));
    v.push(case(
        "reduce_scatter",
        op(
            "reduce_scatter",
            json!({"axis": 0, "mesh_axis": "tp", "world": 1}),
        ),
        vec![f("f32", &[2, 3])],
    ));
    v.push(case(
        "all_reduce",
        op("all_reduce", json!({"mesh_axis": "tp", "world": 1})),
        vec![f("f32", &[2, 3])],
    ));
    v.push(case(
        "all_to_all",
        op(
            "all_to_all",
            json!({"split_axis": 0, "concat_axis": 1, "mesh_axis": "tp", "world": 1}),
        ),
        vec![f("f32", &[2, 3])],
    ));
    // Appended last: a case's random inputs are seeded by its index, so new cases go at the
    // end (inserting one re-draws the inputs of every later case).
    v.push(case(
        "qlinear/per-token-bias-gelu",
        op("qlinear", json!({"activation": "gelu"})),
        vec![
            t("i8", "B,S,40", &[2, 5, 40]),
            pos(t("f32", "B,S,1", &[2, 5, 1])),
            f("i8", &[40, 24]),
            pos(f("f32", &[1, 24])),
            f("f32", &[24]),
        ],
    ));
    v.push(case(
        "qlinear/per-tensor",
        op("qlinear", e.clone()),
        vec![
            f("i8", &[7, 70]),
            pos(f("f32", &[1, 1])),
            f("i8", &[70, 33]),
            pos(f("f32", &[1, 1])),
        ],
    ));
    v
}

fn input_tensor(i: &In, seed: u64) -> Tensor {
    let mut x = rand_tensor(i.dtype, i.shape.clone(), seed);
    if let Some(n) = i.below {
        let d: Vec<f64> = x
            .data()
            .iter()
            .map(|v| {
                if i.signed {
                    // rand_tensor's integers lie in [-100, 100].
                    ((v + 100.0) as i64).rem_euclid(2 * n as i64) as f64 - n as f64
                } else {
                    (v.abs() as u64 % n) as f64
                }
            })
            .collect();
        x = Tensor::new(i.dtype, i.shape.clone(), d).unwrap();
    } else if i.positive {
        // Integers: at least 1 (non-zero divisors); floats: at least 0.25.
        let lift = |v: f64| {
            if i.dtype.is_int() {
                v.abs().max(1.0)
            } else {
                v.abs() + 0.25
            }
        };
        let d: Vec<f64> = x.data().iter().map(|&v| lift(v)).collect();
        x = Tensor::new(i.dtype, i.shape.clone(), d).unwrap();
    }
    if i.nonzero {
        let d: Vec<f64> = x
            .data()
            .iter()
            .map(|&v| if v == 0.0 { 1.0 } else { v })
            .collect();
        x = Tensor::new(i.dtype, i.shape.clone(), d).unwrap();
    }
    x
}

fn module_of(c: &Case) -> Module {
    try_module_of(c).unwrap_or_else(|e| panic!("{}: {e}", c.name))
}

/// The one-node module of a case, or the type rule's refusal.
fn try_module_of(c: &Case) -> Result<Module, String> {
    let m = Module::new();
    let mut g = Graph::new();
    let ids: Vec<_> = c
        .inputs
        .iter()
        .enumerate()
        .map(|(k, i)| {
            g.add_input(&format!("x{k}"), TensorType::new(i.dtype, i.dims.clone()))
                .into()
        })
        .collect();
    let n = g
        .add_inferred(&m, c.op.clone(), ids, None)
        .map_err(|e| e.to_string())?;
    let nres = g.node(n).unwrap().results.len();
    for k in 0..nres {
        g.add_output(&format!("y{k}"), fuselage_ir::ValueId::new(n, k as u32));
    }
    let mut m = m;
    m.functions.insert("main".into(), g);
    Ok(m)
}

/// Tolerance of a result dtype (see the module docs).
fn tolerance(dtype: DType, case_tol: f64) -> (f64, f64) {
    match dtype {
        DType::F32 | DType::F64 => (case_tol, case_tol),
        DType::F16 => (1e-6, 2f64.powi(-10)),
        DType::BF16 => (1e-6, 2f64.powi(-7)),
        d if d.is_float() => (0.0, 0.0),
        _ => (0.0, 0.0),
    }
}

fn compare(name: &str, got: &[Tensor], want: &[Tensor], tol: f64) -> Result<(), String> {
    compare_with(name, got, want, |d| tolerance(d, tol))
}

/// Element-wise `|got − want| ≤ atol + rtol·|want|` with `(atol, rtol)` of the result dtype
/// (equal values, equal infinities and two NaNs agree).
fn compare_with(
    name: &str,
    got: &[Tensor],
    want: &[Tensor],
    bound: impl Fn(DType) -> (f64, f64),
) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{name}: {} results vs {}", got.len(), want.len()));
    }
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        if g.dtype() != w.dtype() || g.shape() != w.shape() {
            return Err(format!(
                "{name} result {k}: {}{:?} vs reference {}{:?}",
                g.dtype(),
                g.shape(),
                w.dtype(),
                w.shape()
            ));
        }
        let (atol, rtol) = bound(w.dtype());
        for (i, (a, b)) in g.data().iter().zip(w.data()).enumerate() {
            // (Equality first: equal infinities differ by NaN.)
            let ok = a == b || (a - b).abs() <= atol + rtol * b.abs() || (a.is_nan() && b.is_nan());
            if !ok {
                return Err(format!(
                    "{name} result {k} element {i}: lowered {a} vs reference {b} (atol {atol}, rtol {rtol})"
                ));
            }
        }
    }
    Ok(())
}

/// Lower `m` with native kernels on and off, run it on `inputs`, and push every lowering or
/// run error and every `check` failure onto `failures`.
fn lowered_both_ways(
    m: &Module,
    inputs: &[Tensor],
    name: &str,
    failures: &mut Vec<String>,
    check: impl Fn(&str, &[Tensor]) -> Result<(), String>,
) {
    for kernels in [true, false] {
        let opts = LowerOptions {
            native_kernels: kernels,
            ..Default::default()
        };
        let label = format!("{name} (kernels {kernels})");
        let got = lower::<CpuBackend>(m, "main", &Default::default(), &opts)
            .map_err(|e| e.to_string())
            .and_then(|p| p.run_tensors(inputs).map_err(|e| e.to_string()));
        match got {
            Ok(g) => {
                if let Err(e) = check(&label, &g) {
                    failures.push(e);
                }
            }
            Err(e) => failures.push(format!("{label}: {e}")),
        }
    }
}

#[test]
fn every_op_case_matches_the_reference() {
    let cases = cases();
    let mut failures = vec![];
    let mut covered = std::collections::BTreeSet::new();
    for (ci, c) in cases.iter().enumerate() {
        covered.insert(c.op.name());
        let m = module_of(c);
        let inputs: Vec<Tensor> = c
            .inputs
            .iter()
            .enumerate()
            .map(|(k, i)| input_tensor(i, 1000 * ci as u64 + k as u64))
            .collect();
        let want = match Reference.run(&m, "main", &inputs) {
            Ok(w) => w,
            Err(e) => {
                failures.push(format!("{}: reference failed: {e}", c.name));
                continue;
            }
        };
        lowered_both_ways(&m, &inputs, &c.name, &mut failures, |label, got| {
            compare(label, got, &want, c.tol)
        });
    }
    // Every op of the IR is covered (call and for are covered by their own tests below).
    let missing: Vec<&str> = fuselage_ir::ops::OP_NAMES
        .iter()
        .copied()
        .filter(|n| !covered.contains(n) && !["input", "constant", "call", "for"].contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "ops without a conformance case: {missing:?}"
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Ops whose result is exact at every dtype (selection, data movement, codecs, comparisons):
/// the sweep below holds them bit-exact even where the result is a float of few bits.
const EXACT_OPS: &[&str] = &[
    "neg",
    "abs",
    "relu",
    "maximum",
    "minimum",
    "clamp",
    "compare",
    "logical",
    "not",
    "where",
    "cast",
    "quantize",
    "iota",
    "dims",
    "bitwise",
    "argmax",
    "argmin",
    "top_k",
    "transpose",
    "reshape",
    "broadcast_to",
    "concat",
    "slice",
    "split",
    "gather",
    "gather_elements",
    "scatter_elements",
    "gather_nd",
    "scatter_nd",
    "pad",
    "trilu",
    "upsample_nearest2d",
    "all_gather",
    "reduce_scatter",
    "all_reduce",
    "all_to_all",
];

/// One unit in the last place of a float format with `m` explicit mantissa bits, relative, and
/// its smallest subnormal, absolute: the bound for float math computed in f32 and rounded once
/// into the narrow format, against the reference computing in f64 and rounding once.
fn ulp_bound(dtype: DType) -> Option<(f64, f64)> {
    Some(match dtype {
        DType::F16 => (2f64.powi(-24), 2f64.powi(-10)),
        DType::BF16 => (2f64.powi(-133), 2f64.powi(-7)),
        DType::F8E4M3FN => (2f64.powi(-9), 2f64.powi(-3)),
        DType::F8E5M2 => (2f64.powi(-16), 2f64.powi(-2)),
        DType::F4E2M1 => (0.5, 0.5),
        _ => return None,
    })
}

/// The case with every operand of dtype `from` (not index operands) and a `dtype` attribute
/// naming `from` switched to `to`; `None` when nothing changes.
fn retyped(c: &Case, from: DType, to: DType) -> Option<Case> {
    let mut attrs = c.op.attrs();
    let mut changed = false;
    if let Some(d) = attrs.get_mut("dtype") {
        if d.as_str() == Some(from.name()) {
            *d = json!(to.name());
            changed = true;
        }
    }
    let mut inputs = c.inputs.clone();
    for i in &mut inputs {
        if i.dtype == from && i.below.is_none() {
            i.dtype = to;
            changed = true;
        }
    }
    let op = Op::from_attrs(c.op.name(), attrs).ok()?;
    changed.then(|| Case {
        name: format!("{}@{}", c.name, to.name()),
        op,
        inputs,
        tol: c.tol,
    })
}

/// Done-means of the lowering issue: every op at every dtype its type rule accepts, on the CPU
/// lowering (kernels on and off) against the reference. Each case's principal dtype (its
/// first non-bool, non-index operand, or its `dtype` attribute) is switched to every other
/// dtype; a combination the op's type rule refuses is not a supported dtype and is skipped.
/// Integer and bool results, and every result of an exact op ([`EXACT_OPS`]), must be
/// bit-exact; float math of a narrow float within one unit in the last place of its format.
#[test]
fn every_op_at_every_dtype_it_supports_matches_the_reference() {
    let mut failures = vec![];
    let mut ran = 0usize;
    let mut per_dtype = std::collections::BTreeMap::<&str, usize>::new();
    let mut ops_at = std::collections::BTreeMap::<&str, std::collections::BTreeSet<&str>>::new();
    for (ci, base) in cases().iter().enumerate() {
        let principal = base
            .inputs
            .iter()
            .find(|i| i.dtype != DType::Bool && i.below.is_none())
            .map(|i| i.dtype)
            .or_else(|| {
                base.op
                    .attrs()
                    .get("dtype")
                    .and_then(|d| d.as_str().and_then(|s| s.parse().ok()))
            });
        let Some(from) = principal else { continue };
        for to in fuselage_ir::dtype::ALL_DTYPES {
            if to == from || to == DType::Bool {
                continue;
            }
            let Some(c) = retyped(base, from, to) else {
                continue;
            };
            // The op's type rule decides what it supports.
            let Ok(m) = try_module_of(&c) else {
                continue;
            };
            let inputs: Vec<Tensor> = c
                .inputs
                .iter()
                .enumerate()
                .map(|(k, i)| input_tensor(i, 1000 * ci as u64 + k as u64))
                .collect();
            let Ok(want) = Reference.run(&m, "main", &inputs) else {
                // Inputs the reference refuses at this dtype (e.g. values out of a narrow
                // format's range) are not a lowering question.
                continue;
            };
            ran += 1;
            *per_dtype.entry(to.name()).or_default() += 1;
            ops_at.entry(to.name()).or_default().insert(c.op.name());
            let exact = EXACT_OPS.contains(&c.op.name());
            lowered_both_ways(&m, &inputs, &c.name, &mut failures, |label, got| {
                compare_sweep(label, got, &want, c.tol, exact)
            });
        }
    }
    eprintln!("dtype sweep: {ran} (case, dtype) pairs; per dtype {per_dtype:?}");
    for (dt, ops) in &ops_at {
        eprintln!(
            "  {dt}: {}",
            ops.iter().copied().collect::<Vec<_>>().join(" ")
        );
    }
    // The sweep must reach every narrow dtype, or it checks nothing there.
    for dt in [
        "f16", "bf16", "f8e4m3fn", "f8e5m2", "f4e2m1", "i8", "i4", "u8", "i64",
    ] {
        assert!(
            per_dtype.get(dt).copied().unwrap_or(0) >= 5,
            "the sweep ran fewer than 5 cases at {dt}: {per_dtype:?}"
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {ran} (case, dtype) pairs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn compare_sweep(
    name: &str,
    got: &[Tensor],
    want: &[Tensor],
    tol: f64,
    exact: bool,
) -> Result<(), String> {
    compare_with(name, got, want, |d| match (exact, d) {
        (true, _) => (0.0, 0.0),
        (false, DType::F32 | DType::F64) => (tol, tol),
        (false, d) => match ulp_bound(d) {
            Some((a, r)) => (a.max(tol), r.max(tol)),
            None => (0.0, 0.0),
        },
    })
}

/// A module with a callee and a loop body, to check `call`, `for` and constants.
fn control_flow_module() -> Module {
    let mut m = Module::new();
    let w = rand_tensor(DType::F32, vec![4, 4], 7);
    m.add_constant("w", fuselage_ir::Constant::from_tensor(&w));
    // @f(a, w) = (a·w, a + a)
    let mut f = Graph::new();
    let a = f.add_input("a", TensorType::new(DType::F32, dims("B,4")));
    let wi = f.add_input("w", TensorType::fixed(DType::F32, &[4, 4]));
    let p = f
        .add_inferred(&m, op("matmul", json!({})), vec![a.into(), wi.into()], None)
        .unwrap();
    let s = f
        .add_inferred(&m, op("add", json!({})), vec![a.into(), a.into()], None)
        .unwrap();
    f.add_output("p", p.into());
    f.add_output("s", s.into());
    m.functions.insert("f".into(), f);
    // @body(i, h, w) = tanh(h·w)
    let mut b = Graph::new();
    b.add_input("i", TensorType::scalar(DType::I64));
    let h = b.add_input("h", TensorType::new(DType::F32, dims("B,4")));
    let wb = b.add_input("w", TensorType::fixed(DType::F32, &[4, 4]));
    let p = b
        .add_inferred(&m, op("matmul", json!({})), vec![h.into(), wb.into()], None)
        .unwrap();
    let t = b
        .add_inferred(&m, op("tanh", json!({})), vec![p.into()], None)
        .unwrap();
    b.add_output("h", t.into());
    m.functions.insert("body".into(), b);
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::new(DType::F32, dims("B,4")));
    let c = g
        .add_inferred(&m, op("constant", json!({"name": "w"})), vec![], None)
        .unwrap();
    let call = g
        .add_inferred(
            &m,
            op("call", json!({"callee": "f"})),
            vec![x.into(), c.into()],
            None,
        )
        .unwrap();
    let lp = g
        .add_inferred(
            &m,
            op("for", json!({"body": "body", "trip_count": 3})),
            vec![fuselage_ir::ValueId::new(call, 0), c.into()],
            None,
        )
        .unwrap();
    g.add_output("loop", lp.into());
    g.add_output("twice", fuselage_ir::ValueId::new(call, 1));
    m.functions.insert("main".into(), g);
    m
}

#[test]
fn call_for_and_constants_match_the_reference() {
    let m = control_flow_module();
    let x = rand_tensor(DType::F32, vec![3, 4], 1);
    let want = Reference.run(&m, "main", std::slice::from_ref(&x)).unwrap();
    let p = lower::<CpuBackend>(&m, "main", &Default::default(), &LowerOptions::default()).unwrap();
    let got = p.run_tensors(std::slice::from_ref(&x)).unwrap();
    compare("control flow", &got, &want, 1e-5).unwrap();
    // The same program as an Executor.
    let got = p.run(&m, "main", &[x]).unwrap();
    compare("control flow (executor)", &got, &want, 1e-5).unwrap();
    let report = p.lowering_report();
    assert!(report
        .iter()
        .any(|(op, how, _)| op == "for" && *how == Lowering::Native));
    assert!(report.iter().any(|(op, _, _)| op == "tanh"), "{report:?}");
}

#[test]
fn bad_inputs_and_unsupported_ops_are_errors() {
    let m = control_flow_module();
    let p = lower::<CpuBackend>(&m, "main", &Default::default(), &LowerOptions::default()).unwrap();
    // Wrong rank, wrong dtype, wrong count.
    assert!(p
        .run_tensors(&[rand_tensor(DType::F32, vec![4], 1)])
        .is_err());
    assert!(p
        .run_tensors(&[rand_tensor(DType::F16, vec![2, 4], 1)])
        .is_err());
    assert!(p.run_tensors(&[]).is_err());
    // Gather out of range is an error, not a panic.
    let c = case(
        "gather",
        op("gather", json!({"axis": 0})),
        vec![f("f32", &[3, 2]), f("i64", &[2])],
    );
    let gm = module_of(&c);
    let gp =
        lower::<CpuBackend>(&gm, "main", &Default::default(), &LowerOptions::default()).unwrap();
    let ids = Tensor::new(DType::I64, vec![2], vec![0.0, 7.0]).unwrap();
    let err = gp
        .run_tensors(&[rand_tensor(DType::F32, vec![3, 2], 1), ids])
        .unwrap_err()
        .to_string();
    assert!(err.contains("out of range"), "{err}");
    // A collective over 2 ranks cannot be lowered; a host-only op without fallback neither.
    let c = case(
        "all_reduce",
        op("all_reduce", json!({"mesh_axis": "tp", "world": 2})),
        vec![f("f32", &[2])],
    );
    let err = lower::<CpuBackend>(
        &module_of(&c),
        "main",
        &Default::default(),
        &LowerOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("communicator"), "{err}");
    let c = case(
        "top_k",
        op("top_k", json!({"k": 1, "axis": 0})),
        vec![f("f32", &[3])],
    );
    let no_host = LowerOptions {
        host_fallback: false,
        ..Default::default()
    };
    let err = lower::<CpuBackend>(&module_of(&c), "main", &Default::default(), &no_host)
        .unwrap_err()
        .to_string();
    assert!(err.contains("host fallback"), "{err}");
    assert!(lower::<CpuBackend>(&m, "nope", &Default::default(), &no_host).is_err());
}

#[test]
fn memory_plan_and_peak_are_reported() {
    let m = control_flow_module();
    let p = lower::<CpuBackend>(&m, "main", &Default::default(), &LowerOptions::default()).unwrap();
    let plan = p
        .memory_plan(&fuselage_ir::sample::SymbolSizes::parse("B=3").unwrap())
        .unwrap();
    assert!(plan.planned_bytes <= plan.naive_bytes);
    assert!(plan.planned_bytes > 0);
    p.run_tensors(&[rand_tensor(DType::F32, vec![3, 4], 1)])
        .unwrap();
    let s = p.last_run_stats();
    // While the call runs: its operand x and its two results, 3 values of f32[3,4].
    assert_eq!(s.peak_bytes, 3 * 3 * 4 * 4, "{s:?}");
    assert_eq!(s.constant_bytes, 16 * 4);
}

#[test]
fn cuda_without_a_gpu_is_an_error_not_a_panic() {
    let m = control_flow_module();
    let r = fuselage_backends::lower_for(
        fuselage_backends::BackendKind::Cuda,
        &m,
        "main",
        &LowerOptions::default(),
    );
    // Without the feature or without a driver this is an error; with both it lowers.
    if let Err(e) = r {
        let s = e.to_string();
        assert!(s.contains("CUDA") || s.contains("cuda"), "{s}");
    }
}

/// The CPU kernels read their operands through burn-ndarray's strides: transposed weights and
/// heads, broadcast masks. A small graph that feeds every kernel such views (from inputs, so
/// nothing is folded at lowering) matches the reference with kernels on and off.
#[test]
fn kernels_read_strided_operands() {
    let m0 = Module::new();
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::fixed(DType::F32, &[2, 6, 8]));
    let w = g.add_input("w", TensorType::fixed(DType::F32, &[8, 8])); // [out, in] as HF stores it
    let mask = g.add_input("mask", TensorType::fixed(DType::F32, &[2, 1, 1, 6]));
    let mut add = |o: Op, operands: Vec<fuselage_ir::ValueId>| {
        fuselage_ir::ValueId::new(g.add_inferred(&m0, o, operands, None).unwrap(), 0)
    };
    let wt = add(op("transpose", json!({"perm": [1, 0]})), vec![w.into()]);
    let h = add(op("linear", json!({})), vec![x.into(), wt]);
    // [2,6,8] → [2,6,2,4] → heads [2,2,6,4] (a strided view).
    let h4 = add(op("reshape", json!({"shape": [2, 6, 2, 4]})), vec![h]);
    let q = add(op("transpose", json!({"perm": [0, 2, 1, 3]})), vec![h4]);
    let a = add(op("attention", json!({})), vec![q, q, q, mask.into()]);
    let back = add(op("transpose", json!({"perm": [0, 2, 1, 3]})), vec![a]);
    let merged = add(op("reshape", json!({"shape": [2, 6, 8]})), vec![back]);
    let n = add(
        op("layer_norm", json!({"axis": -1, "eps": 1e-5})),
        vec![merged],
    );
    let gl = add(op("gelu", json!({})), vec![n]);
    // matmul against a transposed operand: [2,6,8] · [2,8,6] → [2,6,6], then softmax.
    let xt = add(op("transpose", json!({"perm": [0, 2, 1]})), vec![gl]);
    let mm = add(op("matmul", json!({})), vec![gl, xt]);
    let sm = add(op("softmax", json!({"axis": -1})), vec![mm]);
    g.add_output("y", sm);
    g.add_output("z", back);
    let mut m = m0;
    m.functions.insert("main".into(), g);
    let inputs = vec![
        rand_tensor(DType::F32, vec![2, 6, 8], 1),
        rand_tensor(DType::F32, vec![8, 8], 2),
        Tensor::from_f32(
            vec![2, 1, 1, 6],
            &[0., 0., 0., 0., -1e9, -1e9, 0., 0., 0., 0., 0., -1e9],
        )
        .unwrap(),
    ];
    let want = Reference.run(&m, "main", &inputs).unwrap();
    for kernels in [true, false] {
        let opts = LowerOptions {
            native_kernels: kernels,
            ..Default::default()
        };
        let p = lower::<CpuBackend>(&m, "main", &Default::default(), &opts).unwrap();
        let kernel_ops: Vec<String> = p
            .lowering_report()
            .into_iter()
            .filter(|(_, how, _)| *how == Lowering::Kernel)
            .map(|(op, _, _)| op)
            .collect();
        if kernels {
            for o in [
                "linear",
                "attention",
                "layer_norm",
                "gelu",
                "matmul",
                "softmax",
            ] {
                assert!(
                    kernel_ops.iter().any(|k| k == o),
                    "{o} not on a kernel: {kernel_ops:?}"
                );
            }
        } else {
            assert!(kernel_ops.is_empty(), "{kernel_ops:?}");
        }
        let got = p.run_tensors(&inputs).unwrap();
        compare(&format!("strided (kernels {kernels})"), &got, &want, 1e-5).unwrap();
    }
}

/// The indexing ops lower as documented (native except the scatter reductions mul/max/min),
/// read transposed (strided) operands correctly, and turn bad indices into errors, not panics.
#[test]
fn indexing_ops_lowering_strided_operands_and_bad_indices() {
    // Which lowering each op gets.
    let expect = [
        ("gather_elements", "Native"),
        ("gather_nd", "Native"),
        ("pad/constant", "Native"),
        ("pad/reflect-crop", "Native"),
        ("trilu/i32", "Native"),
        ("scatter_elements/none", "Native"),
        ("scatter_elements/add", "Native"),
        ("scatter_elements/mul", "Host"),
        ("scatter_nd/add", "Native"),
        ("scatter_nd/none", "Native"),
        ("scatter_nd/max", "Host"),
        ("scatter_nd/min", "Host"),
        ("scatter_nd/add-bool", "Host"),
    ];
    let all = cases();
    for (name, how) in expect {
        let c = all
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no case {name}"));
        let p = lower::<CpuBackend>(
            &module_of(c),
            "main",
            &Default::default(),
            &LowerOptions::default(),
        )
        .unwrap();
        let op = c.op.name();
        let got: Vec<String> = p
            .lowering_report()
            .into_iter()
            .filter(|(o, _, _)| o == op)
            .map(|(_, h, _)| format!("{h:?}"))
            .collect();
        assert_eq!(got, vec![how.to_string()], "{name}");
    }

    // Strided operands: every op reads a transposed view of x.
    let m0 = Module::new();
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::fixed(DType::F32, &[5, 4]));
    let gi = g.add_input("gi", TensorType::fixed(DType::I64, &[4, 3]));
    let ni = g.add_input("ni", TensorType::fixed(DType::I64, &[3, 1]));
    let u = g.add_input("u", TensorType::fixed(DType::F32, &[3, 5]));
    let mut add = |o: Op, operands: Vec<fuselage_ir::ValueId>| {
        fuselage_ir::ValueId::new(g.add_inferred(&m0, o, operands, None).unwrap(), 0)
    };
    let xt = add(op("transpose", json!({"perm": [1, 0]})), vec![x.into()]); // [4, 5]
    let ge = add(
        op("gather_elements", json!({"axis": 1})),
        vec![xt, gi.into()],
    );
    let gn = add(op("gather_nd", json!({})), vec![xt, ni.into()]);
    let sn = add(op("scatter_nd", json!({})), vec![xt, ni.into(), u.into()]);
    let sa = add(
        op("scatter_elements", json!({"axis": 1, "reduction": "add"})),
        vec![xt, gi.into(), ge],
    );
    let pd = add(
        op("pad", json!({"pads": [1, -1, 2, 3], "mode": "reflect"})),
        vec![xt],
    );
    let tr = add(op("trilu", json!({"k": 1})), vec![xt]);
    for (k, v) in [ge, gn, sn, sa, pd, tr].into_iter().enumerate() {
        g.add_output(&format!("y{k}"), v);
    }
    let mut m = m0;
    m.functions.insert("main".into(), g);
    let ids = |shape: Vec<usize>, v: Vec<f64>| Tensor::new(DType::I64, shape, v).unwrap();
    let inputs = vec![
        rand_tensor(DType::F32, vec![5, 4], 3),
        ids(
            vec![4, 3],
            vec![0., 4., -1., 2., 2., 2., -5., 1., 3., 4., 0., -2.],
        ),
        ids(vec![3, 1], vec![3., -4., 3.]),
        rand_tensor(DType::F32, vec![3, 5], 4),
    ];
    let want = Reference.run(&m, "main", &inputs).unwrap();
    let p = lower::<CpuBackend>(&m, "main", &Default::default(), &LowerOptions::default()).unwrap();
    let got = p.run_tensors(&inputs).unwrap();
    compare("strided indexing", &got, &want, 1e-5).unwrap();

    // Out-of-range indices are errors of the lowered program too (native and host paths).
    for name in [
        "gather_elements",
        "gather_nd",
        "scatter_elements/none",
        "scatter_elements/add",
        "scatter_elements/max",
        "scatter_nd/none",
        "scatter_nd/add",
    ] {
        let c = all.iter().find(|c| c.name == name).unwrap();
        let m = module_of(c);
        let mut inputs: Vec<Tensor> = c
            .inputs
            .iter()
            .enumerate()
            .map(|(k, i)| input_tensor(i, k as u64))
            .collect();
        for bad in [1000.0, -1000.0] {
            let mut v = inputs[1].data().to_vec();
            v[0] = bad;
            inputs[1] = Tensor::new(inputs[1].dtype(), inputs[1].shape().to_vec(), v).unwrap();
            let p = lower::<CpuBackend>(&m, "main", &Default::default(), &LowerOptions::default())
                .unwrap();
            let err = p.run_tensors(&inputs).unwrap_err().to_string();
            let want = format!("{} index {bad} is out of range", c.op.name());
            assert!(err.contains(&want), "{name}: {err}");
        }
    }
}

#[test]
fn special_values_match_the_reference_exactly() {
    let (nan, inf) = (f64::NAN, f64::INFINITY);
    #[rustfmt::skip]
    let x = Tensor::new(DType::F32, vec![3, 6], vec![
        0.5, 1.5, 2.5, -0.5, -1.5, -2.5,
        1.0, nan, 3.0, nan, -inf, 3.0,
        2.0, 7.0, 7.0, -1.0, -1.0, 0.0,
    ])
    .unwrap();
    let ops = [
        op("math", json!({"fn": "round"})),
        op("math", json!({"fn": "sign"})),
        op("math", json!({"fn": "floor"})),
        op("math", json!({"fn": "ceil"})),
        op("argmax", json!({"axis": 1})),
        op("argmax", json!({"axis": 1, "select_last_index": true})),
        op("argmin", json!({"axis": -1, "keepdims": true})),
        op("argmin", json!({"axis": -1, "select_last_index": true})),
        op("argmax", json!({"axis": 0})),
        op("reduce", json!({"kind": "max", "axes": [1]})),
        op(
            "reduce",
            json!({"kind": "min", "axes": [0, 1], "keepdims": true}),
        ),
        op("reduce", json!({"kind": "min", "axes": [0]})),
        op(
            "cumulative",
            json!({"kind": "sum", "axis": 1, "reverse": true}),
        ),
        op(
            "cumulative",
            json!({"kind": "prod", "axis": 1, "exclusive": true}),
        ),
    ];
    for o in ops {
        let name = format!("{}{}", o.name(), o.attrs());
        let m = fuselage_ir::ops::testing::one_op_module(o, std::slice::from_ref(&x)).unwrap();
        let want = Reference.run(&m, "main", std::slice::from_ref(&x)).unwrap();
        for kernels in [true, false] {
            let opts = LowerOptions {
                native_kernels: kernels,
                ..Default::default()
            };
            let p = lower::<CpuBackend>(&m, "main", &Default::default(), &opts).unwrap();
            let got = p.run_tensors(std::slice::from_ref(&x)).unwrap();
            compare(&format!("{name} (kernels {kernels})"), &got, &want, 0.0).unwrap();
        }
    }
    let c = case(
        "mod",
        op("mod", json!({})),
        vec![f("i32", &[2]), f("i32", &[2])],
    );
    let p = lower::<CpuBackend>(
        &module_of(&c),
        "main",
        &Default::default(),
        &LowerOptions::default(),
    )
    .unwrap();
    let a = Tensor::new(DType::I32, vec![2], vec![5.0, 7.0]).unwrap();
    let b = Tensor::new(DType::I32, vec![2], vec![2.0, 0.0]).unwrap();
    let err = p.run_tensors(&[a, b]).unwrap_err().to_string();
    assert!(err.contains("integer division by zero"), "{err}");
}

/// The new element-wise, scan and index ops lower as documented: exact integer and remainder
/// ops and products on the host, the rest on burn.
#[test]
fn elementwise_scan_and_index_ops_lower_as_documented() {
    let cases = [
        ("mod", json!({}), "i32", Lowering::Host),
        ("bitwise", json!({"kind": "xor"}), "i32", Lowering::Host),
        (
            "reduce",
            json!({"kind": "prod", "axes": [0]}),
            "f32",
            Lowering::Host,
        ),
        (
            "reduce",
            json!({"kind": "max", "axes": [0]}),
            "f32",
            Lowering::Native,
        ),
        ("math", json!({"fn": "round"}), "f32", Lowering::Native),
        ("math", json!({"fn": "atanh"}), "f32", Lowering::Native),
        ("argmin", json!({"axis": 0}), "f32", Lowering::Native),
        (
            "cumulative",
            json!({"kind": "prod", "axis": 0}),
            "f32",
            Lowering::Native,
        ),
    ];
    for (name, attrs, dt, how) in cases {
        // Rank 2, so that reductions keep a rank-1 result (rank-0 results run on the host).
        let inputs = if ["mod", "bitwise"].contains(&name) {
            vec![f(dt, &[4, 3]), f(dt, &[4, 3])]
        } else {
            vec![f(dt, &[4, 3])]
        };
        let c = case(name, op(name, attrs), inputs);
        let p = lower::<CpuBackend>(
            &module_of(&c),
            "main",
            &Default::default(),
            &LowerOptions::default(),
        )
        .unwrap();
        let report = p.lowering_report();
        assert!(
            report.iter().any(|(o, h, _)| o == name && *h == how),
            "{name}: {report:?}"
        );
    }
}

/// The N-D vision ops lower onto burn where burn's semantics are ONNX's, and run the reference
/// on the host otherwise.
#[test]
fn spatial_ops_lower_natively_where_burn_matches() {
    let how = |name: &str, o: Op, inputs: Vec<In>| {
        let m = module_of(&case(name, o, inputs));
        let p =
            lower::<CpuBackend>(&m, "main", &Default::default(), &LowerOptions::default()).unwrap();
        p.lowering_report()
            .into_iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, h, _)| h)
            .unwrap()
    };
    let x2 = || vec![f("f32", &[1, 2, 6, 6])];
    assert_eq!(
        how(
            "conv",
            op("conv", json!({"pads": [0, 1, 1, 0]})),
            vec![f("f32", &[1, 2, 6, 6]), f("f32", &[3, 2, 3, 3])]
        ),
        Lowering::Native
    );
    assert_eq!(
        how(
            "conv_transpose",
            op("conv_transpose", json!({"strides": [2]})),
            vec![f("f32", &[1, 2, 6]), f("f32", &[2, 3, 3])]
        ),
        Lowering::Native
    );
    let pool = |attrs| how("pool", op("pool", attrs), x2());
    assert_eq!(
        pool(json!({"kind": "max", "kernel": [2, 2], "indices": true})),
        Lowering::Native
    );
    assert_eq!(
        pool(json!({"kind": "avg", "kernel": [3, 3], "pads": [1, 1, 1, 1]})),
        Lowering::Native
    );
    assert_eq!(
        pool(json!({"kind": "lp", "kernel": [2, 2]})),
        Lowering::Host
    );
    assert_eq!(
        pool(json!({"kind": "avg", "kernel": [2, 2], "pads": [1, 0, 0, 1]})),
        Lowering::Host
    );
    assert_eq!(
        how(
            "resize",
            op("resize", json!({"axes": [2, 3], "sizes": [12, 12]})),
            x2()
        ),
        Lowering::Native
    );
    assert_eq!(
        how(
            "grid_sample",
            op("grid_sample", json!({})),
            vec![f("f32", &[1, 2, 6, 6]), f("f32", &[1, 2, 2, 2])]
        ),
        Lowering::Host
    );
}

/// Packed low-precision values stay packed between ops that take the packed form: quantize
/// (i8 per token, i4 per group, f8, f4) → reshape / transpose / slice → dequantize and casts
/// through f8 run on the packed kernels with no widening to f32, bit-exact to the reference; a
/// packed value read by an op without a packed kernel (`add`) is widened, and counted.
#[test]
fn packed_values_are_not_widened_between_packed_ops() {
    use fuselage_ir::Graph;
    let m = Module::new();
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::fixed(DType::F32, &[4, 8]));
    let mut outs = vec![];
    for (dtype, gran) in [
        ("i8", json!({"kind": "per_token"})),
        ("i4", json!({"kind": "per_group", "axis": 1, "size": 4})),
        ("f8e4m3fn", json!({"kind": "per_tensor"})),
        ("f4e2m1", json!({"kind": "per_channel", "axis": 1})),
    ] {
        let q = g
            .add_inferred(
                &m,
                op("quantize", json!({"dtype": dtype, "granularity": gran})),
                vec![x.into()],
                None,
            )
            .unwrap();
        let codes = fuselage_ir::ValueId::new(q, 0);
        let scale = fuselage_ir::ValueId::new(q, 1);
        // Through a reshape and back: both on the packed codes.
        let r = g
            .add_inferred(&m, op("reshape", json!({"shape": [32]})), vec![codes], None)
            .unwrap();
        let r = g
            .add_inferred(
                &m,
                op("reshape", json!({"shape": [4, 8]})),
                vec![r.into()],
                None,
            )
            .unwrap();
        let d = g
            .add_inferred(
                &m,
                op("dequantize", json!({"dtype": "f32", "granularity": gran})),
                vec![r.into(), scale],
                None,
            )
            .unwrap();
        outs.push(d);
    }
    // f32 → f8e5m2 → transpose → f32.
    let c = g
        .add_inferred(
            &m,
            op("cast", json!({"dtype": "f8e5m2"})),
            vec![x.into()],
            None,
        )
        .unwrap();
    let t = g
        .add_inferred(
            &m,
            op("transpose", json!({"perm": [1, 0]})),
            vec![c.into()],
            None,
        )
        .unwrap();
    let back = g
        .add_inferred(
            &m,
            op("cast", json!({"dtype": "f32"})),
            vec![t.into()],
            None,
        )
        .unwrap();
    outs.push(back);
    for (k, o) in outs.iter().enumerate() {
        g.add_output(&format!("y{k}"), (*o).into());
    }
    let mut m = m;
    m.functions.insert("main".into(), g.clone());
    let input = rand_tensor(DType::F32, vec![4, 8], 11);
    let want = Reference
        .run(&m, "main", std::slice::from_ref(&input))
        .unwrap();
    let p = lower::<CpuBackend>(&m, "main", &Default::default(), &Default::default()).unwrap();
    let got = p.run_tensors(std::slice::from_ref(&input)).unwrap();
    compare("packed chain", &got, &want, 0.0).unwrap();
    for (k, (a, b)) in got.iter().zip(&want).enumerate() {
        assert_eq!(a.data(), b.data(), "output {k} is bit-exact");
    }
    assert_eq!(
        p.last_run_stats().packed_widened,
        0,
        "no packed value widened"
    );
    let kernels: Vec<&str> = p
        .explain_lowering()
        .iter()
        .filter_map(|n| n.kernel)
        .collect();
    for k in [
        "quantize-packed",
        "dequantize-packed",
        "reshape-packed",
        "cast-packed",
        "transpose-packed",
    ] {
        assert!(kernels.contains(&k), "{k} not chosen: {kernels:?}");
    }
    // Control: an add reading the packed codes widens them (the counter can fail).
    let m2 = Module::new();
    let mut g2 = Graph::new();
    let a = g2.add_input("a", TensorType::fixed(DType::I8, &[3]));
    let s = g2
        .add_inferred(&m2, op("add", json!({})), vec![a.into(), a.into()], None)
        .unwrap();
    g2.add_output("y", s.into());
    let mut m2 = m2;
    m2.functions.insert("main".into(), g2);
    let ia = Tensor::new(DType::I8, vec![3], vec![-3.0, 5.0, 100.0]).unwrap();
    let p2 = lower::<CpuBackend>(&m2, "main", &Default::default(), &Default::default()).unwrap();
    let y = p2.run_tensors(std::slice::from_ref(&ia)).unwrap();
    assert_eq!(y[0].data(), &[-6.0, 10.0, 127.0]);
    assert_eq!(p2.last_run_stats().packed_widened, 2);
}

/// Integers f32 cannot hold (beyond 2^24) and f64 values stay exact through a lowered
/// program: data movement and arithmetic on them agree with the reference to the last bit,
/// while small integer operands (token ids) still feed the device path.
#[test]
fn wide_integers_and_f64_stay_exact() {
    let m = Module::new();
    let mut g = Graph::new();
    let big = g.add_input("big", TensorType::fixed(DType::I64, &[2, 3]));
    let ids = g.add_input("ids", TensorType::fixed(DType::I64, &[4]));
    let table = g.add_input("table", TensorType::fixed(DType::F32, &[5, 3]));
    let d = g.add_input("d", TensorType::fixed(DType::F64, &[3]));
    let add = |g: &mut Graph, o: Op, a: Vec<fuselage_ir::ValueId>| {
        fuselage_ir::ValueId::new(g.add_inferred(&m, o, a, None).unwrap(), 0)
    };
    let r = add(
        &mut g,
        op("reshape", json!({"shape": [3, 2]})),
        vec![big.into()],
    );
    let t = add(&mut g, op("transpose", json!({"perm": [1, 0]})), vec![r]);
    let s = add(&mut g, op("add", json!({})), vec![t, big.into()]);
    let p = add(&mut g, op("mul", json!({})), vec![s, big.into()]);
    let e = add(
        &mut g,
        op("gather", json!({"axis": 0})),
        vec![table.into(), ids.into()],
    );
    let dd = add(&mut g, op("mul", json!({})), vec![d.into(), d.into()]);
    let dc = add(&mut g, op("concat", json!({"axis": 0})), vec![d.into(), dd]);
    for (k, v) in [s, p, e, dc].into_iter().enumerate() {
        g.add_output(&format!("y{k}"), v);
    }
    let mut m = m;
    m.functions.insert("main".into(), g);
    let big_v: Vec<f64> = (0..6)
        .map(|i| (1i64 << 40) as f64 + i as f64 * 3.0 + 1.0)
        .collect();
    let inputs = vec![
        Tensor::new(DType::I64, vec![2, 3], big_v).unwrap(),
        Tensor::new(DType::I64, vec![4], vec![4.0, 0.0, 2.0, 4.0]).unwrap(),
        rand_tensor(DType::F32, vec![5, 3], 9),
        Tensor::new(DType::F64, vec![3], vec![0.1, 1.0 / 3.0, 1e300]).unwrap(),
    ];
    let want = Reference.run(&m, "main", &inputs).unwrap();
    // The sum 2^41 + … is exact; the product saturates at i64::MAX in both.
    assert_eq!(want[0].data()[0], (1u64 << 41) as f64 + 2.0);
    for kernels in [true, false] {
        let opts = LowerOptions {
            native_kernels: kernels,
            ..Default::default()
        };
        let p = lower::<CpuBackend>(&m, "main", &Default::default(), &opts).unwrap();
        let got = p.run_tensors(&inputs).unwrap();
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.dtype(), w.dtype(), "result {k}");
            assert_eq!(g.data(), w.data(), "result {k} (kernels {kernels})");
        }
        // The embedding gather of small ids stays off the host; the i64 add and the f64 mul
        // are computed by the reference semantics, and the report says why.
        for n in p.explain_lowering() {
            match n.op.as_str() {
                "gather" => assert_ne!(n.lowering, Lowering::Host, "{}", n.why),
                "add" | "mul" => {
                    assert_eq!(n.lowering, Lowering::Host, "{} {}", n.node, n.why);
                    assert!(n.why.contains("exactly"), "{}", n.why);
                }
                _ => {}
            }
        }
    }
}
