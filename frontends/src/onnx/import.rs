//! The graph importer: ONNX nodes → IR nodes, with a per-value analysis of what is known at
//! import time (constants and shape vectors with symbolic entries) so shape subgraphs fold away.

use super::proto::{AttributeProto, GraphProto, ModelProto, NodeProto, ValueInfoProto};
use super::tensor::{decode_tensor, onnx_dtype, Known};
use crate::error::{FrontendError, UnsupportedOp};
use fuselage_ir::ops::reshape::ReshapeDim;
use fuselage_ir::ops::{EvalCx, InferCx, Op};
use fuselage_ir::{DType, Dim, Graph, Module, TensorType, ValueId};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

/// One entry of a shape vector known at import time.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum SymDim {
    /// A known integer.
    Int(i64),
    /// A symbolic dim of the IR (from a `dim_param`).
    Sym(String),
    /// Computed from symbols in a way the IR cannot name (e.g. `B*H`).
    Unknown,
}

impl std::fmt::Display for SymDim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SymDim::Int(n) => write!(f, "{n}"),
            SymDim::Sym(s) => f.write_str(s),
            SymDim::Unknown => f.write_str("?"),
        }
    }
}

/// What the importer knows about an ONNX value.
#[derive(Clone, Debug)]
pub(crate) enum Val {
    /// A run-time value of the IR graph.
    Ir(ValueId),
    /// A value known at import time, with the name its constant gets if it is materialized.
    Known(Arc<Known>, Arc<str>),
    /// An `i64` scalar or 1-D vector of dims, some symbolic (a folded shape computation).
    Shape { scalar: bool, dims: Vec<SymDim> },
}

/// Why a node was not imported.
pub(crate) enum NodeErr {
    /// The op (or this use of it) is not supported.
    Unsupported(String),
    /// The node is malformed or its inputs do not fit the op.
    Error(String),
}

pub(crate) type NResult<T> = Result<T, NodeErr>;

macro_rules! unsup {
    ($($t:tt)*) => { return Err(NodeErr::Unsupported(format!($($t)*))) };
}
macro_rules! bad {
    ($($t:tt)*) => { return Err(NodeErr::Error(format!($($t)*))) };
}

fn err(e: impl std::fmt::Display) -> NodeErr {
    NodeErr::Error(e.to_string())
}

/// Build an op from its name and attributes.
pub(crate) fn op(name: &str, attrs: serde_json::Value) -> NResult<Op> {
    Op::from_attrs(name, attrs).map_err(err)
}

/// Attribute access on a node.
pub(crate) struct Attrs<'a>(pub &'a NodeProto);

impl Attrs<'_> {
    fn get(&self, name: &str) -> Option<&AttributeProto> {
        self.0.attribute.iter().find(|a| a.name == name)
    }
    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
    pub fn i(&self, name: &str, default: i64) -> i64 {
        self.get(name).map(|a| a.i).unwrap_or(default)
    }
    pub fn f(&self, name: &str, default: f64) -> f64 {
        self.get(name).map(|a| a.f as f64).unwrap_or(default)
    }
    pub fn ints(&self, name: &str) -> Option<Vec<i64>> {
        self.get(name).map(|a| a.ints.clone())
    }
    pub fn floats(&self, name: &str) -> Option<Vec<f32>> {
        self.get(name).map(|a| a.floats.clone())
    }
    pub fn s(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(|a| String::from_utf8_lossy(&a.s).into_owned())
    }
    pub fn t(&self, name: &str) -> Option<&super::proto::TensorProto> {
        self.get(name).and_then(|a| a.t.as_ref())
    }
}

/// The op types the importer maps (in the default domain), for the up-front scan.
pub(crate) const SUPPORTED: &[&str] = &[
    "Abs",
    "Add",
    "And",
    "ArgMax",
    "AveragePool",
    "Cast",
    "CastLike",
    "Clip",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "Cos",
    "Div",
    "Dropout",
    "Einsum",
    "Equal",
    "Erf",
    "Exp",
    "Expand",
    "Flatten",
    "Gather",
    "Gelu",
    "Gemm",
    "GlobalAveragePool",
    "Greater",
    "GreaterOrEqual",
    "GroupNormalization",
    "Identity",
    "InstanceNormalization",
    "IsNaN",
    "LayerNormalization",
    "LeakyRelu",
    "Less",
    "LessOrEqual",
    "Log",
    "LogSoftmax",
    "MatMul",
    "Max",
    "MaxPool",
    "Mean",
    "Min",
    "Mul",
    "Neg",
    "Not",
    "Or",
    "Pow",
    "Range",
    "Reciprocal",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceSum",
    "Relu",
    "Reshape",
    "Resize",
    "Shape",
    "Sigmoid",
    "Sin",
    "Slice",
    "Softmax",
    "Softplus",
    "Split",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Sum",
    "Tanh",
    "TopK",
    "Transpose",
    "Unsqueeze",
    "Where",
    "Xor",
];

