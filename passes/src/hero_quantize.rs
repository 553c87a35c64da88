//! `hero-quantize`: W8A8 post-training quantization of a model's GEMMs (ZeroQuant-HERO,
//! `techniques.md` §1), with a precision policy per module.
//!
//! Every `linear(x, w[, bias])` and `matmul(x, w)` whose `w` is a rank-2 float constant (the
//! form `canonicalize,fold-constants` leave HF and GGUF layers in) becomes
//!
//! ```text
//! (xq, xs) = quantize(x) {i8, per_token}           one per distinct x, shared by its GEMMs
//! y        = qlinear(xq, xs, wq, ws[, bias])        wq: i8 [K, N], ws: [1, N]
//! ```
//!
//! with the weight quantized once, symmetric INT8 per output channel (`quantize` per_channel on
//! axis 1, so the stored `wq·ws` is exactly what the reference `dequantize` gives). This is the
//! `cpu` preset: on a CPU one thread owns whole GEMM rows, so the token-wise (TWQ) absmax of a
//! GEMM input is a cheap row reduction, and every GEMM input gets a dynamic token-wise scale —
//! no calibration needed. The residual stream, norms, softmax and attention stay in float.
//! An epilogue activation (`gelu`, `silu`, `relu`) is fused into `qlinear` by `canonicalize`'s
//! rules afterwards (`rules/fusion.rules`).
//!
//! A `qlinear` keeps its GEMM's node name, or takes its weight constant's name when the GEMM
//! has none (GGUF), so reports and dumps name every INT8 GEMM.
//!
//! The policy: option `precision` maps glob patterns over node names (`encoder.layer.0.*`, HF)
//! or weight-constant names (`blk.0.*`, GGUF) to `i8` or `f32`; when several match, the longest
//! pattern wins; unmatched GEMMs use the preset (`i8`). The pass records, per GEMM, the
//! precision it chose and why (the report's `details`).
//!
//! The HERO modes m1–m3 need static and feature-wise scales from calibration statistics, which
//! this pass does not collect yet; asking for them is an options error saying so.
//!
//! The pass is a [`PassKind::Quantization`]: the numeric check compares outputs by cosine.

use crate::calibrate::ClipMethod;
use crate::error::PassError;
use crate::pass::{Changed, Pass, PassCx, PassKind};
use fuselage_ir::ops::constant::Constant as ConstantOp;
use fuselage_ir::ops::qlinear::{Activation, QLinear};
use fuselage_ir::ops::quantize::{Convention, Granularity, Quantize};
use fuselage_ir::ops::{EvalCx, InferCx};
use fuselage_ir::{Constant, DType, Graph, Module, Op, TensorType, ValueId};
use std::collections::{BTreeMap, HashMap};

crate::pass_options! {
    /// Options of `hero-quantize`.
    pub struct HeroQuantizeOptions {
        /// The policy preset: `cpu` (every GEMM input token-wise, dynamic; weights per channel),
        /// `m1` (HERO's least aggressive mode: only the GEMMs fed by a norm — QKV, FC1,
        /// gate/up — in INT8, token-wise; the others stay in float) or `m2` (m1, and the other
        /// GEMMs — attention out, FC2/down — in INT8 with static feature-wise scales from
        /// calibration folded into their weights' rows) or `auto` (token-wise everywhere, then
        /// the fewest GEMMs kept in f32 — most sensitive first — that meet `budget-cosine` on
        /// the calibration inputs).
        preset: String = "cpu".into(),
        /// The ops whose outputs `m1` treats as norm outputs (a row reduction that makes the
        /// token-wise scale free).
        norm_ops: Vec<String> = vec!["layer_norm".into(), "rms_norm".into()],
        /// Per-module precision overrides: glob over node or weight-constant names → `i8` or
        /// `f32` (`{"encoder.layer.0.*" = "f32"}`); the longest matching pattern wins.
        precision: BTreeMap<String, String> = BTreeMap::new(),
        /// Weight rounding: `paper` (S = absmax/127, symmetric) or `deepspeed` (S = absmax/128).
        weight_convention: String = "paper".into(),
        /// How static feature-wise scales are calibrated: `absmax`, `percentile` or `mse`.
        calibration: String = "absmax".into(),
        /// The percentile of `calibration = "percentile"`.
        percentile: f64 = 99.99,
        /// `preset = "auto"`: the accuracy budget, the least cosine similarity of every output
        /// (mean over the calibration inputs) against the FP32 program.
        budget_cosine: f64 = 0.998,
    }
}

const NAME: &str = "hero-quantize";

fn options_error(message: String) -> PassError {
    PassError::options(NAME, message)
}

fn failed(message: String) -> PassError {
    PassError::failed(NAME, message)
}

/// The precision an override asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Precision {
    /// W8A8 with the preset's activation scales for this GEMM.
    Int8,
    /// W8A8 with token-wise activation scales.
    Twq,
    /// W8A8 with static feature-wise activation scales folded into the weight.
    Fwq,
    /// Left as it is.
    Float,
}

impl Precision {
    fn parse(key: &str, s: &str) -> Result<Self, PassError> {
        match s {
            "i8" | "int8" => Ok(Precision::Int8),
            "twq" => Ok(Precision::Twq),
            "fwq" => Ok(Precision::Fwq),
            "f32" | "float" | "keep" => Ok(Precision::Float),
            other => Err(options_error(format!(
                "precision.\"{key}\": unknown precision `{other}` (allowed: i8, twq, fwq, f32)"
            ))),
        }
    }
}

/// How one GEMM ends up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    /// INT8, token-wise dynamic activation scales.
    Twq,
    /// INT8, static feature-wise activation scales folded into the weight's rows.
    Fwq,
    /// Unchanged.
    Float,
}

impl Scheme {
    fn precision(self) -> &'static str {
        match self {
            Scheme::Twq | Scheme::Fwq => "i8",
            Scheme::Float => "f32",
        }
    }

    fn activations(self) -> &'static str {
        match self {
            Scheme::Twq => "token-wise",
            Scheme::Fwq => "feature-wise static",
            Scheme::Float => "-",
        }
    }
}

