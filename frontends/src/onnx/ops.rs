//! ONNX op → IR op mappings and decompositions (opsets 13 and up).

use super::import::{op, rdim, Attrs, Importer, NResult, NodeErr, SymDim, Val};
use super::proto::NodeProto;
use super::tensor::{decode_tensor, onnx_dtype, Known};
use fuselage_ir::ops::reshape::ReshapeDim;
use fuselage_ir::{DType, Dim, Tensor};
use serde_json::json;

macro_rules! unsup {
    ($($t:tt)*) => { return Err(NodeErr::Unsupported(format!($($t)*))) };
}
macro_rules! bad {
    ($($t:tt)*) => { return Err(NodeErr::Error(format!($($t)*))) };
}

/// Python-style normalization of an axis.
fn axis(a: i64, rank: usize) -> NResult<usize> {
    let r = rank as i64;
    let v = if a < 0 { a + r } else { a };
    if v < 0 || v >= r {
        bad!("axis {a} is out of range for rank {rank}");
    }
    Ok(v as usize)
}

/// Indices selected by a python slice `[start:end:step]` of a length-`n` sequence (ONNX Slice
/// clamping rules).
fn slice_indices(n: i64, start: i64, end: i64, step: i64) -> NResult<Vec<i64>> {
    if step == 0 {
        bad!("slice step is 0");
    }
    let norm = |v: i64| if v < 0 { v.saturating_add(n) } else { v };
    let (s, e) = (norm(start), norm(end));
    let mut out = vec![];
    if step > 0 {
        let (s, e) = (s.clamp(0, n), e.clamp(0, n));
        let mut i = s;
        while i < e {
            out.push(i);
            i += step;
        }
    } else {
        let (s, e) = (s.clamp(-1, n - 1), e.clamp(-1, n - 1));
        let mut i = s;
        while i > e {
            out.push(i);
            i += step;
        }
    }
    Ok(out)
}

/// Numpy broadcast of two shapes of symbolic entries (for Expand's target).
fn expand_dims(x: &[Dim], target: &[SymDim]) -> NResult<Vec<Dim>> {
    let r = x.len().max(target.len());
    let mut out = vec![];
    for i in 0..r {
        let xd = if i + x.len() >= r {
            Some(&x[i + x.len() - r])
        } else {
            None
        };
        let td = if i + target.len() >= r {
            Some(&target[i + target.len() - r])
        } else {
            None
        };
        out.push(match (xd, td) {
            (Some(d), None) => d.clone(),
            (None, Some(SymDim::Int(n))) if *n >= 0 => Dim::Fixed(*n as u64),
            (None, Some(SymDim::Sym(s))) => Dim::Sym(s.clone()),
            (Some(d), Some(SymDim::Int(1))) => d.clone(),
            (Some(Dim::Fixed(1)), Some(SymDim::Int(n))) if *n >= 0 => Dim::Fixed(*n as u64),
            (Some(Dim::Fixed(1)), Some(SymDim::Sym(s))) => Dim::Sym(s.clone()),
            (Some(d), Some(SymDim::Unknown)) if *d != Dim::Fixed(1) => d.clone(),
            (Some(Dim::Fixed(a)), Some(SymDim::Int(b))) if *a as i64 == *b => Dim::Fixed(*a),
            (Some(Dim::Sym(a)), Some(SymDim::Sym(b))) if a == b => Dim::Sym(a.clone()),
            (Some(d), Some(SymDim::Sym(_))) => d.clone(),
            (xd, td) => bad!(
                "cannot expand dim {} to {}",
                xd.map(|d| d.to_string()).unwrap_or_else(|| "-".into()),
                td.map(|d| d.to_string()).unwrap_or_else(|| "-".into())
            ),
        });
    }
    Ok(out)
}

/// A product of dims as one reshape entry, or `None` when the IR cannot name it.
fn group_dim(dims: &[Dim]) -> Option<ReshapeDim> {
    if dims.len() == 1 {
        return Some(rdim(&dims[0]));
    }
    let mut p: i64 = 1;
    for d in dims {
        match d {
            Dim::Fixed(n) => p = p.checked_mul(*n as i64)?,
            Dim::Sym(_) => return None,
        }
    }
    Some(ReshapeDim::Size(p))
}

/// Reshape entries for groups of dims, using a single `-1` for one unnameable group.
fn group_dims(groups: &[&[Dim]]) -> NResult<Vec<ReshapeDim>> {
    let mut out = vec![];
    let mut inferred = false;
    for g in groups {
        match group_dim(g) {
            Some(d) => out.push(d),
            None if !inferred => {
                inferred = true;
                out.push(ReshapeDim::Size(-1));
            }
            None => unsup!("needs a reshape that merges several symbolic dims"),
        }
    }
    Ok(out)
}

impl Importer {
    fn input(&self, n: &NodeProto, i: usize) -> NResult<Val> {
        match n.input.get(i).filter(|s| !s.is_empty()) {
            Some(name) => self
                .vals
                .get(name)
                .cloned()
                .ok_or_else(|| NodeErr::Error(format!("input `{name}` is not defined"))),
            None => bad!("missing required input {i}"),
        }
    }

    fn opt_input(&self, n: &NodeProto, i: usize) -> NResult<Option<Val>> {
        match n.input.get(i).filter(|s| !s.is_empty()) {
            Some(_) => Ok(Some(self.input(n, i)?)),
            None => Ok(None),
        }
    }

    fn inputs(&self, n: &NodeProto) -> NResult<Vec<Val>> {
        (0..n.input.len()).map(|i| self.input(n, i)).collect()
    }

    fn rank(&self, v: &Val) -> NResult<usize> {
        Ok(self.ty(v)?.rank())
    }

    fn shape(&self, v: &Val) -> NResult<Vec<Dim>> {
        Ok(self.ty(v)?.shape)
    }

    fn cast_to(&mut self, v: Val, dtype: DType) -> NResult<Val> {
        if self.ty(&v)?.dtype == dtype {
            return Ok(v);
        }
        self.emitj("cast", json!({ "dtype": dtype }), &[v], false)
    }

    /// Fold a left-to-right chain of a binary op over variadic inputs.
    fn variadic(&mut self, name: &str, args: Vec<Val>) -> NResult<Val> {
        let mut it = args.into_iter();
        let Some(mut acc) = it.next() else {
            bad!("needs at least one input")
        };
        let rest: Vec<Val> = it.collect();
        let n = rest.len();
        if n == 0 {
            return Ok(acc);
        }
        for (i, v) in rest.into_iter().enumerate() {
            acc = self.emitj(name, json!({}), &[acc, v], i + 1 == n)?;
        }
        Ok(acc)
    }

