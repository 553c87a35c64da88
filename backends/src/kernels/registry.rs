//! The kernel registry: every native CPU kernel the lowering may pick, in one list.
//!
//! Each kernel file declares its [`KernelEntry`] (or several) next to the kernel; [`KERNELS`]
//! lists them. Adding a kernel is one file and one line in that list. For each node the lowering
//! asks [`select`] for the cheapest entry of the node's op whose static check
//! ([`KernelEntry::applies`]: dtypes, ranks, attributes) and CPU guard ([`KernelEntry::guard`])
//! pass; the chosen entry is recorded in the instruction and runs it ([`KernelEntry::run`]).
//! `docs/kernels.md` carries the table [`markdown_table`] renders (a test keeps them equal;
//! `fuselage kernels --markdown` prints it).

use super::cpu::CpuFeatures;
use super::packed::PackedTensor;
use super::{View, R};
use fuselage_ir::ops::util::normalize_axis;
use fuselage_ir::{DType, Op, TensorType};
use std::fmt;

/// The static check of a kernel at lowering time: `Err` says why the kernel does not apply.
pub type Applies = fn(&Op, &[TensorType], &[TensorType]) -> Result<(), String>;

/// The result of a kernel: row-major data of `shape`, or data laid out under `strides` (the
/// elements are then `data[Σ i·strides]`).
#[derive(Clone, Debug)]
pub struct KernelOut {
    /// The elements.
    pub data: Vec<f32>,
    /// The result's shape.
    pub shape: Vec<usize>,
    /// Strides of `data` when it is not row-major.
    pub strides: Option<Vec<usize>>,
}

impl KernelOut {
    /// A row-major result.
    pub fn row_major((data, shape): (Vec<f32>, Vec<usize>)) -> KernelOut {
        KernelOut {
            data,
            shape,
            strides: None,
        }
    }
}

/// One native kernel: what it computes, when it applies, and how it runs.
pub struct KernelEntry {
    /// Unique name, `op-dtype-how` (e.g. `linear-f32-gemm`).
    pub name: &'static str,
    /// The IR op it implements ([`Op::name`]).
    pub op: &'static str,
    /// Operand and result dtypes, e.g. `f32, f32[, f32] -> f32`.
    pub signature: &'static str,
    /// What it does, in one sentence.
    pub doc: &'static str,
    /// Static check at lowering time on the op, its operand types and its result types.
    pub applies: Applies,
    /// Relative cost: among the entries that apply, the lowest wins (ties: list order).
    pub cost: u32,
    /// The CPU features the kernel needs, in words (`any` when it runs everywhere).
    pub requires: &'static str,
    /// Whether this CPU can run the kernel.
    pub guard: fn(&CpuFeatures) -> bool,
    /// How the kernel lays out constant operands once, at lowering time (a GEMM's packed
    /// weight), and runs on that form; `None` when it reads every operand as it is.
    pub prepare: Option<Preparation>,
    /// Runs the kernel.
    pub run: KernelRun,
}

