//! # fuselage
//!
//! A compiler for trained models. This crate is the compile API; the `fuselage` CLI is a thin
//! layer over it. Load a model, run a pass pipeline over it (each pass verified and numerically
//! checked against the f64 reference interpreter), save or run the result:
//!
//! ```
//! let module = fuselage::load("builtin:mlp")?;
//! let pipeline = fuselage::Pipeline::parse("dce,fixpoint(cse,fold-constants),canonicalize")?;
//! let compiled = fuselage::compile(&module, &pipeline, &fuselage::CompileOptions::default())?;
//! assert!(compiled.module.node_count() < module.node_count());
//! println!("{}", compiled.report.table());
//!
//! // Same outputs on the same seeded inputs, before and after.
//! let sizes = fuselage::ir::sample::SymbolSizes::parse("B=2")?;
//! let inputs = fuselage::sample_inputs(&module, &sizes, 0)?;
//! let before = fuselage::run(&module, &inputs)?;
//! let after = fuselage::run(&compiled.module, &inputs)?;
//! assert_eq!(before[0].0, after[0].0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

pub mod bench;
pub mod inspect;
pub mod model;
pub mod quant_report;
pub mod tasks;
pub use fuselage_ir::npy;

pub use fuselage_backends as backends;
pub use fuselage_frontends as frontends;
pub use fuselage_ir as ir;
pub use fuselage_passes as passes;
pub use fuselage_passes::{PassManagerOptions, PassReport, Pipeline};
pub use inspect::{inspect, Inspection};
pub use model::{load, load_with, save, LoadOptions, Loaded, ModelError};

use fuselage_ir::sample::SymbolSizes;
use fuselage_ir::{Executor, Module, Reference, Tensor};
use std::path::PathBuf;