    /// Element-wise arithmetic on folded shape vectors (`B * 8`, `S - 1`).
    fn shape_arith(&self, ot: &str, a: &Val, b: &Val) -> NResult<Option<Val>> {
        if !matches!(a, Val::Shape { .. }) && !matches!(b, Val::Shape { .. }) {
            return Ok(None);
        }
        let (Ok(x), Ok(y)) = (self.sym_dims(a, "a"), self.sym_dims(b, "b")) else {
            return Ok(None);
        };
        let scalar = self.rank(a)? == 0 && self.rank(b)? == 0;
        let len = x.len().max(y.len());
        if !(x.len() == len || x.len() == 1) || !(y.len() == len || y.len() == 1) {
            bad!(
                "shape vectors of lengths {} and {} do not broadcast",
                x.len(),
                y.len()
            );
        }
        let mut out = vec![];
        for i in 0..len {
            let p = &x[if x.len() == 1 { 0 } else { i }];
            let q = &y[if y.len() == 1 { 0 } else { i }];
            out.push(match (ot, p, q) {
                ("Add", SymDim::Int(a), SymDim::Int(b)) => SymDim::Int(a + b),
                ("Sub", SymDim::Int(a), SymDim::Int(b)) => SymDim::Int(a - b),
                ("Mul", SymDim::Int(a), SymDim::Int(b)) => SymDim::Int(a * b),
                ("Div", SymDim::Int(a), SymDim::Int(b)) if *b != 0 => SymDim::Int(a / b),
                ("Add" | "Sub", s, SymDim::Int(0)) => s.clone(),
                ("Add", SymDim::Int(0), s) => s.clone(),
                ("Mul" | "Div", s, SymDim::Int(1)) => s.clone(),
                ("Mul", SymDim::Int(1), s) => s.clone(),
                _ => SymDim::Unknown,
            });
        }
        Ok(Some(Val::Shape { scalar, dims: out }))
    }

