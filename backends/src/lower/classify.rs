//! Which path each op takes in the lowering ([`Lowering`]), and why.
//!
//! In order: values of a rank burn-ndarray cannot hold run on the host; collectives are trivial
//! at world 1; with native kernels on, the [kernel registry](crate::kernels::registry) picks a
//! kernel (the f32 kernels and those of packed low-precision values); the
//! [host rules](HOST_RULES) send ops burn cannot compute exactly to the reference semantics on
//! the host; everything else runs on burn's tensor operations. [`classify`] returns the decision with its reason, which the lowering
//! records and [`Program::explain_lowering`](super::Program::explain_lowering) reports.

use super::value::is_exact_held;
use super::Lowering;
use crate::kernels::cpu::CpuFeatures;
use crate::kernels::registry::{self, KernelEntry, Rejection};
use fuselage_ir::ops::pool::PoolKind;
use fuselage_ir::ops::reduce::ReduceKind;
use fuselage_ir::ops::scatter_elements::ScatterReduction;
use fuselage_ir::{DType, Op, TensorType};

type R<T> = Result<T, String>;

/// How one op is lowered, and why.
#[derive(Clone, Debug)]
pub(crate) struct Decision {
    /// The path.
    pub how: Lowering,
    /// The kernel, when `how` is [`Lowering::Kernel`].
    pub kernel: Option<&'static KernelEntry>,
    /// Why this path, in words.
    pub why: String,
    /// Kernels of the registry considered for the op and not chosen, with the reason.
    pub rejected: Vec<Rejection>,
}

impl Decision {
    fn new(how: Lowering, why: impl Into<String>) -> Decision {
        Decision {
            how,
            kernel: None,
            why: why.into(),
            rejected: vec![],
        }
    }
}

/// An op that runs through its reference semantics on the host when `when` holds.
pub(crate) struct HostRule {
    /// The op's name ([`Op::name`]).
    pub op: &'static str,
    /// Whether the rule applies to this op with these operand types.
    pub when: fn(&Op, &[TensorType]) -> bool,
    /// Why burn cannot run it.
    pub reason: &'static str,
}

fn always(_: &Op, _: &[TensorType]) -> bool {
    true
}

/// Spatial rank of an N-D vision op (operand 0's rank less batch and channel).
fn spatial_rank(operands: &[TensorType]) -> usize {
    operands.first().map_or(0, |t| t.rank()).saturating_sub(2)
}

