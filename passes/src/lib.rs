//! # fuselage-passes
//!
//! The pass manager of fuselage: the [`Pass`] trait, a [registry] of passes with
//! documented serde options, [pipelines](pipeline) as one-line specs or TOML files, and the
//! [`PassManager`], which verifies the module and checks its numbers against the reference
//! interpreter after every pass, times passes, prints and dumps IR, runs `fixpoint` groups and
//! stops after `max_steps` passes for bisecting. Standard passes: [`dce`], [`cse`],
//! [`fold_constants`], [`shape_infer`], and [`canonicalize`]: equality saturation with egg, its
//! rules written as data files ([`rewrite`]).
//!
//! ```
//! use fuselage_ir::ops::{add::Add, matmul::MatMul};
//! use fuselage_ir::{DType, Graph, Module, Op, TensorType};
//! use fuselage_passes::{PassManager, PassManagerOptions, Pipeline};
//!
//! // out = x + x, with the same sum computed twice and a dead node.
//! let mut m = Module::new();
//! let mut g = Graph::new();
//! let x = g.add_input("x", TensorType::new(DType::F32, ["B".into(), 4u64.into()]));
//! let a = g.add_inferred(&m, Op::Add(Add {}), vec![x.into(), x.into()], None).unwrap();
//! let b = g.add_inferred(&m, Op::Add(Add {}), vec![x.into(), x.into()], None).unwrap();
//! let _dead = g.add_inferred(&m, Op::Add(Add {}), vec![a.into(), b.into()], None).unwrap();
//! g.add_output("a", a.into());
//! g.add_output("b", b.into());
//! m.functions.insert("main".into(), g);
//!
//! let pipeline = Pipeline::parse("fixpoint(cse,dce),shape-infer{bind=\"B=2\"}").unwrap();
//! let mut pm = PassManager::new(PassManagerOptions::default());
//! let report = pm.run(&pipeline, &mut m).unwrap();
//! assert_eq!(m.node_count(), 2);
//! assert!(report.passes.iter().all(|p| p.numeric.as_ref().is_none_or(|n| n.passed)));
//! println!("{report}");
//! ```
#![warn(missing_docs)]

pub mod calibrate;
pub mod canonicalize;
pub mod cse;
pub mod dce;
pub mod error;
pub mod fold_constants;
pub mod hero_quantize;
mod irx;
pub mod kv_cache;
pub mod manager;
pub mod numeric;
pub mod pass;
pub mod pipeline;
pub mod precision;
pub mod registry;
pub mod rewrite;
pub mod shape_infer;
#[cfg(test)]
mod testutil;

pub use error::PassError;
pub use manager::{IrDump, PassManager, PassManagerOptions, PassReport, PassRun, Scheduled};
pub use numeric::{NumericCheck, NumericOptions};
pub use pass::{Calibrator, Changed, Pass, PassCx, PassDetails, PassKind, Tolerance};
pub use pipeline::{OptValue, PassSpec, Pipeline, Step};
