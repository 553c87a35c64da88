//! # fuselage-passes
//!
//! Passes over the fuselage IR. [`canonicalize`] is equality saturation with egg, its rules
//! written as data files ([`rewrite`]).
#![warn(missing_docs)]

pub mod canonicalize;
pub mod rewrite;
