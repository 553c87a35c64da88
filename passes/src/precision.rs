//! `precision`: move a model's float computation from one float dtype to another (`f32` →
//! `bf16` by default), as a mixed-precision program.
//!
//! The rewrite knows no specific op. In every function:
//! - constants of dtype `from` are converted (rounded to nearest even) to `dtype`, finite values
//!   beyond its range clamped to its largest finite value (a mask's `finfo(f32).min` stays finite);
//! - every `dtype` attribute equal to `from` (casts, iotas, dequantize targets) becomes `dtype`;
//! - inputs of dtype `from` become `dtype`, except the interface of the functions nobody calls
//!   (the entry, a `decode` function) when `keep-interface` is set: they keep their dtype, with a
//!   cast after each such input and one before each such output, so callers and sessions feed and
//!   read the same tensors as before;
//! - ops named in `keep-ops` keep computing in `from`: their `dtype`-typed operands are cast up,
//!   their `from` results cast back down (an autocast list such as `softmax,rms_norm`);
//! - every result type is re-inferred, callees before callers.
//!
//! Conversions to an 8- or 4-bit float need scales and are the quantization passes' job; this
//! pass refuses them. An op whose type rule rejects the new dtype is an error naming the node
//! and suggesting `keep-ops`. The pass is a [`PassKind::Quantization`]: the pass manager's numeric
//! check compares the outputs with the program before it by cosine similarity.

use crate::error::PassError;
use crate::pass::{Changed, Pass, PassCx, PassKind};
use fuselage_ir::ops::cast::Cast;
use fuselage_ir::ops::util::callees;
use fuselage_ir::ops::{InferCx, OP_NAMES};
use fuselage_ir::tensor::encode_values;
use fuselage_ir::{Constant, DType, Graph, Module, Node, Op, Storage, ValueId};
use std::collections::{BTreeSet, HashMap};

crate::pass_options! {
    /// Options of `precision`.
    pub struct PrecisionOptions {
        /// The float dtype the computation moves to: `bf16`, `f16`, `f32` or `f64`.
        dtype: String = "bf16".into(),
        /// The float dtype that is replaced.
        from: String = "f32".into(),
        /// Keep the dtypes of the inputs and outputs of functions nobody calls (casts inside).
        keep_interface: bool = true,
        /// Ops that keep computing in `from` (comma-separated op names, e.g. `softmax,rms_norm`).
        keep_ops: String = String::new(),
    }
}

/// The `precision` pass.
#[derive(Debug, Clone)]
pub struct Precision {
    from: DType,
    to: DType,
    keep_interface: bool,
    keep_ops: BTreeSet<String>,
}

const NAME: &str = "precision";

fn options_error(message: String) -> PassError {
    PassError::options(NAME, message)
}

fn failed(message: String) -> PassError {
    PassError::failed(NAME, message)
}

/// A float dtype a whole program may compute in (no scales needed).
fn program_float(key: &str, s: &str) -> Result<DType, PassError> {
    let d: DType = s
        .parse()
        .map_err(|e| options_error(format!("{key}: {e}")))?;
    match d {
        DType::BF16 | DType::F16 | DType::F32 | DType::F64 => Ok(d),
        other if other.is_float() => Err(options_error(format!(
            "{key}: {other} needs scales; quantize to it with a quantization pass (allowed: bf16, f16, f32, f64)"
        ))),
        other => Err(options_error(format!(
            "{key}: {other} is not a float dtype (allowed: bf16, f16, f32, f64)"
        ))),
    }
}

impl Precision {
    /// Create the pass; fails on a dtype that is no program float, equal dtypes, or an unknown
    /// op in `keep-ops`.
    pub fn new(options: PrecisionOptions) -> Result<Self, PassError> {
        let to = program_float("dtype", &options.dtype)?;
        let from = program_float("from", &options.from)?;
        if to == from {
            return Err(options_error(format!(
                "`dtype` and `from` are both {to}: nothing to change"
            )));
        }
        let mut keep_ops = BTreeSet::new();
        for name in options
            .keep_ops
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            if !OP_NAMES.contains(&name) {
                return Err(options_error(format!(
                    "keep-ops: unknown op `{name}` (ops: {})",
                    OP_NAMES.join(", ")
                )));
            }
            keep_ops.insert(name.to_string());
        }
        Ok(Precision {
            from,
            to,
            keep_interface: options.keep_interface,
            keep_ops,
        })
    }
}