/// Which GEMMs a preset puts in INT8 when no override matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Preset {
    /// Every GEMM.
    Cpu,
    /// Only GEMMs whose input a norm op produced.
    M1,
    /// Norm-fed GEMMs token-wise, the others feature-wise (static, folded).
    M2,
    /// Token-wise everywhere, then the fewest GEMMs in f32 that meet the budget.
    Auto,
}

impl Preset {
    fn name(self) -> &'static str {
        match self {
            Preset::Cpu => "cpu",
            Preset::M1 => "m1",
            Preset::M2 => "m2",
            Preset::Auto => "auto",
        }
    }
}

/// The `hero-quantize` pass.
#[derive(Debug, Clone)]
pub struct HeroQuantize {
    preset: Preset,
    norm_ops: Vec<String>,
    overrides: Vec<(glob::Pattern, Precision)>,
    convention: Convention,
    clip: ClipMethod,
    budget_cosine: f64,
    /// GEMMs (by name) the `auto` policy keeps in f32.
    auto_kept: std::collections::BTreeSet<String>,
}

impl HeroQuantize {
    /// Create the pass from its options.
    pub fn new(options: HeroQuantizeOptions) -> Result<Self, PassError> {
        let preset = match options.preset.as_str() {
            "cpu" => Preset::Cpu,
            "m1" => Preset::M1,
            "m2" => Preset::M2,
            "auto" => Preset::Auto,
            "m3" => {
                return Err(options_error(
                    "preset `m3` runs the attention products in INT8, which has no IR op yet \
                     (available: cpu, m1, m2, auto)"
                        .into(),
                ))
            }
            other => {
                return Err(options_error(format!(
                    "unknown preset `{other}` (available: cpu, m1, m2, auto)"
                )))
            }
        };
        let clip = ClipMethod::parse(&options.calibration, options.percentile)
            .map_err(|e| options_error(format!("calibration: {e}")))?;
        for op in &options.norm_ops {
            if !fuselage_ir::ops::OP_NAMES.contains(&op.as_str()) {
                return Err(options_error(format!("norm-ops: unknown op `{op}`")));
            }
        }
        let convention = match options.weight_convention.as_str() {
            "paper" => Convention::Paper,
            "deepspeed" => Convention::Deepspeed,
            other => {
                return Err(options_error(format!(
                    "weight-convention: unknown `{other}` (allowed: paper, deepspeed)"
                )))
            }
        };
        let mut overrides = vec![];
        for (pat, p) in &options.precision {
            let g = glob::Pattern::new(pat)
                .map_err(|e| options_error(format!("precision: bad pattern `{pat}`: {e}")))?;
            overrides.push((g, Precision::parse(pat, p)?));
        }
        Ok(HeroQuantize {
            preset,
            norm_ops: options.norm_ops,
            overrides,
            convention,
            clip,
            budget_cosine: options.budget_cosine,
            auto_kept: Default::default(),
        })
    }

    /// What the preset does with a GEMM whose input `input_op` produced, and why.
    fn preset_scheme(&self, input_op: &str) -> (Scheme, String) {
        let norm_fed = self.norm_ops.iter().any(|o| o == input_op);
        match (self.preset, norm_fed) {
            (Preset::Cpu, _) => (Scheme::Twq, "preset cpu".into()),
            (Preset::Auto, _) => (Scheme::Twq, "preset auto".into()),
            (Preset::M1 | Preset::M2, true) => (
                Scheme::Twq,
                format!("preset {}: fed by {input_op}", self.preset.name()),
            ),
            (Preset::M1, false) => (
                Scheme::Float,
                format!("preset m1: fed by {input_op}, not a norm"),
            ),
            (Preset::M2, false) => (
                Scheme::Fwq,
                format!("preset m2: fed by {input_op}, not a norm"),
            ),
        }
    }

    /// The scheme for a GEMM with these names whose input `input_op` produced, and why.
    fn decide(&self, names: &[&str], input_op: &str) -> (Scheme, String) {
        if names.iter().any(|n| self.auto_kept.contains(*n)) {
            return (Scheme::Float, "auto: kept to meet the budget".into());
        }
        let best = self
            .overrides
            .iter()
            .filter(|(g, _)| names.iter().any(|n| g.matches(n)))
            .max_by_key(|(g, _)| g.as_str().len());
        let Some((g, p)) = best else {
            return self.preset_scheme(input_op);
        };
        let why = format!("override `{}`", g.as_str());
        match p {
            Precision::Float => (Scheme::Float, why),
            Precision::Twq => (Scheme::Twq, why),
            Precision::Fwq => (Scheme::Fwq, why),
            Precision::Int8 => match self.preset_scheme(input_op).0 {
                Scheme::Float => (Scheme::Twq, why),
                s => (s, why),
            },
        }
    }
}

/// A GEMM the pass may rewrite: `linear(x, w[, b])` or `matmul(x, w)` with `w` a rank-2 float
/// constant of `x`'s dtype.
struct Gemm {
    x: ValueId,
    weight: String,
    bias: Option<ValueId>,
}

fn as_gemm(m: &Module, g: &Graph, op: &Op, operands: &[ValueId]) -> Option<Gemm> {
    let (x, w, bias) = match (op, operands) {
        (Op::Linear(_), [x, w]) | (Op::MatMul(_), [x, w]) => (*x, *w, None),
        (Op::Linear(_), [x, w, b]) => (*x, *w, Some(*b)),
        _ => return None,
    };
    let xt = g.value_type(x)?;
    let wt = g.value_type(w)?;
    if !matches!(xt.dtype, DType::F32 | DType::BF16 | DType::F16)
        || wt.dtype != xt.dtype
        || wt.rank() != 2
        || xt.rank() < 1
        || wt.shape.iter().any(|d| d.fixed().is_none())
    {
        return None;
    }
    let Op::Constant(c) = &g.node(w.node)?.op else {
        return None;
    };
    m.constants.get(&c.name)?;
    Some(Gemm {
        x,
        weight: c.name.clone(),
        bias,
    })
}

/// The quantized weight's constants: codes `[K, N]` i8 and scales `[1, N]`.
struct QuantWeight {
    codes: String,
    scales: String,
    bytes_before: u64,
    bytes_after: u64,
}