/// The importer's state.
pub(crate) struct Importer {
    pub file: String,
    pub dir: Option<std::path::PathBuf>,
    pub module: Module,
    pub graph: Graph,
    pub vals: HashMap<String, Val>,
    /// Values not produced (unsupported upstream, or an optional output the importer does not
    /// compute), with the reason when a consumer should be told.
    missing: HashMap<String, Option<String>>,
    materialized: HashMap<usize, (Arc<Known>, ValueId)>,
    pub opset: i64,
    opsets: HashMap<String, i64>,
    unsupported: Vec<UnsupportedOp>,
    errors: Vec<String>,
    /// Name of the node being imported (IR node name of its final op).
    pub cur: String,
}

impl Importer {
    fn fail(&self, message: impl Into<String>) -> FrontendError {
        FrontendError::Onnx {
            file: self.file.clone(),
            message: message.into(),
        }
    }

    /// Import a decoded model.
    pub fn run(
        model: &ModelProto,
        file: &str,
        dir: Option<&Path>,
    ) -> Result<Module, FrontendError> {
        let mut opsets = HashMap::new();
        for o in &model.opset_import {
            let d = if o.domain == "ai.onnx" {
                ""
            } else {
                o.domain.as_str()
            };
            opsets.insert(d.to_string(), o.version);
        }
        let mut im = Importer {
            file: file.to_string(),
            dir: dir.map(Path::to_path_buf),
            module: Module::new(),
            graph: Graph::new(),
            vals: HashMap::new(),
            missing: HashMap::new(),
            materialized: HashMap::new(),
            opset: 0,
            opsets,
            unsupported: vec![],
            errors: vec![],
            cur: String::new(),
        };
        im.opset = *im
            .opsets
            .get("")
            .ok_or_else(|| im.fail("the model imports no opset of the default ONNX domain"))?;
        if im.opset < 13 {
            return Err(im.fail(format!(
                "opset {} of the default domain is older than 13, the oldest supported",
                im.opset
            )));
        }
        let g = model
            .graph
            .as_ref()
            .ok_or_else(|| im.fail("the model has no graph"))?;
        im.import_graph(g)?;
        Ok(im.module)
    }

