//! The verifier: structural and type invariants every module must satisfy between passes.
//!
//! Per function, in this order (the first violation is reported):
//! 1. every operand refers to a live node and to one of its results (no dangling or removed
//!    nodes, slot in range);
//! 2. every `input` node is listed in `inputs` exactly once, has no operands and one result, and
//!    no other node is listed there;
//! 3. every output refers to an existing value;
//! 4. the graph is acyclic (checked on the petgraph view);
//! 5. every `constant` node names a constant of the module, and every constant's storage fits
//!    its type ([`Constant::check`](crate::Constant::check));
//! 6. the re-inferred result types of every non-input node equal its declared ones.
//!
//! Errors name the function, the node, its op, and what was expected versus found.

use crate::error::IrError;
use crate::graph::{Graph, NodeId};
use crate::module::Module;
use crate::ops::{InferCx, Op};
use crate::types::TensorType;
use std::collections::HashMap;

/// Verify every constant and every function of a module.
pub fn verify(module: &Module) -> Result<(), IrError> {
    for (name, c) in &module.constants {
        c.check(name)?;
    }
    for name in module.functions.keys() {
        verify_function(module, name)?;
    }
    Ok(())
}

/// Verify one function of a module (constants it refers to included).
pub fn verify_function(module: &Module, function: &str) -> Result<(), IrError> {
    let g = module
        .functions
        .get(function)
        .ok_or_else(|| IrError::Verify {
            function: function.to_string(),
            node: "-".into(),
            message: format!(
                "no such function (functions: {})",
                module
                    .functions
                    .keys()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })?;
    let err = |node: String, message: String| IrError::Verify {
        function: function.to_string(),
        node,
        message,
    };
    let desc = |id: NodeId| match g.node(id) {
        Some(n) => format!("{} ({})", g.describe(id), n.op.name()),
        None => g.describe(id),
    };

    // 1. Operands.
    for (id, n) in g.nodes() {
        for (k, v) in n.operands.iter().enumerate() {
            match g.node(v.node) {
                None if v.node.index() < g.arena_len() => {
                    return Err(err(
                        desc(id),
                        format!("operand {k} uses {v}, whose node was removed"),
                    ))
                }
                None => {
                    return Err(err(
                        desc(id),
                        format!("operand {k} uses {v}, whose node does not exist"),
                    ))
                }
                Some(d) if v.slot as usize >= d.results.len() => {
                    return Err(err(
                        desc(id),
                        format!(
                            "operand {k} uses {v}, but {} has {} result(s)",
                            v.node,
                            d.results.len()
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
    }

    // 2. Inputs.
    let mut listed: HashMap<NodeId, usize> = HashMap::new();
    for (pos, &id) in g.inputs.iter().enumerate() {
        let Some(n) = g.node(id) else {
            return Err(err(
                g.describe(id),
                format!("input {pos} refers to a node that does not exist"),
            ));
        };
        if !matches!(n.op, Op::Input(_)) {
            return Err(err(
                desc(id),
                format!(
                    "input {pos} is a `{}` node; only `input` nodes may be listed as inputs",
                    n.op.name()
                ),
            ));
        }
        if let Some(first) = listed.insert(id, pos) {
            return Err(err(
                desc(id),
                format!("listed as input {first} and again as input {pos}"),
            ));
        }
    }
    for (id, n) in g.nodes() {
        if let Op::Input(_) = n.op {
            if !listed.contains_key(&id) {
                return Err(err(
                    desc(id),
                    "`input` node is not listed in the function's inputs".into(),
                ));
            }
            if !n.operands.is_empty() || n.results.len() != 1 {
                return Err(err(
                    desc(id),
                    format!(
                        "`input` node must have 0 operands and 1 result, found {} and {}",
                        n.operands.len(),
                        n.results.len()
                    ),
                ));
            }
        }
    }

    // 3. Outputs.
    for (k, o) in g.outputs.iter().enumerate() {
        if g.value_type(o.value).is_none() {
            return Err(err(
                "-".into(),
                format!(
                    "output {k} `{}` refers to {}, which does not exist",
                    o.name, o.value
                ),
            ));
        }
    }

    // 4. Acyclic.
    let (pg, _) = g.petgraph_view();
    if let Err(cycle) = petgraph::algo::toposort(&pg, None) {
        let id = pg[cycle.node_id()];
        return Err(err(desc(id), "node is on a cycle".into()));
    }

    // 5. Constants.
    for (id, n) in g.nodes() {
        if let Op::Constant(c) = &n.op {
            match module.constants.get(&c.name) {
                None => {
                    return Err(err(
                        desc(id),
                        format!("refers to constant `{}`, which the module lacks", c.name),
                    ))
                }
                Some(k) => k.check(&c.name)?,
            }
        }
    }

    // 6. Sizes: a value whose declared shape is fixed must fit the memory budget (the
    // reference holds 8 bytes per element).
    for (id, n) in g.nodes() {
        for (k, t) in n.results.iter().enumerate() {
            let fixed: Option<Vec<u64>> = t.shape.iter().map(|d| d.fixed()).collect();
            if let Some(dims) = fixed {
                let elems = dims.iter().fold(1u128, |a, &d| a.saturating_mul(d as u128));
                crate::limits::check_budget(&format!("result {k} ({t})"), elems, 8)
                    .map_err(|m| err(desc(id), m))?;
            }
            if let Some(d) = t.shape.iter().find(|d| d.as_const().is_some_and(|c| c < 0)) {
                return Err(err(
                    desc(id),
                    format!("result {k} ({t}) has negative dim {d}"),
                ));
            }
        }
    }

    // 7. Types, in topological order.
    let order = g
        .topo_order()
        .map_err(|id| err(desc(id), "node is on a cycle".into()))?;
    for id in order {
        let Some(n) = g.node(id) else { continue };
        if let Op::Input(_) = n.op {
            continue;
        }
        let inferred = infer_node(module, g, id).map_err(|message| IrError::Type {
            function: function.to_string(),
            node: g.describe(id),
            op: n.op.name().to_string(),
            message,
        })?;
        if inferred != n.results {
            return Err(err(
                desc(id),
                format!(
                    "declared result types {} but `{}` infers {}",
                    types_list(&n.results),
                    n.op.name(),
                    types_list(&inferred)
                ),
            ));
        }
    }
    Ok(())
}

/// Re-infer every node's result types in topological order, so that they reflect the module's
/// current facts (an importer that assumes `H % 2 == 0` half-way through a model re-types the
/// nodes typed before it). Input types are kept. Fails where inference fails.
pub fn reinfer_types(module: &mut Module) -> Result<(), IrError> {
    let names: Vec<String> = module.functions.keys().cloned().collect();
    for name in names {
        let Some(mut g) = module.functions.shift_remove(&name) else {
            continue;
        };
        let result = reinfer_graph(module, &name, &mut g);
        module.functions.insert(name.clone(), g);
        result?;
    }
    Ok(())
}

fn reinfer_graph(module: &Module, name: &str, g: &mut crate::graph::Graph) -> Result<(), IrError> {
    let order = g.topo_order().map_err(|id| IrError::Verify {
        function: name.to_string(),
        node: g.describe(id),
        message: "graph has a cycle or a missing operand".into(),
    })?;
    for id in order {
        if matches!(
            g.node(id).map(|n| &n.op),
            Some(crate::ops::Op::Input(_)) | None
        ) {
            continue;
        }
        let tys = infer_node(module, g, id).map_err(|message| IrError::Type {
            function: name.to_string(),
            node: g.describe(id),
            op: g.node(id).map(|n| n.op.name()).unwrap_or("?").to_string(),
            message,
        })?;
        if let Some(n) = g.node_mut(id) {
            n.results = tys;
        }
    }
    Ok(())
}

/// Re-infer the result types of a node from the declared types of its operands.
pub(crate) fn infer_node(
    module: &Module,
    g: &Graph,
    id: NodeId,
) -> Result<Vec<TensorType>, String> {
    let n = g.node(id).ok_or_else(|| format!("{id} does not exist"))?;
    let mut tys = Vec::with_capacity(n.operands.len());
    for v in &n.operands {
        tys.push(
            g.value_type(*v)
                .cloned()
                .ok_or_else(|| format!("operand {v} does not exist"))?,
        );
    }
    n.op.infer(&InferCx { module }, &tys).map_err(|e| e.0)
}

/// `f32[2], i64[]` (or `()` for no results).
pub(crate) fn types_list(tys: &[TensorType]) -> String {
    if tys.is_empty() {
        return "()".into();
    }
    tys.iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::constant::{Constant, Storage};
    use crate::dtype::DType;
    use crate::graph::{Node, ValueId};
    use crate::ops::{add::Add, constant::Constant as ConstOp, input::Input};

    fn ty() -> TensorType {
        TensorType::new(DType::F32, ["B".into(), 3u64.into()])
    }

    /// `main(x) = add(add(x, x), x)`; returns the module and the two add ids.
    fn base() -> (Module, NodeId, NodeId) {
        let mut m = Module::new();
        let mut g = Graph::new();
        let x = g.add_input("x", ty());
        let a = g
            .add_inferred(&m, Op::Add(Add {}), vec![x.into(), x.into()], None)
            .unwrap();
        let b = g
            .add_inferred(&m, Op::Add(Add {}), vec![a.into(), x.into()], None)
            .unwrap();
        g.add_output("y", b.into());
        m.functions.insert("main".into(), g);
        (m, a, b)
    }

    fn main_mut(m: &mut Module) -> &mut Graph {
        m.functions.get_mut("main").unwrap()
    }

    fn msg(m: &Module) -> String {
        verify(m).unwrap_err().to_string()
    }

    #[test]
    fn well_formed_module_passes() {
        let (m, _, _) = base();
        verify(&m).unwrap();
        verify_function(&m, "main").unwrap();
    }

    #[test]
    fn unknown_function_is_an_error() {
        let (m, _, _) = base();
        let e = verify_function(&m, "nope").unwrap_err().to_string();
        assert!(e.contains("no such function (functions: main)"), "{e}");
    }

    #[test]
    fn removed_operand_is_rejected() {
        let (mut m, a, _) = base();
        main_mut(&mut m).remove_node(a);
        let e = msg(&m);
        assert!(
            e.contains("%2") && e.contains("whose node was removed"),
            "{e}"
        );
    }

    #[test]
    fn nonexistent_operand_is_rejected() {
        let (mut m, _, b) = base();
        main_mut(&mut m).node_mut(b).unwrap().operands[1] = ValueId::new(NodeId(40), 0);
        let e = msg(&m);
        assert!(
            e.contains("operand 1 uses %40#0, whose node does not exist"),
            "{e}"
        );
    }

    #[test]
    fn slot_out_of_range_is_rejected() {
        let (mut m, a, b) = base();
        main_mut(&mut m).node_mut(b).unwrap().operands[0] = ValueId::new(a, 1);
        let e = msg(&m);
        assert!(e.contains("uses %1#1, but %1 has 1 result(s)"), "{e}");
    }

    #[test]
    fn cycle_is_rejected() {
        let (mut m, a, b) = base();
        main_mut(&mut m).node_mut(a).unwrap().operands[0] = b.into();
        let e = msg(&m);
        assert!(e.contains("node is on a cycle"), "{e}");
    }

    #[test]
    fn unlisted_input_is_rejected() {
        let (mut m, _, _) = base();
        main_mut(&mut m).inputs.clear();
        let e = msg(&m);
        assert!(e.contains("not listed in the function's inputs"), "{e}");
    }

    #[test]
    fn input_listed_twice_is_rejected() {
        let (mut m, _, _) = base();
        let g = main_mut(&mut m);
        let x = g.inputs[0];
        g.inputs.push(x);
        let e = msg(&m);
        assert!(e.contains("listed as input 0 and again as input 1"), "{e}");
    }

    #[test]
    fn non_input_listed_as_input_is_rejected() {
        let (mut m, a, _) = base();
        main_mut(&mut m).inputs.push(a);
        let e = msg(&m);
        assert!(e.contains("input 1 is a `add` node"), "{e}");
    }

    #[test]
    fn missing_input_node_is_rejected() {
        let (mut m, _, _) = base();
        main_mut(&mut m).inputs.push(NodeId(99));
        let e = msg(&m);
        assert!(
            e.contains("input 1 refers to a node that does not exist"),
            "{e}"
        );
    }

    #[test]
    fn input_with_operands_is_rejected() {
        let (mut m, _, _) = base();
        let g = main_mut(&mut m);
        let x = g.inputs[0];
        g.node_mut(x).unwrap().results.push(ty());
        let e = msg(&m);
        assert!(
            e.contains("must have 0 operands and 1 result, found 0 and 2"),
            "{e}"
        );
    }

    #[test]
    fn dangling_output_is_rejected() {
        let (mut m, _, b) = base();
        main_mut(&mut m).outputs[0].value = ValueId::new(b, 3);
        let e = msg(&m);
        assert!(
            e.contains("output 0 `y` refers to %2#3, which does not exist"),
            "{e}"
        );
    }

    #[test]
    fn missing_constant_is_rejected() {
        let (mut m, _, _) = base();
        main_mut(&mut m).add_node(Node {
            op: Op::Constant(ConstOp { name: "w".into() }),
            operands: vec![],
            results: vec![ty()],
            name: None,
        });
        let e = msg(&m);
        assert!(
            e.contains("refers to constant `w`, which the module lacks"),
            "{e}"
        );
    }

    #[test]
    fn malformed_constant_is_rejected() {
        let (mut m, _, _) = base();
        m.add_constant(
            "w",
            Constant::new(
                TensorType::fixed(DType::F32, &[2]),
                Storage::Dense {
                    bytes: vec![0u8; 7].into(),
                },
            ),
        );
        let e = msg(&m);
        assert!(
            e.contains("constant `w`: f32[2] needs 8 bytes, storage has 7"),
            "{e}"
        );
    }

    #[test]
    fn wrong_declared_type_is_rejected() {
        let (mut m, _, b) = base();
        main_mut(&mut m).node_mut(b).unwrap().results[0] = TensorType::fixed(DType::F32, &[3]);
        let e = msg(&m);
        assert!(
            e.contains("at %2 (add): declared result types f32[3] but `add` infers f32[B,3]"),
            "{e}"
        );
    }

    #[test]
    fn inference_failure_is_a_type_error() {
        let (mut m, _, _) = base();
        let g = main_mut(&mut m);
        let z = g.add_node(Node {
            op: Op::Input(Input { name: "z".into() }),
            operands: vec![],
            results: vec![TensorType::fixed(DType::F16, &[3])],
            name: None,
        });
        g.inputs.push(z);
        g.add_node(Node {
            op: Op::Add(Add {}),
            operands: vec![z.into(), NodeId(0).into()],
            results: vec![ty()],
            name: Some("bad".into()),
        });
        let e = verify(&m).unwrap_err();
        assert!(
            matches!(e, IrError::Type { ref op, .. } if op == "add"),
            "{e:?}"
        );
        assert!(e.to_string().contains("%4 \"bad\""), "{e}");
    }
}
