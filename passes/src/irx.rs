//! The IR services the pass manager uses from `fuselage_ir`: the verifier and the text printer.
//! Kept in one place so the rest of the crate does not depend on where they live.

use fuselage_ir::{IrError, Module};

/// Verify a module (types, arity, acyclicity, defs before uses).
pub fn verify(m: &Module) -> Result<(), IrError> {
    fallback_verify(m)
}

/// Print a module in the text form.
pub fn print_module(m: &Module) -> String {
    serde_json::to_string_pretty(m).unwrap_or_else(|e| format!("<unprintable module: {e}>"))
}

/// Re-infer every node's types and compare with the declared ones (used until the IR's own
/// verifier is merged).
fn fallback_verify(m: &Module) -> Result<(), IrError> {
    use fuselage_ir::ops::InferCx;
    for (fname, g) in &m.functions {
        let order = g.topo_order().map_err(|id| IrError::Verify {
            function: fname.clone(),
            node: g.describe(id),
            message: "cycle or missing operand".into(),
        })?;
        for id in order {
            let n = g.node(id).expect("live");
            if let fuselage_ir::Op::Input(_) = n.op {
                continue;
            }
            let mut tys = vec![];
            for o in &n.operands {
                tys.push(g.value_type(*o).cloned().ok_or_else(|| IrError::Verify {
                    function: fname.clone(),
                    node: g.describe(id),
                    message: format!("operand {o} does not exist"),
                })?);
            }
            let inferred =
                n.op.infer(&InferCx { module: m }, &tys)
                    .map_err(|e| IrError::Verify {
                        function: fname.clone(),
                        node: g.describe(id),
                        message: e.0,
                    })?;
            if inferred != n.results {
                return Err(IrError::Verify {
                    function: fname.clone(),
                    node: g.describe(id),
                    message: format!("declared {:?}, inferred {:?}", n.results, inferred),
                });
            }
        }
        for o in &g.outputs {
            if g.value_type(o.value).is_none() {
                return Err(IrError::Verify {
                    function: fname.clone(),
                    node: "-".into(),
                    message: format!("output `{}` refers to missing {}", o.name, o.value),
                });
            }
        }
    }
    Ok(())
}
