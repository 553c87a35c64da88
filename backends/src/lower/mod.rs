//! Lowering: a function of a [`Module`] becomes a [`Program<B>`] over a burn backend `B`.
//!
//! [`lower`] resolves the function into a flat list of instructions in topological order. Each
//! value lives in a register that is freed right after its last reader (the same liveness the
//! [memory planner](crate::memory) uses; its plan is reported as planned bytes vs the naive
//! sum by [`Program::memory_plan`]). Constants are uploaded to the device once, at lowering
//! time. Symbolic dims are bound when the program runs, from the shapes of its inputs.
//!
//! ## Value representation
//!
//! Every value is a burn *float* tensor of the backend's float element (f32 on the CPU and CUDA
//! backends): integers and booleans are carried as exact small floats (`0.0`/`1.0` for bools).
//! After each op the result is brought back onto its IR dtype:
//! - `f32`, `f64`, `bool`: nothing to do (`f64` values are computed in f32: the lowered program
//!   is an f32 program; the reference interpreter is the f64 oracle);
//! - integer dtypes: round half to even and saturate to the dtype's range, on the device
//!   (integers are exact up to 2^24 in f32: indices, positions and token ids are far below);
//! - `f16`, `bf16`, `f8e4m3fn`, `f8e5m2`, `f4e2m1`, `i4` have no burn CPU kernels with exact
//!   rounding, so they are *emulated*: computed in f32, then rounded exactly with
//!   [`DType::round`](fuselage_ir::DType::round) (the codecs of `fuselage_ir::numerics`) on the
//!   host. Correct to the bit, not fast.
//!
//! ## Native vs host ops
//!
//! Almost every op is lowered onto burn's tensor operations (see [`Lowering::Native`]). The exact
//! low-precision codecs (`quantize`, `dequantize`), `top_k`, `mmca_attention`, `scatter_elements`
//! and `scatter_nd` with a `mul`/`max`/`min` reduction (or `add` on bools), the exact integer
//! and remainder ops (`bitwise`, `mod`), `reduce` with kind `prod`, and `attention` with
//! a non-causal boolean-style pattern run through the reference implementation on the host
//! ([`Lowering::Host`]): operands are downloaded, the op's f64 reference semantics run, results
//! are uploaded. The N-D vision ops lower onto burn where burn computes exactly ONNX's result:
//! `conv` and `conv_transpose` of 1 to 3 spatial axes (asymmetric pads applied explicitly, the
//! transposed convolution cropped and extended from burn's full result), `pool` max/avg over 1
//! or 2 spatial axes with symmetric pads (avg without dilation, max with row-major indices; a
//! ceil-mode size burn counts differently runs on the host), and `resize` (the reference's exact
//! per-axis taps gathered and weighted on the backend); `pool` otherwise (Lp, 3-D, asymmetric
//! pads, column-major indices) and `grid_sample` run on the host (the host rules, with their
//! reasons, are a table in `lower/classify.rs`). On the CPU backend the hot f32 ops run on
//! fuselage's own kernels ([`Lowering::Kernel`]), picked per node from the
//! [kernel registry](crate::kernels::registry); they read burn-ndarray's arrays in place through
//! their strides. Instructions computable from constants alone run once, at lowering
//! ([`Lowering::Folded`]). [`Program::explain_lowering`] says, per node, which path it takes
//! and why (the kernels rejected and why); [`Program::lowering_report`] summarizes it.

mod classify;
mod exec;
mod explain;
mod host_view;
mod session;
mod value;

pub use session::DeviceSession;
pub(crate) use value::Value;

pub use explain::{render_explain, KernelRejection, NodeLowering};

use crate::kernels::buffer::BufferPool;
use crate::memory::{self, MemoryPlan};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Element, FloatDType, TensorData, TensorMetadata};
use fuselage_ir::sample::SymbolSizes;
use fuselage_ir::{DType, Executor, Graph, IrError, Module, NodeId, Op, Tensor, TensorType};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

/// Which burn backend a lowered program runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum BackendKind {
    /// burn-ndarray on the CPU (always available); fuselage's native CPU kernels (the
    /// [registry](crate::kernels::registry)) are available through
    /// [`LowerOptions::native_kernels`].
    #[default]
    Cpu,
    /// burn-cuda (the `cuda` cargo feature, an NVIDIA GPU and its driver at run time).
    Cuda,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Cuda => "cuda",
        })
    }
}

impl std::str::FromStr for BackendKind {
    type Err = LowerError;
    fn from_str(s: &str) -> Result<Self, LowerError> {
        match s {
            "cpu" => Ok(BackendKind::Cpu),
            "cuda" => Ok(BackendKind::Cuda),
            _ => Err(LowerError::Backend(format!(
                "unknown backend `{s}` (expected cpu or cuda)"
            ))),
        }
    }
}

/// The CPU backend: burn-ndarray over f32 with i64 indices.
pub type CpuBackend = burn::backend::NdArray<f32, i64>;