/// Quantize constant `name` per output channel (axis 1) with the reference `quantize` op, so
/// the stored codes and scales are exactly what the IR means by them. With `row_scales`
/// (feature-wise activation scales) the weight's row `k` is first multiplied by `s[k]`
/// (rounded to the weight's dtype): the fold that makes `(x / s) · (diag(s) W) = x · W`.
fn quantize_weight(
    m: &mut Module,
    name: &str,
    scale_dtype: DType,
    convention: Convention,
    row_scales: Option<&[f64]>,
) -> Result<QuantWeight, PassError> {
    let c = m
        .constants
        .get(name)
        .ok_or_else(|| failed(format!("no constant `{name}`")))?
        .clone();
    let mut w = c
        .value(name)
        .map_err(|e| failed(format!("weight `{name}`: {e}")))?;
    if let Some(s) = row_scales {
        let [k, n] = w.shape() else {
            return Err(failed(format!("weight `{name}` is not a matrix")));
        };
        if s.len() != *k {
            return Err(failed(format!(
                "weight `{name}`: {} feature scales for {k} rows",
                s.len()
            )));
        }
        let n = *n;
        let d = w.dtype();
        let folded: Vec<f64> = w
            .data()
            .iter()
            .enumerate()
            .map(|(i, &v)| d.round(v * s[i / n]))
            .collect();
        w = std::sync::Arc::new(
            fuselage_ir::Tensor::new(d, w.shape().to_vec(), folded)
                .map_err(|e| failed(format!("folding into `{name}`: {e}")))?,
        );
    }
    let base = if row_scales.is_some() {
        format!("{name}.fwq")
    } else {
        name.to_string()
    };
    let op = Op::Quantize(Quantize {
        dtype: DType::I8,
        granularity: Granularity::PerChannel { axis: 1 },
        convention,
        scale_dtype,
    });
    let types = op
        .infer(&InferCx { module: m }, std::slice::from_ref(&c.ty))
        .map_err(|e| failed(format!("weight `{name}`: {}", e.0)))?;
    let bindings = HashMap::new();
    let cx = EvalCx {
        module: m,
        bindings: &bindings,
        result_types: &types,
    };
    let out = op
        .eval(&cx, &[w.as_ref()])
        .map_err(|e| failed(format!("quantizing weight `{name}`: {}", e.0)))?;
    let [q, s] = out.as_slice() else {
        return Err(failed(format!(
            "quantizing weight `{name}` gave {} results, expected 2",
            out.len()
        )));
    };
    let (q, s) = (Constant::from_tensor(q), Constant::from_tensor(s));
    let bytes_after = q.storage_bytes() + s.storage_bytes();
    let codes = m.fresh_constant_name(&format!("{base}.q8"));
    m.add_constant(codes.clone(), q);
    let scales = m.fresh_constant_name(&format!("{base}.q8.scale"));
    m.add_constant(scales.clone(), s);
    Ok(QuantWeight {
        codes,
        scales,
        bytes_before: c.storage_bytes(),
        bytes_after,
    })
}

/// One GEMM's decision, for the report.
#[derive(Clone, Debug, serde::Serialize)]
struct Decision {
    function: String,
    module: String,
    weight: String,
    k: u64,
    n: u64,
    precision: &'static str,
    activations: &'static str,
    reason: String,
}

fn type_err(fname: &str, e: fuselage_ir::IrError) -> PassError {
    failed(format!("in function `{fname}`: {e}"))
}

impl Pass for HeroQuantize {
    fn name(&self) -> &'static str {
        NAME
    }

    fn kind(&self) -> PassKind {
        PassKind::Quantization
    }

    fn run(&mut self, m: &mut Module, cx: &mut PassCx) -> Result<Changed, PassError> {
        if self.preset != Preset::Auto {
            return self.rewrite(m, cx);
        }
        let plan = self.auto_plan(m, cx)?;
        let changed = plan.pass.rewrite(m, cx)?;
        if let Some(mut d) = cx.take_details() {
            d.data["auto"] = plan.report;
            let mut text = plan.text;
            text.append(&mut d.text);
            cx.set_details(d.data, text);
        }
        cx.bump("auto-evaluations", plan.evaluations);
        Ok(changed)
    }
}

