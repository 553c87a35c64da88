//! Models written in primitives, shared by the canonicalize tests and benches.
#![allow(dead_code)]

use fuselage_ir::{Constant, DType, Dim, Graph, Init, Module, Op, TensorType, ValueId};
use serde_json::{json, Value};

/// A tiny graph builder over `Op::from_attrs`.
pub struct B {
    pub m: Module,
    pub g: Graph,
    seed: u64,
}

impl B {
    pub fn new() -> Self {
        B {
            m: Module::new(),
            g: Graph::new(),
            seed: 1,
        }
    }

    pub fn input(&mut self, name: &str, shape: &[Dim]) -> ValueId {
        self.g
            .add_input(name, TensorType::new(DType::F32, shape.to_vec()))
            .into()
    }

    pub fn op(&mut self, name: &str, attrs: Value, args: &[ValueId]) -> ValueId {
        let op = Op::from_attrs(name, attrs).unwrap();
        self.g
            .add_inferred(&self.m, op, args.to_vec(), None)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .into()
    }

    /// A constant node; `value` Some → every element equal to it, None → seeded normal.
    pub fn constant(&mut self, name: &str, shape: &[usize], value: Option<f64>) -> ValueId {
        if !self.m.constants.contains_key(name) {
            let ty = TensorType::fixed(DType::F32, shape);
            self.seed += 1;
            let init = match value {
                Some(value) => Init::Full { value },
                None => Init::Normal {
                    mean: 0.0,
                    std: 0.5,
                },
            };
            self.m
                .add_constant(name, Constant::seeded(ty, self.seed, init));
        }
        self.op("constant", json!({ "name": name }), &[])
    }

    pub fn scalar(&mut self, v: f64) -> ValueId {
        self.constant(&format!("c{v}"), &[], Some(v))
    }

    pub fn finish(mut self, outs: &[ValueId]) -> Module {
        for (i, o) in outs.iter().enumerate() {
            self.g.add_output(&format!("out{i}"), *o);
        }
        self.m.functions.insert("main".into(), self.g);
        self.m
    }
}

pub fn mean(b: &mut B, x: ValueId) -> ValueId {
    b.op(
        "reduce",
        json!({"kind": "mean", "axes": [-1], "keepdims": true}),
        &[x],
    )
}

/// LayerNorm over the last dim, in primitives; `variant` picks how the square and the
/// reciprocal square root are written.
pub fn layer_norm_prims(b: &mut B, x: ValueId, h: usize, variant: u8, tag: &str) -> ValueId {
    let mu = mean(b, x);
    let d = b.op("sub", json!({}), &[x, mu]);
    let sq = if variant == 1 {
        let two = b.scalar(2.0);
        b.op("pow", json!({}), &[d, two])
    } else {
        b.op("mul", json!({}), &[d, d])
    };
    let var = mean(b, sq);
    let eps = b.scalar(1e-5);
    let ve = b.op("add", json!({}), &[var, eps]);
    let n = match variant {
        2 => {
            let one = b.scalar(1.0);
            let s = b.op("sqrt", json!({}), &[ve]);
            let r = b.op("div", json!({}), &[one, s]);
            b.op("mul", json!({}), &[d, r])
        }
        3 => {
            let s = b.op("sqrt", json!({}), &[ve]);
            b.op("div", json!({}), &[d, s])
        }
        _ => {
            let r = b.op("rsqrt", json!({}), &[ve]);
            b.op("mul", json!({}), &[d, r])
        }
    };
    let s = b.constant(&format!("{tag}.scale"), &[h], None);
    let bias = b.constant(&format!("{tag}.bias"), &[h], None);
    let y = b.op("mul", json!({}), &[n, s]);
    b.op("add", json!({}), &[y, bias])
}