    fn import_graph(&mut self, g: &GraphProto) -> Result<(), FrontendError> {
        let mut inits = HashSet::new();
        for t in &g.initializer {
            let k = decode_tensor(t, self.dir.as_deref())
                .map_err(|m| self.fail(format!("initializer `{}`: {m}", t.name)))?;
            inits.insert(t.name.clone());
            self.vals.insert(
                t.name.clone(),
                Val::Known(Arc::new(k), t.name.as_str().into()),
            );
        }
        for vi in &g.input {
            if inits.contains(&vi.name) {
                continue;
            }
            let ty = self.value_info_type(vi)?;
            let id = self.graph.add_input(&vi.name, ty);
            self.vals.insert(vi.name.clone(), Val::Ir(id.into()));
        }
        // Up-front scan: every node whose op type is not mapped at all.
        for n in &g.node {
            let supported = (n.domain.is_empty() || n.domain == "ai.onnx")
                && SUPPORTED.contains(&n.op_type.as_str());
            if !supported {
                self.unsupported.push(self.unsupported_op(n, None));
            }
        }
        let reported: HashSet<usize> = g
            .node
            .iter()
            .enumerate()
            .filter(|(_, n)| {
                !((n.domain.is_empty() || n.domain == "ai.onnx")
                    && SUPPORTED.contains(&n.op_type.as_str()))
            })
            .map(|(i, _)| i)
            .collect();
        for (i, n) in g.node.iter().enumerate() {
            if reported.contains(&i) {
                self.mark_missing(n, None);
                continue;
            }
            // Skip nodes downstream of something not imported.
            let mut skip = false;
            for inp in n.input.iter().filter(|s| !s.is_empty()) {
                if let Some(reason) = self.missing.get(inp) {
                    if let Some(r) = reason {
                        self.errors.push(format!(
                            "node `{}` ({}): input `{inp}` {r}",
                            node_name(n),
                            n.op_type
                        ));
                    }
                    skip = true;
                    break;
                }
                if !self.vals.contains_key(inp) {
                    self.errors.push(format!(
                        "node `{}` ({}): input `{inp}` is not defined by any earlier node, \
                         initializer or graph input",
                        node_name(n),
                        n.op_type
                    ));
                    skip = true;
                    break;
                }
            }
            if skip {
                self.mark_missing(n, None);
                continue;
            }
            self.cur = node_name(n);
            match self.convert(n) {
                Ok(outs) => {
                    for (k, name) in n.output.iter().enumerate() {
                        if name.is_empty() {
                            continue;
                        }
                        match outs.get(k) {
                            Some(v) => {
                                self.vals.insert(name.clone(), v.clone());
                            }
                            None => {
                                self.missing.insert(
                                    name.clone(),
                                    Some(format!(
                                        "is output {k} of {}, which the importer does not compute",
                                        n.op_type
                                    )),
                                );
                            }
                        }
                    }
                }
                Err(NodeErr::Unsupported(reason)) => {
                    self.unsupported.push(self.unsupported_op(n, Some(reason)));
                    self.mark_missing(n, None);
                }
                Err(NodeErr::Error(m)) => {
                    self.errors
                        .push(format!("node `{}` ({}): {m}", node_name(n), n.op_type));
                    self.mark_missing(n, None);
                }
            }
        }
        for o in &g.output {
            if let Some(reason) = self.missing.get(&o.name) {
                if let Some(r) = reason {
                    self.errors.push(format!("graph output `{}` {r}", o.name));
                }
                continue;
            }
            let Some(v) = self.vals.get(&o.name).cloned() else {
                self.errors.push(format!(
                    "graph output `{}` is not defined by any node",
                    o.name
                ));
                continue;
            };
            self.cur = o.name.clone();
            match self.ir(&v) {
                Ok(id) => self.graph.add_output(&o.name, id),
                Err(NodeErr::Unsupported(m)) | Err(NodeErr::Error(m)) => {
                    self.errors.push(format!("graph output `{}`: {m}", o.name))
                }
            }
        }
        if !self.unsupported.is_empty() {
            return Err(FrontendError::OnnxUnsupported {
                file: self.file.clone(),
                ops: std::mem::take(&mut self.unsupported),
                errors: std::mem::take(&mut self.errors),
            });
        }
        if !self.errors.is_empty() {
            return Err(self.fail(self.errors.join("; ")));
        }
        let graph = std::mem::take(&mut self.graph);
        self.module.functions.insert("main".into(), graph);
        fuselage_ir::verify::verify(&self.module)
            .map_err(|e| self.fail(format!("the imported module does not verify: {e}")))?;
        self.module.remove_unused_constants();
        Ok(())
    }

    fn mark_missing(&mut self, n: &NodeProto, reason: Option<String>) {
        for o in n.output.iter().filter(|s| !s.is_empty()) {
            self.missing.insert(o.clone(), reason.clone());
        }
    }

    fn unsupported_op(&self, n: &NodeProto, reason: Option<String>) -> UnsupportedOp {
        let domain = if n.domain == "ai.onnx" {
            ""
        } else {
            n.domain.as_str()
        };
        UnsupportedOp {
            op_type: if domain.is_empty() {
                n.op_type.clone()
            } else {
                format!("{domain}::{}", n.op_type)
            },
            opset: self.opsets.get(domain).copied().unwrap_or(0),
            node: node_name(n),
            reason,
        }
    }