/// The ops burn has no exact lowering for (checked before the kernels and burn's ops).
pub(crate) const HOST_RULES: &[HostRule] = &[
    HostRule {
        op: "qlinear",
        when: always,
        reason: "an exact integer GEMM and no kernel of the registry applies (native kernels \
                 off, or not the CPU backend): the reference semantics run on the host",
    },
    HostRule {
        op: "quantize",
        when: always,
        reason: "an exact low-precision codec and no packed kernel applies (native kernels \
                 off, or a dtype the kernel does not take): the reference semantics run on the \
                 host",
    },
    HostRule {
        op: "dequantize",
        when: always,
        reason: "an exact low-precision codec and no packed kernel applies (native kernels \
                 off, or a dtype the kernel does not take): the reference semantics run on the \
                 host",
    },
    HostRule {
        op: "top_k",
        when: always,
        reason: "selection with exact tie rules: the reference semantics run on the host",
    },
    HostRule {
        op: "mmca_attention",
        when: always,
        reason: "the multi-modal mask has no burn lowering",
    },
    HostRule {
        op: "dims",
        when: always,
        reason: "a handful of integers computed from the bindings",
    },
    HostRule {
        op: "scatter_elements",
        when: |op, operands| match op {
            Op::ScatterElements(s) => !native_scatter(s.reduction, operands),
            _ => false,
        },
        reason: "a mul/max/min reduction (NaN rules) or an add of bools (saturating at 1): \
                 burn has no exact primitive",
    },
    HostRule {
        op: "scatter_nd",
        when: |op, operands| match op {
            Op::ScatterNd(s) => !native_scatter(s.reduction, operands),
            _ => false,
        },
        reason: "a mul/max/min reduction (NaN rules) or an add of bools (saturating at 1): \
                 burn has no exact primitive",
    },
    HostRule {
        op: "mod",
        when: always,
        reason: "exact remainders: burn's float_remainder computes a - b·floor(a/b), \
                 which is not exact, and has no C fmod",
    },
    HostRule {
        op: "bitwise",
        when: always,
        reason: "exact integer bit patterns",
    },
    HostRule {
        op: "reduce",
        when: |op, _| matches!(op, Op::Reduce(r) if r.kind == ReduceKind::Prod),
        reason: "a product: burn's generic float_prod_dim is exp(Σ log x), wrong for negatives \
                 and zeros",
    },
    HostRule {
        op: "reduce",
        when: |op, _| matches!(op, Op::Reduce(r) if r.sequential),
        reason: "a sequential reduction rounds after every addition, which burn does not",
    },
    HostRule {
        op: "conv",
        when: |_, operands| !(1..=3).contains(&spatial_rank(operands)),
        reason: "burn has 1-D to 3-D convolutions only",
    },
    HostRule {
        op: "conv_transpose",
        when: |_, operands| !(1..=3).contains(&spatial_rank(operands)),
        reason: "burn has 1-D to 3-D transposed convolutions only",
    },
    HostRule {
        op: "pool",
        when: |op, operands| match op {
            Op::Pool(p) => {
                let r = spatial_rank(operands);
                let symmetric =
                    p.pads.is_empty() || p.pads[..p.pads.len() / 2] == p.pads[p.pads.len() / 2..];
                let native = (1..=2).contains(&r)
                    && symmetric
                    && match p.kind {
                        PoolKind::Max => p.storage_order == 0,
                        PoolKind::Avg => p.dilations.iter().all(|&d| d == 1),
                        PoolKind::Lp => false,
                    };
                !native
            }
            _ => false,
        },
        reason: "burn's pools are 1-D/2-D max and average pools with symmetric pads (average: \
                 no dilation; max: row-major indices); Lp pooling and 3-D are not",
    },
    HostRule {
        op: "grid_sample",
        when: always,
        reason: "burn has no grid sample with the reference's exact semantics",
    },
];

/// Why values of this op's rank cannot live in burn-ndarray.
const ODD_RANK: &str = "a value of rank 0 or above 6: burn-ndarray holds arrays of rank 1 to 6";

/// Scatter reductions lowered natively (`none`: a masked select; `add`: `float_select_add`,
/// whose sums the result rounding brings onto every dtype but bool).
fn native_scatter(r: ScatterReduction, operands: &[TensorType]) -> bool {
    match r {
        ScatterReduction::None => true,
        ScatterReduction::Add => operands.first().is_some_and(|t| t.dtype != DType::Bool),
        _ => false,
    }
}

/// Whether every result element of `op` is one of its operands' elements, a zero, an index or
/// a boolean: such a result needs no rounding onto its dtype, whatever the dtype.
pub(crate) fn selects_operand_values(op: &Op) -> bool {
    matches!(
        op,
        Op::Transpose(_)
            | Op::Reshape(_)
            | Op::BroadcastTo(_)
            | Op::Concat(_)
            | Op::Slice(_)
            | Op::Split(_)
            | Op::Gather(_)
            | Op::GatherElements(_)
            | Op::GatherNd(_)
            | Op::Pad(_)
            | Op::Trilu(_)
            | Op::Where(_)
            | Op::UpsampleNearest2d(_)
            | Op::Pool(fuselage_ir::ops::pool::Pool {
                kind: PoolKind::Max,
                ..
            })
            | Op::Call(_)
            | Op::For(_)
            | Op::Compare(_)
            | Op::Logical(_)
            | Op::Not(_)
            | Op::Iota(_)
            | Op::ArgMax(_)
            | Op::ArgMin(_)
    ) || matches!(op, Op::ScatterElements(s) if s.reduction == ScatterReduction::None)
        || matches!(op, Op::ScatterNd(s) if s.reduction == ScatterReduction::None)
}