/// GELU in primitives, `variant` 0..5 as in fusion.rules; 5 writes `0.5·x` with the constant
/// first and `1 + erf` with the one first.
pub fn gelu_prims(b: &mut B, x: ValueId, variant: u8) -> ValueId {
    let half = b.scalar(0.5);
    let one = b.scalar(1.0);
    let e = if matches!(variant, 1 | 3) {
        let r = b.scalar(std::f64::consts::FRAC_1_SQRT_2);
        b.op("mul", json!({}), &[x, r])
    } else {
        let r = b.scalar(std::f64::consts::SQRT_2);
        b.op("div", json!({}), &[x, r])
    };
    let erf = b.op("erf", json!({}), &[e]);
    let a = if variant == 5 {
        b.op("add", json!({}), &[one, erf])
    } else {
        b.op("add", json!({}), &[erf, one])
    };
    match variant {
        0 | 1 => {
            let xh = b.op("mul", json!({}), &[x, half]);
            b.op("mul", json!({}), &[xh, a])
        }
        2 | 3 => {
            let xa = b.op("mul", json!({}), &[x, a]);
            b.op("mul", json!({}), &[xa, half])
        }
        4 => {
            let ah = b.op("mul", json!({}), &[a, half]);
            b.op("mul", json!({}), &[x, ah])
        }
        _ => {
            let hx = b.op("mul", json!({}), &[half, x]);
            b.op("mul", json!({}), &[hx, a])
        }
    }
}

/// A residual chain: each layer is a LayerNorm in primitives, matmul + bias, erf-GELU, and a
/// residual add.
pub fn residual_chain(layers: usize) -> Module {
    let h = 8;
    let mut b = B::new();
    let mut x = b.input("x", &[Dim::sym("S"), Dim::from(h as u64)]);
    for l in 0..layers {
        let y = layer_norm_prims(&mut b, x, h, (l % 4) as u8, &format!("l{l}.ln"));
        let w = b.constant(&format!("l{l}.w"), &[h, h], None);
        let bias = b.constant(&format!("l{l}.b"), &[h], None);
        let mm = b.op("matmul", json!({}), &[y, w]);
        let lin = b.op("add", json!({}), &[mm, bias]);
        let g = gelu_prims(&mut b, lin, (l % 6) as u8);
        x = b.op("add", json!({}), &[x, g]);
    }
    b.finish(&[x])
}

/// A BERT-large-shaped encoder (post-LN, hidden 1024, 16 heads, FFN 4096) written in
/// primitives, weights seeded (never materialized unless run). Input `f32[B,S,1024]`.
pub fn bert_large(layers: usize) -> Module {
    let (h, heads, ffn) = (1024usize, 16usize, 4096usize);
    let dh = h / heads;
    let mut b = B::new();
    let mut x = b.input("x", &[Dim::sym("B"), Dim::sym("S"), Dim::from(h as u64)]);
    let scale = b.scalar(1.0 / (dh as f64).sqrt());
    for l in 0..layers {
        let dense = |b: &mut B, x: ValueId, name: &str, k: usize, n: usize| {
            let w = b.constant(&format!("l{l}.{name}.w"), &[k, n], None);
            let bias = b.constant(&format!("l{l}.{name}.b"), &[n], None);
            let y = b.op("matmul", json!({}), &[x, w]);
            b.op("add", json!({}), &[y, bias])
        };
        let split = |b: &mut B, t: ValueId| {
            let r = b.op("reshape", json!({"shape": ["B", "S", heads, dh]}), &[t]);
            b.op("transpose", json!({"perm": [0, 2, 1, 3]}), &[r])
        };
        let q = dense(&mut b, x, "q", h, h);
        let k = dense(&mut b, x, "k", h, h);
        let v = dense(&mut b, x, "v", h, h);
        let (q, k, v) = (split(&mut b, q), split(&mut b, k), split(&mut b, v));
        let kt = b.op("transpose", json!({"perm": [0, 1, 3, 2]}), &[k]);
        let s = b.op("matmul", json!({}), &[q, kt]);
        let s = b.op("mul", json!({}), &[s, scale]);
        let p = b.op("softmax", json!({"axis": -1}), &[s]);
        let c = b.op("matmul", json!({}), &[p, v]);
        let c = b.op("transpose", json!({"perm": [0, 2, 1, 3]}), &[c]);
        let c = b.op("reshape", json!({"shape": ["B", "S", h]}), &[c]);
        let o = dense(&mut b, c, "o", h, h);
        let r = b.op("add", json!({}), &[x, o]);
        let y = layer_norm_prims(&mut b, r, h, 0, &format!("l{l}.ln1"));
        let f = dense(&mut b, y, "ffn1", h, ffn);
        let f = gelu_prims(&mut b, f, 2);
        let f = dense(&mut b, f, "ffn2", ffn, h);
        let r = b.op("add", json!({}), &[y, f]);
        x = layer_norm_prims(&mut b, r, h, 0, &format!("l{l}.ln2"));
    }
    b.finish(&[x])
}
