//! Frontends.
