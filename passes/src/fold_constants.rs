//! `fold-constants`: evaluates nodes whose operands are all `constant` nodes (so they depend on
//! no input) with the op's reference semantics ([`Op::eval`](fuselage_ir::Op::eval)) and
//! replaces them by dense constants named `fold.N` (`fold.FN.N` outside `main`, with a `.k`
//! suffix per result of a multi-result node). Nodes are visited in topological order, so chains
//! of constant computations fold in one run.
//!
//! Never folded: nodes with symbolic result dims, folds that would create more than `max-bytes`
//! of constants, and nodes whose evaluation fails (they are left as they are and counted in the
//! `eval-failed` statistic). The replaced constants are left in place; `dce` removes them.

use crate::error::PassError;
use crate::pass::{Changed, Pass, PassCx, PassKind};
use fuselage_ir::ops::EvalCx;
use fuselage_ir::{Constant, Graph, Module, Node, NodeId, Op, Tensor, ValueId};
use std::collections::HashMap;
use std::sync::Arc;

crate::pass_options! {
    /// Options of `fold-constants`.
    pub struct FoldConstantsOptions {
        /// Skip folds whose results would take more than this many bytes.
        max_bytes: u64 = 64 << 20,
    }
}

/// The `fold-constants` pass.
#[derive(Debug, Clone)]
pub struct FoldConstants {
    options: FoldConstantsOptions,
}

impl FoldConstants {
    /// Create the pass.
    pub fn new(options: FoldConstantsOptions) -> Result<Self, PassError> {
        Ok(FoldConstants { options })
    }
}

fn const_name(g: &Graph, v: ValueId) -> Option<&str> {
    match g.node(v.node).map(|n| &n.op) {
        Some(Op::Constant(c)) => Some(&c.name),
        _ => None,
    }
}

/// Why a node was not folded.
enum Skip {
    NotConstant,
    Symbolic,
    TooLarge,
    EvalFailed,
}

/// Evaluate `node` if it can be folded.
fn try_eval(m: &Module, g: &Graph, node: &Node, max_bytes: u64) -> Result<Vec<Tensor>, Skip> {
    if matches!(node.op, Op::Input(_) | Op::Constant(_)) {
        return Err(Skip::NotConstant);
    }
    let names: Vec<&str> = node
        .operands
        .iter()
        .map(|o| const_name(g, *o).ok_or(Skip::NotConstant))
        .collect::<Result<_, _>>()?;
    let mut bytes: u128 = 0;
    for ty in &node.results {
        let n = ty.num_elements().ok_or(Skip::Symbolic)?;
        bytes += (n as u128 * ty.dtype.bits() as u128).div_ceil(8);
    }
    if bytes > max_bytes as u128 {
        return Err(Skip::TooLarge);
    }
    let values: Vec<Arc<Tensor>> = names
        .iter()
        .map(|n| {
            m.constants
                .get(*n)
                .ok_or(Skip::EvalFailed)
                .and_then(|c| c.value(n).map_err(|_| Skip::EvalFailed))
        })
        .collect::<Result<_, _>>()?;
    let refs: Vec<&Tensor> = values.iter().map(|t| t.as_ref()).collect();
    let bindings = HashMap::new();
    let cx = EvalCx {
        module: m,
        bindings: &bindings,
        result_types: &node.results,
    };
    let out = node.op.eval(&cx, &refs).map_err(|_| Skip::EvalFailed)?;
    if out.len() != node.results.len() {
        return Err(Skip::EvalFailed);
    }
    for (t, ty) in out.iter().zip(&node.results) {
        if t.dtype() != ty.dtype || ty.fixed_shape().as_deref() != Some(t.shape()) {
            return Err(Skip::EvalFailed);
        }
    }
    Ok(out)
}

