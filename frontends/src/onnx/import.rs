//! The graph importer: walks the ONNX graph, converts every node through the op table
//! ([`super::ops`]), and keeps what is known at import time about each value ([`Val`]) so that
//! constant and shape subgraphs fold instead of reaching the IR.

use super::node::{err, node_name, NResult, Node, NodeErr};
use super::ops;
use super::proto::{GraphProto, ModelProto, NodeProto, ValueInfoProto};
use super::tensor::{decode_tensor, onnx_dtype, Known};
use super::value::{sym_eval, SymT, Val, MAX_SYM_ELEMS};
use super::ImportOptions;
use crate::error::{FrontendError, UnsupportedOp};
use fuselage_ir::ops::constant::Constant as ConstOp;
use fuselage_ir::ops::dims::Dims;
use fuselage_ir::ops::{EvalCx, InferCx, Op};
use fuselage_ir::{DType, Dim, Graph, Module, NodeId, SymbolFacts, Tensor, TensorType, ValueId};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

/// Operands up to this many elements are folded through the reference semantics at import.
const FOLD_MAX_ELEMS: usize = 1 << 22;

/// The oldest opset of the default domain the importer reads.
pub(crate) const MIN_OPSET: i64 = 1;

/// The importer's state for one model.
pub(crate) struct Importer<'o> {
    pub file: String,
    pub dir: Option<std::path::PathBuf>,
    pub module: Module,
    pub graph: Graph,
    pub vals: HashMap<String, Val>,
    /// Values not produced (unsupported upstream, or an optional output the importer does not
    /// compute), with the reason when a consumer should be told.
    missing: HashMap<String, Option<String>>,
    /// IR values of materialized constants and symbolic tensors, by `Arc` address; the value
    /// is held so that its address cannot be reused by another one.
    materialized: HashMap<usize, (Val, ValueId)>,
    /// Opset version of the default domain.
    pub opset: i64,
    opsets: HashMap<String, i64>,
    unsupported: Vec<UnsupportedOp>,
    errors: Vec<String>,
    /// Name of the ONNX node being converted.
    pub cur: String,
    options: &'o ImportOptions,
    /// Graph input nodes and their names.
    graph_inputs: HashMap<NodeId, String>,
    /// Graph inputs whose value a converter needed at import time.
    wanted: BTreeSet<String>,
    /// Graph inputs imported as constants (their values were given).
    specialized: HashSet<String>,
    /// What the importer assumed about symbols, and why.
    notes: Vec<String>,
}

/// The result of an import.
pub(crate) struct Imported {
    pub module: Module,
    /// Graph inputs that became constants because their values determine shapes.
    pub specialized: Vec<String>,
    /// Facts the importer assumed about symbols, with the node that needed each.
    pub notes: Vec<String>,
}

impl<'o> Importer<'o> {
    fn fail(&self, message: impl Into<String>) -> FrontendError {
        FrontendError::Onnx {
            file: self.file.clone(),
            message: message.into(),
        }
    }

    /// Import a decoded model. When a converter needs the value of a graph input that
    /// `options.input_values` holds (e.g. `axes` of a Reduce given as an input), the model is
    /// imported again with that input as a constant.
    pub fn run(
        model: &ModelProto,
        file: &str,
        dir: Option<&Path>,
        options: &'o ImportOptions,
    ) -> Result<Imported, FrontendError> {
        let mut specialized = HashSet::new();
        for _ in 0..8 {
            let mut im = Importer::new(model, file, dir, options, specialized.clone())?;
            let g = model
                .graph
                .as_ref()
                .ok_or_else(|| im.fail("the model has no graph"))?;
            let result = im.import_graph(g);
            let wanted: HashSet<String> = im
                .wanted
                .iter()
                .filter(|n| options.input_values.contains_key(*n) && !specialized.contains(*n))
                .cloned()
                .collect();
            if result.is_err() && !wanted.is_empty() {
                specialized.extend(wanted);
                continue;
            }
            result?;
            let mut spec: Vec<String> = specialized.into_iter().collect();
            spec.sort();
            return Ok(Imported {
                module: im.module,
                specialized: spec,
                notes: im.notes,
            });
        }
        Err(FrontendError::Onnx {
            file: file.to_string(),
            message: "specializing graph inputs did not converge".into(),
        })
    }