/// Convert a constant's values to `to` without an f64 copy of the whole tensor: rounded to
/// nearest even, and finite values beyond `to`'s range clamped to its largest finite value (the
/// `finfo(dtype).min` of an attention mask stays finite: `0 · -inf` would be NaN). Returns the
/// constant and the number of clamped values.
fn convert_constant(k: &Constant, name: &str, to: DType) -> Result<(Constant, u64), PassError> {
    let values = k
        .to_f32_vec(name)
        .map_err(|e| failed(format!("constant `{name}`: {e}")))?;
    let max = to.float_format().map_or(f64::MAX, |f| f.max);
    let mut clamped = 0u64;
    let mut bytes = Vec::with_capacity(to.storage_bytes(values.len()));
    for chunk in values.chunks(1 << 16) {
        let exact: Vec<f64> = chunk
            .iter()
            .map(|&x| {
                let x = f64::from(x);
                let y = to.cast(x);
                if x.is_finite() && y.is_infinite() {
                    clamped += 1;
                    max.copysign(x)
                } else {
                    y
                }
            })
            .collect();
        bytes.extend(encode_values(to, &exact));
    }
    let c = Constant::new(
        k.ty.with_dtype(to),
        Storage::Dense {
            bytes: bytes.into(),
        },
    );
    Ok((c, clamped))
}

/// Functions in an order where every callee comes before its callers.
fn callees_first(m: &Module) -> Vec<String> {
    fn visit(m: &Module, f: &str, done: &mut BTreeSet<String>, out: &mut Vec<String>) {
        // Recursion is rejected by the verifier; `done` is set before descending so a cycle
        // cannot loop here either.
        if !done.insert(f.to_string()) {
            return;
        }
        if let Some(g) = m.functions.get(f) {
            for c in callees(g) {
                visit(m, &c, done, out);
            }
            out.push(f.to_string());
        }
    }
    let mut done = BTreeSet::new();
    let mut out = vec![];
    for f in m.functions.keys() {
        visit(m, f, &mut done, &mut out);
    }
    out
}

/// What one function's rewrite did.
#[derive(Default)]
struct Counts {
    attributes: u64,
    inputs_retyped: u64,
    interface_casts: u64,
    keep_casts: u64,
    results_retyped: u64,
}

impl Precision {
    /// The op with its `dtype` attribute moved from `from` to `to`, if it has one equal to `from`.
    fn retyped_attrs(&self, op: &Op) -> Result<Option<Op>, PassError> {
        let mut attrs = op.attrs();
        match attrs.get_mut("dtype") {
            Some(v) if v.as_str() == Some(self.from.name()) => {
                *v = serde_json::Value::String(self.to.name().to_string());
            }
            _ => return Ok(None),
        }
        Op::from_attrs(op.name(), attrs)
            .map(Some)
            .map_err(|e| failed(format!("retyping the `dtype` of a {} node: {e}", op.name())))
    }

