//! The IR services the pass manager uses from `fuselage_ir`: the verifier and the text printer.
//! Kept in one place so the rest of the crate does not depend on where they live.

use fuselage_ir::{IrError, Module};

/// Verify a module (types, arity, acyclicity, defs before uses).
pub fn verify(m: &Module) -> Result<(), IrError> {
    fuselage_ir::verify::verify(m)
}

/// Print a module in the `.fir` text form.
pub fn print_module(m: &Module) -> String {
    fuselage_ir::text::print_module(m)
}