impl HeroQuantize {
    /// The rewrite with this pass's preset and overrides (what `run` does for every preset but
    /// `auto`, which plans overrides first).
    fn rewrite(&self, m: &mut Module, cx: &mut PassCx) -> Result<Changed, PassError> {
        let feature_scales = self.calibrate(m, cx)?;
        let entry = m.entry_name().map(str::to_string);
        let mut weights: HashMap<(String, DType), QuantWeight> = HashMap::new();
        let mut decisions: Vec<Decision> = vec![];
        let (mut quantized, mut kept, mut quantize_nodes) = (0u64, 0u64, 0u64);
        let (mut bytes_before, mut bytes_after) = (0u64, 0u64);
        let fnames: Vec<String> = m.functions.keys().cloned().collect();
        for fname in fnames {
            let mut g = std::mem::take(m.functions.get_mut(&fname).expect("listed"));
            let order = match g.topo_order() {
                Ok(o) => o,
                Err(n) => {
                    m.functions.insert(fname.clone(), g);
                    return Err(failed(format!(
                        "function `{fname}` has a cycle through {n}"
                    )));
                }
            };
            // Quantized activations by the float value they quantize: q, k and v share one.
            let mut inputs: HashMap<(ValueId, bool), (ValueId, ValueId)> = HashMap::new();
            let in_entry = entry.as_deref() == Some(fname.as_str());
            let mut result: Result<(), PassError> = Ok(());
            for id in order {
                let Some(node) = g.node(id) else { continue };
                let Some(gemm) = as_gemm(m, &g, &node.op, &node.operands) else {
                    continue;
                };
                let module = node.name.clone().unwrap_or_default();
                let result_ty: TensorType = node.results[0].clone();
                let wty = g.value_type(node.operands[1]).cloned().expect("checked");
                let xty = g.value_type(gemm.x).cloned().expect("checked");
                let (k, n) = (
                    wty.shape[0].fixed().unwrap_or(0),
                    wty.shape[1].fixed().unwrap_or(0),
                );
                let names: Vec<&str> = [module.as_str(), gemm.weight.as_str()]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect();
                let input_op = g.node(gemm.x.node).map_or("?", |n| n.op.name());
                let (mut scheme, mut reason) = self.decide(&names, input_op);
                // Feature-wise scales are calibrated on the entry function; elsewhere (a
                // KV-cache `decode` function) the same GEMM's input gets token-wise scales.
                let fwq = match (scheme, in_entry) {
                    (Scheme::Fwq, true) => feature_scales.get(&gemm.x).cloned(),
                    _ => None,
                };
                if scheme == Scheme::Fwq && fwq.is_none() {
                    scheme = Scheme::Twq;
                    reason.push_str("; token-wise outside the calibrated entry function");
                }
                decisions.push(Decision {
                    function: fname.clone(),
                    module: if module.is_empty() {
                        gemm.weight.clone()
                    } else {
                        module.clone()
                    },
                    weight: gemm.weight.clone(),
                    k,
                    n,
                    precision: scheme.precision(),
                    activations: scheme.activations(),
                    reason,
                });
                if scheme == Scheme::Float {
                    kept += 1;
                    continue;
                }
                let step = (|| -> Result<(), PassError> {
                    let constant = |g: &mut Graph, m: &Module, name: &str| {
                        g.add_inferred(
                            m,
                            Op::Constant(ConstantOp {
                                name: name.to_string(),
                            }),
                            vec![],
                            None,
                        )
                        .map_err(|e| type_err(&fname, e))
                    };
                    let (qw, xq, xs) = if let Some(scales) = &fwq {
                        // Static feature-wise: x / s per feature, s folded into W's rows, and
                        // a unit per-tensor x_scale for the GEMM.
                        let qw = quantize_weight(
                            m,
                            &gemm.weight,
                            xty.dtype,
                            self.convention,
                            Some(scales),
                        )?;
                        bytes_before += qw.bytes_before;
                        bytes_after += qw.bytes_after;
                        let (xq, one) = match inputs.get(&(gemm.x, true)) {
                            Some(v) => *v,
                            None => {
                                let v = feature_quantize(m, &mut g, gemm.x, &xty, scales)
                                    .map_err(|e| type_err(&fname, e))?;
                                quantize_nodes += 1;
                                inputs.insert((gemm.x, true), v);
                                v
                            }
                        };
                        (qw, xq, one)
                    } else {
                        let key = (gemm.weight.clone(), xty.dtype);
                        if !weights.contains_key(&key) {
                            let q =
                                quantize_weight(m, &gemm.weight, xty.dtype, self.convention, None)?;
                            bytes_before += q.bytes_before;
                            bytes_after += q.bytes_after;
                            weights.insert(key.clone(), q);
                        }
                        let qw = &weights[&key];
                        let qw = QuantWeight {
                            codes: qw.codes.clone(),
                            scales: qw.scales.clone(),
                            bytes_before: 0,
                            bytes_after: 0,
                        };
                        let (xq, xs) = match inputs.get(&(gemm.x, false)) {
                            Some(v) => *v,
                            None => {
                                let q = g
                                    .add_inferred(
                                        m,
                                        Op::Quantize(Quantize {
                                            dtype: DType::I8,
                                            granularity: Granularity::PerToken,
                                            convention: Convention::Paper,
                                            scale_dtype: xty.dtype,
                                        }),
                                        vec![gemm.x],
                                        None,
                                    )
                                    .map_err(|e| type_err(&fname, e))?;
                                quantize_nodes += 1;
                                let v = (ValueId::new(q, 0), ValueId::new(q, 1));
                                inputs.insert((gemm.x, false), v);
                                v
                            }
                        };
                        (qw, xq, xs)
                    };
                    let wq = constant(&mut g, m, &qw.codes)?;
                    let ws = constant(&mut g, m, &qw.scales)?;
                    let mut operands = vec![xq, xs, wq.into(), ws.into()];
                    operands.extend(gemm.bias);
                    let new = g
                        .add_inferred(
                            m,
                            Op::QLinear(QLinear {
                                activation: Activation::None,
                            }),
                            operands,
                            // An unnamed GEMM (GGUF) takes its weight's name, so reports and
                            // dumps say which layer each INT8 GEMM is.
                            Some(if module.is_empty() {
                                gemm.weight.clone()
                            } else {
                                module.clone()
                            }),
                        )
                        .map_err(|e| type_err(&fname, e))?;
                    let new_ty = &g.node(new).expect("just added").results[0];
                    if *new_ty != result_ty {
                        return Err(failed(format!(
                            "in function `{fname}`, {}: qlinear gives {new_ty}, the GEMM gave \
                             {result_ty}",
                            g.describe(id)
                        )));
                    }
                    g.replace_all_uses(ValueId::new(id, 0), new.into());
                    g.remove_node(id);
                    Ok(())
                })();
                if let Err(e) = step {
                    result = Err(e);
                    break;
                }
                quantized += 1;
            }
            m.functions.insert(fname, g);
            result?;
        }
        cx.bump("gemms-quantized", quantized);
        cx.bump("gemms-kept", kept);
        cx.bump("quantize-nodes", quantize_nodes);
        cx.bump("weight-bytes-before", bytes_before);
        cx.bump("weight-bytes-after", bytes_after);
        let text = summary(&decisions);
        cx.set_details(
            serde_json::json!({ "preset": self.preset.name(), "gemms": decisions }),
            text,
        );
        Ok((quantized > 0).into())
    }
}