/// [`Preparation::prepare`]: the node's op and operands (`Some` for constants: an f32 view, or
/// a packed tensor) to the prepared form, if any.
pub type PrepareFn = fn(&Op, &[Option<TypedIn<'_>>]) -> R<Option<Prepared>>;

/// A kernel's preparation of its constant operands: at lowering the program hands
/// [`Preparation::prepare`] the node's operands (the constants among them), keeps the
/// [`Prepared`] form it returns in the instruction and drops the constants it replaces; each
/// run then calls [`Preparation::run`] with the other operands.
#[derive(Clone, Copy)]
pub struct Preparation {
    /// What is prepared, in words (the `prepared at lowering` column of `docs/kernels.md`).
    pub doc: &'static str,
    /// Given the node's operands — `Some` for the constants, `None` for the values a run
    /// computes — the prepared form, or `None` when nothing is to be prepared.
    pub prepare: PrepareFn,
    /// Runs the kernel on the operands [`Prepared::replaces`] does not name (in operand order)
    /// and the prepared form; of the kernel's kind ([`KernelRun`]).
    pub run: PreparedRun,
}

/// [`PreparedRun::Typed`]: op, context, the other operands and the prepared form to results.
pub type PreparedTypedRun = fn(&Op, &TypedCx<'_>, &[TypedIn<'_>], &Prepared) -> R<Vec<TypedOut>>;

/// How a kernel with a prepared operand runs (the two kinds of [`KernelRun`]).
#[derive(Clone, Copy)]
pub enum PreparedRun {
    /// An f32 kernel: the other operands read in place.
    F32(fn(&Op, &[View<'_>], &Prepared) -> R<KernelOut>),
    /// A typed kernel: the other operands as they are (packed ones packed).
    Typed(PreparedTypedRun),
}

/// Constant operands of one node laid out by [`Preparation::prepare`], kept by the program in
/// place of those constants.
pub struct Prepared {
    /// The operand positions it replaces (sorted): runs do not receive them.
    pub replaces: Vec<usize>,
    /// The prepared data, for the kernel's own [`Preparation::run`] (which downcasts it).
    pub data: Box<dyn std::any::Any + Send + Sync>,
    /// Bytes it holds.
    pub bytes: usize,
    /// What was prepared, for `--explain-lowering` (`weight [384, 1536] packed for the avx2
    /// 6×16 micro-kernel, 2.3 MiB`).
    pub what: String,
}

impl fmt::Debug for Prepared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prepared")
            .field("replaces", &self.replaces)
            .field("bytes", &self.bytes)
            .field("what", &self.what)
            .finish()
    }
}

impl Prepared {
    /// The prepared data as a `T`, or an error naming the kernel when it is another type.
    pub fn get<T: 'static>(&self, kernel: &str) -> R<&T> {
        self.data.downcast_ref::<T>().ok_or_else(|| {
            format!(
                "{kernel}: the prepared operand is not a {}",
                std::any::type_name::<T>()
            )
        })
    }

    /// Whether operand `i` is replaced.
    pub fn replaces(&self, i: usize) -> bool {
        self.replaces.contains(&i)
    }
}

/// How a kernel runs.
#[derive(Clone, Copy)]
pub enum KernelRun {
    /// On f32 operands read in place through their strides, giving one f32 result.
    F32(fn(&Op, &[View<'_>]) -> R<KernelOut>),
    /// On typed operands (f32 views or [`PackedTensor`]s), giving typed results: the kernels of
    /// the packed low-precision values (quantize, dequantize, cast, data movement).
    Typed(fn(&Op, &TypedCx<'_>, &[TypedIn<'_>]) -> R<Vec<TypedOut>>),
}

impl KernelRun {
    /// Whether the kernel takes and gives packed values.
    pub fn is_typed(&self) -> bool {
        matches!(self, KernelRun::Typed(_))
    }
}

/// What a typed kernel knows of its node besides the op.
pub struct TypedCx<'a> {
    /// The module of the node (callees, constants).
    pub module: &'a fuselage_ir::Module,
    /// Symbol sizes of the run.
    pub bindings: &'a std::collections::HashMap<String, u64>,
    /// The node's operand types.
    pub operand_types: &'a [TensorType],
    /// The node's result types.
    pub result_types: &'a [TensorType],
    /// The results' concrete shapes under the run's bindings.
    pub result_shapes: &'a [Vec<usize>],
}

/// An operand of a typed kernel.
pub enum TypedIn<'a> {
    /// An f32 tensor (also the storage of f16/bf16 and wide integer values), read in place.
    F32(View<'a>),
    /// A packed low-precision tensor.
    Packed(&'a PackedTensor),
}

/// A result of a typed kernel.
pub enum TypedOut {
    /// An f32 tensor whose values are already values of the result's dtype.
    F32(KernelOut),
    /// A packed low-precision tensor.
    Packed(PackedTensor),
}

impl fmt::Debug for KernelEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KernelEntry")
            .field("name", &self.name)
            .field("op", &self.op)
            .field("signature", &self.signature)
            .field("cost", &self.cost)
            .finish()
    }
}

impl PartialEq for KernelEntry {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for KernelEntry {}

/// Every kernel, in the order ties in cost are broken.
pub static KERNELS: &[&KernelEntry] = &[
    &super::matmul::ENTRY,
    &super::linear::ENTRY,
    &super::qlinear::ENTRY,
    &super::attention::ENTRY,
    &super::layer_norm::ENTRY,
    &super::rms_norm::ENTRY,
    &super::softmax::ENTRY,
    &super::gelu::ERF_ENTRY,
    &super::gelu::TANH_ENTRY,
    &super::sigmoid::SIGMOID_ENTRY,
    &super::sigmoid::SILU_ENTRY,
    &super::rope::ENTRY,
    &super::quantize::ENTRY,
    &super::dequantize::ENTRY,
    &super::cast::ENTRY,
    &super::packed_move::RESHAPE,
    &super::packed_move::TRANSPOSE,
    &super::packed_move::BROADCAST_TO,
    &super::packed_move::CONCAT,
    &super::packed_move::SLICE,
    &super::packed_move::SPLIT,
    &super::packed_move::GATHER,
];

/// The entry called `name`.
pub fn find(name: &str) -> Option<&'static KernelEntry> {
    KERNELS.iter().copied().find(|e| e.name == name)
}

/// A kernel considered for a node and not chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The kernel's name.
    pub kernel: &'static str,
    /// Why (`linear-f32-gemm: operand 0 is i16` reads `kernel: reason`).
    pub reason: String,
}