    fn new(
        model: &ModelProto,
        file: &str,
        dir: Option<&Path>,
        options: &'o ImportOptions,
        specialized: HashSet<String>,
    ) -> Result<Self, FrontendError> {
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
            options,
            graph_inputs: HashMap::new(),
            wanted: BTreeSet::new(),
            specialized,
            notes: vec![],
        };
        // A model that uses only other domains still has default-domain semantics for
        // anything it may contain: take the newest opset then.
        im.opset = im.opsets.get("").copied().unwrap_or(ops::NEWEST_OPSET);
        if im.opset < MIN_OPSET {
            return Err(im.fail(format!(
                "opset {} of the default domain is older than {MIN_OPSET}, the oldest supported",
                im.opset
            )));
        }
        Ok(im)
    }

    fn import_graph(&mut self, g: &GraphProto) -> Result<(), FrontendError> {
        let mut inits = HashSet::new();
        for t in &g.initializer {
            let k = decode_tensor(t, self.dir.as_deref(), self.options.max_constant_bytes)
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
            if self.specialized.contains(&vi.name) {
                let t = self
                    .options
                    .input_values
                    .get(&vi.name)
                    .ok_or_else(|| self.fail(format!("no value for input `{}`", vi.name)))?;
                let ty = self.value_info_type(vi)?;
                if ty.dtype != t.dtype() || ty.rank() != t.rank() {
                    return Err(self.fail(format!(
                        "graph input `{}` is {ty}, but the value given for it is {}{:?}",
                        vi.name,
                        t.dtype(),
                        t.shape()
                    )));
                }
                self.vals.insert(
                    vi.name.clone(),
                    Val::Known(Arc::new(Known::from_tensor(t)), vi.name.as_str().into()),
                );
                continue;
            }
            let ty = self.value_info_type(vi)?;
            for s in ty.symbols() {
                // Batch and sequence symbols of real models are at least 1.
                self.module.facts.0.entry(s).or_insert_with(|| SymbolFacts {
                    min: Some(1),
                    ..Default::default()
                });
            }
            let id = self.graph.add_input(&vi.name, ty);
            self.graph_inputs.insert(id, vi.name.clone());
            self.vals.insert(vi.name.clone(), Val::Ir(id.into()));
        }
        // Up-front scan: every node whose op type has no converter at all.
        let mut reported = HashSet::new();
        for (i, n) in g.node.iter().enumerate() {
            if self.converter(n).is_none() {
                self.unsupported.push(self.unsupported_op(n, None));
                reported.insert(i);
            }
        }
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
            self.convert_node(n);
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
        let mut graph = std::mem::take(&mut self.graph);
        prune_dead(&mut graph);
        self.module.functions.insert("main".into(), graph);
        if !self.notes.is_empty() {
            // Facts assumed along the way simplify the types of nodes typed before them.
            fuselage_ir::verify::reinfer_types(&mut self.module)
                .map_err(|e| self.fail(format!("re-typing with the assumed facts: {e}")))?;
        }
        fuselage_ir::verify::verify(&self.module)
            .map_err(|e| self.fail(format!("the imported module does not verify: {e}")))?;
        self.module.remove_unused_constants();
        Ok(())
    }

    fn domain(n: &NodeProto) -> &str {
        if n.domain == "ai.onnx" {
            ""
        } else {
            n.domain.as_str()
        }
    }

    fn converter(&self, n: &NodeProto) -> Option<ops::Convert> {
        ops::lookup(Self::domain(n), &n.op_type)
    }

    /// Convert one node and record its outputs (or why they are missing).
    fn convert_node(&mut self, n: &NodeProto) {
        let Some(convert) = self.converter(n) else {
            return;
        };
        self.cur = node_name(n);
        let first_new = self.graph.arena_len();
        let node = Node {
            proto: n,
            opset: self
                .opsets
                .get(Self::domain(n))
                .copied()
                .unwrap_or(self.opset),
        };
        match convert(self, &node) {
            Ok(outs) => {
                for (k, name) in n.output.iter().enumerate() {
                    if name.is_empty() {
                        continue;
                    }
                    match outs.get(k) {
                        Some(v) => {
                            self.name_output(v, k, name, first_new);
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

    /// Name the IR node computing output `k` after the ONNX node (output 0) or the output's
    /// value name (other outputs), when it was created by this node and has no name yet.
    fn name_output(&mut self, v: &Val, k: usize, value_name: &str, first_new: usize) {
        let Val::Ir(id) = v else { return };
        if (id.node.0 as usize) < first_new {
            return;
        }
        let name = if k == 0 {
            self.cur.clone()
        } else {
            value_name.to_string()
        };
        if let Some(node) = self.graph.node_mut(id.node) {
            if node.name.is_none() {
                node.name = Some(name);
            }
        }
    }

    fn mark_missing(&mut self, n: &NodeProto, reason: Option<String>) {
        for o in n.output.iter().filter(|s| !s.is_empty()) {
            self.missing.insert(o.clone(), reason.clone());
        }
    }

    fn unsupported_op(&self, n: &NodeProto, reason: Option<String>) -> UnsupportedOp {
        let domain = Self::domain(n);
        UnsupportedOp {
            op_type: if domain.is_empty() {
                n.op_type.clone()
            } else {
                format!("{domain}::{}", n.op_type)
            },
            opset: self.opsets.get(domain).copied().unwrap_or(0),
            node: node_name(n),
            reason: reason
                .or_else(|| ops::not_mapped_reason(domain, &n.op_type).map(str::to_string))
                .or_else(|| {
                    (!domain.is_empty() && !self.opsets.contains_key(domain))
                        .then(|| format!("the model imports no opset of domain `{domain}`"))
                }),
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
                (Some(v), _) if *v >= 0 => Dim::try_from_u64(*v as u64)
                    .map_err(|e| self.fail(format!("graph input `{}`: {e}", vi.name)))?,
                (Some(v), _) => {
                    return Err(self.fail(format!("graph input `{}` has negative dim {v}", vi.name)))
                }
                (None, Some(p)) if !p.is_empty() => dim_param(p),
                _ => Dim::sym(&format!("{}_{i}", vi.name)),
            });
        }
        let ty = TensorType::new(dtype, dims);
        if let Some(n) = ty.num_elements() {
            let bytes = (n as u128 * dtype.bits() as u128).div_ceil(8);
            if bytes > self.options.max_constant_bytes as u128 {
                return Err(self.fail(format!(
                    "graph input `{}` is {ty}: {bytes} bytes, over the memory budget of {} bytes",
                    vi.name, self.options.max_constant_bytes
                )));
            }
        }
        Ok(ty)
    }

    // ----- values -----

    /// The value of node input `i` (an error when it is missing).
    pub fn input(&self, n: &Node, i: usize) -> NResult<Val> {
        match n.proto.input.get(i).filter(|s| !s.is_empty()) {
            Some(name) => self
                .vals
                .get(name)
                .cloned()
                .ok_or_else(|| NodeErr::Error(format!("input `{name}` is not defined"))),
            None => Err(NodeErr::Error(format!("missing required input {i}"))),
        }
    }

    /// The value of an optional input.
    pub fn opt_input(&self, n: &Node, i: usize) -> NResult<Option<Val>> {
        if n.has_input(i) {
            Ok(Some(self.input(n, i)?))
        } else {
            Ok(None)
        }
    }

    /// All inputs (omitted optional inputs are an error).
    pub fn inputs(&self, n: &Node) -> NResult<Vec<Val>> {
        (0..n.proto.input.len()).map(|i| self.input(n, i)).collect()
    }

    /// The type of a value.
    pub fn ty(&self, v: &Val) -> NResult<TensorType> {
        match v {
            Val::Ir(id) => self
                .graph
                .value_type(*id)
                .cloned()
                .ok_or_else(|| err(format!("value {id} has no type"))),
            Val::Known(k, _) => Ok(k.ty()),
            Val::Sym(s) => Ok(s.ty()),
        }
    }

    /// Rank of a value.
    pub fn rank(&self, v: &Val) -> NResult<usize> {
        Ok(self.ty(v)?.rank())
    }

    /// Dims of a value's type.
    pub fn shape(&self, v: &Val) -> NResult<Vec<Dim>> {
        Ok(self.ty(v)?.shape)
    }

    /// Dtype of a value.
    pub fn dtype(&self, v: &Val) -> NResult<DType> {
        Ok(self.ty(v)?.dtype)
    }

    /// The constant value of `v`, if it is fully known.
    pub fn known_of(&self, v: &Val) -> Option<Arc<Known>> {
        match v {
            Val::Known(k, _) => Some(k.clone()),
            Val::Sym(s) => s.to_known().map(Arc::new),
            Val::Ir(_) => None,
        }
    }

    /// The symbolic view of `v`: a symbolic tensor, or a small integer constant.
    pub fn sym_of(&self, v: &Val) -> Option<SymT> {
        match v {
            Val::Sym(s) => Some((**s).clone()),
            Val::Known(k, _) => SymT::from_known(k),
            Val::Ir(_) => None,
        }
    }

    /// Record that a converter needed the value of `v` at import time; the reason for the
    /// unsupported error says where the value comes from.
    fn needs_known(&mut self, v: &Val, what: &str) -> NodeErr {
        if let Val::Ir(id) = v {
            if let Some(name) = self.graph_inputs.get(&id.node) {
                self.wanted.insert(name.clone());
                return NodeErr::Unsupported(format!(
                    "{what} must be known at import time, but it is graph input `{name}` (give \
                     its value to specialize the model on it, e.g. `fuselage run … --input \
                     {name}=FILE.npy`)"
                ));
            }
        }
        NodeErr::Unsupported(format!(
            "{what} must be known at import time (a constant or a shape computation), but it is \
             computed from run-time data"
        ))
    }

    /// The integer values of a known input.
    pub fn ints(&mut self, v: &Val, what: &str) -> NResult<Vec<i64>> {
        match self.known_of(v) {
            Some(k) => k.ints().map_err(|m| err(format!("{what}: {m}"))),
            None if matches!(v, Val::Sym(_)) => unsup_sym(what, v),
            None => Err(self.needs_known(v, what)),
        }
    }

    /// The float values of a known input.
    pub fn floats(&mut self, v: &Val, what: &str) -> NResult<Vec<f64>> {
        match self.known_of(v) {
            Some(k) => k.floats().map_err(|m| err(format!("{what}: {m}"))),
            None => Err(self.needs_known(v, what)),
        }
    }

    /// One known float (a scalar or a one-element tensor).
    pub fn scalar_f64(&mut self, v: &Val, what: &str) -> NResult<f64> {
        let f = self.floats(v, what)?;
        match f.as_slice() {
            [x] => Ok(*x),
            _ => Err(err(format!(
                "{what} must hold one value, found {}",
                f.len()
            ))),
        }
    }

    /// The entries of a shape-like input as dims (constants, or shape computations).
    pub fn dims_of(&mut self, v: &Val, what: &str) -> NResult<Vec<Dim>> {
        match self.sym_of(v) {
            Some(s) => Ok(s.data),
            None => Err(self.needs_known(v, what)),
        }
    }

    /// The IR value of `v`, materializing constants and symbolic tensors.
    pub fn ir(&mut self, v: &Val) -> NResult<ValueId> {
        match v {
            Val::Ir(id) => Ok(*id),
            Val::Known(k, name) => {
                let key = Arc::as_ptr(k) as *const u8 as usize;
                if let Some((_, id)) = self.materialized.get(&key) {
                    return Ok(*id);
                }
                let cname = self.module.fresh_constant_name(name);
                self.module.add_constant(cname.clone(), k.constant());
                let node = self
                    .graph
                    .add_inferred(
                        &self.module,
                        Op::Constant(ConstOp { name: cname }),
                        vec![],
                        None,
                    )
                    .map_err(err)?;
                let id = ValueId::new(node, 0);
                self.materialized.insert(key, (v.clone(), id));
                Ok(id)
            }
            Val::Sym(s) => {
                if let Some(k) = s.to_known() {
                    let name = format!("{}.shape", self.cur);
                    let id = self.ir(&Val::Known(Arc::new(k), name.into()))?;
                    return Ok(id);
                }
                let key = Arc::as_ptr(s) as *const u8 as usize;
                if let Some((_, id)) = self.materialized.get(&key) {
                    return Ok(*id);
                }
                let op = Op::Dims(Dims {
                    values: s.data.clone(),
                    shape: s.shape.iter().map(|&d| d as u64).collect(),
                    dtype: if s.dtype == DType::Bool {
                        DType::I64
                    } else {
                        s.dtype
                    },
                });
                let node = self
                    .graph
                    .add_inferred(&self.module, op, vec![], None)
                    .map_err(err)?;
                let mut id = ValueId::new(node, 0);
                if s.dtype == DType::Bool {
                    let c = Op::Cast(fuselage_ir::ops::cast::Cast { dtype: DType::Bool });
                    let n = self
                        .graph
                        .add_inferred(&self.module, c, vec![id], None)
                        .map_err(err)?;
                    id = ValueId::new(n, 0);
                }
                self.materialized.insert(key, (v.clone(), id));
                Ok(id)
            }
        }
    }

    /// A fresh constant value named after the current node.
    pub fn known(&self, k: Known, what: &str) -> Val {
        Val::Known(Arc::new(k), format!("{}.{what}", self.cur).into())
    }

    /// A constant from a reference tensor.
    pub fn tensor(&self, t: &Tensor, what: &str) -> Val {
        self.known(Known::from_tensor(t), what)
    }

    /// A scalar constant.
    pub fn scalar(&self, dtype: DType, v: f64, what: &str) -> Val {
        self.tensor(&Tensor::scalar(dtype, v), what)
    }

    /// A symbolic (or constant) i64 vector of dims.
    pub fn sym_vector(&self, dims: Vec<Dim>) -> Val {
        Val::Sym(Arc::new(SymT::vector(dims)))
    }

    /// Append an op and return its results; folded when every operand is known, evaluated
    /// symbolically when operands are shape computations.
    pub fn emit_multi(&mut self, o: Op, args: &[Val]) -> NResult<Vec<Val>> {
        let tys = args
            .iter()
            .map(|a| self.ty(a))
            .collect::<NResult<Vec<_>>>()?;
        let known: Option<Vec<Arc<Known>>> = args.iter().map(|a| self.known_of(a)).collect();
        if let Some(ks) = known {
            if ks.iter().all(|k| k.numel() <= FOLD_MAX_ELEMS) {
                // A folded constant is named after the constant it derives from (`w.transpose`).
                let base = match args {
                    [Val::Known(_, name)] => Some(format!("{name}.{}", o.name())),
                    _ => None,
                };
                if let Some(r) = self.fold(&o, &ks, &tys, base)? {
                    return Ok(r);
                }
            }
        }
        if args.iter().any(|a| matches!(a, Val::Sym(_))) {
            let syms: Option<Vec<SymT>> = args.iter().map(|a| self.sym_of(a)).collect();
            if let Some(syms) = syms {
                let results = self.infer(&o, &tys)?;
                let refs: Vec<&SymT> = syms.iter().collect();
                if let Some(s) =
                    sym_eval(&o, &refs, &results, &self.module.facts).map_err(NodeErr::Error)?
                {
                    if s.data.len() <= MAX_SYM_ELEMS {
                        return Ok(vec![Val::Sym(Arc::new(s))]);
                    }
                }
            }
        }
        let mut ids = Vec::with_capacity(args.len());
        for a in args {
            ids.push(self.ir(a)?);
        }
        let id = self
            .graph
            .add_inferred(&self.module, o, ids, None)
            .map_err(|e| match e {
                fuselage_ir::IrError::Type { message, op, .. } => err(format!("{op}: {message}")),
                e => err(e),
            })?;
        let n = self.graph.node(id).map(|n| n.results.len()).unwrap_or(0);
        Ok((0..n as u32)
            .map(|s| Val::Ir(ValueId::new(id, s)))
            .collect())
    }

    fn infer(&self, o: &Op, tys: &[TensorType]) -> NResult<Vec<TensorType>> {
        o.infer(
            &InferCx {
                module: &self.module,
            },
            tys,
        )
        .map_err(|e| err(format!("{}: {}", o.name(), e.0)))
    }

    fn fold(
        &mut self,
        o: &Op,
        ks: &[Arc<Known>],
        tys: &[TensorType],
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
        let results = self.infer(o, tys)?;
        // Results too large to hold as constants stay in the graph (e.g. a broadcast).
        let big = results
            .iter()
            .any(|t| t.num_elements().is_none_or(|n| n as usize > FOLD_MAX_ELEMS));
        if big {
            return Ok(None);
        }
        let bindings = HashMap::new();
        let refs: Vec<&Tensor> = tensors.iter().collect();
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
    pub fn emit(&mut self, o: Op, args: &[Val]) -> NResult<Val> {
        let name = o.name();
        let mut r = self.emit_multi(o, args)?;
        if r.is_empty() {
            return Err(err(format!("{name} produced no result")));
        }
        Ok(r.swap_remove(0))
    }

    /// Record a fact about a symbol (e.g. `S <= 512` from slicing a 512-row table to `S`).
    pub fn assume_max(&mut self, sym: &str, max: u64) {
        let f = self.module.facts.0.entry(sym.to_string()).or_default();
        if f.max.is_some_and(|m| m <= max) {
            return;
        }
        f.max = Some(max);
        self.notes.push(format!(
            "assumed {sym} <= {max}: node `{}` slices a dim of {max} to {sym}",
            self.cur
        ));
    }

    /// Whether two dims are equal, possibly after assuming a divisor of one symbol (a model
    /// that joins `H` with `2*floor((H+1)/2)` — a downsample then an upsample — runs only for
    /// even `H`). An assumed divisor is recorded as a fact, checked when inputs are bound.
    pub fn unify(&mut self, a: &Dim, b: &Dim) -> bool {
        let facts = &self.module.facts;
        let same = |f: &fuselage_ir::Facts| match (a.simplify(f), b.simplify(f)) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        };
        if a == b || same(facts) {
            return true;
        }
        let mut syms: Vec<String> = a.symbols().into_iter().chain(b.symbols()).collect();
        syms.sort();
        syms.dedup();
        for k in [2u64, 4, 8, 16, 32, 64] {
            for s in &syms {
                let mut f = facts.clone();
                let e = f.0.entry(s.clone()).or_default();
                let m = e.multiple_of.unwrap_or(1);
                if m.is_multiple_of(k) {
                    continue;
                }
                let fact = m / gcd(m, k) * k;
                e.multiple_of = Some(fact);
                if same(&f) {
                    self.module.facts = f;
                    self.notes.push(format!(
                        "assumed {s} % {fact} == 0: node `{}` needs {a} and {b} to be equal",
                        self.cur
                    ));
                    return true;
                }
            }
        }
        false
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The dim of an input's `dim_param`: a symbol, or — for exporters that write expressions such
/// as torch's dynamo (`4*height_div4`) — the expression over identifier symbols.
fn dim_param(p: &str) -> Dim {
    if p.contains(['*', '+', '/', '(']) {
        if let Ok(d) = Dim::parse(p) {
            if d.symbols()
                .iter()
                .all(|s| fuselage_ir::dim::is_bare_symbol(s))
            {
                return d;
            }
        }
    }
    Dim::sym(p)
}

/// Remove nodes that no output depends on (unused optional outputs of decompositions, shape
/// helpers whose values were folded). Inputs stay: they are the function's parameters.
fn prune_dead(g: &mut Graph) {
    let mut live: HashSet<NodeId> = g.inputs.iter().copied().collect();
    let mut stack: Vec<NodeId> = g.outputs.iter().map(|o| o.value.node).collect();
    while let Some(id) = stack.pop() {
        if !live.insert(id) && !g.inputs.contains(&id) {
            continue;
        }
        if let Some(n) = g.node(id) {
            stack.extend(
                n.operands
                    .iter()
                    .map(|o| o.node)
                    .filter(|o| !live.contains(o)),
            );
        }
    }
    let dead: Vec<NodeId> = g.node_ids().filter(|id| !live.contains(id)).collect();
    for id in dead {
        g.remove_node(id);
    }
}

fn unsup_sym<T>(what: &str, v: &Val) -> NResult<T> {
    let shown = match v {
        Val::Sym(s) => s
            .data
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        _ => String::new(),
    };
    Err(NodeErr::Unsupported(format!(
        "{what} must be integers known at import time, but they are the symbolic values \
         [{shown}]"
    )))
}