/// Options of [`lower`].
#[derive(Clone, Debug)]
pub struct LowerOptions {
    /// Use fuselage's native CPU kernels when the backend is the CPU backend: for each node the
    /// [kernel registry](crate::kernels::registry) picks the cheapest kernel that applies (the
    /// list is in `docs/kernels.md`, or `fuselage kernels`). Default: true — measured on
    /// MiniLM-L6 they are several times faster than burn-ndarray's generic path
    /// (docs/performance.md); false lowers every op onto burn's tensor operations.
    pub native_kernels: bool,
    /// Allow ops without a burn lowering to run through the reference semantics on the host.
    /// When false, lowering such an op is an error. Default: true.
    pub host_fallback: bool,
    /// Compute, once at lowering time, every op whose operands are all constants and whose
    /// shape is fixed (the weight transposes an importer keeps for zero-copy loading, weight
    /// quantization…), storing the result row-major as a constant of the program
    /// ([`Lowering::Folded`]); constants only such ops read are then dropped. Ops whose results
    /// would outgrow their operands by more than 64 Ki elements (a broadcast of a small
    /// constant) are left to run. Default: true.
    pub hoist_constants: bool,
    /// Keep the storage of values the liveness plan frees in a pool of the program and hand it
    /// to later kernel results, in this run and the next ones, instead of returning it to the
    /// allocator ([`Program::buffer_pool`]). Default: true — with glibc's malloc, MiniLM at
    /// 8 × 128 ran 12–33 % slower without it than with mimalloc (docs/performance.md).
    pub buffer_pool: bool,
    /// Let each kernel lay out its constant operands once, at lowering time, in the form it
    /// reads ([`KernelEntry::prepare`](crate::kernels::registry::KernelEntry::prepare): the
    /// GEMMs pack a constant weight into their micro-kernel's panels); the program keeps that
    /// form instead of the constant. Default: true.
    pub prepare_constants: bool,
}

impl Default for LowerOptions {
    fn default() -> Self {
        LowerOptions {
            native_kernels: true,
            host_fallback: true,
            hoist_constants: true,
            buffer_pool: true,
            prepare_constants: true,
        }
    }
}

/// Errors of lowering and of running a lowered program.
#[derive(Debug, thiserror::Error)]
pub enum LowerError {
    /// The function does not exist.
    #[error("no function `{function}` in the module (module has: {available})")]
    NoFunction {
        /// The function asked for.
        function: String,
        /// The functions the module has.
        available: String,
    },
    /// The graph is malformed (cycle, dangling operand).
    #[error("function `{function}`: {message}")]
    Graph {
        /// The function.
        function: String,
        /// What is wrong.
        message: String,
    },
    /// An op cannot be lowered (with these options).
    #[error("function `{function}`, node {node} ({op}): cannot lower: {message}")]
    Unsupported {
        /// The function.
        function: String,
        /// The node, described.
        node: String,
        /// The op name.
        op: String,
        /// Why.
        message: String,
    },
    /// Running an instruction failed.
    #[error("function `{function}`, node {node} ({op}): {message}")]
    Run {
        /// The function.
        function: String,
        /// The node, described.
        node: String,
        /// The op name.
        op: String,
        /// What happened.
        message: String,
    },
    /// Inputs do not match the function's parameters.
    #[error("{0}")]
    Inputs(IrError),
    /// A constant could not be materialized.
    #[error("constant: {0}")]
    Constant(IrError),
    /// The backend is not available (no GPU, no driver, feature not built).
    #[error("backend: {0}")]
    Backend(String),
}

impl From<LowerError> for IrError {
    fn from(e: LowerError) -> IrError {
        match e {
            LowerError::Inputs(e) | LowerError::Constant(e) => e,
            LowerError::Run {
                function,
                node,
                op,
                message,
            }
            | LowerError::Unsupported {
                function,
                node,
                op,
                message,
            } => IrError::Eval {
                function,
                node,
                op,
                message,
            },
            other => IrError::Eval {
                function: String::new(),
                node: String::new(),
                op: "lower".into(),
                message: other.to_string(),
            },
        }
    }
}

/// How one instruction is executed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lowering {
    /// On the device through burn's tensor operations.
    Native,
    /// With a native CPU kernel of fuselage (`kernels`).
    Kernel,
    /// Through the op's reference semantics on the host.
    Host,
    /// No computation: an input, a constant, a view-free identity (collective at world 1).
    Trivial,
    /// Computed once at lowering time from constants (see [`LowerOptions::hoist_constants`]).
    Folded,
}

/// One instruction of a program.
pub(crate) struct Instr<B: Backend> {
    pub node: NodeId,
    pub op: Op,
    pub operands: Vec<usize>,
    pub results: Vec<usize>,
    pub result_types: Vec<TensorType>,
    pub operand_types: Vec<TensorType>,
    /// Registers to free after this instruction (their last reader).
    pub frees: Vec<usize>,
    pub how: Lowering,
    /// The registry kernel that runs it when `how` is [`Lowering::Kernel`] (also kept when the
    /// instruction is folded: it computed the folded value).
    pub kernel: Option<&'static crate::kernels::registry::KernelEntry>,
    /// Lowered callee / loop body.
    pub sub: Option<Arc<Program<B>>>,
    /// Constant operands the kernel laid out at lowering time (a packed weight); the operands
    /// it replaces are not read by runs.
    pub prepared: Option<Arc<crate::kernels::registry::Prepared>>,
}

impl<B: Backend> Instr<B> {
    /// Whether operand `i` is replaced by the prepared form (runs do not read it).
    pub(crate) fn operand_prepared(&self, i: usize) -> bool {
        self.prepared.as_ref().is_some_and(|p| p.replaces(i))
    }
}