/// The outcome of [`select`]: the chosen kernel, if any, and every other candidate with the
/// reason it was not chosen.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// The cheapest entry that applies and whose guard passes.
    pub chosen: Option<&'static KernelEntry>,
    /// The other entries of the op, in registry order.
    pub rejected: Vec<Rejection>,
}

/// Picks the kernel for `op` with these operand and result types on a CPU with `features`.
pub fn select(
    op: &Op,
    operands: &[TensorType],
    results: &[TensorType],
    features: &CpuFeatures,
) -> Selection {
    select_from(KERNELS, op, operands, results, features)
}

/// [`select`] among `entries`.
fn select_from(
    entries: &[&'static KernelEntry],
    op: &Op,
    operands: &[TensorType],
    results: &[TensorType],
    features: &CpuFeatures,
) -> Selection {
    let mut passing: Vec<&'static KernelEntry> = vec![];
    let mut rejected = vec![];
    for &e in entries.iter().filter(|e| e.op == op.name()) {
        if let Err(reason) = (e.applies)(op, operands, results) {
            rejected.push(Rejection {
                kernel: e.name,
                reason,
            });
        } else if !(e.guard)(features) {
            rejected.push(Rejection {
                kernel: e.name,
                reason: format!("this CPU lacks {}", e.requires),
            });
        } else {
            passing.push(e);
        }
    }
    // The first of the cheapest (min_by_key keeps the first minimum).
    let chosen = passing.iter().copied().min_by_key(|e| e.cost);
    for e in passing {
        if chosen.is_some_and(|c| !std::ptr::eq(c, e)) {
            rejected.push(Rejection {
                kernel: e.name,
                reason: format!(
                    "costs {} where {} costs {}",
                    e.cost,
                    chosen.map_or("", |c| c.name),
                    chosen.map_or(0, |c| c.cost)
                ),
            });
        }
    }
    Selection { chosen, rejected }
}

/// The registry as a Markdown table (the one in `docs/kernels.md`).
pub fn markdown_table() -> String {
    let mut s = String::from(
        "| kernel | op | signature | cost | CPU features | what it does | prepared at lowering |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for e in KERNELS {
        s.push_str(&format!(
            "| `{}` | `{}` | `{}` | {} | {} | {} | {} |\n",
            e.name,
            e.op,
            e.signature,
            e.cost,
            e.requires,
            e.doc.replace('|', "\\|"),
            e.prepare.map_or("—", |p| p.doc).replace('|', "\\|")
        ));
    }
    s
}

// ---- helpers for the entries' checks and runs -------------------------------------------------

/// A guard that passes on every CPU (the kernel picks its instruction set at run time).
pub(crate) fn any_cpu(_: &CpuFeatures) -> bool {
    true
}

/// Whether an f32 kernel runs on values of `dtype`: f32, and bf16/f16, whose values f32 holds
/// exactly (the lowering stores them as f32); the kernel computes in f32 and the lowering rounds
/// its result to the result's dtype. The `float` of the kernels' signatures.
pub fn f32_kernel_dtype(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::BF16 | DType::F16)
}

/// `Ok` when every operand and result is a `float` of the f32 kernels (f32, bf16, f16);
/// otherwise names the first that is not.
pub(crate) fn all_f32(operands: &[TensorType], results: &[TensorType]) -> Result<(), String> {
    first_f32(operands, "operand")?;
    first_f32(results, "result")
}