impl HeroQuantize {
    /// Feature-wise activation scales for the entry function's GEMMs that get static
    /// feature-wise quantization, by the value they quantize: the calibration method's clip
    /// per feature over 127 (1 where a feature never moved). Empty when no GEMM needs them; an
    /// error when some do and the pipeline was given no calibration inputs.
    fn calibrate(
        &self,
        m: &Module,
        cx: &mut PassCx,
    ) -> Result<HashMap<ValueId, Vec<f64>>, PassError> {
        let Some(g) = m.entry() else {
            return Ok(HashMap::new());
        };
        let order = g
            .topo_order()
            .map_err(|n| failed(format!("the entry function has a cycle through {n}")))?;
        let mut sites: Vec<ValueId> = vec![];
        for id in order {
            let Some(node) = g.node(id) else { continue };
            let Some(gemm) = as_gemm(m, g, &node.op, &node.operands) else {
                continue;
            };
            let module = node.name.clone().unwrap_or_default();
            let names: Vec<&str> = [module.as_str(), gemm.weight.as_str()]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect();
            let input_op = g.node(gemm.x.node).map_or("?", |n| n.op.name());
            if self.decide(&names, input_op).0 == Scheme::Fwq && !sites.contains(&gemm.x) {
                sites.push(gemm.x);
            }
        }
        if sites.is_empty() {
            return Ok(HashMap::new());
        }
        let cal = cx.calibrator().ok_or_else(|| {
            failed(format!(
                "{} GEMM input(s) need static feature-wise scales (preset {}), and the pipeline \
                 has no calibration inputs (CompileOptions::calibration; `--calibration TEXT` \
                 on the command line)",
                sites.len(),
                self.preset.name()
            ))
        })?;
        let samples = crate::calibrate::sample_features(m, &sites, cal)
            .map_err(|e| failed(format!("calibration on {}: {e}", cal.name())))?;
        cx.bump("calibration-inputs", cal.inputs() as u64);
        cx.bump("calibrated-activations", sites.len() as u64);
        let qmax = 127.0;
        Ok(sites
            .into_iter()
            .zip(samples)
            .map(|(v, s)| {
                let scales = s
                    .clip(self.clip, qmax)
                    .into_iter()
                    .map(|c| {
                        let sc = f64::from((c / qmax) as f32);
                        if sc > 0.0 && sc.is_finite() {
                            sc
                        } else {
                            1.0
                        }
                    })
                    .collect();
                (v, scales)
            })
            .collect())
    }
}

/// What `preset = "auto"` decided: the pass to run (token-wise everywhere, the chosen GEMMs
/// kept in f32 by exact-name overrides), and why.
struct AutoPlan {
    pass: HeroQuantize,
    report: serde_json::Value,
    text: Vec<String>,
    evaluations: u64,
}

/// Every output's mean cosine over the inputs against `reference`; the least of them.
fn least_output_cosine(
    reference: &[Vec<fuselage_ir::Tensor>],
    got: &[Vec<fuselage_ir::Tensor>],
) -> f64 {
    let outputs = reference.first().map_or(0, Vec::len);
    (0..outputs)
        .map(|o| {
            let c: f64 = reference
                .iter()
                .zip(got)
                .map(|(r, g)| {
                    let (a, b) = (r[o].data(), g[o].data());
                    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
                    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
                    let nb: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
                    if na == 0.0 || nb == 0.0 {
                        f64::from(u8::from(na == nb))
                    } else {
                        dot / (na * nb)
                    }
                })
                .sum();
            c / reference.len().max(1) as f64
        })
        .fold(1.0, f64::min)
}

impl HeroQuantize {
    /// This pass with `preset` and extra exact-name overrides (added after its own, so an
    /// exact name — longer than any glob it matches — wins); `everything` first sets every
    /// GEMM's default.
    fn planned(
        &self,
        preset: Preset,
        everything: Option<Precision>,
        extra: &[(String, Precision)],
    ) -> Result<Self, PassError> {
        let mut p = self.clone();
        p.preset = preset;
        if let Some(e) = everything {
            let all = glob::Pattern::new("*").map_err(|e| failed(e.to_string()))?;
            p.overrides.push((all, e));
        }
        for (name, precision) in extra {
            let g = glob::Pattern::new(&glob::Pattern::escape(name))
                .map_err(|e| failed(format!("auto: name `{name}`: {e}")))?;
            p.overrides.push((g, *precision));
        }
        Ok(p)
    }

    /// `preset = "auto"`: measure each GEMM's damage alone (only it in INT8), then find the
    /// fewest most-damaging GEMMs to keep in f32 for the rest to meet `budget-cosine` (a
    /// bisection over that order), on the calibration inputs.
    fn auto_plan(&self, m: &Module, cx: &mut PassCx) -> Result<AutoPlan, PassError> {
        let cal = cx.calibrator().ok_or_else(|| {
            failed(
                "preset auto measures accuracy on calibration inputs, and the pipeline has none \
                 (CompileOptions::calibration; `--calibration TEXT` on the command line)"
                    .into(),
            )
        })?;
        let run = |module: &Module| -> Result<Vec<Vec<fuselage_ir::Tensor>>, PassError> {
            let mut out = vec![];
            cal.run_each(module, &mut |_, o| {
                out.push(o.to_vec());
                Ok(())
            })
            .map_err(|e| failed(format!("auto: running the calibration inputs: {e}")))?;
            Ok(out)
        };
        let reference = run(m)?;
        let executor = cx.executor();
        let mut evaluations = 0u64;
        let mut evaluate = |p: &HeroQuantize| -> Result<f64, PassError> {
            let mut q = m.clone();
            let mut scratch = PassCx::new(executor).with_calibrator(Some(cal));
            p.rewrite(&mut q, &mut scratch)?;
            evaluations += 1;
            Ok(least_output_cosine(&reference, &run(&q)?))
        };
        // The GEMMs by the name the decisions use (node name, else weight).
        let mut names: Vec<String> = vec![];
        if let Some(g) = m.entry() {
            let order = g
                .topo_order()
                .map_err(|n| failed(format!("the entry function has a cycle through {n}")))?;
            for id in order {
                let Some(node) = g.node(id) else { continue };
                if let Some(gemm) = as_gemm(m, g, &node.op, &node.operands) {
                    let n = node.name.clone().unwrap_or(gemm.weight);
                    if !names.contains(&n) {
                        names.push(n);
                    }
                }
            }
        }
        let all_int8 = evaluate(&self.planned(Preset::Cpu, None, &[])?)?;
        let mut damage: Vec<(String, f64)> = vec![];
        if all_int8 < self.budget_cosine {
            for n in &names {
                let only = [(n.clone(), Precision::Twq)];
                let p = self.planned(Preset::Cpu, Some(Precision::Float), &only)?;
                damage.push((n.clone(), evaluate(&p)?));
            }
            damage.sort_by(|a, b| a.1.total_cmp(&b.1));
        }
        let keep_first = |k: usize| -> Vec<(String, Precision)> {
            damage[..k]
                .iter()
                .map(|(n, _)| (n.clone(), Precision::Float))
                .collect()
        };
        // Bisection for the least k whose plan meets the budget: k = 0 failed (or passed, and
        // nothing is kept); k = all leaves the program unquantized (cosine 1).
        let (mut lo, mut hi, mut at_hi) = (0usize, damage.len(), 1.0);
        if all_int8 >= self.budget_cosine {
            (hi, at_hi) = (0, all_int8);
        }
        while hi > lo + 1 {
            let mid = (lo + hi) / 2;
            let c = evaluate(&self.planned(Preset::Cpu, None, &keep_first(mid))?)?;
            if c >= self.budget_cosine {
                (hi, at_hi) = (mid, c);
            } else {
                lo = mid;
            }
        }
        let kept = keep_first(hi);
        let report = serde_json::json!({
            "budget_cosine": self.budget_cosine,
            "all_int8_cosine": all_int8,
            "kept_f32": damage[..hi].iter().map(|(n, c)| serde_json::json!({"module": n, "alone_cosine": c})).collect::<Vec<_>>(),
            "final_cosine": at_hi,
            "calibration_inputs": cal.inputs(),
        });
        let mut text = vec![format!(
            "auto: all GEMMs in INT8 give cosine {all_int8:.5} on {} calibration input(s) \
             (budget {}); {} kept in f32 → cosine {at_hi:.5}",
            cal.inputs(),
            self.budget_cosine,
            hi
        )];
        for (n, c) in damage[..hi].iter().take(12) {
            text.push(format!("  kept {n} (in INT8 alone: cosine {c:.5})"));
        }
        Ok(AutoPlan {
            pass: {
                let mut p = self.planned(Preset::Cpu, None, &[])?;
                p.auto_kept = kept.into_iter().map(|(n, _)| n).collect();
                p
            },
            report,
            text,
            evaluations,
        })
    }
}

