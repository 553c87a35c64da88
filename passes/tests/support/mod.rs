//! Shared test support.
pub mod models;
