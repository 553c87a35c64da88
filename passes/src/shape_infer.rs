//! `shape-infer`: specializes symbolic dims and re-infers result types.
//!
//! With `bind = "B=1,S=128"`, every occurrence of a bound symbol in a function's input types and
//! in ops' `shape` attributes (`reshape`, `broadcast_to`, `iota`) becomes that fixed size. Then
//! every node's result types are re-inferred from its operands in topological order (all
//! functions, repeated until stable so that `call` sees its callee's new types). With an empty
//! `bind` the pass only re-infers. Binding a symbol twice to different sizes, or a symbol the
//! module does not use, is an error; so is a node whose inference fails under the binds.

use crate::error::PassError;
use crate::pass::{Changed, Pass, PassCx, PassKind};
use fuselage_ir::ops::InferCx;
use fuselage_ir::{Dim, Graph, Module, Op};
use std::collections::{BTreeMap, BTreeSet, HashMap};

crate::pass_options! {
    /// Options of `shape-infer`.
    pub struct ShapeInferOptions {
        /// Symbol sizes to specialize, e.g. `B=1,S=128`; empty: only re-infer types.
        bind: String = String::new(),
    }
}

/// The `shape-infer` pass.
#[derive(Debug, Clone)]
pub struct ShapeInfer {
    binds: BTreeMap<String, u64>,
}

/// Parse `B=1,S=128`.
pub fn parse_binds(s: &str) -> Result<BTreeMap<String, u64>, String> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("expected `SYMBOL=SIZE` in `{part}`"))?;
        let k = k.trim();
        if k.is_empty() || !k.chars().all(|c| c.is_alphanumeric() || c == '_') {
            return Err(format!("bad symbol name `{k}` in `{part}`"));
        }
        let v: u64 = v
            .trim()
            .parse()
            .map_err(|_| format!("expected a non-negative integer size in `{part}`"))?;
        if let Some(prev) = out.insert(k.to_string(), v) {
            if prev != v {
                return Err(format!("inconsistent binds: {k}={prev} and {k}={v}"));
            }
        }
    }
    Ok(out)
}

impl ShapeInfer {
    /// Create the pass; fails on a malformed or inconsistent `bind`.
    pub fn new(options: ShapeInferOptions) -> Result<Self, PassError> {
        let binds = parse_binds(&options.bind).map_err(|message| PassError::Options {
            pass: "shape-infer".into(),
            message: format!("bind: {message}"),
        })?;
        Ok(ShapeInfer { binds })
    }
}

/// Substitute bound symbols into dims; returns whether any dim changed.
fn subst_dims(dims: &mut [Dim], binds: &BTreeMap<String, u64>) -> Result<bool, String> {
    let map: HashMap<String, u64> = binds.iter().map(|(k, v)| (k.clone(), *v)).collect();
    let mut changed = false;
    for d in dims.iter_mut() {
        if d.is_const() {
            continue;
        }
        let new = d.partial_eval(&map).map_err(|e| format!("{d}: {e}"))?;
        if new != *d {
            *d = new;
            changed = true;
        }
    }
    Ok(changed)
}

/// Attributes whose values (numbers, strings, or arrays of them) are dims.
const DIM_ATTRS: [&str; 4] = ["shape", "sizes", "start", "end"];

/// The dims written in an op's dim attributes (strings are dim expressions).
fn attr_dims(attrs: &serde_json::Value) -> Vec<Dim> {
    let mut out = vec![];
    for key in DIM_ATTRS {
        let vals: Vec<&serde_json::Value> = match attrs.get(key) {
            Some(serde_json::Value::Array(a)) => a.iter().collect(),
            Some(v) => vec![v],
            None => vec![],
        };
        out.extend(
            vals.into_iter()
                .filter_map(|v| v.as_str().and_then(|s| Dim::parse(s).ok())),
        );
    }
    out
}

/// Symbols named in an op's dim attributes.
fn attr_symbols(op: &Op) -> Vec<String> {
    attr_dims(&op.attrs())
        .iter()
        .flat_map(|d| d.symbols())
        .collect()
}

