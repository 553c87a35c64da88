//! What the importer knows about an ONNX value at import time, and the symbolic evaluation of
//! shape computations.
//!
//! A value is a run-time IR value, a constant ([`Known`]), or a [`SymT`]: a small integer tensor
//! whose entries are dim expressions (`[B, 12*S]`). `Shape` and `Size` make `SymT`s from the
//! operand's type; IR ops applied to them (add, mul, gather, concat, reshape, compare, where, …)
//! are evaluated symbolically by [`sym_eval`], so a target shape computed from `Shape(x)` folds
//! to dims and never reaches the graph. A `SymT` that is needed as data becomes a `dims` op.

use super::tensor::Known;
use fuselage_ir::ops::compare::Predicate;
use fuselage_ir::ops::logical::LogicalKind;
use fuselage_ir::ops::reduce::ReduceKind;
use fuselage_ir::ops::util::normalize_axis;
use fuselage_ir::{DType, Dim, Facts, Op, TensorType, ValueId};
use std::sync::Arc;

/// The largest symbolic tensor the importer tracks (shape vectors are a handful of entries).
pub(crate) const MAX_SYM_ELEMS: usize = 1 << 12;

/// A small integer (or bool) tensor known at import time, entries as dim expressions.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SymT {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Vec<Dim>,
}

/// What the importer knows about an ONNX value.
#[derive(Clone, Debug)]
pub(crate) enum Val {
    /// A run-time value of the IR graph.
    Ir(ValueId),
    /// A constant, with the name its IR constant gets if it is materialized.
    Known(Arc<Known>, Arc<str>),
    /// A small integer tensor of dim expressions.
    Sym(Arc<SymT>),
}

impl SymT {
    /// A 1-D vector of dims.
    pub fn vector(data: Vec<Dim>) -> SymT {
        SymT {
            dtype: DType::I64,
            shape: vec![data.len()],
            data,
        }
    }

    /// A scalar.
    pub fn scalar(d: Dim, dtype: DType) -> SymT {
        SymT {
            dtype,
            shape: vec![],
            data: vec![d],
        }
    }

    pub fn ty(&self) -> TensorType {
        TensorType::fixed(self.dtype, &self.shape)
    }

    /// The constant, when every entry is an integer (bools 0/1).
    pub fn to_known(&self) -> Option<Known> {
        let v: Option<Vec<i64>> = self.data.iter().map(|d| d.as_const()).collect();
        let v = v?;
        let t = fuselage_ir::Tensor::new(
            self.dtype,
            self.shape.clone(),
            v.iter().map(|&x| x as f64).collect(),
        )
        .ok()?;
        // i64 values past 2^53 are not exact in the f64 tensor: keep the bytes exact.
        if self.dtype == DType::I64 {
            return Some(Known::from_i64s(self.shape.clone(), &v));
        }
        Some(Known::from_tensor(&t))
    }

    /// The symbolic view of a small integer or bool constant.
    pub fn from_known(k: &Known) -> Option<SymT> {
        if !(k.dtype.is_int() || k.dtype == DType::Bool) || k.numel() > MAX_SYM_ELEMS {
            return None;
        }
        let ints = k.ints().ok()?;
        Some(SymT {
            dtype: k.dtype,
            shape: k.shape.clone(),
            data: ints.into_iter().map(Dim::from_i64).collect(),
        })
    }
}

type SR = Result<Option<SymT>, String>;
/// A binary operation on dims, used by the symbolic evaluator.
type DimBinFn<'a> = dyn Fn(&Dim, &Dim) -> Result<Option<Dim>, String> + 'a;

fn strides(shape: &[usize]) -> Vec<usize> {
    fuselage_ir::tensor::strides_of(shape)
}

/// Multi-index of a flat row-major offset.
fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for ax in (0..shape.len()).rev() {
        if shape[ax] > 0 {
            idx[ax] = i % shape[ax];
            i /= shape[ax];
        }
    }
    idx
}

/// Element of `t` at the broadcast position `idx` of an output of rank `idx.len()`.
fn at_broadcast<'a>(t: &'a SymT, idx: &[usize]) -> &'a Dim {
    let off = idx.len() - t.shape.len();
    let st = strides(&t.shape);
    let mut o = 0;
    for (ax, (&n, &s)) in t.shape.iter().zip(&st).enumerate() {
        if n > 1 {
            o += idx[off + ax] * s;
        }
    }
    &t.data[o]
}

