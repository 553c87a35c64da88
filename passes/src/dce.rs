//! `dce`: dead-code elimination. Removes every node none of whose results reaches a function
//! output (inputs are kept: they are the function's signature), then drops constants that no
//! `constant` node refers to any more.

use crate::error::PassError;
use crate::pass::{Changed, Pass, PassCx, PassKind};
use fuselage_ir::{Graph, Module, NodeId};
use std::collections::HashSet;

crate::pass_options! {
    /// Options of `dce` (none).
    pub struct DceOptions {}
}

/// The `dce` pass.
#[derive(Debug, Clone)]
pub struct Dce {
    _options: DceOptions,
}

impl Dce {
    /// Create the pass.
    pub fn new(options: DceOptions) -> Result<Self, PassError> {
        Ok(Dce { _options: options })
    }
}

/// Nodes reachable backwards from the outputs, plus the inputs.
pub fn live_nodes(g: &Graph) -> HashSet<NodeId> {
    let mut live: HashSet<NodeId> = HashSet::new();
    let mut stack: Vec<NodeId> = g.outputs.iter().map(|o| o.value.node).collect();
    while let Some(id) = stack.pop() {
        if !live.insert(id) {
            continue;
        }
        if let Some(n) = g.node(id) {
            stack.extend(n.operands.iter().map(|o| o.node));
        }
    }
    live.extend(g.inputs.iter().copied());
    live
}

impl Pass for Dce {
    fn name(&self) -> &'static str {
        "dce"
    }

    fn kind(&self) -> PassKind {
        PassKind::Exact
    }

    fn run(&mut self, m: &mut Module, cx: &mut PassCx) -> Result<Changed, PassError> {
        let mut removed = 0u64;
        for g in m.functions.values_mut() {
            let live = live_nodes(g);
            let dead: Vec<NodeId> = g.node_ids().filter(|id| !live.contains(id)).collect();
            for id in dead {
                g.remove_node(id);
                removed += 1;
            }
        }
        let consts = m.remove_unused_constants() as u64;
        cx.bump("nodes-removed", removed);
        cx.bump("constants-removed", consts);
        Ok((removed + consts > 0).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use fuselage_ir::ops::{add::Add, matmul::MatMul};
    use fuselage_ir::{Constant, DType, Op, Tensor, TensorType};

    fn model() -> Module {
        let mut m = Module::new();
        m.add_constant(
            "w",
            Constant::from_tensor(&Tensor::from_f32(vec![3, 3], &[0.5; 9]).unwrap()),
        );
        m.add_constant(
            "unused",
            Constant::from_tensor(&Tensor::from_f32(vec![1], &[1.0]).unwrap()),
        );
        let mut g = Graph::new();
        let x = g.add_input("x", TensorType::new(DType::F32, ["B".into(), 3u64.into()]));
        let _unused_in = g.add_input("y", TensorType::fixed(DType::F32, &[2]));
        let w = g.add_inferred(&m, constant("w"), vec![], None).unwrap();
        let h = g
            .add_inferred(&m, Op::MatMul(MatMul {}), vec![x.into(), w.into()], None)
            .unwrap();
        // Dead chain: two nodes whose results reach no output.
        let d1 = g
            .add_inferred(&m, Op::Add(Add {}), vec![h.into(), x.into()], None)
            .unwrap();
        let _d2 = g
            .add_inferred(&m, Op::Add(Add {}), vec![d1.into(), d1.into()], None)
            .unwrap();
        let o = g
            .add_inferred(&m, Op::Add(Add {}), vec![h.into(), h.into()], None)
            .unwrap();
        g.add_output("out", o.into());
        m.functions.insert("main".into(), g);
        m
    }

    #[test]
    fn removes_dead_nodes_and_constants_keeps_inputs() {
        let mut m = model();
        let (changed, stats) = run_pass("dce", &mut m);
        assert!(changed);
        assert_eq!(stats["nodes-removed"], 2);
        assert_eq!(stats["constants-removed"], 1);
        let g = m.entry().unwrap();
        assert_eq!(g.len(), 5, "x, y, w, matmul, add");
        assert_eq!(g.inputs.len(), 2);
        assert!(!m.constants.contains_key("unused"));
        assert!(m.constants.contains_key("w"));
        // Idempotent.
        let (changed, _) = run_pass("dce", &mut m);
        assert!(!changed);
    }

    #[test]
    fn differential() {
        let before = model();
        let mut after = before.clone();
        run_pass("dce", &mut after);
        assert_same_outputs(&before, &after, PassKind::Exact, 5);
    }

    #[test]
    fn output_that_is_an_input_keeps_nothing_else() {
        let mut m = Module::new();
        let mut g = Graph::new();
        let x = g.add_input("x", TensorType::fixed(DType::F32, &[2]));
        g.add_inferred(&m, Op::Add(Add {}), vec![x.into(), x.into()], None)
            .unwrap();
        g.add_output("x", x.into());
        m.functions.insert("main".into(), g);
        run_pass("dce", &mut m);
        assert_eq!(m.entry().unwrap().len(), 1);
    }
}
