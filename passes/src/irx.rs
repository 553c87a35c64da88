//! The IR services the pass manager uses from `fuselage_ir`: the verifier and the text printer.
//! Kept in one place so the rest of the crate does not depend on where they live.

use fuselage_ir::{Graph, IrError, Module, NodeId, TensorType, ValueId};

/// Verify a module (types, arity, acyclicity, defs before uses).
pub fn verify(m: &Module) -> Result<(), IrError> {
    fuselage_ir::verify::verify(m)
}

/// Print a module in the `.fir` text form.
pub fn print_module(m: &Module) -> String {
    fuselage_ir::text::print_module(m)
}

/// The types of `operands` of node `id` in function `fname`, or a message naming the operand
/// that does not exist.
pub fn operand_types(
    g: &Graph,
    fname: &str,
    id: NodeId,
    operands: &[ValueId],
) -> Result<Vec<TensorType>, String> {
    operands
        .iter()
        .map(|o| {
            g.value_type(*o)
                .cloned()
                .ok_or_else(|| format!("@{fname}: {}: operand {o} does not exist", g.describe(id)))
        })
        .collect()
}
