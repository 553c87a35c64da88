//! # fuselage-ir
//!
//! The typed dataflow IR of fuselage: element types and exact low-precision codecs
//! ([`numerics`]), tensor types with symbolic dims ([`types`]), graphs with stable node ids and
//! ordered operands ([`graph`]), modules with shared constant storage ([`module`],
//! [`constant`]), the op set with f64 reference semantics ([`ops`]), and the reference
//! interpreter behind the [`eval::Executor`] trait ([`eval`]).
//!
//! ```
//! use fuselage_ir::{DType, Graph, Module, Op, TensorType, Tensor, Executor, Reference};
//! use fuselage_ir::ops::{add::Add, matmul::MatMul};
//!
//! let mut m = Module::new();
//! let mut g = Graph::new();
//! let x = g.add_input("x", TensorType::new(DType::F32, ["B".into(), 3u64.into()]));
//! let y = g.add_inferred(&m, Op::Add(Add {}), vec![x.into(), x.into()], None).unwrap();
//! g.add_output("y", y.into());
//! m.functions.insert("main".into(), g);
//! let x = Tensor::from_f32(vec![2, 3], &[1., 2., 3., 4., 5., 6.]).unwrap();
//! let out = Reference.run(&m, "main", &[x]).unwrap();
//! assert_eq!(out[0].data(), &[2., 4., 6., 8., 10., 12.]);
//! ```
#![warn(missing_docs)]

pub mod constant;
pub mod dim;
pub mod dot;
pub mod dtype;
pub mod error;
pub mod eval;
pub mod graph;
pub mod limits;
pub mod module;
pub mod npy;
pub mod numerics;
pub mod ops;
pub mod sample;
pub mod session;
pub mod tensor;
pub mod text;
pub mod types;
pub mod verify;

pub use constant::{map_file, Constant, Init, Storage};
pub use dim::{Dim, DimError, Facts, SymbolFacts};
pub use dot::to_dot;
pub use dtype::DType;
pub use error::{IrError, OpError};
pub use eval::{Executor, OpTime, Reference};
pub use graph::{Graph, GraphOutput, Node, NodeId, ValueId};
pub use module::Module;
pub use ops::Op;
pub use session::Session;
pub use tensor::Tensor;
pub use text::{from_json, parse_module, print_module, to_json};
pub use types::TensorType;
pub use verify::{verify, verify_function};