/// Replace bound symbols in an op's dim attributes; `None` when nothing changes.
fn subst_attrs(op: &Op, binds: &BTreeMap<String, u64>) -> Result<Option<Op>, String> {
    let map: HashMap<String, u64> = binds.iter().map(|(k, v)| (k.clone(), *v)).collect();
    let mut attrs = op.attrs();
    let mut changed = false;
    let mut fix = |v: &mut serde_json::Value| -> Result<(), String> {
        let Some(d) = v.as_str().and_then(|s| Dim::parse(s).ok()) else {
            return Ok(());
        };
        let new = d.partial_eval(&map).map_err(|e| format!("{d}: {e}"))?;
        if new != d {
            *v = serde_json::to_value(&new).map_err(|e| e.to_string())?;
            changed = true;
        }
        Ok(())
    };
    for key in DIM_ATTRS {
        match attrs.get_mut(key) {
            Some(serde_json::Value::Array(a)) => {
                for v in a.iter_mut() {
                    fix(v)?;
                }
            }
            Some(v) => fix(v)?,
            None => {}
        }
    }
    if !changed {
        return Ok(None);
    }
    Op::from_attrs(op.name(), attrs)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Re-infer every node of every function until no type changes (a `call` depends on its
/// callee's types); errors are reported as errors of `pass`. Returns whether any type changed.
pub(crate) fn reinfer_module(m: &mut Module, pass: &str) -> Result<bool, PassError> {
    let names: Vec<String> = m.functions.keys().cloned().collect();
    let mut changed = false;
    let mut rounds = 0;
    loop {
        rounds += 1;
        let mut round_changed = false;
        for fname in &names {
            let mut g = std::mem::take(m.functions.get_mut(fname).expect("listed"));
            let r = reinfer(m, &mut g, fname, pass);
            m.functions.insert(fname.clone(), g);
            round_changed |= r?;
        }
        changed |= round_changed;
        if !round_changed || rounds > names.len() {
            return Ok(changed);
        }
    }
}

/// Re-infer every node of `g` in topological order; returns whether any type changed.
fn reinfer(m: &Module, g: &mut Graph, fname: &str, pass: &str) -> Result<bool, PassError> {
    let fail = |message: String| PassError::Failed {
        pass: pass.into(),
        message,
    };
    let order = g.topo_order().map_err(|id| {
        fail(format!(
            "@{fname}: {} is on a cycle or uses a missing operand",
            g.describe(id)
        ))
    })?;
    let mut changed = false;
    for id in order {
        let node = g.node(id).expect("live");
        if let Op::Input(_) = node.op {
            continue;
        }
        let tys = crate::irx::operand_types(g, fname, id, &node.operands).map_err(fail)?;
        let new = node.op.infer(&InferCx { module: m }, &tys).map_err(|e| {
            fail(format!(
                "@{fname}: {} ({}): {e}",
                g.describe(id),
                node.op.name()
            ))
        })?;
        if new != node.results {
            g.node_mut(id).expect("live").results = new;
            changed = true;
        }
    }
    Ok(changed)
}

impl Pass for ShapeInfer {
    fn name(&self) -> &'static str {
        "shape-infer"
    }

    fn kind(&self) -> PassKind {
        PassKind::Exact
    }

    fn run(&mut self, m: &mut Module, cx: &mut PassCx) -> Result<Changed, PassError> {
        if !self.binds.is_empty() {
            let mut used: BTreeSet<String> = BTreeSet::new();
            for g in m.functions.values() {
                for (_, n) in g.nodes() {
                    if let Op::Input(_) = n.op {
                        for t in &n.results {
                            used.extend(t.symbols());
                        }
                    }
                    used.extend(attr_symbols(&n.op));
                }
            }
            for k in self.binds.keys() {
                if !used.contains(k) {
                    return Err(PassError::Options {
                        pass: "shape-infer".into(),
                        message: format!(
                            "bind: symbol `{k}` does not occur in the module's inputs (symbols: {})",
                            if used.is_empty() {
                                "none".to_string()
                            } else {
                                used.into_iter().collect::<Vec<_>>().join(", ")
                            }
                        ),
                    });
                }
            }
        }
        let mut changed = false;
        let mut bound_dims = 0u64;
        for (fname, g) in m.functions.iter_mut() {
            let ids: Vec<_> = g.node_ids().collect();
            for id in ids {
                let n = g.node_mut(id).expect("live");
                if let Op::Input(_) = n.op {
                    for t in n.results.iter_mut() {
                        let before = t.symbols().len();
                        let subst = subst_dims(&mut t.shape, &self.binds).map_err(|e| {
                            PassError::Failed {
                                pass: "shape-infer".into(),
                                message: format!("@{fname}: %{}: {e}", id.0),
                            }
                        })?;
                        if subst {
                            bound_dims += (before - t.symbols().len()) as u64;
                            changed = true;
                        }
                    }
                } else if !self.binds.is_empty() {
                    let new = subst_attrs(&n.op, &self.binds).map_err(|e| PassError::Failed {
                        pass: "shape-infer".into(),
                        message: format!("@{fname}: %{}: {e}", id.0),
                    })?;
                    if let Some(op) = new {
                        n.op = op;
                        cx.bump("attributes-specialized", 1);
                        changed = true;
                    }
                }
            }
        }
        cx.bump("input-dims-bound", bound_dims);
        changed |= reinfer_module(m, "shape-infer")?;
        Ok(changed.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use fuselage_ir::ops::{add::Add, matmul::MatMul};
    use fuselage_ir::{Constant, DType, Tensor, TensorType};

    fn model() -> Module {
        let mut m = Module::new();
        let w: Vec<f32> = (0..12).map(|i| i as f32 * 0.1 - 0.5).collect();
        m.add_constant(
            "w",
            Constant::from_tensor(&Tensor::from_f32(vec![3, 4], &w).unwrap()),
        );
        let mut g = Graph::new();
        let x = g.add_input(
            "x",
            TensorType::new(DType::F32, ["B".into(), "S".into(), 3u64.into()]),
        );
        let wn = g.add_inferred(&m, constant("w"), vec![], None).unwrap();
        let h = g
            .add_inferred(&m, Op::MatMul(MatMul {}), vec![x.into(), wn.into()], None)
            .unwrap();
        let o = g
            .add_inferred(&m, Op::Add(Add {}), vec![h.into(), h.into()], None)
            .unwrap();
        g.add_output("out", o.into());
        m.functions.insert("main".into(), g);
        m
    }

    #[test]
    fn binds_specialize_inputs_and_propagate() {
        let mut m = model();
        let (changed, stats) = run_pass_with(
            "shape-infer",
            serde_json::json!({"bind": "B=1, S=16"}),
            &mut m,
        );
        assert!(changed);
        assert_eq!(stats["input-dims-bound"], 2);
        let g = m.entry().unwrap();
        assert_eq!(
            g.output_types()[0].as_ref().unwrap().to_string(),
            "f32[1,16,4]"
        );
        let (changed, _) = run_pass_with(
            "shape-infer",
            serde_json::json!({"bind": "B=1"}),
            &mut model(),
        );
        assert!(changed);
    }

    #[test]
    fn reinfer_only_repairs_stale_types() {
        let mut m = model();
        let (changed, _) = run_pass("shape-infer", &mut m);
        assert!(!changed, "types already consistent");
        // Make a declared type stale, as a careless pass might.
        let g = m.functions.get_mut("main").unwrap();
        let out = g.outputs[0].value.node;
        g.node_mut(out).unwrap().results[0] =
            TensorType::new(DType::F32, ["B".into(), "S".into(), 7u64.into()]);
        let (changed, _) = run_pass("shape-infer", &mut m);
        assert!(changed);
        assert_eq!(
            m.entry().unwrap().output_types()[0]
                .as_ref()
                .unwrap()
                .to_string(),
            "f32[B,S,4]"
        );
    }

    #[test]
    fn bad_binds_are_errors() {
        let e = |b: &str| {
            crate::registry::create("shape-infer", &serde_json::json!({ "bind": b }))
                .err()
                .map(|e| e.to_string())
        };
        assert!(e("B=1,B=2")
            .unwrap()
            .contains("inconsistent binds: B=1 and B=2"));
        assert!(e("B").unwrap().contains("SYMBOL=SIZE"));
        assert!(e("B=x").unwrap().contains("integer"));
        assert!(e("B=1,B=1").is_none(), "repeating the same size is fine");
        let mut p =
            crate::registry::create("shape-infer", &serde_json::json!({"bind": "T=4"})).unwrap();
        let mut cx = PassCx::new(&fuselage_ir::Reference);
        let err = p.run(&mut model(), &mut cx).unwrap_err().to_string();
        assert!(
            err.contains("symbol `T` does not occur") && err.contains("B, S"),
            "{err}"
        );
    }

    #[test]
    fn inference_errors_name_the_node() {
        // x: f32[B,3] · w: f32[K,4] with K symbolic in a second input; binding K=5 breaks it.
        let mut m = Module::new();
        let mut g = Graph::new();
        let x = g.add_input("x", TensorType::new(DType::F32, ["B".into(), "K".into()]));
        let w = g.add_input("w", TensorType::new(DType::F32, ["K".into(), 4u64.into()]));
        let h = g
            .add_inferred(
                &m,
                Op::MatMul(MatMul {}),
                vec![x.into(), w.into()],
                Some("proj".into()),
            )
            .unwrap();
        g.add_output("h", h.into());
        // Give w a fixed K=3 so that binding K=5 in x conflicts.
        g.node_mut(w).unwrap().results[0] = TensorType::fixed(DType::F32, &[3, 4]);
        m.functions.insert("main".into(), g);
        let mut p =
            crate::registry::create("shape-infer", &serde_json::json!({"bind": "K=5"})).unwrap();
        let mut cx = PassCx::new(&fuselage_ir::Reference);
        let err = p.run(&mut m, &mut cx).unwrap_err().to_string();
        assert!(err.contains("\"proj\"") && err.contains("matmul"), "{err}");
    }

    #[test]
    fn differential() {
        let before = model();
        let mut after = before.clone();
        run_pass_with(
            "shape-infer",
            serde_json::json!({"bind": "B=2,S=3"}),
            &mut after,
        );
        assert_same_outputs(&before, &after, PassKind::Exact, 4);
    }
}