impl Pass for FoldConstants {
    fn name(&self) -> &'static str {
        "fold-constants"
    }

    fn kind(&self) -> PassKind {
        PassKind::Exact
    }

    fn run(&mut self, m: &mut Module, cx: &mut PassCx) -> Result<Changed, PassError> {
        let fnames: Vec<String> = m.functions.keys().cloned().collect();
        let mut folded = 0u64;
        for fname in fnames {
            // Take the graph out so that constants can be added while it is rewritten; the
            // module seen by `eval` keeps every other function (a function cannot call itself).
            let mut g = std::mem::take(m.functions.get_mut(&fname).expect("listed"));
            let order = g.topo_order().map_err(|id| PassError::Failed {
                pass: "fold-constants".into(),
                message: format!(
                    "@{fname}: {} is on a cycle or uses a missing operand",
                    g.describe(id)
                ),
            });
            let order = match order {
                Ok(o) => o,
                Err(e) => {
                    m.functions.insert(fname, g);
                    return Err(e);
                }
            };
            for id in order {
                let Some(node) = g.node(id) else { continue };
                let out = match try_eval(m, &g, node, self.options.max_bytes) {
                    Ok(out) => out,
                    Err(Skip::NotConstant) => continue,
                    Err(Skip::Symbolic) => {
                        cx.bump("skipped-symbolic", 1);
                        continue;
                    }
                    Err(Skip::TooLarge) => {
                        cx.bump("skipped-too-large", 1);
                        continue;
                    }
                    Err(Skip::EvalFailed) => {
                        cx.bump("eval-failed", 1);
                        continue;
                    }
                };
                let base = if fname == fuselage_ir::module::ENTRY {
                    format!("fold.{}", id.0)
                } else {
                    format!("fold.{fname}.{}", id.0)
                };
                let multi = out.len() > 1;
                let mut names = vec![];
                for (k, t) in out.iter().enumerate() {
                    let want = if multi {
                        format!("{base}.{k}")
                    } else {
                        base.clone()
                    };
                    let name = m.fresh_constant_name(&want);
                    let c = Constant::from_tensor(t);
                    cx.bump("bytes-created", c.storage_bytes());
                    m.add_constant(name.clone(), c);
                    names.push(name);
                }
                let const_op = |name: &str| {
                    Op::Constant(fuselage_ir::ops::constant::Constant {
                        name: name.to_string(),
                    })
                };
                if !multi {
                    let n = g.node_mut(id).expect("live");
                    n.op = const_op(&names[0]);
                    n.operands.clear();
                } else {
                    let results = g.node(id).expect("live").results.clone();
                    for (k, (name, ty)) in names.iter().zip(results).enumerate() {
                        let new: NodeId = g.add_node(Node {
                            op: const_op(name),
                            operands: vec![],
                            results: vec![ty],
                            name: None,
                        });
                        g.replace_all_uses(ValueId::new(id, k as u32), new.into());
                    }
                    g.remove_node(id);
                }
                folded += 1;
            }
            m.functions.insert(fname, g);
        }
        cx.bump("folded", folded);
        Ok((folded > 0).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use fuselage_ir::ops::{add::Add, matmul::MatMul};
    use fuselage_ir::{DType, TensorType};

    /// out = x[B,2,3] · (w + w) + (c · c); everything but the input side folds.
    fn model() -> Module {
        let mut m = Module::new();
        let w: Vec<f32> = (0..6).map(|i| i as f32 * 0.5 - 1.25).collect();
        m.add_constant(
            "w",
            Constant::from_tensor(&Tensor::from_f32(vec![3, 2], &w).unwrap()),
        );
        m.add_constant(
            "c",
            Constant::seeded(
                TensorType::fixed(DType::F32, &[2, 2]),
                3,
                fuselage_ir::Init::Uniform {
                    low: -1.0,
                    high: 1.0,
                },
            ),
        );
        let mut g = Graph::new();
        let x = g.add_input(
            "x",
            TensorType::new(DType::F32, ["B".into(), 2u64.into(), 3u64.into()]),
        );
        let wn = g.add_inferred(&m, constant("w"), vec![], None).unwrap();
        let cn = g.add_inferred(&m, constant("c"), vec![], None).unwrap();
        let w2 = g
            .add_inferred(
                &m,
                Op::Add(Add {}),
                vec![wn.into(), wn.into()],
                Some("w2".into()),
            )
            .unwrap();
        let cc = g
            .add_inferred(&m, Op::MatMul(MatMul {}), vec![cn.into(), cn.into()], None)
            .unwrap();
        let cc2 = g
            .add_inferred(&m, Op::Add(Add {}), vec![cc.into(), cc.into()], None)
            .unwrap();
        let h = g
            .add_inferred(&m, Op::MatMul(MatMul {}), vec![x.into(), w2.into()], None)
            .unwrap();
        let o = g
            .add_inferred(&m, Op::Add(Add {}), vec![h.into(), cc2.into()], None)
            .unwrap();
        g.add_output("out", o.into());
        m.functions.insert("main".into(), g);
        m
    }

    #[test]
    fn folds_chains_of_constants_in_place() {
        let mut m = model();
        let (changed, stats) = run_pass("fold-constants", &mut m);
        assert!(changed);
        assert_eq!(stats["folded"], 3, "w+w, c·c, cc+cc");
        let g = m.entry().unwrap();
        let w2 = g.node(NodeId(3)).unwrap();
        assert_eq!(w2.name.as_deref(), Some("w2"), "name kept");
        let Op::Constant(c) = &w2.op else {
            panic!("{:?}", w2.op)
        };
        assert_eq!(c.name, "fold.3");
        let v = m.constants["fold.3"].value("fold.3").unwrap();
        let w = m.constants["w"].value("w").unwrap();
        let doubled: Vec<f64> = w.data().iter().map(|x| 2.0 * x).collect();
        assert_eq!(v.data(), &doubled[..]);
        let (changed, _) = run_pass("fold-constants", &mut m);
        assert!(!changed, "nothing left to fold");
    }

    #[test]
    fn respects_max_bytes() {
        let mut m = model();
        let (changed, stats) = run_pass_with(
            "fold-constants",
            serde_json::json!({"max-bytes": 16}),
            &mut m,
        );
        assert!(changed);
        // [2,2] f32 = 16 bytes folds; the [3,2] add (24 bytes) is skipped.
        assert_eq!(stats["folded"], 2);
        assert_eq!(stats["skipped-too-large"], 1);
    }

    #[test]
    fn eval_failure_leaves_the_node() {
        // A dense constant with corrupt storage: its value cannot be decoded.
        let mut m = Module::new();
        m.add_constant(
            "bad",
            Constant::new(
                TensorType::fixed(DType::F32, &[2]),
                fuselage_ir::Storage::Dense {
                    bytes: vec![0u8; 3].into(),
                },
            ),
        );
        let mut g = Graph::new();
        let b = g.add_inferred(&m, constant("bad"), vec![], None).unwrap();
        let s = g
            .add_inferred(&m, Op::Add(Add {}), vec![b.into(), b.into()], None)
            .unwrap();
        g.add_output("s", s.into());
        m.functions.insert("main".into(), g);
        let mut p = crate::registry::create("fold-constants", &serde_json::Value::Null).unwrap();
        let mut cx = PassCx::new(&fuselage_ir::Reference);
        let changed = p.run(&mut m, &mut cx).unwrap();
        assert!(!changed.is_changed());
        assert_eq!(cx.stats()["eval-failed"], 1);
        assert!(matches!(m.entry().unwrap().node(s).unwrap().op, Op::Add(_)));
    }

    #[test]
    fn differential() {
        let before = model();
        let mut after = before.clone();
        run_pass("fold-constants", &mut after);
        run_pass("dce", &mut after);
        assert_eq!(after.constants.len(), 2, "only the folded ones remain used");
        assert_same_outputs(&before, &after, PassKind::Exact, 5);
    }
}