    fn value_info_type(&self, vi: &ValueInfoProto) -> Result<TensorType, FrontendError> {
        let tt = vi
            .r#type
            .as_ref()
            .and_then(|t| t.tensor_type.as_ref())
            .ok_or_else(|| self.fail(format!("graph input `{}` is not a tensor", vi.name)))?;
        let dtype = onnx_dtype(tt.elem_type)
            .map_err(|m| self.fail(format!("graph input `{}`: {m}", vi.name)))?;
        let shape = tt.shape.as_ref().ok_or_else(|| {
            self.fail(format!(
                "graph input `{}` has no shape (its rank must be known)",
                vi.name
            ))
        })?;
        let mut dims = vec![];
        for (i, d) in shape.dim.iter().enumerate() {
            dims.push(match (&d.dim_value, &d.dim_param) {
                (Some(v), _) if *v >= 0 => Dim::Fixed(*v as u64),
                (Some(v), _) => {
                    return Err(self.fail(format!("graph input `{}` has negative dim {v}", vi.name)))
                }
                (None, Some(p)) if !p.is_empty() => Dim::Sym(p.clone()),
                _ => Dim::Sym(format!("{}_{i}", vi.name)),
            });
        }
        Ok(TensorType::new(dtype, dims))
    }

    // ----- values -----

    /// The type of a value.
    pub fn ty(&self, v: &Val) -> NResult<TensorType> {
        match v {
            Val::Ir(id) => self
                .graph
                .value_type(*id)
                .cloned()
                .ok_or_else(|| err(format!("value {id} has no type"))),
            Val::Known(k, _) => Ok(k.ty()),
            Val::Shape { scalar, dims } => Ok(if *scalar {
                TensorType::scalar(DType::I64)
            } else {
                TensorType::fixed(DType::I64, &[dims.len()])
            }),
        }
    }

    /// A fresh known value.
    pub fn known(&self, k: Known, what: &str) -> Val {
        Val::Known(Arc::new(k), format!("{}.{what}", self.cur).into())
    }

    /// A scalar constant.
    pub fn scalar(&self, dtype: DType, v: f64, what: &str) -> Val {
        self.known(
            Known::from_tensor(&fuselage_ir::Tensor::scalar(dtype, v)),
            what,
        )
    }

    /// Fully-known value of `v`, if any.
    pub fn known_of(&self, v: &Val) -> Option<Arc<Known>> {
        match v {
            Val::Known(k, _) => Some(k.clone()),
            Val::Shape { scalar, dims } => {
                let ints: Option<Vec<i64>> = dims
                    .iter()
                    .map(|d| match d {
                        SymDim::Int(n) => Some(*n),
                        _ => None,
                    })
                    .collect();
                let shape = if *scalar { vec![] } else { vec![dims.len()] };
                ints.map(|v| Arc::new(Known::from_i64s(shape, &v)))
            }
            Val::Ir(_) => None,
        }
    }

    /// The integer values of a known input (`what` names it in the error).
    pub fn ints(&self, v: &Val, what: &str) -> NResult<Vec<i64>> {
        match self.known_of(v) {
            Some(k) => k.ints().map_err(|m| err(format!("{what}: {m}"))),
            None => unsup!("{what} must be known at import time (a constant or a folded shape)"),
        }
    }

    /// The entries of a shape-like input (constants or folded shapes with symbols).
    pub fn sym_dims(&self, v: &Val, what: &str) -> NResult<Vec<SymDim>> {
        match v {
            Val::Shape { dims, .. } => Ok(dims.clone()),
            _ => Ok(self.ints(v, what)?.into_iter().map(SymDim::Int).collect()),
        }
    }

    /// The IR value of `v`, materializing constants.
    pub fn ir(&mut self, v: &Val) -> NResult<ValueId> {
        match v {
            Val::Ir(id) => Ok(*id),
            Val::Known(k, name) => {
                let key = Arc::as_ptr(k) as usize;
                if let Some((_, id)) = self.materialized.get(&key) {
                    return Ok(*id);
                }
                let cname = self.module.fresh_constant_name(name);
                self.module.add_constant(cname.clone(), k.constant());
                let node = self
                    .graph
                    .add_inferred(
                        &self.module,
                        op("constant", json!({ "name": cname }))?,
                        vec![],
                        None,
                    )
                    .map_err(err)?;
                let id = ValueId::new(node, 0);
                self.materialized.insert(key, (k.clone(), id));
                Ok(id)
            }
            Val::Shape { dims, .. } => {
                match self.known_of(v) {
                    Some(k) => {
                        let v = Val::Known(k, format!("{}.shape", self.cur).into());
                        self.ir(&v)
                    }
                    None => unsup!(
                    "the shape value [{}] has symbolic entries and would be needed as a run-time \
                     tensor",
                    dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
                ),
                }
            }
        }
    }