/// Whether f32 computes `op`'s result exactly when every operand element is an f32 value: the
/// results are operand elements (not a pad's constant, an attribute), indices, or an exact
/// f32 operation of them. An exact-held result ([`is_exact_held`]) of any other op is
/// computed on the reference semantics.
pub(crate) fn exact_from_f32_operands(op: &Op) -> bool {
    (selects_operand_values(op) && !matches!(op, Op::Pad(_)))
        || matches!(
            op,
            Op::Cast(_) | Op::Abs(_) | Op::Neg(_) | Op::Maximum(_) | Op::Minimum(_)
        )
}

/// How `op` is executed and why (errors for ops that cannot run at all, e.g. collectives at
/// world > 1). `kernels`: native kernels may be chosen (on, and the CPU backend).
pub(crate) fn classify(
    op: &Op,
    operands: &[TensorType],
    results: &[TensorType],
    kernels: bool,
) -> R<Decision> {
    // burn-ndarray holds arrays of rank 1 to 6 and panics on others (reshaping to a scalar
    // included): such values take the reference path on the host.
    let odd_rank = operands.iter().any(|t| t.rank() > 6)
        || results.iter().any(|t| t.rank() == 0 || t.rank() > 6);
    if odd_rank && !matches!(op, Op::Input(_) | Op::Constant(_)) {
        return Ok(Decision::new(Lowering::Host, ODD_RANK));
    }
    let world = |w: u64| -> R<Decision> {
        if w == 1 {
            Ok(Decision::new(
                Lowering::Trivial,
                "a collective over world = 1 is the identity",
            ))
        } else {
            Err(format!(
                "a collective over world = {w} needs a communicator; the lowered program runs \
                 one rank (world = 1)"
            ))
        }
    };
    match op {
        Op::AllGather(c) => return world(c.world),
        Op::ReduceScatter(c) => return world(c.world),
        Op::AllReduce(c) => return world(c.world),
        Op::AllToAll(c) => return world(c.world),
        _ => {}
    }
    // A result f32 cannot hold exactly (wide integers, f64) of an op that f32 would round:
    // the reference semantics, exact.
    if let Some(t) = results.iter().find(|t| is_exact_held(t.dtype)) {
        if !exact_from_f32_operands(op) && !matches!(op, Op::Input(_) | Op::Constant(_)) {
            return Ok(Decision::new(
                Lowering::Host,
                format!(
                    "an {} result: computed exactly by the reference semantics (the device's \
                     f32 holds integers exactly only below 2^24, and f64 not at all)",
                    t.dtype
                ),
            ));
        }
    }
    // The registry first: a kernel that applies (the codec kernels of quantize/dequantize
    // included) is exact, where a host rule is the fallback when none does.
    let mut rejected = vec![];
    if kernels {
        let s = registry::select(op, operands, results, CpuFeatures::get());
        if let Some(k) = s.chosen {
            return Ok(Decision {
                how: Lowering::Kernel,
                kernel: Some(k),
                why: format!(
                    "the cheapest that applies of the registry's {} kernel(s) for `{}`",
                    s.rejected.len() + 1,
                    op.name()
                ),
                rejected: s.rejected,
            });
        }
        rejected = s.rejected;
    }
    if let Some(rule) = HOST_RULES
        .iter()
        .find(|r| r.op == op.name() && (r.when)(op, operands))
    {
        return Ok(Decision {
            rejected,
            ..Decision::new(Lowering::Host, rule.reason)
        });
    }
    let has_kernels = registry::KERNELS.iter().any(|k| k.op == op.name());
    let native = |what: &str| {
        let why = if !has_kernels {
            what.to_string()
        } else if !kernels {
            format!("{what} (native kernels are off or the backend is not the CPU backend)")
        } else {
            format!("{what} (no kernel of the registry applies)")
        };
        Decision {
            how: Lowering::Native,
            kernel: None,
            why,
            rejected: rejected.clone(),
        }
    };
    Ok(match op {
        Op::Input(_) => Decision::new(Lowering::Trivial, "an input of the function"),
        Op::Constant(_) => {
            Decision::new(Lowering::Trivial, "a constant, uploaded once at lowering")
        }
        Op::Conv(_) | Op::ConvTranspose(_) => {
            native("burn's convolution (asymmetric pads applied explicitly)")
        }
        Op::Pool(_) => native(
            "burn's pool (a ceil-mode size burn counts differently falls back to the host at \
             run time)",
        ),
        // Exact per-axis taps from the reference, gathered and weighted on the backend.
        Op::Resize(_) => native("the reference's exact taps, gathered and weighted on burn"),
        Op::Call(_) | Op::For(_) => native("a lowered callee / loop body"),
        // Ops the host rules above always take (kept here so that this match names every op).
        Op::Quantize(_)
        | Op::Dequantize(_)
        | Op::QLinear(_)
        | Op::TopK(_)
        | Op::MmcaAttention(_)
        | Op::Dims(_)
        | Op::Mod(_)
        | Op::Bitwise(_)
        | Op::GridSample(_) => Decision::new(Lowering::Host, "no burn lowering"),
        Op::AllGather(_) | Op::ReduceScatter(_) | Op::AllReduce(_) | Op::AllToAll(_) => {
            Decision::new(Lowering::Trivial, "a collective over world = 1")
        }
        Op::Add(_)
        | Op::MatMul(_)
        | Op::Sub(_)
        | Op::Mul(_)
        | Op::Div(_)
        | Op::Maximum(_)
        | Op::Minimum(_)
        | Op::Pow(_)
        | Op::Neg(_)
        | Op::Abs(_)
        | Op::Exp(_)
        | Op::Log(_)
        | Op::Sqrt(_)
        | Op::Rsqrt(_)
        | Op::Tanh(_)
        | Op::Erf(_)
        | Op::Sin(_)
        | Op::Cos(_)
        | Op::Math(_)
        | Op::Relu(_)
        | Op::Sigmoid(_)
        | Op::Silu(_)
        | Op::Gelu(_)
        | Op::Clamp(_)
        | Op::Compare(_)
        | Op::Logical(_)
        | Op::Not(_)
        | Op::Where(_)
        | Op::Cast(_)
        | Op::Iota(_)
        | Op::Softmax(_)
        | Op::Reduce(_)
        | Op::ArgMax(_)
        | Op::ArgMin(_)
        | Op::Cumulative(_)
        | Op::Transpose(_)
        | Op::Reshape(_)
        | Op::BroadcastTo(_)
        | Op::Concat(_)
        | Op::Slice(_)
        | Op::Split(_)
        | Op::Gather(_)
        | Op::GatherElements(_)
        | Op::ScatterElements(_)
        | Op::GatherNd(_)
        | Op::ScatterNd(_)
        | Op::Pad(_)
        | Op::Trilu(_)
        | Op::Rope(_)
        | Op::Attention(_)
        | Op::Conv2d(_)
        | Op::GroupNorm(_)
        | Op::UpsampleNearest2d(_)
        | Op::AvgPool2d(_)
        | Op::LayerNorm(_)
        | Op::RmsNorm(_)
        | Op::Linear(_) => native("burn's tensor operations"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fuselage_ir::Dim;

    fn ty(dtype: DType, shape: &[u64]) -> TensorType {
        TensorType::new(dtype, shape.iter().map(|&d| Dim::from(d)))
    }

    fn op(name: &str, attrs: serde_json::Value) -> Op {
        Op::from_attrs(name, attrs).unwrap()
    }

    fn how(op: &Op, operands: &[TensorType], results: &[TensorType], kernels: bool) -> Lowering {
        classify(op, operands, results, kernels).unwrap().how
    }

    #[test]
    fn host_rules_kernels_and_burn_ops_take_the_paths_they_always_took() {
        use serde_json::json;
        let f = |s: &[u64]| ty(DType::F32, s);
        let x = f(&[2, 3]);
        let xs = std::slice::from_ref(&x);
        // Host rules, each with its reason.
        let m = op("mod", json!({}));
        let d = classify(&m, &[x.clone(), x.clone()], xs, true).unwrap();
        assert_eq!(d.how, Lowering::Host);
        assert!(d.why.contains("remainder"), "{}", d.why);
        let prod = op("reduce", json!({"kind": "prod", "axes": [1]}));
        let sum = op("reduce", json!({"kind": "sum", "axes": [1]}));
        let r = [f(&[2])];
        assert_eq!(how(&prod, xs, &r, true), Lowering::Host);
        assert_eq!(how(&sum, xs, &r, true), Lowering::Native);
        let seq = op(
            "reduce",
            json!({"kind": "sum", "axes": [1], "sequential": true}),
        );
        assert_eq!(how(&seq, xs, &r, true), Lowering::Host);
        let idx = ty(DType::I64, &[2, 3]);
        for (reduction, dtype, want) in [
            ("none", DType::F32, Lowering::Native),
            ("add", DType::F32, Lowering::Native),
            ("add", DType::Bool, Lowering::Host),
            ("mul", DType::F32, Lowering::Host),
        ] {
            let s = op("scatter_elements", json!({"reduction": reduction}));
            let data = ty(dtype, &[2, 3]);
            let got = how(
                &s,
                &[data.clone(), idx.clone(), data.clone()],
                std::slice::from_ref(&data),
                true,
            );
            assert_eq!(got, want, "{reduction} on {dtype}");
        }
        // Convolutions: 1 to 3 spatial axes on burn, 4 on the host.
        let conv = op("conv", json!({}));
        for (spatial, want) in [(2usize, Lowering::Native), (4, Lowering::Host)] {
            let mut shape = vec![1u64, 1];
            shape.extend(std::iter::repeat_n(3u64, spatial));
            let t = f(&shape);
            let w = f(&vec![1u64; spatial + 2]);
            assert_eq!(how(&conv, &[t.clone(), w], &[t], true), want, "{spatial}");
        }
        // Values of rank 7 (or a rank-0 result) run on the host, kernels or not.
        let r7 = f(&[1; 7]);
        let relu = op("relu", json!({}));
        assert_eq!(
            how(
                &relu,
                std::slice::from_ref(&r7),
                std::slice::from_ref(&r7),
                true
            ),
            Lowering::Host
        );
        assert_eq!(how(&relu, xs, xs, true), Lowering::Native);
        // The registry's kernels only with kernels on; collectives at world 1 are trivial.
        let sig = op("sigmoid", json!({}));
        let d = classify(&sig, xs, xs, true).unwrap();
        assert_eq!(
            (d.how, d.kernel.map(|k| k.name)),
            (Lowering::Kernel, Some("sigmoid-f32"))
        );
        let d = classify(&sig, xs, xs, false).unwrap();
        assert_eq!((d.how, d.kernel), (Lowering::Native, None));
        assert!(d.why.contains("native kernels are off"), "{}", d.why);
        let ar = op("all_reduce", json!({"mesh_axis": "tp", "world": 1}));
        assert_eq!(how(&ar, xs, xs, true), Lowering::Trivial);
        let ar4 = op("all_reduce", json!({"mesh_axis": "tp", "world": 4}));
        assert!(classify(&ar4, xs, xs, true).is_err());
    }

    #[test]
    fn host_rules_name_real_ops_and_give_reasons() {
        for r in HOST_RULES {
            assert!(
                fuselage_ir::ops::OP_NAMES.contains(&r.op),
                "`{}` is not an op",
                r.op
            );
            assert!(!r.reason.is_empty());
        }
    }
}