/// `Ok` when every type of `tys` is a `float` of the f32 kernels ([`f32_kernel_dtype`]);
/// otherwise `"{what} {i} is {dtype}"`.
pub(crate) fn first_f32(tys: &[TensorType], what: &str) -> Result<(), String> {
    match tys.iter().position(|t| !f32_kernel_dtype(t.dtype)) {
        Some(i) => Err(format!("{what} {i} is {}", tys[i].dtype)),
        None => Ok(()),
    }
}

/// `Ok` when operand 0's `axis` is its last axis.
pub(crate) fn last_axis(op: &Op, axis: i64, operands: &[TensorType]) -> Result<(), String> {
    let rank = operands.first().map(|t| t.rank()).unwrap_or(0);
    match normalize_axis(op.name(), axis, rank) {
        Ok(a) if a + 1 == rank => Ok(()),
        Ok(a) => Err(format!(
            "axis {axis} is axis {a} of a rank-{rank} operand, not the last"
        )),
        Err(e) => Err(e.0),
    }
}

/// Operand `i` of a kernel, or an error naming the kernel.
pub(crate) fn operand<'v, 'a>(kernel: &str, v: &'v [View<'a>], i: usize) -> R<&'v View<'a>> {
    v.get(i)
        .ok_or_else(|| format!("{kernel}: missing operand {i} (found {})", v.len()))
}

/// The number of elements from `axis` to the end of operand `x` (a row of a norm) and `x`'s shape.
pub(crate) fn trailing(op: &Op, axis: i64, x: &View<'_>) -> R<(usize, Vec<usize>)> {
    let d = normalize_axis(op.name(), axis, x.shape.len()).map_err(|e| e.0)?;
    Ok((x.shape[d..].iter().product(), x.shape.clone()))
}

