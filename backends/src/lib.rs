//! # fuselage-backends
//!
//! Where compiled modules run: [`lower()`] turns a function of a [`Module`](fuselage_ir::Module)
//! into a [`Program<B>`] over a burn backend `B` (burn-ndarray on the CPU by default, burn-cuda
//! with the `cuda` feature), with liveness-based [`memory`] planning and native CPU
//! [`kernels`] chosen per node from the [kernel registry](kernels::registry)
//! ([`Program::explain_lowering`] says which and why). A [`Program`] implements
//! [`fuselage_ir::Executor`], so the pass manager and the CLI run it like the reference
//! interpreter.
//!
//! ```
//! use fuselage_backends::{lower, CpuBackend, LowerOptions};
//! use fuselage_ir::ops::add::Add;
//! use fuselage_ir::{DType, Graph, Module, Op, Tensor, TensorType};
//!
//! let mut m = Module::new();
//! let mut g = Graph::new();
//! let x = g.add_input("x", TensorType::new(DType::F32, ["B".into(), 3u64.into()]));
//! let y = g.add_inferred(&m, Op::Add(Add {}), vec![x.into(), x.into()], None).unwrap();
//! g.add_output("y", y.into());
//! m.functions.insert("main".into(), g);
//! let p = lower::<CpuBackend>(&m, "main", &Default::default(), &LowerOptions::default()).unwrap();
//! let x = Tensor::from_f32(vec![2, 3], &[1., 2., 3., 4., 5., 6.]).unwrap();
//! assert_eq!(p.run_tensors(&[x]).unwrap()[0].data(), &[2., 4., 6., 8., 10., 12.]);
//! ```
#![warn(missing_docs)]

pub mod cuda;
pub mod kernels;
pub mod lower;
pub mod memory;

pub use lower::{
    cpu_executor, lower, profile_op_name, render_explain, BackendKind, CpuBackend, DeviceSession,
    KernelRejection, LowerError, LowerOptions, Lowering, LoweringExecutor, NodeLowering, Program,
    RunStats,
};

#[cfg(feature = "cuda")]
/// The CUDA backend (burn-cuda, f32).
pub type CudaBackend = burn_cuda::Cuda<f32, i32>;

/// A lowered program behind a trait object, whatever its backend.
pub trait DynProgram: fuselage_ir::Executor + Send + Sync {
    /// Run on host tensors (parameter order); outputs in output order.
    fn run_tensors(
        &self,
        inputs: &[fuselage_ir::Tensor],
    ) -> Result<Vec<fuselage_ir::Tensor>, LowerError>;
    /// Statistics of the last run.
    fn last_run_stats(&self) -> RunStats;
    /// The memory plan at the given symbol sizes.
    fn memory_plan(
        &self,
        sizes: &fuselage_ir::sample::SymbolSizes,
    ) -> Result<memory::MemoryPlan, LowerError>;
    /// How each op runs: `(op, lowering, count)`.
    fn lowering_report(&self) -> Vec<(String, Lowering, usize)>;
    /// How every node runs and why ([`Program::explain_lowering`]).
    fn explain_lowering(&self) -> Vec<NodeLowering>;
}

impl<B: burn::tensor::backend::Backend> DynProgram for Program<B>
where
    Program<B>: Send + Sync,
{
    fn run_tensors(
        &self,
        inputs: &[fuselage_ir::Tensor],
    ) -> Result<Vec<fuselage_ir::Tensor>, LowerError> {
        Program::run_tensors(self, inputs)
    }
    fn last_run_stats(&self) -> RunStats {
        Program::last_run_stats(self)
    }
    fn memory_plan(
        &self,
        sizes: &fuselage_ir::sample::SymbolSizes,
    ) -> Result<memory::MemoryPlan, LowerError> {
        Program::memory_plan(self, sizes)
    }
    fn lowering_report(&self) -> Vec<(String, Lowering, usize)> {
        Program::lowering_report(self)
    }
    fn explain_lowering(&self) -> Vec<NodeLowering> {
        Program::explain_lowering(self)
    }
}

/// Lower `function` onto the backend `kind` selects. The CUDA backend needs the `cuda` feature
/// and a GPU with its driver: both are checked before any CUDA device is created, and their
/// absence is a [`LowerError::Backend`].
pub fn lower_for(
    kind: BackendKind,
    module: &fuselage_ir::Module,
    function: &str,
    options: &LowerOptions,
) -> Result<Box<dyn DynProgram>, LowerError> {
    match kind {
        BackendKind::Cpu => Ok(Box::new(lower::<CpuBackend>(
            module,
            function,
            &Default::default(),
            options,
        )?)),
        BackendKind::Cuda => lower_cuda(module, function, options),
    }
}

#[cfg(feature = "cuda")]
fn lower_cuda(
    module: &fuselage_ir::Module,
    function: &str,
    options: &LowerOptions,
) -> Result<Box<dyn DynProgram>, LowerError> {
    cuda::probe()?;
    let device = burn_cuda::CudaDevice::default();
    Ok(Box::new(lower::<CudaBackend>(
        module, function, &device, options,
    )?))
}

#[cfg(not(feature = "cuda"))]
fn lower_cuda(
    _module: &fuselage_ir::Module,
    _function: &str,
    _options: &LowerOptions,
) -> Result<Box<dyn DynProgram>, LowerError> {
    Err(LowerError::Backend(
        "this build has no CUDA backend: rebuild with `--features cuda`".into(),
    ))
}