impl<B: Backend> Instr<B> {
    /// The key of this instruction's time in [`Program::op_profile`]: the op name, followed by
    /// ` [kernel]` when a registry kernel runs it.
    fn profile_key(&self) -> String {
        match (self.how, self.kernel) {
            (Lowering::Kernel, Some(k)) => format!("{} [{}]", self.op.name(), k.name),
            _ => self.op.name().to_string(),
        }
    }
}

/// The op name of a key of [`Program::op_profile`] (`linear [linear-f32-gemm]` → `linear`).
pub fn profile_op_name(key: &str) -> &str {
    key.split_once(" [").map_or(key, |(op, _)| op)
}

/// Statistics of the last run of a program.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Peak of the bytes of the live values (inputs, intermediates, outputs; not constants) as
    /// the backend stores them (f32: 4 bytes per element).
    pub peak_bytes: u64,
    /// Bytes of the uploaded constants.
    pub constant_bytes: u64,
    /// How many times a packed low-precision value was decoded to f32 for an op without a
    /// packed kernel (0 when every consumer of a packed value takes the packed form).
    pub packed_widened: u64,
    /// Kernel results whose buffer came from the program's pool (storage of values freed by
    /// the liveness plan, in this run or an earlier one).
    pub pool_reused: u64,
    /// Kernel results that needed a fresh allocation.
    pub pool_fresh: u64,
    /// Bytes the pool holds after the run (kept for the next run).
    pub pool_held_bytes: u64,
}

/// A lowered function: runs on backend `B`'s device.
pub struct Program<B: Backend> {
    pub(crate) function: String,
    pub(crate) module: Module,
    pub(crate) graph: Graph,
    pub(crate) device: B::Device,
    pub(crate) instrs: Vec<Instr<B>>,
    pub(crate) n_regs: usize,
    pub(crate) input_regs: Vec<usize>,
    pub(crate) output_regs: Vec<usize>,
    pub(crate) constants: HashMap<usize, Value<B>>,
    pub(crate) constant_bytes: u64,
    pub(crate) use_kernels: bool,
    pub(crate) stats: Mutex<RunStats>,
    /// Per-op-kind `(calls, seconds)` while profiling is on.
    pub(crate) profile: Mutex<Option<HashMap<String, (u64, f64)>>>,
    /// Storage of freed values, reused by later kernel results (CPU backend).
    pub(crate) pool: Arc<BufferPool>,
    /// Whether runs use the pool ([`LowerOptions::buffer_pool`]).
    pub(crate) pooling: bool,
}

impl<B: Backend> fmt::Debug for Program<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Program")
            .field("function", &self.function)
            .field("instructions", &self.instrs.len())
            .field("backend", &B::name(&self.device))
            .finish()
    }
}

/// How many elements a folded instruction's results may exceed its operands by (see
/// [`LowerOptions::hoist_constants`]).
const HOIST_MAX_GROWTH: usize = 1 << 16;

/// The executor name of programs on `B` (`cpu` for the CPU backend).
fn executor_name<B: Backend>() -> &'static str {
    if is_cpu_backend::<B>() {
        "cpu"
    } else {
        "burn"
    }
}

/// Is `B` the CPU backend (where the native kernels apply)?
pub(crate) fn is_cpu_backend<B: Backend>() -> bool {
    std::any::TypeId::of::<B>() == std::any::TypeId::of::<CpuBackend>()
}

/// Lower `function` of `module` onto backend `B` at `device`.
pub fn lower<B: Backend>(
    module: &Module,
    function: &str,
    device: &B::Device,
    options: &LowerOptions,
) -> Result<Program<B>, LowerError> {
    let mut depth = 0;
    lower_rec(module, function, device, options, &mut depth)
}

