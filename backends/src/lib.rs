//! # fuselage-backends
//!
//! Where compiled modules run. Today: liveness-based [`memory`] planning of a function's
//! intermediate buffers. The lowering onto burn backends and the native CPU kernels build on it.
#![warn(missing_docs)]

pub mod memory;