    /// Map one node.
    pub(crate) fn convert(&mut self, n: &NodeProto) -> NResult<Vec<Val>> {
        let a = Attrs(n);
        let ot = n.op_type.as_str();
        let one = |v: Val| Ok(vec![v]);
        match ot {
            "Identity" | "Dropout" => one(self.input(n, 0)?),
            "Constant" => {
                let k = if let Some(t) = a.t("value") {
                    decode_tensor(t, self.dir.as_deref())
                        .map_err(|m| NodeErr::Error(format!("value tensor: {m}")))?
                } else if a.has("value_float") {
                    Known::from_tensor(&Tensor::scalar(DType::F32, a.f("value_float", 0.0)))
                } else if let Some(v) = a.floats("value_floats") {
                    let t = Tensor::from_f32(vec![v.len()], &v)
                        .map_err(|e| NodeErr::Error(e.to_string()))?;
                    Known::from_tensor(&t)
                } else if a.has("value_int") {
                    Known::from_i64s(vec![], &[a.i("value_int", 0)])
                } else if let Some(v) = a.ints("value_ints") {
                    Known::from_i64s(vec![v.len()], &v)
                } else {
                    unsup!("only tensor, float(s) and int(s) values are supported")
                };
                Ok(vec![Val::Known(
                    std::sync::Arc::new(k),
                    n.output.first().cloned().unwrap_or_default().into(),
                )])
            }
            "Add" | "Sub" | "Mul" | "Div" => {
                let (x, y) = (self.input(n, 0)?, self.input(n, 1)?);
                if let Some(v) = self.shape_arith(ot, &x, &y)? {
                    return one(v);
                }
                let dt = self.ty(&x)?.dtype;
                if ot == "Div" && !dt.is_float() {
                    // ONNX integer division truncates toward zero: divide in f64, cast back.
                    let xf = self.cast_to(x, DType::F64)?;
                    let yf = self.cast_to(y, DType::F64)?;
                    let q = self.emitj("div", json!({}), &[xf, yf], false)?;
                    return one(self.emitj("cast", json!({ "dtype": dt }), &[q], true)?);
                }
                let name = match ot {
                    "Add" => "add",
                    "Sub" => "sub",
                    "Mul" => "mul",
                    _ => "div",
                };
                one(self.emitj(name, json!({}), &[x, y], true)?)
            }
            "Pow" => {
                let x = self.input(n, 0)?;
                let dt = self.ty(&x)?.dtype;
                let y = self.input(n, 1)?;
                let y = self.cast_to(y, dt)?;
                one(self.emitj("pow", json!({}), &[x, y], true)?)
            }
            "Max" | "Min" | "Sum" => {
                let args = self.inputs(n)?;
                let name = match ot {
                    "Max" => "maximum",
                    "Min" => "minimum",
                    _ => "add",
                };
                one(self.variadic(name, args)?)
            }
            "Mean" => {
                let args = self.inputs(n)?;
                let k = args.len();
                let dt = self.ty(&args[0])?.dtype;
                let s = self.variadic("add", args)?;
                let c = self.scalar(dt, k as f64, "count");
                one(self.emitj("div", json!({}), &[s, c], true)?)
            }
            "Neg" | "Abs" | "Exp" | "Log" | "Sqrt" | "Tanh" | "Erf" | "Sin" | "Cos" | "Relu"
            | "Sigmoid" | "Not" => {
                let x = self.input(n, 0)?;
                one(self.emitj(&ot.to_ascii_lowercase(), json!({}), &[x], true)?)
            }
            "Reciprocal" => {
                let x = self.input(n, 0)?;
                let dt = self.ty(&x)?.dtype;
                let c = self.scalar(dt, 1.0, "one");
                one(self.emitj("div", json!({}), &[c, x], true)?)
            }
            "Softplus" => {
                let x = self.input(n, 0)?;
                let dt = self.ty(&x)?.dtype;
                let e = self.emitj("exp", json!({}), &[x], false)?;
                let c = self.scalar(dt, 1.0, "one");
                let s = self.emitj("add", json!({}), &[e, c], false)?;
                one(self.emitj("log", json!({}), &[s], true)?)
            }
            "LeakyRelu" => {
                let x = self.input(n, 0)?;
                let dt = self.ty(&x)?.dtype;
                let alpha = a.f("alpha", 0.01);
                let c = self.scalar(dt, alpha, "alpha");
                let z = self.scalar(dt, 0.0, "zero");
                let ax = self.emitj("mul", json!({}), &[x.clone(), c], false)?;
                let neg = self.emitj(
                    "compare",
                    json!({"predicate": "lt"}),
                    &[x.clone(), z],
                    false,
                )?;
                one(self.emitj("where", json!({}), &[neg, ax, x], true)?)
            }
            "Gelu" => {
                let x = self.input(n, 0)?;
                let approx = a.s("approximate").unwrap_or_else(|| "none".into());
                if approx != "none" && approx != "tanh" {
                    bad!("unknown approximate `{approx}`");
                }
                one(self.emitj("gelu", json!({ "approximate": approx }), &[x], true)?)
            }
            "IsNaN" => {
                let x = self.input(n, 0)?;
                one(self.emitj("compare", json!({"predicate": "ne"}), &[x.clone(), x], true)?)
            }
            "Equal" | "Less" | "LessOrEqual" | "Greater" | "GreaterOrEqual" => {
                let (x, y) = (self.input(n, 0)?, self.input(n, 1)?);
                let p = match ot {
                    "Equal" => "eq",
                    "Less" => "lt",
                    "LessOrEqual" => "le",
                    "Greater" => "gt",
                    _ => "ge",
                };
                one(self.emitj("compare", json!({ "predicate": p }), &[x, y], true)?)
            }
            "And" | "Or" | "Xor" => {
                let (x, y) = (self.input(n, 0)?, self.input(n, 1)?);
                let k = ot.to_ascii_lowercase();
                one(self.emitj("logical", json!({ "kind": k }), &[x, y], true)?)
            }
            "Where" => {
                let args = [self.input(n, 0)?, self.input(n, 1)?, self.input(n, 2)?];
                one(self.emitj("where", json!({}), &args, true)?)
            }
            "Cast" | "CastLike" => {
                let x = self.input(n, 0)?;
                let dt = if ot == "Cast" {
                    onnx_dtype(a.i("to", 0) as i32).map_err(NodeErr::Unsupported)?
                } else {
                    self.ty(&self.input(n, 1)?)?.dtype
                };
                if let Val::Shape { .. } = x {
                    if dt.is_int() {
                        return one(x);
                    }
                }
                if self.ty(&x)?.dtype == dt {
                    return one(x);
                }
                one(self.emitj("cast", json!({ "dtype": dt }), &[x], true)?)
            }
            "Clip" => {
                let x = self.input(n, 0)?;
                let lo = match self.opt_input(n, 1)? {
                    Some(v) => Some(self.known_scalar(&v, "min")?),
                    None => None,
                };
                let hi = match self.opt_input(n, 2)? {
                    Some(v) => Some(self.known_scalar(&v, "max")?),
                    None => None,
                };
                one(self.emitj("clamp", json!({ "min": lo, "max": hi }), &[x], true)?)
            }
            "Softmax" | "LogSoftmax" => {
                let x = self.input(n, 0)?;
                let ax = a.i("axis", -1);
                let last = ot == "Softmax";
                let s = self.emitj("softmax", json!({ "axis": ax }), &[x], last)?;
                if last {
                    return one(s);
                }
                one(self.emitj("log", json!({}), &[s], true)?)
            }
            "MatMul" => {
                let (x, y) = (self.input(n, 0)?, self.input(n, 1)?);
                let (rx, ry) = (self.rank(&x)?, self.rank(&y)?);
                if rx >= 2 && ry >= 2 {
                    return one(self.emitj("matmul", json!({}), &[x, y], true)?);
                }
                if rx == 0 || ry == 0 {
                    bad!("MatMul operands must have rank >= 1");
                }
                // 1-D operands: promote, multiply, drop the added dim.
                let xs = self.shape(&x)?;
                let ys = self.shape(&y)?;
                let x2 = if rx == 1 {
                    self.reshape(&x, vec![ReshapeDim::Size(1), rdim(&xs[0])], false)?
                } else {
                    x
                };
                let y2 = if ry == 1 {
                    self.reshape(&y, vec![rdim(&ys[0]), ReshapeDim::Size(1)], false)?
                } else {
                    y
                };
                let p = self.emitj("matmul", json!({}), &[x2, y2], false)?;
                let mut ps = self.shape(&p)?;
                if ry == 1 {
                    ps.pop();
                }
                if rx == 1 {
                    let l = ps.len();
                    ps.remove(l - 1 - usize::from(ry != 1));
                }
                one(self.reshape(&p, ps.iter().map(rdim).collect(), true)?)
            }
            "Gemm" => {
                let (mut x, mut w) = (self.input(n, 0)?, self.input(n, 1)?);
                let c = self.opt_input(n, 2)?;
                let (alpha, beta) = (a.f("alpha", 1.0), a.f("beta", 1.0));
                if self.rank(&x)? != 2 || self.rank(&w)? != 2 {
                    bad!("Gemm operands must be matrices");
                }
                if a.i("transA", 0) != 0 {
                    x = self.emitj("transpose", json!({"perm": [1, 0]}), &[x], false)?;
                }
                if a.i("transB", 0) != 0 {
                    w = self.emitj("transpose", json!({"perm": [1, 0]}), &[w], false)?;
                }
                let dt = self.ty(&x)?.dtype;
                if let Some(c) = &c {
                    if alpha == 1.0 && beta == 1.0 && self.rank(c)? == 1 {
                        return one(self.emitj("linear", json!({}), &[x, w, c.clone()], true)?);
                    }
                }
                let last_mm = c.is_none() && alpha == 1.0;
                let mut y = self.emitj("matmul", json!({}), &[x, w], last_mm)?;
                if alpha != 1.0 {
                    let s = self.scalar(dt, alpha, "alpha");
                    y = self.emitj("mul", json!({}), &[y, s], c.is_none())?;
                }
                if let Some(mut c) = c {
                    if beta != 1.0 {
                        let s = self.scalar(dt, beta, "beta");
                        c = self.emitj("mul", json!({}), &[c, s], false)?;
                    }
                    y = self.emitj("add", json!({}), &[y, c], true)?;
                }
                one(y)
            }
            "LayerNormalization" => {
                if n.output.iter().skip(1).any(|o| !o.is_empty()) {
                    unsup!("the Mean and InvStdDev outputs are not computed");
                }
                let mut args = vec![self.input(n, 0)?, self.input(n, 1)?];
                if let Some(b) = self.opt_input(n, 2)? {
                    args.push(b);
                }
                let eps = a.f("epsilon", 1e-5);
                let ax = a.i("axis", -1);
                one(self.emitj("layer_norm", json!({"axis": ax, "eps": eps}), &args, true)?)
            }
            "GroupNormalization" => {
                let x = self.input(n, 0)?;
                let groups = a.i("num_groups", 0);
                let eps = a.f("epsilon", 1e-5);
                let xs = self.shape(&x)?;
                let Some(Dim::Fixed(c)) = xs.get(1).cloned() else {
                    unsup!("the channel dim must be fixed");
                };
                if groups <= 0 || c % groups as u64 != 0 {
                    bad!("num_groups {groups} does not divide {c} channels");
                }
                let mut args = vec![x];
                for (i, what) in [(1, "scale"), (2, "bias")] {
                    let v = self.input(n, i)?;
                    let len = self.shape(&v)?;
                    if len == [Dim::Fixed(c)] {
                        args.push(v);
                    } else if len == [Dim::Fixed(groups as u64)] {
                        // Opset 18: one value per group; repeat it for each channel.
                        let Some(k) = self.known_of(&v) else {
                            unsup!("per-group {what} must be a constant");
                        };
                        let vals = k.floats().map_err(NodeErr::Error)?;
                        let per = (c / groups as u64) as usize;
                        let rep: Vec<f64> = vals
                            .iter()
                            .flat_map(|&x| std::iter::repeat_n(x, per))
                            .collect();
                        let t = Tensor::new(k.dtype, vec![c as usize], rep)
                            .map_err(|e| NodeErr::Error(e.to_string()))?;
                        args.push(self.known(Known::from_tensor(&t), what));
                    } else {
                        bad!("{what} has shape {len:?}, expected [{c}] or [{groups}]");
                    }
                }
                one(self.emitj(
                    "group_norm",
                    json!({"groups": groups, "eps": eps}),
                    &args,
                    true,
                )?)
            }
            "InstanceNormalization" => {
                let args = [self.input(n, 0)?, self.input(n, 1)?, self.input(n, 2)?];
                let xs = self.shape(&args[0])?;
                let Some(Dim::Fixed(c)) = xs.get(1).cloned() else {
                    unsup!("the channel dim must be fixed");
                };
                let eps = a.f("epsilon", 1e-5);
                one(self.emitj("group_norm", json!({"groups": c, "eps": eps}), &args, true)?)
            }
            "Transpose" => {
                let x = self.input(n, 0)?;
                let r = self.rank(&x)?;
                let perm: Vec<usize> = match a.ints("perm") {
                    Some(p) => p.iter().map(|&i| axis(i, r)).collect::<NResult<_>>()?,
                    None => (0..r).rev().collect(),
                };
                one(self.emitj("transpose", json!({ "perm": perm }), &[x], true)?)
            }
            "Reshape" => {
                let x = self.input(n, 0)?;
                let target = self.sym_dims(&self.input(n, 1)?, "shape")?;
                let allowzero = a.i("allowzero", 0) != 0;
                let xs = self.shape(&x)?;
                let mut dims = vec![];
                let mut inferred = target.contains(&SymDim::Int(-1));
                for (i, d) in target.iter().enumerate() {
                    dims.push(match d {
                        SymDim::Int(0) if !allowzero => match xs.get(i) {
                            Some(d) => rdim(d),
                            None => bad!("shape entry {i} copies a dim the input does not have"),
                        },
                        SymDim::Int(v) => ReshapeDim::Size(*v),
                        SymDim::Sym(s) => ReshapeDim::Sym(s.clone()),
                        SymDim::Unknown if !inferred => {
                            inferred = true;
                            ReshapeDim::Size(-1)
                        }
                        SymDim::Unknown => {
                            unsup!("the target shape has several entries computed from symbols")
                        }
                    });
                }
                if let Val::Shape { dims: sd, .. } = &x {
                    // Reshaping a folded shape vector (e.g. to a scalar).
                    let numel: i64 = dims
                        .iter()
                        .map(|d| if let ReshapeDim::Size(v) = d { *v } else { 0 })
                        .product();
                    if sd.len() == 1 && (dims.is_empty() || numel.abs() == 1) {
                        return one(Val::Shape {
                            scalar: dims.is_empty(),
                            dims: sd.clone(),
                        });
                    }
                }
                one(self.reshape(&x, dims, true)?)
            }
            "Flatten" => {
                let x = self.input(n, 0)?;
                let xs = self.shape(&x)?;
                let ax = a.i("axis", 1);
                let r = xs.len() as i64;
                let ax = if ax < 0 { ax + r } else { ax };
                if !(0..=r).contains(&ax) {
                    bad!("axis {ax} out of range for rank {r}");
                }
                let (l, rr) = xs.split_at(ax as usize);
                let dims = group_dims(&[l, rr])?;
                let dims = dims
                    .into_iter()
                    .zip([l, rr])
                    .map(|(d, g)| if g.is_empty() { ReshapeDim::Size(1) } else { d })
                    .collect();
                one(self.reshape(&x, dims, true)?)
            }
            "Squeeze" | "Unsqueeze" => {
                let x = self.input(n, 0)?;
                let axes = match self.opt_input(n, 1)? {
                    Some(v) => Some(self.ints(&v, "axes")?),
                    None => a.ints("axes"),
                };
                if let Val::Shape { scalar, dims } = &x {
                    let ok = match ot {
                        "Unsqueeze" => (*scalar) && axes.as_deref().is_some_and(|a| a.len() == 1),
                        _ => !(*scalar) && dims.len() == 1,
                    };
                    if ok {
                        return one(Val::Shape {
                            scalar: ot == "Squeeze",
                            dims: dims.clone(),
                        });
                    }
                }
                let xs = self.shape(&x)?;
                let mut dims: Vec<Dim> = xs.clone();
                if ot == "Squeeze" {
                    let r = xs.len();
                    let drop: Vec<usize> = match axes {
                        Some(ax) => ax.iter().map(|&i| axis(i, r)).collect::<NResult<_>>()?,
                        None => (0..r).filter(|&i| xs[i] == Dim::Fixed(1)).collect(),
                    };
                    for &i in &drop {
                        if xs[i] != Dim::Fixed(1) {
                            bad!("cannot squeeze axis {i} of size {}", xs[i]);
                        }
                    }
                    dims = (0..r)
                        .filter(|i| !drop.contains(i))
                        .map(|i| xs[i].clone())
                        .collect();
                } else {
                    let Some(ax) = axes else {
                        bad!("Unsqueeze needs axes")
                    };
                    let r = xs.len() + ax.len();
                    let mut ax: Vec<usize> =
                        ax.iter().map(|&i| axis(i, r)).collect::<NResult<_>>()?;
                    ax.sort();
                    for i in ax {
                        dims.insert(i, Dim::Fixed(1));
                    }
                }
                one(self.reshape(&x, dims.iter().map(rdim).collect(), true)?)
            }
            "Concat" => {
                let args = self.inputs(n)?;
                let ax = a.i("axis", 0);
                if args.iter().any(|v| matches!(v, Val::Shape { .. })) {
                    let mut dims = vec![];
                    for v in &args {
                        dims.extend(self.sym_dims(v, "input")?);
                    }
                    return one(Val::Shape {
                        scalar: false,
                        dims,
                    });
                }
                if args.len() == 1 {
                    return one(args[0].clone());
                }
                one(self.emitj("concat", json!({ "axis": ax }), &args, true)?)
            }
            "Shape" => {
                let x = self.input(n, 0)?;
                let xs = self.shape(&x)?;
                let r = xs.len() as i64;
                let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
                let s = clampi(a.i("start", 0));
                let e = clampi(a.i("end", r));
                let dims: Vec<SymDim> = xs[s..e.max(s)]
                    .iter()
                    .map(|d| match d {
                        Dim::Fixed(v) => SymDim::Int((*v) as i64),
                        Dim::Sym(s) => SymDim::Sym(s.clone()),
                    })
                    .collect();
                one(Val::Shape {
                    scalar: false,
                    dims,
                })
            }
            "Gather" => {
                let (x, idx) = (self.input(n, 0)?, self.input(n, 1)?);
                let ax = a.i("axis", 0);
                if let Val::Shape { dims, .. } = &x {
                    let ind = self.ints(&idx, "indices")?;
                    let len = dims.len() as i64;
                    let mut out = vec![];
                    for &i in &ind {
                        let j = if i < 0 { i + len } else { i };
                        if !(0..len).contains(&j) {
                            bad!("index {i} out of range for a shape of length {len}");
                        }
                        out.push(dims[j as usize].clone());
                    }
                    let scalar = self.rank(&idx)? == 0;
                    return one(Val::Shape { scalar, dims: out });
                }
                one(self.emitj("gather", json!({ "axis": ax }), &[x, idx], true)?)
            }
            "Slice" => {
                let x = self.input(n, 0)?;
                let starts = self.ints(&self.input(n, 1)?, "starts")?;
                let ends = self.ints(&self.input(n, 2)?, "ends")?;
                let r = self.rank(&x)?;
                let axes = match self.opt_input(n, 3)? {
                    Some(v) => self.ints(&v, "axes")?,
                    None => (0..starts.len() as i64).collect(),
                };
                let steps = match self.opt_input(n, 4)? {
                    Some(v) => self.ints(&v, "steps")?,
                    None => vec![1; starts.len()],
                };
                if ends.len() != starts.len()
                    || axes.len() != starts.len()
                    || steps.len() != starts.len()
                {
                    bad!("starts, ends, axes and steps have different lengths");
                }
                if let Val::Shape {
                    dims,
                    scalar: false,
                } = &x
                {
                    let idx = slice_indices(dims.len() as i64, starts[0], ends[0], steps[0])?;
                    let d = idx.iter().map(|&i| dims[i as usize].clone()).collect();
                    return one(Val::Shape {
                        scalar: false,
                        dims: d,
                    });
                }
                let mut v = x;
                for i in 0..starts.len() {
                    let ax = axis(axes[i], r)?;
                    v = self.emitj(
                        "slice",
                        json!({"axis": ax, "start": starts[i], "end": ends[i], "step": steps[i]}),
                        &[v],
                        i + 1 == starts.len(),
                    )?;
                }
                one(v)
            }
            "Split" => {
                let x = self.input(n, 0)?;
                let xs = self.shape(&x)?;
                let ax = axis(a.i("axis", 0), xs.len())?;
                let sizes: Vec<u64> = match self.opt_input(n, 1)? {
                    Some(v) => self
                        .ints(&v, "split")?
                        .iter()
                        .map(|&s| s.max(0) as u64)
                        .collect(),
                    None => match a.ints("split") {
                        Some(s) => s.iter().map(|&s| s.max(0) as u64).collect(),
                        None => {
                            let Dim::Fixed(d) = xs[ax] else {
                                unsup!("an even split of a symbolic dim");
                            };
                            let k = a.i("num_outputs", n.output.len() as i64).max(1) as u64;
                            let per = d.div_ceil(k);
                            (0..k).map(|i| per.min(d.saturating_sub(i * per))).collect()
                        }
                    },
                };
                let o = op("split", json!({"axis": ax, "sizes": sizes}))?;
                self.emit_multi(o, &[x], true)
            }
            "Expand" => {
                let x = self.input(n, 0)?;
                let target = self.sym_dims(&self.input(n, 1)?, "shape")?;
                let xs = self.shape(&x)?;
                let dims = expand_dims(&xs, &target)?;
                if dims == xs {
                    return one(x);
                }
                one(self.emitj("broadcast_to", json!({ "shape": dims }), &[x], true)?)
            }
            "ConstantOfShape" => {
                let target = self.sym_dims(&self.input(n, 0)?, "shape")?;
                let value = match a.t("value") {
                    Some(t) => {
                        decode_tensor(t, None).map_err(|m| NodeErr::Error(format!("value: {m}")))?
                    }
                    None => Known::from_tensor(&Tensor::scalar(DType::F32, 0.0)),
                };
                if value.numel() != 1 {
                    bad!("value must hold one element");
                }
                let fill = value
                    .tensor()
                    .map_err(NodeErr::Error)?
                    .reshaped(vec![])
                    .map_err(|e| NodeErr::Error(e.to_string()))?;
                let mut dims = vec![];
                for d in &target {
                    dims.push(match d {
                        SymDim::Int(v) if *v >= 0 => Dim::Fixed(*v as u64),
                        SymDim::Sym(s) => Dim::Sym(s.clone()),
                        d => unsup!("shape entry {d}"),
                    });
                }
                if let Some(shape) = dims
                    .iter()
                    .map(|d| d.fixed().map(|v| v as usize))
                    .collect::<Option<Vec<_>>>()
                {
                    if shape.iter().product::<usize>() <= 1 << 22 {
                        let t = Tensor::new(
                            fill.dtype(),
                            shape.clone(),
                            vec![fill.data()[0]; shape.iter().product()],
                        )
                        .map_err(|e| NodeErr::Error(e.to_string()))?;
                        return one(self.known(Known::from_tensor(&t), "value"));
                    }
                }
                let s = self.known(Known::from_tensor(&fill), "value");
                one(self.emitj("broadcast_to", json!({ "shape": dims }), &[s], true)?)
            }
            "Range" => {
                let (s, l, d) = (self.input(n, 0)?, self.input(n, 1)?, self.input(n, 2)?);
                let dt = self.ty(&s)?.dtype;
                if let (Some(ks), Some(kl), Some(kd)) =
                    (self.known_of(&s), self.known_of(&l), self.known_of(&d))
                {
                    let f = |k: &Known| {
                        k.floats()
                            .map_err(NodeErr::Error)
                            .map(|v| v.first().copied().unwrap_or(0.0))
                    };
                    let (s0, l0, d0) = (f(&ks)?, f(&kl)?, f(&kd)?);
                    if d0 == 0.0 {
                        bad!("delta is 0");
                    }
                    let cnt = ((l0 - s0) / d0).ceil().max(0.0);
                    if cnt > (1u64 << 24) as f64 {
                        unsup!("a range of {cnt} elements");
                    }
                    let v: Vec<f64> = (0..cnt as usize).map(|i| s0 + i as f64 * d0).collect();
                    let t = Tensor::new(dt, vec![v.len()], v)
                        .map_err(|e| NodeErr::Error(e.to_string()))?;
                    return one(self.known(Known::from_tensor(&t), "range"));
                }
                let start = self
                    .known_of(&s)
                    .and_then(|k| k.floats().ok())
                    .and_then(|v| v.first().copied());
                let delta = self
                    .known_of(&d)
                    .and_then(|k| k.floats().ok())
                    .and_then(|v| v.first().copied());
                if let (Some(0.0), Some(1.0), Val::Shape { dims, .. }) = (start, delta, &l) {
                    if let [SymDim::Sym(sym)] = dims.as_slice() {
                        return one(self.emitj(
                            "iota",
                            json!({"shape": [sym], "axis": 0, "dtype": dt}),
                            &[],
                            true,
                        )?);
                    }
                }
                unsup!("only ranges with known bounds, or 0..S step 1 with a symbolic S, are supported")
            }
            "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" => {
                let x = self.input(n, 0)?;
                let r = self.rank(&x)?;
                let axes = match self.opt_input(n, 1)? {
                    Some(v) => Some(self.ints(&v, "axes")?),
                    None => a.ints("axes"),
                };
                let keep = a.i("keepdims", 1) != 0;
                let axes = match axes {
                    Some(ax) if !ax.is_empty() => ax,
                    _ if a.i("noop_with_empty_axes", 0) != 0 => return one(x),
                    _ => (0..r as i64).collect(),
                };
                let kind = &ot[6..].to_ascii_lowercase();
                one(self.emitj(
                    "reduce",
                    json!({"kind": kind, "axes": axes, "keepdims": keep}),
                    &[x],
                    true,
                )?)
            }
            "GlobalAveragePool" => {
                let x = self.input(n, 0)?;
                let r = self.rank(&x)?;
                let axes: Vec<i64> = (2..r as i64).collect();
                one(self.emitj(
                    "reduce",
                    json!({"kind": "mean", "axes": axes, "keepdims": true}),
                    &[x],
                    true,
                )?)
            }
            "ArgMax" => {
                if a.i("select_last_index", 0) != 0 {
                    unsup!("select_last_index = 1");
                }
                let x = self.input(n, 0)?;
                let keep = a.i("keepdims", 1) != 0;
                one(self.emitj(
                    "argmax",
                    json!({"axis": a.i("axis", 0), "keepdims": keep}),
                    &[x],
                    true,
                )?)
            }
            "TopK" => {
                let x = self.input(n, 0)?;
                let k = self.ints(&self.input(n, 1)?, "K")?;
                let [k] = k.as_slice() else {
                    bad!("K must hold one value")
                };
                if *k < 0 {
                    bad!("K is negative");
                }
                let o = op(
                    "top_k",
                    json!({"k": k, "axis": a.i("axis", -1), "largest": a.i("largest", 1) != 0}),
                )?;
                self.emit_multi(o, &[x], true)
            }
            "Conv" => {
                let x = self.input(n, 0)?;
                let w = self.input(n, 1)?;
                if self.rank(&x)? != 4 {
                    unsup!("only 2-D convolutions (NCHW input) are supported");
                }
                let ws = self.shape(&w)?;
                let strides = a.ints("strides").unwrap_or(vec![1, 1]);
                let dil = a.ints("dilations").unwrap_or(vec![1, 1]);
                let pads = self.conv_pads(&a, &self.shape(&x)?, &ws, &strides, &dil)?;
                let mut args = vec![x, w];
                if let Some(b) = self.opt_input(n, 2)? {
                    args.push(b);
                }
                one(self.emitj(
                    "conv2d",
                    json!({"stride": strides, "padding": pads, "dilation": dil, "groups": a.i("group", 1)}),
                    &args,
                    true,
                )?)
            }
            "AveragePool" => {
                let x = self.input(n, 0)?;
                if self.rank(&x)? != 4 {
                    unsup!("only 2-D pooling (NCHW input) is supported");
                }
                if a.i("ceil_mode", 0) != 0 {
                    unsup!("ceil_mode = 1");
                }
                let Some(k) = a.ints("kernel_shape") else {
                    bad!("missing kernel_shape")
                };
                let strides = a.ints("strides").unwrap_or(vec![1, 1]);
                let dil = a.ints("dilations").unwrap_or(vec![1, 1]);
                if dil.iter().any(|&d| d != 1) {
                    unsup!("dilated pooling");
                }
                let ks = [Dim::Fixed(1), Dim::Fixed(1)]
                    .into_iter()
                    .chain(k.iter().map(|&v| Dim::Fixed(v.max(0) as u64)))
                    .collect::<Vec<_>>();
                let pads = self.conv_pads(&a, &self.shape(&x)?, &ks, &strides, &dil)?;
                one(self.emitj(
                    "avg_pool2d",
                    json!({"kernel": k, "stride": strides, "padding": pads,
                           "count_include_pad": a.i("count_include_pad", 0) != 0}),
                    &[x],
                    true,
                )?)
            }
            "MaxPool" => {
                // Non-overlapping windows (kernel = stride, no padding, dims divisible) are a
                // reshape to [N, C, H/kh, kh, W/kw, kw] and a max over the window axes.
                if n.output.iter().skip(1).any(|o| !o.is_empty()) {
                    unsup!("the Indices output is not computed");
                }
                let x = self.input(n, 0)?;
                let xs = self.shape(&x)?;
                let Some(k) = a.ints("kernel_shape") else {
                    bad!("missing kernel_shape")
                };
                let strides = a.ints("strides").unwrap_or(vec![1; k.len()]);
                let pads = a.ints("pads").unwrap_or_default();
                let dil = a.ints("dilations").unwrap_or_default();
                let auto = a.s("auto_pad").unwrap_or_else(|| "NOTSET".into());
                if xs.len() != 4
                    || k.len() != 2
                    || strides != k
                    || pads.iter().any(|&p| p != 0)
                    || dil.iter().any(|&d| d != 1)
                    || !(auto == "NOTSET" || auto == "VALID")
                {
                    unsup!("only 2-D pooling with kernel = stride and no padding is supported");
                }
                let mut dims = vec![rdim(&xs[0]), rdim(&xs[1])];
                for i in 0..2 {
                    match xs[2 + i] {
                        Dim::Fixed(d) if k[i] > 0 && d % k[i] as u64 == 0 => {
                            dims.push(ReshapeDim::Size(d as i64 / k[i]));
                            dims.push(ReshapeDim::Size(k[i]));
                        }
                        ref d => unsup!("spatial dim {d} is not a known multiple of the kernel"),
                    }
                }
                let r = self.reshape(&x, dims, false)?;
                one(self.emitj(
                    "reduce",
                    json!({"kind": "max", "axes": [3, 5], "keepdims": false}),
                    &[r],
                    true,
                )?)
            }
            "Resize" => self.resize(n, &a).map(|v| vec![v]),
            "Einsum" => self.einsum(n, &a).map(|v| vec![v]),
            other => unsup!("no mapping for {other}"),
        }
    }