/// Element-wise map over broadcast operands into a result of `shape`.
fn broadcast_map(
    args: &[&SymT],
    shape: &[usize],
    dtype: DType,
    mut f: impl FnMut(&[&Dim]) -> Result<Option<Dim>, String>,
) -> SR {
    let n: usize = shape.iter().product();
    if n > MAX_SYM_ELEMS {
        return Ok(None);
    }
    let mut data = Vec::with_capacity(n);
    for i in 0..n {
        let idx = unravel(i, shape);
        let xs: Vec<&Dim> = args.iter().map(|t| at_broadcast(t, &idx)).collect();
        match f(&xs)? {
            Some(d) => data.push(d),
            None => return Ok(None),
        }
    }
    Ok(Some(SymT {
        dtype,
        shape: shape.to_vec(),
        data,
    }))
}

/// The sign of `a - b` if the facts decide it: `Some(Less | Equal | Greater)`.
fn compare(a: &Dim, b: &Dim, facts: &Facts) -> Result<Option<std::cmp::Ordering>, String> {
    use std::cmp::Ordering::*;
    let diff = a.sub(b).map_err(|e| e.to_string())?;
    if let Some(c) = diff.as_const() {
        return Ok(Some(c.cmp(&0)));
    }
    let (lo, hi) = facts.bounds(&diff);
    Ok(match (lo, hi) {
        (Some(l), _) if l > 0 => Some(Greater),
        (_, Some(h)) if h < 0 => Some(Less),
        _ => None,
    })
}

fn truthy(d: &Dim) -> Option<bool> {
    d.as_const().map(|c| c != 0)
}

fn bool_dim(b: bool) -> Dim {
    Dim::from_i64(i64::from(b))
}