/// Errors of the compile API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Loading or saving a model.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A pass, pipeline or the pass manager.
    #[error(transparent)]
    Pass(#[from] fuselage_passes::PassError),
    /// The IR (evaluation, verification).
    #[error(transparent)]
    Ir(#[from] fuselage_ir::IrError),
    /// Reading or writing `.npy`.
    #[error(transparent)]
    Npy(#[from] npy::NpyError),
    /// Inputs that do not fit the model.
    #[error("{0}")]
    Inputs(String),
    /// Lowering onto a backend failed, or the backend is not available.
    #[error("{0}")]
    Backend(String),
}

/// Options of [`compile`].
#[derive(Clone, Debug)]
pub struct CompileOptions {
    /// Run the numeric check after every pass.
    pub numeric_check: bool,
    /// Sizes of symbolic dims for the numeric check (`None`: the pass manager's defaults).
    pub check_sizes: Option<SymbolSizes>,
    /// Print the IR after these passes (names or `all`) to stderr.
    pub print_ir_after: Vec<String>,
    /// Dump the IR after every pass into this folder.
    pub dump_dir: Option<PathBuf>,
    /// Stop after this many pass executions.
    pub max_steps: Option<usize>,
    /// Entry inputs for the numeric check instead of seeded ones (a tokenized sentence, say:
    /// a quantization pass is judged on data like the model's own).
    pub check_inputs: Option<Vec<Tensor>>,
    /// Calibration inputs for passes that collect statistics (`hero-quantize`'s static
    /// scales), run on a backend.
    pub calibration: Option<Calibration>,
}

/// Calibration inputs and the backend they run on (the lowered CPU program by default).
#[derive(Clone, Debug)]
pub struct Calibration {
    /// Entry inputs, one set per calibration sample.
    pub inputs: Vec<Vec<Tensor>>,
    /// Where the module runs.
    pub backend: Backend,
}

impl fuselage_passes::Calibrator for Calibration {
    fn name(&self) -> String {
        format!("{:?}", self.backend).to_lowercase()
    }

    fn inputs(&self) -> usize {
        self.inputs.len()
    }

    fn run_each(
        &self,
        module: &Module,
        each: &mut fuselage_passes::pass::EachOutputs<'_>,
    ) -> Result<(), String> {
        if self.inputs.is_empty() {
            return Err("no calibration inputs".into());
        }
        let exec = executor(module, self.backend).map_err(|e| e.to_string())?;
        let entry = entry_name(module).map_err(|e| e.to_string())?;
        for (i, x) in self.inputs.iter().enumerate() {
            let out = exec
                .run(module, &entry, x)
                .map_err(|e| format!("calibration input {i}: {e}"))?;
            each(i, &out)?;
        }
        Ok(())
    }
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions {
            numeric_check: true,
            check_sizes: None,
            print_ir_after: vec![],
            dump_dir: None,
            max_steps: None,
            check_inputs: None,
            calibration: None,
        }
    }
}

/// The result of [`compile`].
#[derive(Debug)]
pub struct Compiled {
    /// The compiled module.
    pub module: Module,
    /// One entry per executed pass.
    pub report: PassReport,
    /// IR printed after the passes named in `print_ir_after`: (step, pass, text).
    pub ir_dumps: Vec<(usize, String, String)>,
}

/// Run `pipeline` over a copy of `module` (constants are shared, not copied).
pub fn compile(
    module: &Module,
    pipeline: &Pipeline,
    options: &CompileOptions,
) -> Result<Compiled, Error> {
    let mut pm_opts = PassManagerOptions {
        print_ir_after: options.print_ir_after.clone(),
        dump_dir: options.dump_dir.clone(),
        max_steps: options.max_steps,
        ..Default::default()
    };
    pm_opts.numeric.enabled = options.numeric_check;
    pm_opts.numeric.inputs = options.check_inputs.clone();
    if let Some(s) = &options.check_sizes {
        pm_opts.numeric.default_sym_size = s.default;
        for (k, v) in &s.bindings {
            pm_opts.numeric.sym_sizes.insert(k.clone(), *v);
        }
    }
    let mut dumps = vec![];
    let mut m = module.clone();
    let report = {
        let mut pm = fuselage_passes::PassManager::new(pm_opts);
        if let Some(c) = &options.calibration {
            pm.set_calibrator(c);
        }
        pm.set_ir_sink(|d| dumps.push((d.step, d.pass.clone(), d.text.clone())));
        pm.run(pipeline, &mut m)?
    };
    Ok(Compiled {
        module: m,
        report,
        ir_dumps: dumps,
    })
}

/// Seeded sample inputs for the entry function.
pub fn sample_inputs(
    module: &Module,
    sizes: &SymbolSizes,
    seed: u64,
) -> Result<Vec<Tensor>, Error> {
    let entry = entry_name(module)?;
    Ok(fuselage_ir::sample::sample_inputs(
        module, &entry, sizes, seed,
    )?)
}

fn entry_name(module: &Module) -> Result<String, Error> {
    module
        .entry_name()
        .map(str::to_string)
        .ok_or_else(|| Error::Inputs("the module has no functions".into()))
}

/// Run the entry function on the reference interpreter; outputs with their names.
pub fn run(module: &Module, inputs: &[Tensor]) -> Result<Vec<(String, Tensor)>, Error> {
    run_with(module, inputs, &Reference)
}

/// Run the entry function on a given executor.
pub fn run_with(
    module: &Module,
    inputs: &[Tensor],
    executor: &dyn Executor,
) -> Result<Vec<(String, Tensor)>, Error> {
    let entry = entry_name(module)?;
    let outs = executor.run(module, &entry, inputs)?;
    let g = &module.functions[&entry];
    Ok(g.outputs.iter().map(|o| o.name.clone()).zip(outs).collect())
}

/// Order named inputs (`NAME=tensor`, or unnamed in parameter order) as the entry function's
/// parameters; errors name the missing and unknown inputs.
pub fn bind_named_inputs(
    module: &Module,
    given: Vec<(Option<String>, Tensor)>,
) -> Result<Vec<Tensor>, Error> {
    let entry = entry_name(module)?;
    let names = module.functions[&entry].input_names();
    let mut slots: Vec<Option<Tensor>> = vec![None; names.len()];
    let mut next = 0;
    for (name, t) in given {
        let i = match name {
            Some(n) => names.iter().position(|x| *x == n).ok_or_else(|| {
                Error::Inputs(format!(
                    "no input named `{n}` (inputs: {})",
                    names.join(", ")
                ))
            })?,
            None => {
                while next < slots.len() && slots[next].is_some() {
                    next += 1;
                }
                if next >= slots.len() {
                    return Err(Error::Inputs(format!(
                        "too many inputs: the model takes {} ({})",
                        names.len(),
                        names.join(", ")
                    )));
                }
                next
            }
        };
        if slots[i].is_some() {
            return Err(Error::Inputs(format!("input `{}` given twice", names[i])));
        }
        slots[i] = Some(t);
    }
    let missing: Vec<&str> = slots
        .iter()
        .zip(&names)
        .filter(|(s, _)| s.is_none())
        .map(|(_, n)| n.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(Error::Inputs(format!(
            "missing inputs: {}",
            missing.join(", ")
        )));
    }
    Ok(slots.into_iter().map(|s| s.expect("checked")).collect())
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Reference => "reference",
            Backend::Cpu => "cpu",
            Backend::Cuda => "cuda",
        })
    }
}