    /// Rewrite one function (its callees are already rewritten).
    fn rewrite_function(
        &self,
        m: &Module,
        g: &mut Graph,
        fname: &str,
        public: bool,
    ) -> Result<Counts, PassError> {
        let mut c = Counts::default();
        let order = g.topo_order().map_err(|id| {
            failed(format!(
                "@{fname}: {} is on a cycle or uses a missing operand",
                g.describe(id)
            ))
        })?;
        let cast_node = |g: &Graph, v: ValueId, to: DType| -> Result<Node, PassError> {
            let ty = g
                .value_type(v)
                .ok_or_else(|| failed(format!("@{fname}: value {v} does not exist")))?;
            Ok(Node {
                op: Op::Cast(Cast { dtype: to }),
                operands: vec![v],
                results: vec![ty.with_dtype(to)],
                name: None,
            })
        };
        // Values replaced by a cast of themselves, for every later reader.
        let mut remap: HashMap<ValueId, ValueId> = HashMap::new();
        let originally_from: Vec<bool> = g
            .outputs
            .iter()
            .map(|o| g.value_type(o.value).map(|t| t.dtype) == Some(self.from))
            .collect();
        for id in order {
            let node = g.node(id).expect("ids come from topo_order");
            if let Op::Input(_) = node.op {
                if node.results.first().map(|t| t.dtype) != Some(self.from) {
                    continue;
                }
                if public && self.keep_interface {
                    let v = ValueId::new(id, 0);
                    let cast = cast_node(g, v, self.to)?;
                    let cid = g.add_node(cast);
                    remap.insert(v, ValueId::new(cid, 0));
                    c.interface_casts += 1;
                } else {
                    let n = g.node_mut(id).expect("live");
                    n.results[0] = n.results[0].with_dtype(self.to);
                    c.inputs_retyped += 1;
                }
                continue;
            }
            let kept = self.keep_ops.contains(node.op.name());
            let mut operands: Vec<ValueId> = node
                .operands
                .iter()
                .map(|o| *remap.get(o).unwrap_or(o))
                .collect();
            let mut op = node.op.clone();
            let before = node.results.clone();
            if kept {
                for o in operands.iter_mut() {
                    if g.value_type(*o).map(|t| t.dtype) == Some(self.to) {
                        let cast = cast_node(g, *o, self.from)?;
                        *o = ValueId::new(g.add_node(cast), 0);
                        c.keep_casts += 1;
                    }
                }
            } else if let Some(new) = self.retyped_attrs(&op)? {
                op = new;
                c.attributes += 1;
            }
            let tys = crate::irx::operand_types(g, fname, id, &operands).map_err(failed)?;
            let results = op.infer(&InferCx { module: m }, &tys).map_err(|e| {
                failed(format!(
                    "@{fname}: {} ({}) at {}: {e} (name `{}` in keep-ops to compute it in {})",
                    g.describe(id),
                    op.name(),
                    self.to,
                    op.name(),
                    self.from
                ))
            })?;
            c.results_retyped += results
                .iter()
                .zip(&before)
                .filter(|(a, b)| a.dtype != b.dtype)
                .count() as u64;
            let n = g.node_mut(id).expect("live");
            n.op = op;
            n.operands = operands;
            n.results = results.clone();
            if kept {
                for (slot, ty) in results.iter().enumerate() {
                    if ty.dtype == self.from {
                        let v = ValueId::new(id, slot as u32);
                        let cast = cast_node(g, v, self.to)?;
                        remap.insert(v, ValueId::new(g.add_node(cast), 0));
                        c.keep_casts += 1;
                    }
                }
            }
        }
        for (i, was_from) in originally_from.into_iter().enumerate() {
            let v = g.outputs[i].value;
            let v = *remap.get(&v).unwrap_or(&v);
            let now = g.value_type(v).map(|t| t.dtype);
            g.outputs[i].value =
                if public && self.keep_interface && was_from && now != Some(self.from) {
                    let cast = cast_node(g, v, self.from)?;
                    c.interface_casts += 1;
                    ValueId::new(g.add_node(cast), 0)
                } else {
                    v
                };
        }
        Ok(c)
    }
}

