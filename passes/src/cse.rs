//! `cse`: common-subexpression elimination. Two nodes are merged when they have the same op key
//! ([`Op::key`](fuselage_ir::Op::key): name and attributes), the same operands (after earlier
//! merges) and the same result types; every result slot of the later node is redirected to the
//! earlier one. Nodes are visited in the graph's deterministic topological order (smallest id
//! first), so the node kept is the first in that order. Inputs are never merged.

use crate::error::PassError;
use crate::pass::{Changed, Pass, PassCx, PassKind};
use fuselage_ir::{Graph, Module, NodeId, Op, TensorType, ValueId};
use std::collections::hash_map::Entry;
use std::collections::HashMap;

crate::pass_options! {
    /// Options of `cse` (none).
    pub struct CseOptions {}
}

/// The `cse` pass.
#[derive(Debug, Clone)]
pub struct Cse {
    _options: CseOptions,
}

impl Cse {
    /// Create the pass.
    pub fn new(options: CseOptions) -> Result<Self, PassError> {
        Ok(Cse { _options: options })
    }
}

type Key = (String, Vec<ValueId>, Vec<TensorType>);

/// Merge equal nodes in one graph; returns the number of nodes removed.
pub fn cse_graph(g: &mut Graph, function: &str) -> Result<u64, PassError> {
    let order = g.topo_order().map_err(|id| PassError::Failed {
        pass: "cse".into(),
        message: format!(
            "@{function}: {} is on a cycle or uses a missing operand",
            g.describe(id)
        ),
    })?;
    let mut seen: HashMap<Key, NodeId> = HashMap::new();
    let mut remap: HashMap<ValueId, ValueId> = HashMap::new();
    let mut dups = vec![];
    for id in order {
        let Some(node) = g.node_mut(id) else { continue };
        for o in node.operands.iter_mut() {
            if let Some(r) = remap.get(o) {
                *o = *r;
            }
        }
        if let Op::Input(_) = node.op {
            continue;
        }
        let key = (node.op.key(), node.operands.clone(), node.results.clone());
        match seen.entry(key) {
            Entry::Occupied(e) => {
                let keep = *e.get();
                for slot in 0..node.results.len() as u32 {
                    remap.insert(ValueId::new(id, slot), ValueId::new(keep, slot));
                }
                dups.push(id);
            }
            Entry::Vacant(v) => {
                v.insert(id);
            }
        }
    }
    for o in g.outputs.iter_mut() {
        if let Some(r) = remap.get(&o.value) {
            o.value = *r;
        }
    }
    for id in &dups {
        g.remove_node(*id);
    }
    Ok(dups.len() as u64)
}

impl Pass for Cse {
    fn name(&self) -> &'static str {
        "cse"
    }

    fn kind(&self) -> PassKind {
        PassKind::Exact
    }

    fn run(&mut self, m: &mut Module, cx: &mut PassCx) -> Result<Changed, PassError> {
        let mut merged = 0;
        for (name, g) in m.functions.iter_mut() {
            merged += cse_graph(g, name)?;
        }
        cx.bump("nodes-merged", merged);
        Ok((merged > 0).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use fuselage_ir::ops::{add::Add, matmul::MatMul};
    use fuselage_ir::{Constant, DType, Module, Tensor};

    /// x → (a1 = x+x, a2 = x+x) → (m1 = a1·w, m2 = a2·w) → out = m1 + m2; also an output that
    /// returns a2 directly.
    fn model() -> Module {
        let mut m = Module::new();
        let w: Vec<f32> = (0..9).map(|i| i as f32 * 0.25 - 1.0).collect();
        m.add_constant(
            "w",
            Constant::from_tensor(&Tensor::from_f32(vec![3, 3], &w).unwrap()),
        );
        let mut g = Graph::new();
        let x = g.add_input("x", TensorType::new(DType::F32, ["B".into(), 3u64.into()]));
        let x2 = g.add_input("x2", TensorType::new(DType::F32, ["B".into(), 3u64.into()]));
        let w1 = g.add_inferred(&m, constant("w"), vec![], None).unwrap();
        let w2 = g.add_inferred(&m, constant("w"), vec![], None).unwrap();
        let a1 = g
            .add_inferred(&m, Op::Add(Add {}), vec![x.into(), x.into()], None)
            .unwrap();
        let a2 = g
            .add_inferred(
                &m,
                Op::Add(Add {}),
                vec![x.into(), x.into()],
                Some("a2".into()),
            )
            .unwrap();
        // Different operand order: not merged (no commutativity).
        let a3 = g
            .add_inferred(&m, Op::Add(Add {}), vec![x.into(), x2.into()], None)
            .unwrap();
        let a4 = g
            .add_inferred(&m, Op::Add(Add {}), vec![x2.into(), x.into()], None)
            .unwrap();
        let m1 = g
            .add_inferred(&m, Op::MatMul(MatMul {}), vec![a1.into(), w1.into()], None)
            .unwrap();
        let m2 = g
            .add_inferred(&m, Op::MatMul(MatMul {}), vec![a2.into(), w2.into()], None)
            .unwrap();
        let o = g
            .add_inferred(&m, Op::Add(Add {}), vec![m1.into(), m2.into()], None)
            .unwrap();
        let o2 = g
            .add_inferred(&m, Op::Add(Add {}), vec![a3.into(), a4.into()], None)
            .unwrap();
        g.add_output("out", o.into());
        g.add_output("a2", a2.into());
        g.add_output("o2", o2.into());
        m.functions.insert("main".into(), g);
        m
    }

    #[test]
    fn merges_equal_nodes_transitively() {
        let mut m = model();
        let (changed, stats) = run_pass("cse", &mut m);
        assert!(changed);
        // w2 → w1, a2 → a1, then m2 → m1 (its operands became equal).
        assert_eq!(stats["nodes-merged"], 3);
        let g = m.entry().unwrap();
        assert_eq!(
            g.outputs[1].value,
            ValueId::new(NodeId(4), 0),
            "a2 output redirected to a1"
        );
        let out = g.node(g.outputs[0].value.node).unwrap();
        assert_eq!(out.operands[0], out.operands[1]);
        assert!(g.node(NodeId(5)).is_none());
        assert!(
            g.node(NodeId(6)).is_some() && g.node(NodeId(7)).is_some(),
            "a3, a4 kept"
        );
        let (changed, _) = run_pass("cse", &mut m);
        assert!(!changed, "idempotent");
    }

    #[test]
    fn inputs_are_never_merged() {
        let mut m = Module::new();
        let mut g = Graph::new();
        let a = g.add_input("a", TensorType::fixed(DType::F32, &[2]));
        let b = g.add_input("a", TensorType::fixed(DType::F32, &[2]));
        let s = g
            .add_inferred(&m, Op::Add(Add {}), vec![a.into(), b.into()], None)
            .unwrap();
        g.add_output("s", s.into());
        m.functions.insert("main".into(), g);
        let (changed, _) = run_pass("cse", &mut m);
        assert!(!changed);
    }

    #[test]
    fn differential() {
        let before = model();
        let mut after = before.clone();
        run_pass("cse", &mut after);
        assert_same_outputs(&before, &after, PassKind::Exact, 5);
    }
}