/// Evaluate an IR op on symbolic operands; `Ok(None)` when the op or its operands cannot be
/// evaluated symbolically (the importer then emits the op into the graph).
pub(crate) fn sym_eval(op: &Op, args: &[&SymT], results: &[TensorType], facts: &Facts) -> SR {
    let [res] = results else { return Ok(None) };
    let Some(out_shape) = res.fixed_shape() else {
        return Ok(None);
    };
    let dt = res.dtype;
    if !(dt.is_int() || dt == DType::Bool) {
        return Ok(None);
    }
    let e = |x: fuselage_ir::DimError| x.to_string();
    let bin = |f: &DimBinFn<'_>| -> SR {
        if args.len() != 2 {
            return Ok(None);
        }
        broadcast_map(args, &out_shape, dt, |x| f(x[0], x[1]))
    };
    match op {
        Op::Add(_) => bin(&|a, b| a.add(b).map(Some).map_err(e)),
        Op::Sub(_) => bin(&|a, b| a.sub(b).map(Some).map_err(e)),
        Op::Mul(_) => bin(&|a, b| a.mul(b).map(Some).map_err(e)),
        Op::Div(_) => bin(&|a, b| {
            // Truncating integer division: exact for a constant divisor when the dividend's
            // sign is known.
            let Some(k) = b.as_const() else {
                return Ok(None);
            };
            if k == 0 {
                return Ok(None);
            }
            if let Some(x) = a.as_const() {
                return Ok(Some(Dim::from_i64(x / k)));
            }
            let (lo, _) = facts.bounds(a);
            if lo.is_some_and(|l| l >= 0) {
                let q = a.div_floor(k.unsigned_abs()).map_err(e)?;
                return Ok(Some(if k < 0 { q.neg().map_err(e)? } else { q }));
            }
            Ok(None)
        }),
        Op::Maximum(_) => bin(&|a, b| {
            a.maximum(b)
                .map(|d| d.simplify(facts))
                .and_then(|x| x)
                .map(Some)
                .map_err(e)
        }),
        Op::Minimum(_) => bin(&|a, b| {
            a.minimum(b)
                .map(|d| d.simplify(facts))
                .and_then(|x| x)
                .map(Some)
                .map_err(e)
        }),
        Op::Mod(m) if !m.fmod => bin(&|a, b| {
            // a mod k = a − k·⌊a/k⌋ for a positive constant k.
            let Some(k) = b.as_const().filter(|&k| k > 0) else {
                return Ok(None);
            };
            let q = a.div_floor(k as u64).map_err(e)?;
            a.sub(&q.mul_int(k).map_err(e)?).map(Some).map_err(e)
        }),
        Op::Neg(_) => {
            let [a] = args else { return Ok(None) };
            broadcast_map(&[a], &out_shape, dt, |x| x[0].neg().map(Some).map_err(e))
        }
        Op::Abs(_) => {
            let [a] = args else { return Ok(None) };
            broadcast_map(&[a], &out_shape, dt, |x| {
                if let Some(c) = x[0].as_const() {
                    return Ok(Some(Dim::from_i64(c.abs())));
                }
                let (lo, _) = facts.bounds(x[0]);
                Ok(lo.is_some_and(|l| l >= 0).then(|| x[0].clone()))
            })
        }
        Op::Compare(c) => bin(&|a, b| {
            use std::cmp::Ordering::*;
            let Some(o) = compare(a, b, facts)? else {
                return Ok(None);
            };
            let r = match c.predicate {
                Predicate::Eq => o == Equal,
                Predicate::Ne => o != Equal,
                Predicate::Lt => o == Less,
                Predicate::Le => o != Greater,
                Predicate::Gt => o == Greater,
                Predicate::Ge => o != Less,
            };
            Ok(Some(bool_dim(r)))
        }),
        Op::Logical(l) => bin(&|a, b| {
            let (Some(x), Some(y)) = (truthy(a), truthy(b)) else {
                return Ok(None);
            };
            Ok(Some(bool_dim(match l.kind {
                LogicalKind::And => x && y,
                LogicalKind::Or => x || y,
                LogicalKind::Xor => x != y,
            })))
        }),
        Op::Not(_) => {
            let [a] = args else { return Ok(None) };
            broadcast_map(&[a], &out_shape, dt, |x| {
                Ok(truthy(x[0]).map(|v| bool_dim(!v)))
            })
        }
        Op::Where(_) => {
            if args.len() != 3 {
                return Ok(None);
            }
            broadcast_map(args, &out_shape, dt, |x| {
                Ok(truthy(x[0]).map(|c| if c { x[1].clone() } else { x[2].clone() }))
            })
        }
        Op::Cast(c) => {
            let [a] = args else { return Ok(None) };
            if c.dtype == DType::Bool {
                return broadcast_map(&[a], &out_shape, dt, |x| {
                    if let Some(v) = truthy(x[0]) {
                        return Ok(Some(bool_dim(v)));
                    }
                    let (lo, _) = facts.bounds(x[0]);
                    Ok(lo.is_some_and(|l| l > 0).then(|| bool_dim(true)))
                });
            }
            // Integer to a wide integer: the value is unchanged (constants are range-checked).
            let (lo, hi) = c.dtype.int_range().unwrap_or((0.0, 0.0));
            broadcast_map(&[a], &out_shape, dt, |x| match x[0].as_const() {
                Some(v) if (v as f64) < lo || (v as f64) > hi => Ok(None),
                Some(_) => Ok(Some(x[0].clone())),
                None if hi >= i32::MAX as f64 => Ok(Some(x[0].clone())),
                None => Ok(None),
            })
        }
        Op::Reshape(_) => {
            let [a] = args else { return Ok(None) };
            Ok(Some(SymT {
                dtype: dt,
                shape: out_shape,
                data: a.data.clone(),
            }))
        }
        Op::BroadcastTo(_) => {
            let [a] = args else { return Ok(None) };
            broadcast_map(&[a], &out_shape, dt, |x| Ok(Some(x[0].clone())))
        }
        Op::Transpose(t) => {
            let [a] = args else { return Ok(None) };
            let st = strides(&a.shape);
            let n: usize = out_shape.iter().product();
            let mut data = Vec::with_capacity(n);
            for i in 0..n {
                let idx = unravel(i, &out_shape);
                let mut o = 0;
                for (k, &p) in t.perm.iter().enumerate() {
                    o += idx[k] * st.get(p).copied().unwrap_or(0);
                }
                data.push(a.data.get(o).cloned().ok_or("transpose index")?);
            }
            Ok(Some(SymT {
                dtype: dt,
                shape: out_shape,
                data,
            }))
        }
        Op::Concat(c) => {
            let Some(first) = args.first() else {
                return Ok(None);
            };
            let ax = normalize_axis("concat", c.axis, first.shape.len()).map_err(|e| e.0)?;
            let outer: usize = out_shape[..ax].iter().product();
            let mut data = Vec::with_capacity(out_shape.iter().product());
            for o in 0..outer {
                for a in args {
                    let inner: usize = a.shape[ax..].iter().product();
                    data.extend_from_slice(&a.data[o * inner..(o + 1) * inner]);
                }
            }
            Ok(Some(SymT {
                dtype: dt,
                shape: out_shape,
                data,
            }))
        }
        Op::Slice(s) => {
            let [a] = args else { return Ok(None) };
            let ax = normalize_axis("slice", s.axis, a.shape.len()).map_err(|e| e.0)?;
            let (Some(start), Some(end)) = (s.start.as_const(), s.end.as_const()) else {
                return Ok(None);
            };
            let n = a.shape[ax];
            let (first, count) =
                fuselage_ir::ops::slice::Slice::range_of(start, end, s.step, n as u64)
                    .map_err(|e| e.0)?;
            let outer: usize = a.shape[..ax].iter().product();
            let inner: usize = a.shape[ax + 1..].iter().product();
            let mut data = vec![];
            for o in 0..outer {
                for k in 0..count as i64 {
                    let i = (first + k * s.step) as usize;
                    let base = (o * n + i) * inner;
                    data.extend_from_slice(&a.data[base..base + inner]);
                }
            }
            Ok(Some(SymT {
                dtype: dt,
                shape: out_shape,
                data,
            }))
        }
        Op::Gather(g) => {
            let [a, idx] = args else { return Ok(None) };
            let ax = normalize_axis("gather", g.axis, a.shape.len()).map_err(|e| e.0)?;
            let n = a.shape[ax] as i64;
            let outer: usize = a.shape[..ax].iter().product();
            let inner: usize = a.shape[ax + 1..].iter().product();
            let mut data = vec![];
            for o in 0..outer {
                for i in &idx.data {
                    let Some(i) = i.as_const() else {
                        return Ok(None);
                    };
                    let j = if i < 0 { i + n } else { i };
                    if !(0..n).contains(&j) {
                        return Err(format!("gather index {i} is out of range for size {n}"));
                    }
                    let base = (o * n as usize + j as usize) * inner;
                    data.extend_from_slice(&a.data[base..base + inner]);
                }
            }
            Ok(Some(SymT {
                dtype: dt,
                shape: out_shape,
                data,
            }))
        }
        Op::Reduce(r) => {
            let [a] = args else { return Ok(None) };
            let rank = a.shape.len();
            let mut axes = vec![];
            for &x in &r.axes {
                axes.push(normalize_axis("reduce", x, rank).map_err(|e| e.0)?);
            }
            // Group the elements by their position with the reduced axes dropped.
            let kept: Vec<usize> = (0..rank).filter(|i| !axes.contains(i)).collect();
            let kshape: Vec<usize> = kept.iter().map(|&i| a.shape[i]).collect();
            let ks = strides(&kshape);
            let nout: usize = kshape.iter().product();
            let mut groups: Vec<Vec<&Dim>> = vec![vec![]; nout];
            for (i, d) in a.data.iter().enumerate() {
                let idx = unravel(i, &a.shape);
                let o: usize = kept.iter().zip(&ks).map(|(&k, &s)| idx[k] * s).sum();
                groups[o].push(d);
            }
            let mut data = Vec::with_capacity(nout);
            for g in groups {
                let v = match r.kind {
                    ReduceKind::Sum => Dim::sum(g).map_err(e)?,
                    ReduceKind::Max if !g.is_empty() => {
                        Dim::max_of(g.into_iter().cloned().collect())
                            .and_then(|d| d.simplify(facts))
                            .map_err(e)?
                    }
                    ReduceKind::Min if !g.is_empty() => {
                        Dim::min_of(g.into_iter().cloned().collect())
                            .and_then(|d| d.simplify(facts))
                            .map_err(e)?
                    }
                    ReduceKind::Prod => Dim::product(g).map_err(e)?,
                    _ => return Ok(None),
                };
                data.push(v);
            }
            Ok(Some(SymT {
                dtype: dt,
                shape: out_shape,
                data,
            }))
        }
        _ => Ok(None),
    }
}