impl Pass for Precision {
    fn name(&self) -> &'static str {
        NAME
    }

    fn kind(&self) -> PassKind {
        PassKind::Quantization
    }

    fn run(&mut self, m: &mut Module, cx: &mut PassCx) -> Result<Changed, PassError> {
        let names: Vec<String> = m
            .constants
            .iter()
            .filter(|(_, k)| k.ty.dtype == self.from)
            .map(|(n, _)| n.clone())
            .collect();
        let (mut bytes_before, mut bytes_after, mut clamped) = (0u64, 0u64, 0u64);
        for name in &names {
            let k = &m.constants[name];
            let (new, c) = convert_constant(k, name, self.to)?;
            clamped += c;
            bytes_before += k.storage_bytes();
            bytes_after += new.storage_bytes();
            m.constants.insert(name.clone(), new.into());
        }
        cx.bump("constants-converted", names.len() as u64);
        cx.bump("constant-bytes-before", bytes_before);
        cx.bump("constant-bytes-after", bytes_after);
        cx.bump("constant-values-clamped", clamped);
        let called: BTreeSet<String> = m.functions.values().flat_map(callees).collect();
        let mut changed = !names.is_empty();
        for fname in callees_first(m) {
            let mut g = std::mem::take(m.functions.get_mut(&fname).expect("listed"));
            let r = self.rewrite_function(m, &mut g, &fname, !called.contains(&fname));
            m.functions.insert(fname.clone(), g);
            let c = r?;
            cx.bump("attributes-retyped", c.attributes);
            cx.bump("inputs-retyped", c.inputs_retyped);
            cx.bump("interface-casts", c.interface_casts);
            cx.bump("keep-op-casts", c.keep_casts);
            cx.bump("results-retyped", c.results_retyped);
            changed |= c.attributes + c.inputs_retyped + c.interface_casts + c.results_retyped > 0;
        }
        Ok(changed.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use fuselage_ir::ops::call::Call;
    use fuselage_ir::ops::iota::Iota;
    use fuselage_ir::ops::softmax::Softmax;
    use fuselage_ir::ops::{add::Add, matmul::MatMul};
    use fuselage_ir::{Dim, Executor, NodeId, Reference, Tensor, TensorType};

    fn f32s(shape: &[u64]) -> TensorType {
        TensorType::new(DType::F32, shape.iter().map(|&d| Dim::from(d)))
    }

    fn nodes_named(g: &Graph, op: &str) -> Vec<NodeId> {
        g.nodes()
            .filter(|(_, n)| n.op.name() == op)
            .map(|(id, _)| id)
            .collect()
    }

    /// `p = softmax(f(x) + iota)` with `f(x) = x·w` a called function.
    fn model() -> Module {
        let mut m = Module::new();
        let w: Vec<f32> = (0..12).map(|i| i as f32 * 0.1 - 0.55).collect();
        m.add_constant(
            "w",
            Constant::from_tensor(&Tensor::from_f32(vec![3, 4], &w).unwrap()),
        );
        let mut f = Graph::new();
        let x = f.add_input("x", f32s(&[2, 3]));
        let k = f.add_inferred(&m, constant("w"), vec![], None).unwrap();
        let y = f
            .add_inferred(&m, Op::MatMul(MatMul {}), vec![x.into(), k.into()], None)
            .unwrap();
        f.add_output("y", y.into());
        m.functions.insert("f".into(), f);
        let mut g = Graph::new();
        let x = g.add_input("x", f32s(&[2, 3]));
        let call = Op::Call(Call { callee: "f".into() });
        let y = g.add_inferred(&m, call, vec![x.into()], None).unwrap();
        let iota = Op::Iota(Iota {
            shape: vec![2u64.into(), 4u64.into()],
            axis: 1,
            dtype: DType::F32,
        });
        let i = g.add_inferred(&m, iota, vec![], None).unwrap();
        let s = g
            .add_inferred(&m, Op::Add(Add {}), vec![y.into(), i.into()], None)
            .unwrap();
        let p = g
            .add_inferred(&m, Op::Softmax(Softmax { axis: -1 }), vec![s.into()], None)
            .unwrap();
        g.add_output("p", p.into());
        m.functions.insert("main".into(), g);
        m
    }

    #[test]
    fn bf16_program_keeps_its_f32_interface_and_stays_close() {
        let before = model();
        let mut m = before.clone();
        let (changed, stats) = run_pass_with(NAME, serde_json::json!({}), &mut m);
        assert!(changed);
        assert_eq!(stats["constants-converted"], 1);
        assert_eq!(stats["constant-bytes-before"], 48);
        assert_eq!(stats["constant-bytes-after"], 24);
        assert_eq!(stats["interface-casts"], 2);
        assert_eq!(m.constants["w"].ty.dtype, DType::BF16);
        let main = &m.functions["main"];
        // The entry keeps f32 in and out; the callee's interface moved to bf16.
        assert_eq!(main.input_types()[0].dtype, DType::F32);
        assert_eq!(main.output_types()[0].as_ref().unwrap().dtype, DType::F32);
        assert_eq!(m.functions["f"].input_types()[0].dtype, DType::BF16);
        let iota = nodes_named(main, "iota")[0];
        assert_eq!(main.node(iota).unwrap().results[0].dtype, DType::BF16);
        let sm = nodes_named(main, "softmax")[0];
        assert_eq!(main.node(sm).unwrap().results[0].dtype, DType::BF16);
        assert_same_outputs(&before, &m, PassKind::Quantization, 4);
        let x = Tensor::from_f32(vec![2, 3], &[0.3, -1.2, 0.7, 2.0, 0.1, -0.4]).unwrap();
        let a = Reference
            .run(&before, "main", std::slice::from_ref(&x))
            .unwrap();
        let b = Reference.run(&m, "main", &[x]).unwrap();
        for (p, q) in a[0].data().iter().zip(b[0].data()) {
            // bf16 keeps 8 significant bits: a few units of 2^-8 relative, after three ops.
            assert!((p - q).abs() <= 4.0 * p.abs() / 256.0 + 1e-3, "{p} vs {q}");
            // The output is a bf16 value carried in f32.
            assert_eq!(DType::BF16.round(*q), *q);
        }
    }

    #[test]
    fn keep_ops_compute_in_the_old_dtype_and_interfaces_can_move() {
        let before = model();
        let mut m = before.clone();
        let opts = serde_json::json!({"keep-ops": "softmax", "keep-interface": false});
        let (_, stats) = run_pass_with(NAME, opts, &mut m);
        assert_eq!(stats["keep-op-casts"], 2);
        assert_eq!(stats["interface-casts"], 0);
        let main = &m.functions["main"];
        assert_eq!(main.input_types()[0].dtype, DType::BF16);
        assert_eq!(main.output_types()[0].as_ref().unwrap().dtype, DType::BF16);
        let sm = nodes_named(main, "softmax")[0];
        let n = main.node(sm).unwrap();
        assert_eq!(n.results[0].dtype, DType::F32);
        assert_eq!(main.value_type(n.operands[0]).unwrap().dtype, DType::F32);
        // Cast up before softmax, down after it.
        assert_eq!(nodes_named(main, "cast").len(), 2);
    }

    #[test]
    fn f16_programs_and_programs_without_f32_values() {
        let before = model();
        let mut m = before.clone();
        run_pass_with(NAME, serde_json::json!({"dtype": "f16"}), &mut m);
        assert_eq!(m.constants["w"].ty.dtype, DType::F16);
        assert_same_outputs(&before, &m, PassKind::Quantization, 4);
        // Moving bf16 to f16 in a module without bf16 values changes nothing.
        let mut m = before.clone();
        let (changed, _) = run_pass_with(
            NAME,
            serde_json::json!({"from": "bf16", "dtype": "f16"}),
            &mut m,
        );
        assert!(!changed);
        assert_eq!(m, before);
    }

    #[test]
    fn bad_options_are_errors_that_say_why() {
        let e = |o: serde_json::Value| crate::registry::create(NAME, &o).err().unwrap().to_string();
        assert!(e(serde_json::json!({"dtype": "f8e4m3fn"})).contains("needs scales"));
        assert!(e(serde_json::json!({"dtype": "i8"})).contains("not a float dtype"));
        assert!(e(serde_json::json!({"dtype": "f32"})).contains("both f32"));
        let k = e(serde_json::json!({"keep-ops": "softmax,sofmax"}));
        assert!(k.contains("unknown op `sofmax`"), "{k}");
    }
}
