//! Shapes as expressions, end to end (one test binary).

mod hostile_shapes;
mod symbolic_dims;
