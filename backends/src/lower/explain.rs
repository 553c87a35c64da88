//! The explain report: for every node of a lowered program, the path it takes, the kernel that
//! runs it, and why — the kernels considered and why each was not chosen, or why an op has no
//! burn lowering.

use super::classify::classify;
use super::{Lowering, Program};
use burn::tensor::backend::Backend;
use fuselage_ir::Op;
use std::fmt::Write as _;

/// A kernel considered for a node and not chosen, with the reason.
pub use crate::kernels::registry::Rejection as KernelRejection;

/// How one node of a lowered program runs, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeLowering {
    /// The function the node belongs to (the program's own, a callee or a loop body).
    pub function: String,
    /// 0 for the program's function, one more per enclosing call or loop.
    pub depth: usize,
    /// The node, described (`%12 "name"`).
    pub node: String,
    /// The op name.
    pub op: String,
    /// The path it takes.
    pub lowering: Lowering,
    /// The registry kernel that runs it (with [`Lowering::Kernel`]).
    pub kernel: Option<&'static str>,
    /// Why it takes this path.
    pub why: String,
    /// The kernels of the registry considered for the node and not chosen.
    pub rejected: Vec<KernelRejection>,
    /// What the kernel prepared at lowering time, in words (a packed weight), if anything.
    pub prepared: Option<String>,
}

impl<B: Backend> Program<B> {
    /// How every node runs and why, in program order, the nodes of callees and loop bodies
    /// following their `call` / `for` node.
    pub fn explain_lowering(&self) -> Vec<NodeLowering> {
        let mut out = vec![];
        self.explain_into(0, &mut out);
        out
    }

    fn explain_into(&self, depth: usize, out: &mut Vec<NodeLowering>) {
        for ins in &self.instrs {
            let decision = match &ins.op {
                Op::Input(_) | Op::Constant(_) | Op::Call(_) | Op::For(_) => None,
                op => classify(op, &ins.operand_types, &ins.result_types, self.use_kernels).ok(),
            };
            let (decided_why, rejected) = decision.map(|d| (d.why, d.rejected)).unwrap_or_default();
            let why = match (&ins.op, ins.how) {
                (Op::Input(_), _) => "an input of the function".to_string(),
                (Op::Constant(_), _) => "a constant, uploaded once at lowering".to_string(),
                (Op::Call(c), _) => format!("calls @{}, lowered as its own program", c.callee),
                (Op::For(f), _) => format!("a loop over @{}, lowered as its own program", f.body),
                (_, Lowering::Folded) => format!(
                    "operands are all constants: computed once at lowering (otherwise: {decided_why})"
                ),
                _ => decided_why,
            };
            out.push(NodeLowering {
                function: self.function.clone(),
                depth,
                node: self.graph.describe(ins.node),
                op: ins.op.name().to_string(),
                lowering: ins.how,
                kernel: match ins.how {
                    Lowering::Kernel => ins.kernel.map(|k| k.name),
                    _ => None,
                },
                why,
                rejected,
                prepared: ins.prepared.as_ref().map(|p| p.what.clone()),
            });
            if let Some(sub) = &ins.sub {
                sub.explain_into(depth + 1, out);
            }
        }
    }
}

/// The report as text: one line per node (`function node op lowering [kernel] — why`), an
/// indented line for what its kernel prepared at lowering, one per rejected kernel.
pub fn render_explain(nodes: &[NodeLowering]) -> String {
    let mut s = String::new();
    for n in nodes {
        let indent = "  ".repeat(n.depth);
        let how = match n.kernel {
            Some(k) => format!("{:?} {k}", n.lowering),
            None => format!("{:?}", n.lowering),
        };
        let _ = writeln!(
            s,
            "{indent}@{} {:<12} {:<16} {:<28} {}",
            n.function, n.node, n.op, how, n.why
        );
        if let Some(p) = &n.prepared {
            let _ = writeln!(s, "{indent}    prepared: {p}");
        }
        for r in &n.rejected {
            let _ = writeln!(s, "{indent}    rejected {}: {}", r.kernel, r.reason);
        }
    }
    s
}