/// Where a model runs: the f64 reference interpreter or a lowered program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `ir::eval::Reference`, exact f64 semantics.
    Reference,
    /// The lowered program on burn's CPU backend.
    Cpu,
    /// The lowered program on burn-cuda (the `cuda` feature and a GPU).
    Cuda,
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "reference" => Ok(Backend::Reference),
            "cpu" => Ok(Backend::Cpu),
            "cuda" => Ok(Backend::Cuda),
            _ => Err(format!(
                "unknown backend `{s}` (allowed: reference, cpu, cuda)"
            )),
        }
    }
}

/// An executor for `module` on `backend` (lowering it once for `cpu`/`cuda`).
pub fn executor(module: &Module, backend: Backend) -> Result<Box<dyn Executor>, Error> {
    executor_with(module, backend, &fuselage_backends::LowerOptions::default())
}

/// [`executor`] with explicit lowering options (e.g. `native_kernels: false` to run every op on
/// burn's own tensor operations; ignored by the reference interpreter).
pub fn executor_with(
    module: &Module,
    backend: Backend,
    options: &fuselage_backends::LowerOptions,
) -> Result<Box<dyn Executor>, Error> {
    executor_for(module, &entry_name(module)?, backend, options)
}

/// [`executor_with`] lowering `function` instead of the entry (e.g. the `decode` function a
/// KV-cache session runs); other functions are lowered when first run.
pub fn executor_for(
    module: &Module,
    function: &str,
    backend: Backend,
    options: &fuselage_backends::LowerOptions,
) -> Result<Box<dyn Executor>, Error> {
    Ok(match lower_function(module, function, backend, options)? {
        Some(program) => program_executor(program),
        None => Box::new(Reference),
    })
}

/// The lowered program of `module`'s entry function on `backend` (`None` for the reference
/// interpreter, which runs the module as it is). Its
/// [`explain_lowering`](fuselage_backends::DynProgram::explain_lowering) says how each node
/// runs; [`program_executor`] runs it.
pub fn lower_program(
    module: &Module,
    backend: Backend,
    options: &fuselage_backends::LowerOptions,
) -> Result<Option<Box<dyn fuselage_backends::DynProgram>>, Error> {
    lower_function(module, &entry_name(module)?, backend, options)
}