    /// Append an op (folded when every operand is known); `last` marks the op that computes
    /// the ONNX node's output and gets the node's name.
    pub fn emit_multi(&mut self, o: Op, args: &[Val], last: bool) -> NResult<Vec<Val>> {
        let known: Option<Vec<Arc<Known>>> = args.iter().map(|a| self.known_of(a)).collect();
        if let Some(ks) = known {
            if !args.is_empty() && ks.iter().all(|k| k.numel() <= 1 << 22) {
                // A folded constant is named after the constant it derives from (`w.transpose`).
                let base = match args {
                    [Val::Known(_, name)] => Some(format!("{name}.{}", o.name())),
                    _ => None,
                };
                if let Some(r) = self.fold(&o, &ks, base)? {
                    return Ok(r);
                }
            }
        }
        let mut ids = Vec::with_capacity(args.len());
        for a in args {
            ids.push(self.ir(a)?);
        }
        let name = if last { Some(self.cur.clone()) } else { None };
        let id = self
            .graph
            .add_inferred(&self.module, o, ids, name)
            .map_err(|e| match e {
                fuselage_ir::IrError::Type { message, op, .. } => err(format!("{op}: {message}")),
                e => err(e),
            })?;
        let n = self.graph.node(id).map(|n| n.results.len()).unwrap_or(0);
        Ok((0..n as u32)
            .map(|s| Val::Ir(ValueId::new(id, s)))
            .collect())
    }

    fn fold(
        &mut self,
        o: &Op,
        ks: &[Arc<Known>],
        base: Option<String>,
    ) -> NResult<Option<Vec<Val>>> {
        let mut tensors = Vec::with_capacity(ks.len());
        for k in ks {
            match k.tensor() {
                Ok(t) => tensors.push(t),
                // e.g. i64 past 2^53: leave it to the graph
                Err(_) => return Ok(None),
            }
        }
        let tys: Vec<TensorType> = ks.iter().map(|k| k.ty()).collect();
        let results = o
            .infer(
                &InferCx {
                    module: &self.module,
                },
                &tys,
            )
            .map_err(|e| err(format!("{}: {}", o.name(), e.0)))?;
        let bindings = HashMap::new();
        let refs: Vec<&fuselage_ir::Tensor> = tensors.iter().collect();
        let out = o
            .eval(
                &EvalCx {
                    module: &self.module,
                    bindings: &bindings,
                    result_types: &results,
                },
                &refs,
            )
            .map_err(|e| err(format!("{} (folding constants): {}", o.name(), e.0)))?;
        Ok(Some(
            out.iter()
                .map(|t| match &base {
                    Some(b) => Val::Known(Arc::new(Known::from_tensor(t)), b.as_str().into()),
                    None => self.known(Known::from_tensor(t), o.name()),
                })
                .collect(),
        ))
    }

    /// Append a single-result op.
    pub fn emit(&mut self, o: Op, args: &[Val], last: bool) -> NResult<Val> {
        let mut r = self.emit_multi(o, args, last)?;
        if r.is_empty() {
            bad!("op produced no result");
        }
        Ok(r.swap_remove(0))
    }

    /// Append an op by name and attributes.
    pub fn emitj(
        &mut self,
        name: &str,
        attrs: serde_json::Value,
        args: &[Val],
        last: bool,
    ) -> NResult<Val> {
        let o = op(name, attrs)?;
        self.emit(o, args, last)
    }

    /// Reshape to a target given as IR reshape dims.
    pub fn reshape(&mut self, x: &Val, dims: Vec<ReshapeDim>, last: bool) -> NResult<Val> {
        self.emitj(
            "reshape",
            json!({ "shape": dims }),
            std::slice::from_ref(x),
            last,
        )
    }
}

/// The name a node's IR op gets: its own, or its first output's.
pub(crate) fn node_name(n: &NodeProto) -> String {
    if !n.name.is_empty() {
        n.name.clone()
    } else {
        n.output
            .first()
            .cloned()
            .unwrap_or_else(|| n.op_type.clone())
    }
}

/// An IR reshape entry for a type dim.
pub(crate) fn rdim(d: &Dim) -> ReshapeDim {
    match d {
        Dim::Fixed(n) => ReshapeDim::Size(*n as i64),
        Dim::Sym(s) => ReshapeDim::Sym(s.clone()),
    }
}