    fn known_scalar(&self, v: &Val, what: &str) -> NResult<f64> {
        match self.known_of(v) {
            Some(k) if k.numel() == 1 => Ok(k.floats().map_err(NodeErr::Error)?[0]),
            Some(_) => bad!("{what} must be a scalar"),
            None => unsup!("{what} must be a constant"),
        }
    }

    /// Explicit (top, left, bottom, right) pads from `pads` or `auto_pad`.
    fn conv_pads(
        &self,
        a: &Attrs,
        xs: &[Dim],
        ws: &[Dim],
        strides: &[i64],
        dil: &[i64],
    ) -> NResult<Vec<i64>> {
        let auto = a.s("auto_pad").unwrap_or_else(|| "NOTSET".into());
        match auto.as_str() {
            "NOTSET" => Ok(a.ints("pads").unwrap_or(vec![0, 0, 0, 0])),
            "VALID" => Ok(vec![0, 0, 0, 0]),
            "SAME_UPPER" | "SAME_LOWER" => {
                let mut begin = vec![];
                let mut end = vec![];
                for i in 0..2 {
                    let (Some(Dim::Fixed(inp)), Some(Dim::Fixed(k))) =
                        (xs.get(2 + i), ws.get(2 + i))
                    else {
                        unsup!("auto_pad {auto} with symbolic spatial dims");
                    };
                    let (inp, k) = (*inp as i64, *k as i64);
                    let s = strides.get(i).copied().unwrap_or(1).max(1);
                    let d = dil.get(i).copied().unwrap_or(1);
                    let out = (inp + s - 1) / s;
                    let total = ((out - 1) * s + (k - 1) * d + 1 - inp).max(0);
                    let small = total / 2;
                    let (b, e) = if auto == "SAME_UPPER" {
                        (small, total - small)
                    } else {
                        (total - small, small)
                    };
                    begin.push(b);
                    end.push(e);
                }
                Ok(vec![begin[0], begin[1], end[0], end[1]])
            }
            other => bad!("unknown auto_pad `{other}`"),
        }
    }