/// [`lower_program`] of the function `function`.
pub fn lower_function(
    module: &Module,
    function: &str,
    backend: Backend,
    options: &fuselage_backends::LowerOptions,
) -> Result<Option<Box<dyn fuselage_backends::DynProgram>>, Error> {
    let kind = match backend {
        Backend::Reference => return Ok(None),
        Backend::Cpu => fuselage_backends::BackendKind::Cpu,
        Backend::Cuda => fuselage_backends::BackendKind::Cuda,
    };
    let program = fuselage_backends::lower_for(kind, module, function, options)
        .map_err(|e| Error::Backend(e.to_string()))?;
    Ok(Some(program))
}

/// An executor that runs a lowered program (see [`lower_program`]).
pub fn program_executor(program: Box<dyn fuselage_backends::DynProgram>) -> Box<dyn Executor> {
    Box::new(DynExecutor(program))
}

/// The lowering report of [`fuselage_backends::Program::explain_lowering`] as JSON: one object
/// per node with `function`, `depth`, `node`, `op`, `lowering` (`native`, `kernel`, `host`,
/// `trivial`, `folded`), `kernel` (or null), `why`, `prepared` (what the kernel laid out at
/// lowering, or null) and `rejected` (`[{kernel, reason}]`).
pub fn lowering_json(nodes: &[fuselage_backends::NodeLowering]) -> serde_json::Value {
    serde_json::Value::Array(
        nodes
            .iter()
            .map(|n| {
                serde_json::json!({
                    "function": n.function,
                    "depth": n.depth,
                    "node": n.node,
                    "op": n.op,
                    "lowering": format!("{:?}", n.lowering).to_lowercase(),
                    "kernel": n.kernel,
                    "why": n.why,
                    "prepared": n.prepared,
                    "rejected": n.rejected.iter().map(|r| serde_json::json!({
                        "kernel": r.kernel,
                        "reason": r.reason,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

/// The kernel registry and this CPU's features as JSON: `cpu_features` (`{name: bool}`),
/// `gemm_micro_kernel` (the packed GEMM's micro-kernel here, `avx2 6×16`) and
/// `kernels` (`[{name, op, signature, cost, requires, doc, prepares, available}]`, `prepares`:
/// what the kernel lays out at lowering or null, `available`: this CPU passes the kernel's
/// guard).
pub fn kernels_json() -> serde_json::Value {
    use fuselage_backends::kernels::{cpu::CpuFeatures, registry::KERNELS};
    let f = CpuFeatures::get();
    let features: serde_json::Map<String, serde_json::Value> = f
        .list()
        .iter()
        .map(|(n, v)| (n.to_string(), serde_json::Value::Bool(*v)))
        .collect();
    let kernels: Vec<serde_json::Value> = KERNELS
        .iter()
        .map(|e| {
            serde_json::json!({
                "name": e.name,
                "op": e.op,
                "signature": e.signature,
                "cost": e.cost,
                "requires": e.requires,
                "doc": e.doc,
                "prepares": e.prepare.map(|p| p.doc),
                "available": (e.guard)(f),
            })
        })
        .collect();
    let isa = fuselage_backends::kernels::packed_gemm::GemmIsa::detect();
    serde_json::json!({
        "cpu_features": features,
        "gemm_micro_kernel": isa.describe(),
        "kernels": kernels,
    })
}

struct DynExecutor(Box<dyn fuselage_backends::DynProgram>);

impl Executor for DynExecutor {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn run(
        &self,
        module: &Module,
        function: &str,
        inputs: &[Tensor],
    ) -> Result<Vec<Tensor>, fuselage_ir::IrError> {
        self.0.run(module, function, inputs)
    }
    fn set_profiling(&self, on: bool) {
        self.0.set_profiling(on)
    }
    fn op_profile(&self) -> Vec<fuselage_ir::OpTime> {
        self.0.op_profile()
    }
    fn session<'a>(&'a self, module: &'a Module) -> Box<dyn fuselage_ir::Session + 'a> {
        self.0.session(module)
    }
}