fn lower_rec<B: Backend>(
    module: &Module,
    function: &str,
    device: &B::Device,
    options: &LowerOptions,
    depth: &mut usize,
) -> Result<Program<B>, LowerError> {
    if *depth > 64 {
        return Err(LowerError::Graph {
            function: function.into(),
            message: "call/for nesting deeper than 64 (recursion?)".into(),
        });
    }
    let graph = module
        .functions
        .get(function)
        .ok_or_else(|| LowerError::NoFunction {
            function: function.into(),
            available: module
                .functions
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    // The lowering trusts types and constants: check them first.
    fuselage_ir::verify::verify_function(module, function).map_err(|e| LowerError::Graph {
        function: function.into(),
        message: format!("the module does not verify: {e}"),
    })?;
    let order = graph.topo_order().map_err(|id| LowerError::Graph {
        function: function.into(),
        message: format!("cycle or missing operand at {}", graph.describe(id)),
    })?;
    // Registers: one per value, in definition order.
    let mut reg: HashMap<fuselage_ir::ValueId, usize> = HashMap::new();
    let mut n_regs = 0usize;
    for &id in &order {
        let n = graph.node(id).expect("topo order yields live nodes");
        for slot in 0..n.results.len() {
            reg.insert(fuselage_ir::ValueId::new(id, slot as u32), n_regs);
            n_regs += 1;
        }
    }
    // Last reader of each register; outputs are never freed.
    let mut last: HashMap<usize, usize> = HashMap::new();
    for (step, &id) in order.iter().enumerate() {
        let n = graph.node(id).expect("live");
        for o in &n.operands {
            let r = *reg.get(o).ok_or_else(|| LowerError::Graph {
                function: function.into(),
                message: format!("{} reads {o}, which is not defined", graph.describe(id)),
            })?;
            last.insert(r, step);
        }
    }
    let mut output_regs = vec![];
    for o in &graph.outputs {
        let r = *reg.get(&o.value).ok_or_else(|| LowerError::Graph {
            function: function.into(),
            message: format!(
                "output `{}` reads {}, which is not defined",
                o.name, o.value
            ),
        })?;
        output_regs.push(r);
        last.insert(r, usize::MAX);
    }
    let input_regs: Vec<usize> = graph
        .inputs
        .iter()
        .map(|&n| reg[&fuselage_ir::ValueId::new(n, 0)])
        .collect();
    let mut frees_at: HashMap<usize, Vec<usize>> = HashMap::new();
    for (&r, &s) in &last {
        if s != usize::MAX {
            frees_at.entry(s).or_default().push(r);
        }
    }
    let use_kernels = options.native_kernels && is_cpu_backend::<B>();
    let mut instrs = vec![];
    let mut constants = HashMap::new();
    let mut constant_bytes = 0u64;
    for (step, &id) in order.iter().enumerate() {
        let n = graph.node(id).expect("live");
        let results: Vec<usize> = (0..n.results.len())
            .map(|s| reg[&fuselage_ir::ValueId::new(id, s as u32)])
            .collect();
        let operands: Vec<usize> = n.operands.iter().map(|o| reg[o]).collect();
        let operand_types: Vec<TensorType> = n
            .operands
            .iter()
            .map(|o| graph.value_type(*o).cloned())
            .collect::<Option<_>>()
            .ok_or_else(|| LowerError::Graph {
                function: function.into(),
                message: format!("{}: an operand has no type", graph.describe(id)),
            })?;
        let unsupported = |message: String| LowerError::Unsupported {
            function: function.into(),
            node: graph.describe(id),
            op: n.op.name().into(),
            message,
        };
        let mut sub = None;
        let mut kernel = None;
        let how = match &n.op {
            Op::Constant(c) => {
                let k = module
                    .constants
                    .get(&c.name)
                    .ok_or_else(|| unsupported(format!("no constant `{}`", c.name)))?;
                let shape = k.ty.fixed_shape().ok_or_else(|| {
                    unsupported(format!("constant `{}` has symbolic dims", c.name))
                })?;
                // Straight from the constant's f32 bytes: no f64 copy of the weights is made
                // (or cached) for the lowered program.
                // A constant of a packed dtype (int8/fp8 weights) is kept packed.
                // An exact-held constant (i64 shapes, f64) is read exactly.
                let value = if value::is_exact_held(k.ty.dtype) {
                    let t = k.value(&c.name).map_err(LowerError::Constant)?;
                    Value::<B>::upload(&t, device).map_err(unsupported)?
                } else {
                    let v = k.to_f32_vec(&c.name).map_err(LowerError::Constant)?;
                    Value::<B>::from_f32(v, &shape, k.ty.dtype, device).map_err(unsupported)?
                };
                constant_bytes += value.storage_bytes();
                constants.insert(results[0], value);
                Lowering::Trivial
            }
            Op::Input(_) => Lowering::Trivial,
            Op::Call(c) => {
                *depth += 1;
                let p = lower_rec::<B>(module, &c.callee, device, options, depth);
                *depth -= 1;
                sub = Some(Arc::new(
                    p.map_err(|e| unsupported(format!("callee: {e}")))?,
                ));
                Lowering::Native
            }
            Op::For(f) => {
                *depth += 1;
                let p = lower_rec::<B>(module, &f.body, device, options, depth);
                *depth -= 1;
                sub = Some(Arc::new(p.map_err(|e| unsupported(format!("body: {e}")))?));
                Lowering::Native
            }
            op => {
                let d = classify::classify(op, &operand_types, &n.results, use_kernels)
                    .map_err(unsupported)?;
                if d.how == Lowering::Host && !options.host_fallback {
                    return Err(unsupported(format!(
                        "no burn lowering ({}) and host fallback is disabled",
                        d.why
                    )));
                }
                kernel = d.kernel;
                d.how
            }
        };
        instrs.push(Instr {
            node: id,
            op: n.op.clone(),
            operands,
            results,
            result_types: n.results.clone(),
            operand_types,
            frees: frees_at.remove(&step).unwrap_or_default(),
            how,
            kernel,
            sub,
            prepared: None,
        });
    }
    let mut program = Program {
        function: function.into(),
        module: module.clone(),
        graph: graph.clone(),
        device: device.clone(),
        instrs,
        n_regs,
        input_regs,
        output_regs,
        constants,
        constant_bytes,
        use_kernels,
        stats: Mutex::new(RunStats::default()),
        profile: Mutex::new(None),
        // Each run sets the limit from its peak; the first holds up to 256 MiB of freed values.
        pool: Arc::new(BufferPool::new(256 << 20)),
        pooling: options.buffer_pool,
    };
    if options.hoist_constants {
        program.hoist_constants();
    }
    if options.prepare_constants && use_kernels {
        program.prepare_constants();
    }
    program.drop_unread_constants();
    Ok(program)
}

/// Upload a host tensor as an f32 burn tensor.
pub(crate) fn upload<B: Backend>(t: &Tensor, device: &B::Device) -> FloatTensor<B> {
    upload_f32::<B>(t.to_f32_vec(), t.shape(), device)
}

/// Upload f32 values of `shape`.
pub(crate) fn upload_f32<B: Backend>(
    data: Vec<f32>,
    shape: &[usize],
    device: &B::Device,
) -> FloatTensor<B> {
    let td = TensorData::new(data, shape.to_vec());
    let td = td.convert_dtype(<B::FloatElem as Element>::dtype());
    B::float_from_data(td, device)
}

/// Download a burn tensor as f32 values (and its shape).
pub(crate) fn download_f32<B: Backend>(
    t: FloatTensor<B>,
) -> Result<(Vec<f32>, Vec<usize>), String> {
    if let Some(v) = host_view::read_cpu::<B>(&t) {
        return v;
    }
    let shape = t.shape().to_vec();
    let data = burn::tensor::try_read_sync(B::float_into_data(t))
        .ok_or("the backend cannot read tensors synchronously")?
        .map_err(|e| format!("reading a tensor back: {e:?}"))?;
    let v = data
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| format!("reading a tensor back: {e:?}"))?;
    Ok((v, shape))
}

/// Download a burn tensor as a fuselage tensor of `dtype` (rounding exactly).
pub(crate) fn download<B: Backend>(t: FloatTensor<B>, dtype: DType) -> Result<Tensor, String> {
    let (v, shape) = download_f32::<B>(t)?;
    Tensor::new(dtype, shape, v.into_iter().map(f64::from).collect()).map_err(|e| e.to_string())
}

/// The backend's float dtype.
pub(crate) fn float_dtype<B: Backend>() -> FloatDType {
    FloatDType::from(<B::FloatElem as Element>::dtype())
}

impl<B: Backend> Program<B> {
    /// The function this program runs.
    pub fn function(&self) -> &str {
        &self.function
    }

    /// The device it runs on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// Whether this program was lowered from `function` of `module` as it is now (same graph,
    /// same constants).
    pub fn is_lowered_from(&self, module: &Module, function: &str) -> bool {
        function == self.function
            && module.functions.get(function) == Some(&self.graph)
            && module.constants.len() == self.module.constants.len()
            && module
                .constants
                .iter()
                .zip(&self.module.constants)
                .all(|((a, x), (b, y))| a == b && Arc::ptr_eq(x, y))
    }

    /// Number of instructions (one per node of the function, inputs and constants included).
    pub fn len(&self) -> usize {
        self.instrs.len()
    }

    /// True when the function has no nodes.
    pub fn is_empty(&self) -> bool {
        self.instrs.is_empty()
    }

    /// How each op of the program is executed: `(op name, lowering, count)`, sorted by op name,
    /// callees and loop bodies included (a summary of [`Program::explain_lowering`]).
    pub fn lowering_report(&self) -> Vec<(String, Lowering, usize)> {
        let mut m: HashMap<(String, String), (Lowering, usize)> = HashMap::new();
        for n in self.explain_lowering() {
            let e = m
                .entry((n.op, format!("{:?}", n.lowering)))
                .or_insert((n.lowering, 0));
            e.1 += 1;
        }
        let mut v: Vec<_> = m
            .into_iter()
            .map(|((op, _), (how, n))| (op, how, n))
            .collect();
        v.sort_by(|a, b| {
            a.0.cmp(&b.0)
                .then(format!("{:?}", a.1).cmp(&format!("{:?}", b.1)))
        });
        v
    }

    /// The liveness-based memory plan of the function's values for symbol sizes `sizes`
    /// (planned arena bytes vs the naive sum of every value's size).
    pub fn memory_plan(&self, sizes: &SymbolSizes) -> Result<MemoryPlan, LowerError> {
        memory::plan(&self.graph, sizes).map_err(|e| LowerError::Graph {
            function: self.function.clone(),
            message: e.to_string(),
        })
    }

    /// Statistics of the last run (peak bytes of live values).
    pub fn last_run_stats(&self) -> RunStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The program's pool of result buffers: the storage of values the liveness plan freed,
    /// kept for later kernel results (in this run and the next ones) instead of going back to
    /// the allocator. Its counters are in [`Program::last_run_stats`].
    pub fn buffer_pool(&self) -> &BufferPool {
        &self.pool
    }

    /// Computes the instructions whose operands are all constants (and whose result shapes are
    /// fixed) once, stores their results row-major as constants and marks them
    /// [`Lowering::Folded`]; then drops the constants that no remaining instruction or output
    /// reads. An instruction that fails here is left to fail (with its error) at run time.
    fn hoist_constants(&mut self) {
        let none = HashMap::new();
        for idx in 0..self.instrs.len() {
            let ins = &self.instrs[idx];
            let eligible = !matches!(ins.how, Lowering::Trivial)
                && !matches!(
                    ins.op,
                    Op::Input(_) | Op::Constant(_) | Op::Call(_) | Op::For(_)
                )
                && ins.operands.iter().all(|r| self.constants.contains_key(r))
                && ins.result_types.iter().all(|t| t.resolve(&none).is_ok());
            if !eligible {
                continue;
            }
            // Do not materialize what a lazy op keeps small (a broadcast of a small constant to
            // a large shape): results may not outgrow their operands by more than 64 Ki elements.
            let result_elems: usize = ins
                .result_types
                .iter()
                .filter_map(|t| t.resolve(&none).ok())
                .map(|s| s.iter().product::<usize>())
                .sum();
            let operand_elems: usize = ins
                .operands
                .iter()
                .map(|r| self.constants[r].shape().iter().product::<usize>())
                .sum();
            if result_elems > operand_elems + HOIST_MAX_GROWTH {
                continue;
            }
            let args = ins
                .operands
                .iter()
                .map(|r| self.constants[r].clone())
                .collect();
            let mut widened = 0;
            let Ok(out) = self.exec_values(ins, args, &none, &mut widened) else {
                continue;
            };
            let mut stored = Vec::with_capacity(out.len());
            for t in out {
                // Materialized row-major: a transposed weight is laid out once for the GEMM
                // (a packed value already is).
                match t {
                    Value::Float(t) => match download_f32::<B>(t) {
                        Ok((v, shape)) => {
                            stored.push(Value::Float(upload_f32::<B>(v, &shape, &self.device)))
                        }
                        Err(_) => break,
                    },
                    p @ (Value::Packed(_) | Value::Exact(_)) => stored.push(p),
                }
            }
            if stored.len() != ins.results.len() {
                continue;
            }
            for (t, &r) in stored.into_iter().zip(&ins.results) {
                self.constants.insert(r, t);
            }
            self.instrs[idx].how = Lowering::Folded;
        }
    }

    /// Hands every kernel instruction with a [preparation](crate::kernels::registry::Preparation)
    /// its constant operands and keeps the prepared form it returns (a packed weight). A
    /// preparation that fails leaves the instruction to read its operands as they are.
    fn prepare_constants(&mut self) {
        for idx in 0..self.instrs.len() {
            let ins = &self.instrs[idx];
            let (Lowering::Kernel, Some(entry)) = (ins.how, ins.kernel) else {
                continue;
            };
            let Some(prep) = entry.prepare else { continue };
            if !ins.operands.iter().any(|r| self.constants.contains_key(r)) {
                continue;
            }
            let held: Vec<Option<host_view::Held<'_>>> = ins
                .operands
                .iter()
                .map(|r| match self.constants.get(r) {
                    Some(Value::Float(t)) => host_view::hold::<B>(t).ok(),
                    _ => None,
                })
                .collect();
            // Constants as the kernel would read them: float ones as views, packed ones packed;
            // a float constant that cannot be held is not offered (the run reads it).
            let mut operands: Vec<Option<crate::kernels::registry::TypedIn<'_>>> = vec![];
            for (r, h) in ins.operands.iter().zip(&held) {
                operands.push(match (self.constants.get(r), h) {
                    (Some(Value::Packed(p)), _) => {
                        Some(crate::kernels::registry::TypedIn::Packed(p))
                    }
                    (Some(Value::Float(_)), Some(h)) => {
                        h.view().ok().map(crate::kernels::registry::TypedIn::F32)
                    }
                    _ => None,
                });
            }
            let prepared = (prep.prepare)(&ins.op, &operands);
            drop(operands);
            drop(held);
            if let Ok(Some(p)) = prepared {
                self.instrs[idx].prepared = Some(Arc::new(p));
            }
        }
    }

    /// Drops the constants that no instruction still reads (folded instructions and operands
    /// replaced by a prepared form do not read) and no output returns; recounts the bytes the
    /// program holds for constants, prepared forms included.
    fn drop_unread_constants(&mut self) {
        let mut read: std::collections::HashSet<usize> = self.output_regs.iter().copied().collect();
        for ins in &self.instrs {
            if ins.how == Lowering::Folded {
                continue;
            }
            for (i, &r) in ins.operands.iter().enumerate() {
                if !ins.operand_prepared(i) {
                    read.insert(r);
                }
            }
        }
        self.constants.retain(|r, _| read.contains(r));
        self.constant_bytes = self
            .constants
            .values()
            .map(Value::storage_bytes)
            .sum::<u64>()
            + self
                .instrs
                .iter()
                .filter_map(|i| i.prepared.as_ref())
                .map(|p| p.bytes as u64)
                .sum::<u64>();
    }

    /// Start (`true`) or stop recording the time of each op kind (callees and loop bodies are
    /// counted under `call` / `for`). Switching on clears what was recorded.
    pub fn set_profiling(&self, on: bool) {
        if let Ok(mut p) = self.profile.lock() {
            *p = on.then(HashMap::new);
        }
    }

    /// The time recorded per op kind since profiling was switched on, slowest first. Ops that
    /// ran on a registry kernel are keyed `op [kernel]` (e.g. `linear [linear-f32-gemm]`), the
    /// others by the op name; [`profile_op_name`] gives back the op name of a key.
    pub fn op_profile(&self) -> Vec<fuselage_ir::OpTime> {
        let mut v: Vec<fuselage_ir::OpTime> = self
            .profile
            .lock()
            .ok()
            .and_then(|p| p.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|(op, (calls, seconds))| fuselage_ir::OpTime { op, calls, seconds })
            .collect();
        v.sort_by(|a, b| b.seconds.total_cmp(&a.seconds).then(a.op.cmp(&b.op)));
        v
    }

    /// Run on host tensors (in parameter order); outputs in output order.
    pub fn run_tensors(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, LowerError> {
        let bindings = fuselage_ir::eval::bind_inputs_with(
            &self.function,
            &self.graph,
            inputs,
            &self.module.facts,
        )
        .map_err(LowerError::Inputs)?;
        let args = inputs
            .iter()
            .map(|t| Value::upload(t, &self.device))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|m| LowerError::Inputs(IrError::Shape(m)))?;
        let out = self.run_values(args, &bindings)?;
        let tys = self.graph.output_types();
        out.into_iter()
            .zip(tys)
            .zip(&self.graph.outputs)
            .map(|((t, ty), o)| {
                let dtype = ty.map(|t| t.dtype).unwrap_or(DType::F32);
                t.download(dtype).map_err(|message| LowerError::Run {
                    function: self.function.clone(),
                    node: self.graph.describe(o.value.node),
                    op: "return".into(),
                    message,
                })
            })
            .collect()
    }

    /// Run on device values already bound to symbol sizes.
    pub(crate) fn run_values(
        &self,
        inputs: Vec<Value<B>>,
        bindings: &HashMap<String, u64>,
    ) -> Result<Vec<Value<B>>, LowerError> {
        if inputs.len() != self.input_regs.len() {
            return Err(LowerError::Graph {
                function: self.function.clone(),
                message: format!(
                    "expected {} inputs, found {}",
                    self.input_regs.len(),
                    inputs.len()
                ),
            });
        }
        // Every value's size under these bindings must fit the memory budget (f32: 4 bytes);
        // fixed shapes were checked when the module was verified.
        for ins in &self.instrs {
            for (k, ty) in ins.result_types.iter().enumerate() {
                if ty.shape.iter().all(|d| d.fixed().is_some()) {
                    continue;
                }
                if let Ok(shape) = ty.resolve(bindings) {
                    fuselage_ir::limits::check_budget(
                        &format!("result {k} ({ty} = {shape:?})"),
                        fuselage_ir::limits::elements(&shape),
                        4,
                    )
                    .map_err(|message| LowerError::Run {
                        function: self.function.clone(),
                        node: self.graph.describe(ins.node),
                        op: ins.op.name().into(),
                        message,
                    })?;
                }
            }
        }
        let mut regs: Vec<Option<Value<B>>> = (0..self.n_regs).map(|_| None).collect();
        let mut live_bytes: u64 = 0;
        let mut peak: u64 = 0;
        let mut widened: u64 = 0;
        let bytes_of = Value::storage_bytes;
        for (r, t) in self.input_regs.iter().zip(inputs) {
            live_bytes += bytes_of(&t);
            regs[*r] = Some(t);
        }
        peak = peak.max(live_bytes);
        let profiling = self.profile.lock().map(|p| p.is_some()).unwrap_or(false);
        let mut timings: Vec<(usize, f64)> = Vec::new();
        let _pool = self
            .pooling
            .then(|| crate::kernels::buffer::install(self.pool.clone()));
        let pool_before = self.pool.counters();
        for (index, ins) in self.instrs.iter().enumerate() {
            let err = |message: String| LowerError::Run {
                function: self.function.clone(),
                node: self.graph.describe(ins.node),
                op: ins.op.name().into(),
                message,
            };
            match &ins.op {
                Op::Input(_) => continue,
                Op::Constant(_) => {
                    let t = self.constants.get(&ins.results[0]).cloned();
                    regs[ins.results[0]] = t;
                    continue;
                }
                _ if ins.how == Lowering::Folded => {
                    for &r in &ins.results {
                        regs[r] = self.constants.get(&r).cloned();
                    }
                    continue;
                }
                _ => {}
            }
            let mut args = Vec::with_capacity(ins.operands.len());
            for (i, &r) in ins.operands.iter().enumerate() {
                // An operand the kernel prepared at lowering is not read (nor kept).
                if ins.operand_prepared(i) {
                    continue;
                }
                args.push(
                    regs[r]
                        .clone()
                        .ok_or_else(|| err(format!("register {r} is empty")))?,
                );
            }
            // Operands whose last reader this is are released after the op ran (its results
            // and operands coexist while it runs).
            let mut released = 0u64;
            let mut freed = Vec::with_capacity(ins.frees.len());
            for &r in &ins.frees {
                if let Some(t) = regs[r].take() {
                    if !self.constants.contains_key(&r) {
                        released += bytes_of(&t);
                        freed.push(t);
                    }
                }
            }
            let started = profiling.then(std::time::Instant::now);
            let out = self
                .exec_values(ins, args, bindings, &mut widened)
                .map_err(err)?;
            // The op has dropped its operands: storage of freed values that nothing else
            // references (no view, no output) goes to the pool.
            for v in freed {
                if let (Value::Float(t), true) = (v, self.pooling) {
                    host_view::reclaim::<B>(t, &self.pool);
                }
            }
            if let Some(t0) = started {
                timings.push((index, t0.elapsed().as_secs_f64()));
            }
            if out.len() != ins.results.len() {
                return Err(err(format!(
                    "produced {} results, declared {}",
                    out.len(),
                    ins.results.len()
                )));
            }
            for ((t, &r), ty) in out.into_iter().zip(&ins.results).zip(&ins.result_types) {
                if let Ok(want) = ty.resolve(bindings) {
                    if t.shape() != want {
                        return Err(err(format!(
                            "produced shape {:?}, declared {ty} = {want:?}",
                            t.shape()
                        )));
                    }
                }
                live_bytes += bytes_of(&t);
                regs[r] = Some(t);
            }
            peak = peak.max(live_bytes);
            live_bytes = live_bytes.saturating_sub(released);
        }
        if profiling {
            if let Ok(mut p) = self.profile.lock() {
                if let Some(p) = p.as_mut() {
                    for (index, secs) in timings {
                        let e = p
                            .entry(self.instrs[index].profile_key())
                            .or_insert((0, 0.0));
                        e.0 += 1;
                        e.1 += secs;
                    }
                }
            }
        }
        let pool = self.pool.counters();
        // The pool never needs more than the run's peak of live values to serve the next run
        // at these sizes (burn's own op results also come back to it, and would otherwise pile
        // up); beyond that, freed storage goes back to the allocator.
        self.pool.set_limit(2 * peak);
        if let Ok(mut s) = self.stats.lock() {
            s.peak_bytes = peak;
            s.constant_bytes = self.constant_bytes;
            s.packed_widened = widened;
            s.pool_reused = pool.reused - pool_before.reused;
            s.pool_fresh = pool.fresh - pool_before.fresh;
            s.pool_held_bytes = pool.held_bytes;
        }
        self.output_regs
            .iter()
            .map(|&r| {
                regs[r].clone().ok_or_else(|| LowerError::Graph {
                    function: self.function.clone(),
                    message: format!("output register {r} was not computed"),
                })
            })
            .collect()
    }
}

impl<B: Backend> Executor for Program<B> {
    fn name(&self) -> &str {
        executor_name::<B>()
    }

    /// Runs the lowered function. When `module`/`function` is not the one this program was
    /// lowered from (a pass changed it), the function is lowered afresh for this call.
    fn run(
        &self,
        module: &Module,
        function: &str,
        inputs: &[Tensor],
    ) -> Result<Vec<Tensor>, IrError> {
        if self.is_lowered_from(module, function) {
            return Ok(self.run_tensors(inputs)?);
        }
        let opts = LowerOptions {
            native_kernels: self.use_kernels,
            ..Default::default()
        };
        let p = lower::<B>(module, function, &self.device, &opts)?;
        Ok(p.run_tensors(inputs)?)
    }

    fn set_profiling(&self, on: bool) {
        Program::set_profiling(self, on)
    }

    /// A session whose state stays on this program's device; this program runs its own
    /// function, other functions of `module` are lowered on first use.
    fn session<'a>(&'a self, module: &'a Module) -> Box<dyn fuselage_ir::Session + 'a> {
        let opts = LowerOptions {
            native_kernels: self.use_kernels,
            ..Default::default()
        };
        Box::new(DeviceSession::new(
            module,
            self.device.clone(),
            opts,
            Some(self),
        ))
    }

    fn op_profile(&self) -> Vec<fuselage_ir::OpTime> {
        Program::op_profile(self)
    }
}

/// An [`Executor`] that lowers the function it is asked to run onto `B` and runs it (for the
/// pass manager's numeric checks and the CLI, where the module changes between runs).
#[derive(Clone, Debug)]
pub struct LoweringExecutor<B: Backend> {
    /// The device.
    pub device: B::Device,
    /// Lowering options.
    pub options: LowerOptions,
}

impl<B: Backend> Executor for LoweringExecutor<B> {
    fn name(&self) -> &str {
        executor_name::<B>()
    }

    fn run(
        &self,
        module: &Module,
        function: &str,
        inputs: &[Tensor],
    ) -> Result<Vec<Tensor>, IrError> {
        let p = lower::<B>(module, function, &self.device, &self.options)?;
        Ok(p.run_tensors(inputs)?)
    }

    /// A session whose state stays on the device; each function is lowered once.
    fn session<'a>(&'a self, module: &'a Module) -> Box<dyn fuselage_ir::Session + 'a> {
        Box::new(DeviceSession::<B>::new(
            module,
            self.device.clone(),
            self.options.clone(),
            None,
        ))
    }
}

/// A CPU executor with default options.
pub fn cpu_executor() -> LoweringExecutor<CpuBackend> {
    LoweringExecutor {
        device: Default::default(),
        options: LowerOptions::default(),
    }
}

/// Timing of one lowered function on pre-uploaded inputs (for benchmarks: excludes the host
/// conversion at the boundary). Returns the seconds of each of `iters` runs after `warmup` runs.
#[doc(hidden)]
pub fn time_runs<B: Backend>(
    program: &Program<B>,
    inputs: &[Tensor],
    warmup: usize,
    iters: usize,
) -> Result<Vec<f64>, LowerError> {
    let bindings = fuselage_ir::eval::bind_inputs_with(
        &program.function,
        &program.graph,
        inputs,
        &program.module.facts,
    )
    .map_err(LowerError::Inputs)?;
    let args = inputs
        .iter()
        .map(|t| Value::upload(t, &program.device))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|m| LowerError::Inputs(IrError::Shape(m)))?;
    let mut times = vec![];
    for i in 0..warmup + iters {
        let t0 = std::time::Instant::now();
        let out = program.run_values(args.clone(), &bindings)?;
        // Force completion (synchronizes asynchronous backends).
        for o in out.into_iter().filter_map(|o| o.as_float().cloned()) {
            download_f32::<B>(o).map_err(|message| LowerError::Run {
                function: program.function.clone(),
                node: String::new(),
                op: "return".into(),
                message,
            })?;
        }
        if i >= warmup {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    Ok(times)
}