    fn resize(&mut self, n: &NodeProto, a: &Attrs) -> NResult<Val> {
        let x = self.input(n, 0)?;
        let mode = a.s("mode").unwrap_or_else(|| "nearest".into());
        if mode != "nearest" {
            unsup!("mode `{mode}` (only nearest is supported)");
        }
        let xs = self.shape(&x)?;
        if xs.len() != 4 {
            unsup!("only 4-D (NCHW) inputs are supported");
        }
        let scales = match self.opt_input(n, 2)? {
            Some(v) if self.known_of(&v).is_some_and(|k| k.numel() > 0) => {
                let k = self
                    .known_of(&v)
                    .ok_or_else(|| NodeErr::Error("scales".into()))?;
                k.floats().map_err(NodeErr::Error)?
            }
            _ => {
                let Some(sz) = self.opt_input(n, 3)? else {
                    bad!("neither scales nor sizes given")
                };
                let sz = self.ints(&sz, "sizes")?;
                let mut sc = vec![];
                for (i, s) in sz.iter().enumerate() {
                    let Some(Dim::Fixed(d)) = xs.get(i) else {
                        unsup!("sizes with symbolic input dims");
                    };
                    sc.push(*s as f64 / (*d) as f64);
                }
                sc
            }
        };
        if scales.len() != 4 || scales[0] != 1.0 || scales[1] != 1.0 || scales[2] != scales[3] {
            unsup!("scales {scales:?} (only equal integer scales of H and W are supported)");
        }
        let s = scales[2];
        if s.fract() != 0.0 || s < 1.0 {
            unsup!("scale {s} (only integer upsampling is supported)");
        }
        let ctm = a
            .s("coordinate_transformation_mode")
            .unwrap_or_else(|| "half_pixel".into());
        let nm = a
            .s("nearest_mode")
            .unwrap_or_else(|| "round_prefer_floor".into());
        // With an integer scale, the half-pixel modes map output i to (i + 0.5)/s - 0.5, strictly
        // inside (k - 0.5, k + 0.5) for k = floor(i / s): any rounding gives k. Asymmetric maps
        // to i / s, which is k only when rounding down.
        let ok = match ctm.as_str() {
            "half_pixel" | "pytorch_half_pixel" | "tf_half_pixel_for_nn" => true,
            "asymmetric" => nm == "floor" || s == 1.0,
            _ => false,
        };
        if !ok {
            unsup!("coordinate_transformation_mode `{ctm}` with nearest_mode `{nm}`");
        }
        self.emitj(
            "upsample_nearest2d",
            json!({ "scale": s as u64 }),
            &[x],
            true,
        )
    }

