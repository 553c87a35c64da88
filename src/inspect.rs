//! `fuselage inspect`: what a module contains — ops by kind, parameters, bytes, and an estimate
//! of the floating-point work per token.

use fuselage_ir::sample::SymbolSizes;
use fuselage_ir::{Module, TensorType};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// A value's signature for reports.
#[derive(Clone, Debug, Serialize)]
pub struct Signature {
    /// Name.
    pub name: String,
    /// Type as text, e.g. `f32[B,S,128]`.
    #[serde(rename = "type")]
    pub ty: String,
}

/// What `inspect` reports.
#[derive(Clone, Debug, Serialize)]
pub struct Inspection {
    /// Functions in the module.
    pub functions: Vec<String>,
    /// Entry function inputs.
    pub inputs: Vec<Signature>,
    /// Entry function outputs.
    pub outputs: Vec<Signature>,
    /// Live nodes over all functions.
    pub nodes: usize,
    /// Node counts by op name.
    pub ops: BTreeMap<String, usize>,
    /// Number of constants.
    pub constants: usize,
    /// Parameter elements (sum over constants).
    pub parameters: u64,
    /// Parameter storage bytes in their dtypes.
    pub parameter_bytes: u64,
    /// Symbol sizes used for the FLOP estimate.
    pub bindings: BTreeMap<String, u64>,
    /// Estimated floating-point operations of one run at those sizes.
    pub flops: f64,
    /// Tokens in one run (product of the entry inputs' symbolic sizes, at least 1).
    pub tokens: u64,
    /// `flops / tokens`.
    pub flops_per_token: f64,
}

fn numel(t: &TensorType, b: &HashMap<String, u64>, default: u64) -> f64 {
    let size = |s: &str| *b.get(s).unwrap_or(&default);
    t.shape.iter().map(|d| d.estimate(&size)).product()
}

fn dim(t: &TensorType, i: usize, b: &HashMap<String, u64>, default: u64) -> f64 {
    let size = |s: &str| *b.get(s).unwrap_or(&default);
    t.shape.get(i).map(|d| d.estimate(&size)).unwrap_or(1.0)
}

/// Estimated flops of one node: 2·M·K·N for products, the attention score and value products
/// plus softmax, 2·out·(C/g)·kh·kw for convolutions, ~5 per element for normalizations and
/// softmax, one per output element for element-wise math, zero for pure data movement.
pub fn node_flops(
    op: &str,
    operands: &[TensorType],
    results: &[TensorType],
    b: &HashMap<String, u64>,
    default: u64,
) -> f64 {
    let out = results.first().map(|t| numel(t, b, default)).unwrap_or(0.0);
    let inp = operands
        .first()
        .map(|t| numel(t, b, default))
        .unwrap_or(0.0);
    match op {
        "matmul" | "linear" => {
            let k = operands
                .first()
                .map(|t| dim(t, t.rank().saturating_sub(1), b, default))
                .unwrap_or(0.0);
            2.0 * out * k + if operands.len() > 2 { out } else { 0.0 }
        }
        "attention" | "mmca_attention" => {
            if operands.len() < 3 {
                return 0.0;
            }
            let q = &operands[0];
            let k = &operands[1];
            let v = &operands[2];
            let (bq, h, sq, d) = (
                dim(q, 0, b, default),
                dim(q, 1, b, default),
                dim(q, 2, b, default),
                dim(q, 3, b, default),
            );
            let sk = dim(k, 2, b, default);
            let dv = dim(v, 3, b, default);
            let scores = bq * h * sq * sk;
            2.0 * scores * d + 2.0 * scores * dv + 5.0 * scores
        }
        "conv2d" => {
            let w = operands.get(1);
            let per = w
                .map(|w| dim(w, 1, b, default) * dim(w, 2, b, default) * dim(w, 3, b, default))
                .unwrap_or(0.0);
            2.0 * out * per
        }
        "softmax" | "layer_norm" | "rms_norm" | "group_norm" => 5.0 * inp,
        "reduce" | "argmax" | "top_k" | "avg_pool2d" => inp,
        "input" | "constant" | "iota" | "transpose" | "reshape" | "broadcast_to" | "concat"
        | "slice" | "split" | "gather" | "cast" | "call" | "for" | "all_gather"
        | "reduce_scatter" | "all_to_all" | "upsample_nearest2d" => 0.0,
        _ => out,
    }
}

/// Inspect a module; symbolic dims take the sizes given (others `sizes.default`).
pub fn inspect(m: &Module, sizes: &SymbolSizes) -> Inspection {
    let entry = m.entry_name().unwrap_or("main").to_string();
    let mut inputs = vec![];
    let mut outputs = vec![];
    let mut syms: Vec<String> = vec![];
    if let Some(g) = m.functions.get(&entry) {
        for (name, ty) in g.input_names().iter().zip(g.input_types()) {
            for s in ty.symbols() {
                if !syms.contains(&s) {
                    syms.push(s);
                }
            }
            inputs.push(Signature {
                name: name.clone(),
                ty: ty.to_string(),
            });
        }
        for (o, ty) in g.outputs.iter().zip(g.output_types()) {
            outputs.push(Signature {
                name: o.name.clone(),
                ty: ty.map(|t| t.to_string()).unwrap_or_else(|| "?".into()),
            });
        }
    }
    let bindings: BTreeMap<String, u64> = syms.iter().map(|s| (s.clone(), sizes.size(s))).collect();
    let hb: HashMap<String, u64> = bindings.clone().into_iter().collect();
    let mut flops = 0.0;
    for g in m.functions.values() {
        for (_, n) in g.nodes() {
            let ops: Vec<TensorType> = n
                .operands
                .iter()
                .filter_map(|v| g.value_type(*v).cloned())
                .collect();
            flops += node_flops(n.op.name(), &ops, &n.results, &hb, sizes.default);
        }
    }
    let tokens = bindings.values().product::<u64>().max(1);
    let (parameters, parameter_bytes) = m.parameter_stats();
    Inspection {
        functions: m.functions.keys().cloned().collect(),
        inputs,
        outputs,
        nodes: m.node_count(),
        ops: m
            .op_histogram()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        constants: m.constants.len(),
        parameters,
        parameter_bytes,
        bindings,
        flops,
        tokens,
        flops_per_token: flops / tokens as f64,
    }
}

impl std::fmt::Display for Inspection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "functions: {}", self.functions.join(", "))?;
        for i in &self.inputs {
            writeln!(f, "input   {:<24} {}", i.name, i.ty)?;
        }
        for o in &self.outputs {
            writeln!(f, "output  {:<24} {}", o.name, o.ty)?;
        }
        writeln!(
            f,
            "parameters: {} in {} constants, {:.2} MB",
            self.parameters,
            self.constants,
            self.parameter_bytes as f64 / 1e6
        )?;
        writeln!(f, "nodes: {}", self.nodes)?;
        let mut ops: Vec<_> = self.ops.iter().collect();
        ops.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        for (k, v) in ops {
            writeln!(f, "  {v:>6}  {k}")?;
        }
        let b: Vec<String> = self
            .bindings
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        writeln!(
            f,
            "estimated work at {}: {:.3} GFLOP per run, {:.3} MFLOP per token",
            if b.is_empty() {
                "fixed shapes".to_string()
            } else {
                b.join(",")
            },
            self.flops / 1e9,
            self.flops_per_token / 1e6
        )
    }
}