/// The error of a kernel run on an op it does not implement.
pub(crate) fn wrong_op(kernel: &str, op: &Op) -> String {
    format!("{kernel}: cannot run a `{}` node", op.name())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fuselage_ir::Dim;

    fn f32s(shape: &[u64]) -> TensorType {
        TensorType::new(DType::F32, shape.iter().map(|&d| Dim::from(d)))
    }

    #[test]
    fn registry_names_are_unique_and_ops_are_real() {
        let mut names: Vec<&str> = KERNELS.iter().map(|e| e.name).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n, "duplicate kernel names in {names:?}");
        for e in KERNELS {
            assert!(
                fuselage_ir::ops::OP_NAMES.contains(&e.op),
                "{}: `{}` is not an op",
                e.name,
                e.op
            );
            assert!(
                e.name.starts_with(e.op),
                "{} does not start with {}",
                e.name,
                e.op
            );
            assert!(!e.doc.is_empty() && !e.signature.is_empty() && !e.requires.is_empty());
            assert!(find(e.name).is_some_and(|f| std::ptr::eq(f, *e)));
        }
        assert!(find("no-such-kernel").is_none());
    }

    #[test]
    fn selection_reports_why_a_kernel_does_not_apply() {
        let op = Op::from_attrs("linear", serde_json::json!({})).unwrap();
        let x = f32s(&[2, 3]);
        let w = f32s(&[3, 4]);
        let y = f32s(&[2, 4]);
        let s = select(
            &op,
            &[x.clone(), w.clone()],
            std::slice::from_ref(&y),
            CpuFeatures::get(),
        );
        assert_eq!(s.chosen.map(|e| e.name), Some("linear-f32-gemm"));
        assert!(s.rejected.is_empty(), "{:?}", s.rejected);
        // bf16 values are held in f32: the f32 kernel takes them (and its result is rounded).
        let xb = TensorType::new(DType::BF16, x.shape.clone());
        let (wb, yb) = (w.with_dtype(DType::BF16), y.with_dtype(DType::BF16));
        let s = select(&op, &[xb, wb], &[yb], CpuFeatures::get());
        assert_eq!(s.chosen.map(|e| e.name), Some("linear-f32-gemm"));
        let xi = TensorType::new(DType::I16, x.shape.clone());
        let s = select(&op, &[xi, w], &[y], CpuFeatures::get());
        assert!(s.chosen.is_none());
        assert_eq!(s.rejected.len(), 1);
        assert_eq!(s.rejected[0].kernel, "linear-f32-gemm");
        assert_eq!(s.rejected[0].reason, "operand 0 is i16");
    }

    #[test]
    fn selection_skips_failing_guards_and_picks_the_cheapest() {
        let op = Op::from_attrs("linear", serde_json::json!({})).unwrap();
        let (x, w, y) = (f32s(&[2, 3]), f32s(&[3, 4]), f32s(&[2, 4]));
        let gemm = find("linear-f32-gemm").unwrap();
        // A cheaper kernel whose guard no CPU passes is rejected with the features it lacks.
        let never: &'static KernelEntry = Box::leak(Box::new(KernelEntry {
            name: "linear-f32-amx",
            guard: |_| false,
            requires: "amx_bf16",
            cost: 1,
            ..*gemm
        }));
        let s = select_from(
            &[never, gemm],
            &op,
            &[x.clone(), w.clone()],
            std::slice::from_ref(&y),
            CpuFeatures::get(),
        );
        assert_eq!(s.chosen.map(|e| e.name), Some("linear-f32-gemm"));
        assert_eq!(
            s.rejected,
            vec![Rejection {
                kernel: "linear-f32-amx",
                reason: "this CPU lacks amx_bf16".into()
            }]
        );
        // A cheaper kernel that runs here wins; the dearer one is rejected for its cost.
        let cheap: &'static KernelEntry = Box::leak(Box::new(KernelEntry {
            name: "linear-f32-cheap",
            cost: 1,
            ..*gemm
        }));
        let s = select_from(
            &[gemm, cheap],
            &op,
            &[x, w],
            std::slice::from_ref(&y),
            CpuFeatures::get(),
        );
        assert_eq!(s.chosen.map(|e| e.name), Some("linear-f32-cheap"));
        assert_eq!(s.rejected.len(), 1);
        assert_eq!(s.rejected[0].kernel, "linear-f32-gemm");
        assert!(s.rejected[0].reason.contains("costs 10"), "{s:?}");
    }

    #[test]
    fn gelu_picks_the_entry_of_its_approximation_and_softmax_needs_the_last_axis() {
        let x = f32s(&[2, 8]);
        for (approx, want, other) in [
            ("none", "gelu-erf-f32", "gelu-tanh-f32"),
            ("tanh", "gelu-tanh-f32", "gelu-erf-f32"),
        ] {
            let op = Op::from_attrs("gelu", serde_json::json!({ "approximate": approx })).unwrap();
            let s = select(
                &op,
                std::slice::from_ref(&x),
                std::slice::from_ref(&x),
                CpuFeatures::get(),
            );
            assert_eq!(s.chosen.map(|e| e.name), Some(want));
            assert_eq!(s.rejected.len(), 1);
            assert_eq!(s.rejected[0].kernel, other);
        }
        let op = Op::from_attrs("softmax", serde_json::json!({ "axis": 0 })).unwrap();
        let s = select(
            &op,
            std::slice::from_ref(&x),
            std::slice::from_ref(&x),
            CpuFeatures::get(),
        );
        assert!(s.chosen.is_none());
        assert!(s.rejected[0].reason.contains("not the last"), "{s:?}");
        let op = Op::from_attrs("softmax", serde_json::json!({ "axis": -1 })).unwrap();
        let s = select(
            &op,
            std::slice::from_ref(&x),
            std::slice::from_ref(&x),
            CpuFeatures::get(),
        );
        assert_eq!(s.chosen.map(|e| e.name), Some("softmax-f32-rows"));
    }

    #[test]
    fn docs_kernel_table_matches_the_registry() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/kernels.md");
        let doc = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let (begin, end) = ("<!-- kernels:begin -->\n", "<!-- kernels:end -->");
        let table = doc
            .split_once(begin)
            .and_then(|(_, rest)| rest.split_once(end))
            .map(|(table, _)| table)
            .unwrap_or_else(|| panic!("{path}: no `{begin}` … `{end}` markers"));
        assert!(
            table == markdown_table(),
            "{path} lists other kernels than the registry: regenerate the table between the \
             markers with `fuselage kernels --markdown` (cargo run --release -- kernels \
             --markdown)\n--- registry ---\n{}",
            markdown_table()
        );
    }

    #[test]
    fn markdown_table_has_one_row_per_kernel() {
        let t = markdown_table();
        assert_eq!(t.lines().count(), KERNELS.len() + 2);
        for e in KERNELS {
            assert!(t.contains(&format!("`{}`", e.name)), "{t}");
        }
    }
}