    fn einsum(&mut self, n: &NodeProto, a: &Attrs) -> NResult<Val> {
        let eq = a.s("equation").unwrap_or_default().replace(' ', "");
        let Some((lhs, out)) = eq.split_once("->") else {
            unsup!("equation `{eq}` without an explicit output");
        };
        let terms: Vec<Vec<char>> = lhs.split(',').map(|t| t.chars().collect()).collect();
        let out: Vec<char> = out.chars().collect();
        if eq.contains('.') {
            unsup!("equation `{eq}` with an ellipsis");
        }
        for t in terms.iter().chain(std::iter::once(&out)) {
            let mut seen = std::collections::HashSet::new();
            if !t.iter().all(|c| seen.insert(*c)) {
                unsup!("equation `{eq}` with a repeated index in one term (a diagonal)");
            }
        }
        let args = self.inputs(n)?;
        if args.len() != terms.len() {
            bad!(
                "equation `{eq}` has {} terms but the node has {} inputs",
                terms.len(),
                args.len()
            );
        }
        let pos = |t: &[char], c: char| t.iter().position(|&x| x == c);
        match terms.len() {
            1 => {
                let t = &terms[0];
                let summed: Vec<i64> = (0..t.len())
                    .filter(|&i| !out.contains(&t[i]))
                    .map(|i| i as i64)
                    .collect();
                let mut x = args[0].clone();
                let kept: Vec<char> = t.iter().copied().filter(|c| out.contains(c)).collect();
                if !summed.is_empty() {
                    x = self.emitj(
                        "reduce",
                        json!({"kind": "sum", "axes": summed, "keepdims": false}),
                        &[x],
                        false,
                    )?;
                }
                let perm: Vec<usize> = out
                    .iter()
                    .map(|&c| pos(&kept, c))
                    .collect::<Option<_>>()
                    .ok_or_else(|| {
                        NodeErr::Error(format!("equation `{eq}`: output index not in input"))
                    })?;
                self.emitj("transpose", json!({ "perm": perm }), &[x], true)
            }
            2 => {
                let (ta, tb) = (&terms[0], &terms[1]);
                for &c in ta.iter().chain(tb.iter()) {
                    let in_a = ta.contains(&c);
                    let in_b = tb.contains(&c);
                    if !(out.contains(&c) || in_a && in_b) {
                        unsup!("equation `{eq}` sums index `{c}` of one operand only");
                    }
                }
                for &c in &out {
                    if !ta.contains(&c) && !tb.contains(&c) {
                        bad!("equation `{eq}`: output index `{c}` is in no input");
                    }
                }
                let batch: Vec<char> = out
                    .iter()
                    .copied()
                    .filter(|c| ta.contains(c) && tb.contains(c))
                    .collect();
                let m: Vec<char> = out
                    .iter()
                    .copied()
                    .filter(|c| ta.contains(c) && !tb.contains(c))
                    .collect();
                let nn: Vec<char> = out
                    .iter()
                    .copied()
                    .filter(|c| tb.contains(c) && !ta.contains(c))
                    .collect();
                let k: Vec<char> = ta
                    .iter()
                    .copied()
                    .filter(|c| tb.contains(c) && !out.contains(c))
                    .collect();
                let (sa, sb) = (self.shape(&args[0])?, self.shape(&args[1])?);
                let dims_of = |t: &[char], s: &[Dim], cs: &[char]| -> Vec<Dim> {
                    cs.iter()
                        .filter_map(|&c| pos(t, c).map(|i| s[i].clone()))
                        .collect()
                };
                // A → [batch, m, k], B → [batch, k, n]
                let perm_a: Vec<usize> = batch
                    .iter()
                    .chain(&m)
                    .chain(&k)
                    .filter_map(|&c| pos(ta, c))
                    .collect();
                let perm_b: Vec<usize> = batch
                    .iter()
                    .chain(&k)
                    .chain(&nn)
                    .filter_map(|&c| pos(tb, c))
                    .collect();
                let mut x = args[0].clone();
                let mut y = args[1].clone();
                if perm_a.iter().enumerate().any(|(i, &p)| i != p) {
                    x = self.emitj("transpose", json!({ "perm": perm_a }), &[x], false)?;
                }
                if perm_b.iter().enumerate().any(|(i, &p)| i != p) {
                    y = self.emitj("transpose", json!({ "perm": perm_b }), &[y], false)?;
                }
                let bd = dims_of(ta, &sa, &batch);
                let (md, kd, nd) = (
                    dims_of(ta, &sa, &m),
                    dims_of(ta, &sa, &k),
                    dims_of(tb, &sb, &nn),
                );
                let one1 = [Dim::Fixed(1)];
                let g = |d: &[Dim]| -> Vec<Dim> {
                    if d.is_empty() {
                        one1.to_vec()
                    } else {
                        d.to_vec()
                    }
                };
                let (mg, kg, ng) = (g(&md), g(&kd), g(&nd));
                let mut ta_dims: Vec<ReshapeDim> = bd.iter().map(rdim).collect();
                ta_dims.extend(group_dims(&[&mg, &kg])?);
                let mut tb_dims: Vec<ReshapeDim> = bd.iter().map(rdim).collect();
                tb_dims.extend(group_dims(&[&kg, &ng])?);
                x = self.reshape(&x, ta_dims, false)?;
                y = self.reshape(&y, tb_dims, false)?;
                let mut p = self.emitj("matmul", json!({}), &[x, y], false)?;
                // [batch, m..., n...] then permute to the output order.
                let mut pd: Vec<Dim> = bd.clone();
                pd.extend(md.iter().cloned());
                pd.extend(nd.iter().cloned());
                p = self.reshape(&p, pd.iter().map(rdim).collect(), false)?;
                let order: Vec<char> = batch.iter().chain(&m).chain(&nn).copied().collect();
                let perm: Vec<usize> = out.iter().filter_map(|&c| pos(&order, c)).collect();
                self.emitj("transpose", json!({ "perm": perm }), &[p], true)
            }
            _ => unsup!(
                "equation `{eq}` with {} operands (1 or 2 are supported)",
                terms.len()
            ),
        }
    }
}