/// `quantize(x, s) {i8, per feature}` with the static scales `s` as a new constant, and a unit
/// per-tensor scale constant for the GEMM: `(xq, one)`.
fn feature_quantize(
    m: &mut Module,
    g: &mut Graph,
    x: ValueId,
    xty: &TensorType,
    scales: &[f64],
) -> Result<(ValueId, ValueId), fuselage_ir::IrError> {
    let r = xty.rank();
    let d = xty.dtype;
    let mut shape = vec![1usize; r];
    shape[r - 1] = scales.len();
    let s = fuselage_ir::Tensor::new(d, shape, scales.iter().map(|&v| d.round(v)).collect())?;
    let s_name = m.fresh_constant_name("hero.fwq.x_scale");
    m.add_constant(s_name.clone(), Constant::from_tensor(&s));
    let one_name = format!("hero.one.{d}.r{r}");
    if !m.constants.contains_key(&one_name) {
        let one = fuselage_ir::Tensor::new(d, vec![1; r], vec![1.0])?;
        m.add_constant(one_name.clone(), Constant::from_tensor(&one));
    }
    let c = |g: &mut Graph, m: &Module, name: &str| {
        g.add_inferred(
            m,
            Op::Constant(ConstantOp {
                name: name.to_string(),
            }),
            vec![],
            None,
        )
    };
    let s_node = c(g, m, &s_name)?;
    let one = c(g, m, &one_name)?;
    let q = g.add_inferred(
        m,
        Op::Quantize(Quantize {
            dtype: DType::I8,
            granularity: Granularity::PerChannel { axis: -1 },
            convention: Convention::Paper,
            scale_dtype: d,
        }),
        vec![x, s_node.into()],
        None,
    )?;
    Ok((ValueId::new(q, 0), one.into()))
}

