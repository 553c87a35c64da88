//! # fuselage
//!
//! The compile API. The CLI (`src/main.rs`) is a thin layer over these functions.
#![warn(missing_docs)]

pub mod inspect;
pub mod model;
pub mod npy;

pub use fuselage_backends as backends;
pub use fuselage_frontends as frontends;
pub use fuselage_ir as ir;
pub use model::{load, save, ModelError};