/// People's view of the decisions: one line per precision and reason, then each kept module.
fn summary(decisions: &[Decision]) -> Vec<String> {
    let mut groups: BTreeMap<(&str, &str, &str), u64> = BTreeMap::new();
    for d in decisions {
        *groups
            .entry((d.precision, d.activations, d.reason.as_str()))
            .or_insert(0) += 1;
    }
    let mut out: Vec<String> = groups
        .iter()
        .map(|((p, a, r), n)| match *a {
            "-" => format!("{n} GEMM(s) in {p} ({r})"),
            a => format!("{n} GEMM(s) in {p}, {a} activation scales ({r})"),
        })
        .collect();
    const SHOWN: usize = 12;
    let kept: Vec<&Decision> = decisions.iter().filter(|d| d.precision != "i8").collect();
    for d in kept.iter().take(SHOWN) {
        out.push(format!(
            "  {} kept in {} ({}; weight {} [{}, {}])",
            d.module, d.precision, d.reason, d.weight, d.k, d.n
        ));
    }
    if kept.len() > SHOWN {
        out.push(format!(
            "  … and {} more kept (every decision is in the report's JSON details)",
            kept.len() - SHOWN
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pass::Tolerance;
    use crate::registry;
    use crate::testutil::{assert_same_outputs, run_pass, run_pass_with};

    fn tiny() -> Module {
        use fuselage_ir::ops::gelu::Gelu;
        use fuselage_ir::ops::linear::Linear;
        use fuselage_ir::ops::matmul::MatMul;
        use fuselage_ir::{Init, TensorType};
        let mut m = Module::new();
        let normal = |std| Init::Normal { mean: 0.0, std };
        for (name, shape, seed, std) in [
            ("w1", vec![8u64, 16], 1, 0.3),
            ("b1", vec![16], 2, 0.1),
            ("w2", vec![16, 8], 3, 0.3),
        ] {
            let dims: Vec<u64> = shape;
            let ty = TensorType::new(
                DType::F32,
                dims.iter().map(|&d| d.into()).collect::<Vec<_>>(),
            );
            m.add_constant(name, Constant::seeded(ty, seed, normal(std)));
        }
        let mut g = Graph::new();
        let x = g.add_input("x", TensorType::new(DType::F32, ["B".into(), 8u64.into()]));
        let c = |g: &mut Graph, m: &Module, n: &str| {
            g.add_inferred(m, crate::testutil::constant(n), vec![], None)
                .unwrap()
        };
        let w1 = c(&mut g, &m, "w1");
        let b1 = c(&mut g, &m, "b1");
        let w2 = c(&mut g, &m, "w2");
        let l1 = g
            .add_inferred(
                &m,
                Op::Linear(Linear {}),
                vec![x.into(), w1.into(), b1.into()],
                Some("l1".into()),
            )
            .unwrap();
        let act = g
            .add_inferred(&m, Op::Gelu(Gelu::default()), vec![l1.into()], None)
            .unwrap();
        let l2 = g
            .add_inferred(
                &m,
                Op::MatMul(MatMul {}),
                vec![act.into(), w2.into()],
                Some("l2".into()),
            )
            .unwrap();
        let l3 = g
            .add_inferred(
                &m,
                Op::Linear(Linear {}),
                vec![x.into(), w1.into()],
                Some("l3".into()),
            )
            .unwrap();
        g.add_output("y", l2.into());
        g.add_output("z", l3.into());
        m.functions.insert("main".into(), g);
        fuselage_ir::verify(&m).unwrap();
        m
    }

    #[test]
    fn every_gemm_becomes_qlinear_with_shared_input_quantization() {
        let mut m = tiny();
        let (changed, stats) = run_pass("hero-quantize", &mut m);
        assert!(changed);
        assert_eq!(stats["gemms-quantized"], 3);
        assert_eq!(
            stats["quantize-nodes"], 2,
            "l1 and l3 share x's quantization"
        );
        let counts = m.op_histogram();
        assert_eq!(counts.get("qlinear"), Some(&3), "{counts:?}");
        assert_eq!(counts.get("linear"), None);
        assert_eq!(counts.get("matmul"), None);
        // w1 is quantized once for both of its users.
        assert_eq!(
            stats["weight-bytes-after"],
            8 * 16 + 16 * 4 + 16 * 8 + 8 * 4
        );
    }

    #[test]
    fn the_quantized_program_is_close_and_the_weights_are_the_reference_quantization() {
        let before = tiny();
        let mut after = before.clone();
        run_pass("hero-quantize", &mut after);
        assert_same_outputs(&before, &after, PassKind::Quantization, 4);
        let q = after.constants["w1.q8"].value("w1.q8").unwrap();
        let s = after.constants["w1.q8.scale"].value("w1.q8.scale").unwrap();
        let w = before.constants["w1"].value("w1").unwrap();
        assert_eq!(q.shape(), &[8, 16]);
        assert_eq!(s.shape(), &[1, 16]);
        for n in 0..16 {
            let absmax = (0..8)
                .map(|k| w.data()[k * 16 + n].abs())
                .fold(0.0, f64::max);
            let col: Vec<f64> = (0..8).map(|k| q.data()[k * 16 + n]).collect();
            assert!(col.iter().any(|&c| c.abs() == 127.0), "absmax maps to ±127");
            assert!((s.data()[n] - absmax / 127.0).abs() <= absmax * 1e-6);
        }
    }

    #[test]
    fn overrides_keep_modules_in_float_longest_pattern_first() {
        let mut m = tiny();
        let (_, stats) = run_pass_with(
            "hero-quantize",
            serde_json::json!({"precision": {"l*": "f32", "l2": "i8", "w1": "f32"}}),
            &mut m,
        );
        // l1 and l3 match `w1` (their weight) and `l*`; l2 matches `l2` (longer than `l*`).
        assert_eq!(stats["gemms-quantized"], 1);
        assert_eq!(stats["gemms-kept"], 2);
        let counts = m.op_histogram();
        assert_eq!(counts.get("qlinear"), Some(&1));
        assert_eq!(counts.get("linear"), Some(&2));
    }

    /// `hero-quantize`, then the scales of the first half of one weight's channels multiplied
    /// by `factor` (deliberately wrong scales when `factor != 1`).
    struct WrongScale {
        inner: HeroQuantize,
        factor: f64,
    }

    impl Pass for WrongScale {
        fn name(&self) -> &'static str {
            "hero-quantize"
        }

        fn kind(&self) -> PassKind {
            PassKind::Quantization
        }

        fn run(&mut self, m: &mut Module, cx: &mut PassCx) -> Result<Changed, PassError> {
            let changed = self.inner.run(m, cx)?;
            let c = m.constants["w2.q8.scale"].clone();
            let t = c.value("w2.q8.scale").unwrap();
            let half = t.data().len() / 2;
            let wrong: Vec<f64> = t
                .data()
                .iter()
                .enumerate()
                .map(|(i, s)| if i < half { s * self.factor } else { *s })
                .collect();
            let t = fuselage_ir::Tensor::new(t.dtype(), t.shape().to_vec(), wrong).unwrap();
            m.add_constant("w2.q8.scale", Constant::from_tensor(&t));
            Ok(changed)
        }
    }

    #[test]
    fn the_numeric_check_passes_the_pass_and_catches_a_wrong_scale() {
        use crate::{PassError, PassManager, PassManagerOptions, Scheduled};
        let run = |factor: f64| {
            let mut pm = PassManager::new(PassManagerOptions::default());
            pm.set_ir_sink(|_| {});
            let pass = WrongScale {
                inner: HeroQuantize::new(HeroQuantizeOptions::default()).unwrap(),
                factor,
            };
            let tolerance = Tolerance {
                abs: f64::INFINITY,
                rel: f64::INFINITY,
                min_cosine: 0.995,
            };
            let mut steps = vec![Scheduled::Pass(Box::new(crate::pass::Checked {
                pass: Box::new(pass),
                tolerance,
            }))];
            pm.run_scheduled(&mut steps, &mut tiny())
        };
        let r = run(1.0).unwrap();
        let n = r.passes[0].numeric.as_ref().unwrap();
        assert!(n.passed && n.cosine_min < 1.0, "{}", n.summary());
        // Half of l2's output channels at twice their size.
        let e = run(2.0).unwrap_err();
        assert!(matches!(e, PassError::Numeric { .. }), "{e}");
    }

    /// Seeded inputs run on the reference interpreter.
    struct SeededCalibration(Vec<Vec<fuselage_ir::Tensor>>);

    impl crate::pass::Calibrator for SeededCalibration {
        fn name(&self) -> String {
            "reference".into()
        }

        fn inputs(&self) -> usize {
            self.0.len()
        }

        fn run_each(
            &self,
            module: &Module,
            each: &mut crate::pass::EachOutputs<'_>,
        ) -> Result<(), String> {
            use fuselage_ir::Executor;
            for (i, x) in self.0.iter().enumerate() {
                let out = fuselage_ir::Reference
                    .run(module, "main", x)
                    .map_err(|e| e.to_string())?;
                each(i, &out)?;
            }
            Ok(())
        }
    }

    fn calibration(rows: usize, poison: bool) -> SeededCalibration {
        SeededCalibration(
            (0..4u64)
                .map(|seed| {
                    let mut x =
                        fuselage_ir::ops::testing::rand_tensor(DType::F32, vec![rows, 8], seed);
                    if poison && seed == 2 {
                        let mut d = x.data().to_vec();
                        d[3] = f64::NAN;
                        x = fuselage_ir::Tensor::new(DType::F32, vec![rows, 8], d).unwrap();
                    }
                    vec![x]
                })
                .collect(),
        )
    }

    #[test]
    fn m2_gives_non_norm_gemms_static_feature_scales_folded_into_the_weight() {
        let before = tiny();
        let mut after = before.clone();
        // No norm in `tiny`: every GEMM is feature-wise under m2.
        let mut p =
            registry::create("hero-quantize", &serde_json::json!({"preset": "m2"})).unwrap();
        let cal = calibration(5, false);
        let mut cx = PassCx::new(&fuselage_ir::Reference).with_calibrator(Some(&cal));
        assert!(p.run(&mut after, &mut cx).unwrap().is_changed());
        fuselage_ir::verify(&after).unwrap();
        let stats = cx.take_stats();
        assert_eq!(stats["gemms-quantized"], 3);
        assert_eq!(
            stats["calibrated-activations"], 2,
            "x (l1, l3) and gelu(l1) (l2)"
        );
        assert_eq!(stats["calibration-inputs"], 4);
        let g = after.entry().unwrap();
        let given: usize = g
            .nodes()
            .filter(|(_, n)| matches!(n.op, Op::Quantize(_)) && n.operands.len() == 2)
            .count();
        assert_eq!(given, 2, "one static quantize per calibrated input");
        assert!(after.constants.contains_key("w2.fwq.q8"));
        // On the calibration inputs themselves (no value beyond its static scale) the outputs
        // stay close; (x / s)·(diag(s)·W) = x·W up to the two roundings.
        use fuselage_ir::Executor;
        for x in &cal.0 {
            let a = fuselage_ir::Reference.run(&before, "main", x).unwrap();
            let b = fuselage_ir::Reference.run(&after, "main", x).unwrap();
            for (u, v) in a.iter().zip(&b) {
                let dot: f64 = u.data().iter().zip(v.data()).map(|(p, q)| p * q).sum();
                let nu: f64 = u.data().iter().map(|p| p * p).sum::<f64>().sqrt();
                let nv: f64 = v.data().iter().map(|q| q * q).sum::<f64>().sqrt();
                assert!(dot / (nu * nv) > 0.999, "cosine {}", dot / (nu * nv));
            }
        }

        // Without calibration inputs, or with a NaN among them: clear errors.
        let mut m = tiny();
        let mut cx = PassCx::new(&fuselage_ir::Reference);
        let e = p.run(&mut m, &mut cx).unwrap_err().to_string();
        assert!(e.contains("no calibration inputs"), "{e}");
        let bad = calibration(5, true);
        let mut cx = PassCx::new(&fuselage_ir::Reference).with_calibrator(Some(&bad));
        let e = p.run(&mut tiny(), &mut cx).unwrap_err().to_string();
        assert!(
            e.contains("calibration input 2") && e.contains("NaN"),
            "{e}"
        );
    }

    #[test]
    fn auto_keeps_the_fewest_most_damaging_gemms_that_meet_the_budget() {
        let cal = calibration(5, false);
        let run = |budget: f64| {
            let mut m = tiny();
            let mut p = registry::create(
                "hero-quantize",
                &serde_json::json!({"preset": "auto", "budget-cosine": budget}),
            )
            .unwrap();
            let mut cx = PassCx::new(&fuselage_ir::Reference).with_calibrator(Some(&cal));
            p.run(&mut m, &mut cx).unwrap();
            let d = cx.take_details().unwrap();
            (m, cx.take_stats(), d)
        };
        // A loose budget: everything in INT8, no search.
        let (m, stats, d) = run(0.5);
        assert_eq!(stats["gemms-quantized"], 3);
        assert_eq!(stats["auto-evaluations"], 1);
        assert_eq!(d.data["auto"]["kept_f32"].as_array().unwrap().len(), 0);
        assert_eq!(m.op_histogram().get("qlinear"), Some(&3));
        // An impossible budget short of exactness: every GEMM measured alone, then all kept.
        let (m, stats, d) = run(1.0 - 1e-12);
        assert_eq!(stats["gemms-kept"], 3, "{:?}", d.data["auto"]);
        assert!(
            stats["auto-evaluations"] > 3,
            "all-INT8, then each GEMM alone"
        );
        assert_eq!(m.op_histogram().get("qlinear"), None);
        let kept = d.data["auto"]["kept_f32"].as_array().unwrap();
        let alone: Vec<f64> = kept
            .iter()
            .map(|k| k["alone_cosine"].as_f64().unwrap())
            .collect();
        assert!(
            alone.windows(2).all(|w| w[0] <= w[1]),
            "most damaging first: {alone:?}"
        );
        assert!(
            d.text[0].starts_with("auto: all GEMMs in INT8 give cosine"),
            "{:?}",
            d.text
        );
        // Without calibration inputs: a clear error.
        let mut p =
            registry::create("hero-quantize", &serde_json::json!({"preset": "auto"})).unwrap();
        let e = p
            .run(&mut tiny(), &mut PassCx::new(&fuselage_ir::Reference))
            .unwrap_err()
            .to_string();
        assert!(e.contains("calibration inputs"), "{e}");
    }

    #[test]
    fn bad_options_are_clear() {
        let e = |o: serde_json::Value| {
            crate::registry::create("hero-quantize", &o)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(e(serde_json::json!({"preset": "m3"})).contains("attention"));
        assert!(e(serde_json::json!({"preset": "gpu"})).contains("available: cpu, m1, m2"));
        assert!(e(serde_json::json!({"calibration": "minmax"})).contains("absmax, percentile"));
        assert!(e(serde_json::json!({"norm-ops": ["layernorm"]})).contains("unknown op"));
        assert!(e(serde_json::json!({"precision": {"a": "f8"}})).contains("allowed: i8, twq"));
        assert!(e(serde_json::json!({"precision": {"[": "f32"}})).contains("bad pattern"));
        assert!(e(serde_json::json!({"weight-convention": "x"})).contains("paper, deepspeed"));
    }
}
