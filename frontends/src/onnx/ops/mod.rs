//! ONNX op → IR converters, one file per op family. Each family lists its op types in one
//! `OPS` table; [`lookup`] finds a converter and [`supported`] is the list users see. Converters
//! build typed IR ops (`Op::Add(Add {})`), never ops from strings, so renaming an attribute of
//! an IR op fails to compile here.
//!
//! A converter reads the node's opset version (`n.opset`) where the op's semantics changed
//! between versions (attributes that became inputs, changed defaults) and reports legacy forms it
//! does not map (e.g. the pre-opset-7 `broadcast` attribute) as unsupported with the reason.

mod attention;
mod elementwise;
mod index;
mod linalg;
mod loss;
mod nn;
mod quant;
mod reduce;
mod shape;

use super::import::Importer;
use super::node::{bad, NResult, Node};
use super::value::Val;
use fuselage_ir::ops::{self as irops, Op};
use fuselage_ir::{DType, Dim};

/// A converter: the values of the node's outputs, in order (fewer when trailing optional
/// outputs are not computed).
pub(crate) type Convert = fn(&mut Importer, &Node) -> NResult<Vec<Val>>;

/// The newest default-domain opset whose semantics the converters follow.
pub(crate) const NEWEST_OPSET: i64 = 28;

/// Every family's table, with the family's file name.
const FAMILIES: &[(&str, &[(&str, Convert)])] = &[
    ("elementwise", elementwise::OPS),
    ("shape", shape::OPS),
    ("index", index::OPS),
    ("reduce", reduce::OPS),
    ("linalg", linalg::OPS),
    ("nn", nn::OPS),
    ("attention", attention::OPS),
    ("loss", loss::OPS),
    ("quant", quant::OPS),
];

/// Op types the importer knows and does not map, with the reason a user is told.
const NOT_MAPPED: &[(&str, &str)] = &[
    ("NonZero", "the size of its output depends on the values of its input (a data-dependent shape, which a typed IR graph cannot name)"),
    ("Unique", "the size of its output depends on the values of its input (a data-dependent shape, which a typed IR graph cannot name)"),
    ("Compress", "the size of its output depends on the values of its condition (a data-dependent shape, which a typed IR graph cannot name)"),
    ("NonMaxSuppression", "the number of boxes it selects depends on the data (a data-dependent shape, which a typed IR graph cannot name)"),
    ("Bernoulli", "random sampling: its outputs are not a function of its inputs"),
    ("RandomUniform", "random sampling: its outputs are not a function of its inputs"),
    ("RandomNormal", "random sampling: its outputs are not a function of its inputs"),
    ("RandomUniformLike", "random sampling: its outputs are not a function of its inputs"),
    ("RandomNormalLike", "random sampling: its outputs are not a function of its inputs"),
    ("Multinomial", "random sampling: its outputs are not a function of its inputs"),
    ("If", "control flow (subgraphs) is not imported yet"),
    ("Loop", "control flow (subgraphs) is not imported yet"),
    ("Scan", "control flow (subgraphs) is not imported yet"),
    ("ImageDecoder", "decoding image files is outside the tensor IR"),
    ("StringNormalizer", "string tensors are outside the tensor IR"),
    ("RegexFullMatch", "string tensors are outside the tensor IR"),
    ("StringConcat", "string tensors are outside the tensor IR"),
    ("StringSplit", "string tensors are outside the tensor IR"),
    ("OptionalHasElement", "optional and sequence values are outside the tensor IR"),
    ("OptionalGetElement", "optional and sequence values are outside the tensor IR"),
    ("Optional", "optional and sequence values are outside the tensor IR"),
];

/// Why a known op type is not mapped, if it is one of [`NOT_MAPPED`].
pub(crate) fn not_mapped_reason(domain: &str, op_type: &str) -> Option<&'static str> {
    if !domain.is_empty() {
        return None;
    }
    NOT_MAPPED
        .iter()
        .find(|(n, _)| *n == op_type)
        .map(|(_, r)| *r)
}

/// The converter of an op type in a domain (`""` is the default ONNX domain).
pub(crate) fn lookup(domain: &str, op_type: &str) -> Option<Convert> {
    if !domain.is_empty() {
        return None;
    }
    FAMILIES
        .iter()
        .flat_map(|(_, f)| f.iter())
        .find(|(name, _)| *name == op_type)
        .map(|(_, c)| *c)
}

/// The supported op types of each family (file), in table order.
pub(crate) fn by_family() -> Vec<(&'static str, Vec<&'static str>)> {
    FAMILIES
        .iter()
        .map(|(fam, ops)| (*fam, ops.iter().map(|(n, _)| *n).collect()))
        .collect()
}

/// Every supported op type, sorted.
pub(crate) fn supported() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = FAMILIES
        .iter()
        .flat_map(|(_, f)| f.iter().map(|(n, _)| *n))
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// One output.
pub(crate) fn one(v: Val) -> NResult<Vec<Val>> {
    Ok(vec![v])
}

/// Python-style normalization of an axis.
pub(crate) fn axis(a: i64, rank: usize) -> NResult<usize> {
    let r = rank as i64;
    let v = if a < 0 { a + r } else { a };
    if v < 0 || v >= r {
        bad!("axis {a} is out of range for rank {rank}");
    }
    Ok(v as usize)
}

/// Reject the pre-opset-7 broadcasting attributes of binary ops.
pub(crate) fn no_legacy_broadcast(n: &Node) -> NResult<()> {
    if n.i("broadcast", 0) != 0 {
        super::node::unsup!(
            "the legacy `broadcast` attribute (opset {} < 7) with explicit axis alignment",
            n.opset
        );
    }
    Ok(())
}

impl Importer<'_> {
    /// Make the operands' dims agree where they must (right-aligned, as in broadcasting; the
    /// `skip` axis of equal-rank operands excepted, as in concat): dims that differ as
    /// expressions but are equal under an assumed divisor of a symbol ([`Importer::unify`])
    /// are made equal by reshaping (a view) the operand with the more complex dim.
    pub(crate) fn align(&mut self, vals: Vec<Val>, skip: Option<usize>) -> NResult<Vec<Val>> {
        let shapes = vals
            .iter()
            .map(|v| self.shape(v))
            .collect::<NResult<Vec<_>>>()?;
        let r = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
        let mut new = shapes.clone();
        let mut changed = vec![false; vals.len()];
        for pos in 0..r {
            let at = |s: &Vec<Dim>| (pos + s.len() >= r).then(|| pos + s.len() - r);
            if skip == Some(pos) {
                continue;
            }
            let dims: Vec<(usize, usize, Dim)> = shapes
                .iter()
                .enumerate()
                .filter_map(|(k, s)| at(s).map(|i| (k, i, s[i].clone())))
                .filter(|(_, _, d)| d.fixed() != Some(1))
                .collect();
            let Some(target) = dims
                .iter()
                .map(|(_, _, d)| d.clone())
                .min_by_key(|d| (d.to_string().len(), d.to_string()))
            else {
                continue;
            };
            for (k, i, d) in dims {
                if d != target && self.unify(&d, &target) {
                    new[k][i] = target.clone();
                    changed[k] = true;
                }
            }
        }
        let mut out = Vec::with_capacity(vals.len());
        for ((v, s), c) in vals.into_iter().zip(new).zip(changed) {
            out.push(if c { self.reshape(v, s)? } else { v });
        }
        Ok(out)
    }

    /// Two operands aligned for broadcasting.
    pub(crate) fn align2(&mut self, x: Val, y: Val) -> NResult<(Val, Val)> {
        let mut v = self.align(vec![x, y], None)?;
        let y = v.pop().ok_or_else(|| super::node::err("internal: align"))?;
        let x = v.pop().ok_or_else(|| super::node::err("internal: align"))?;
        Ok((x, y))
    }

    /// For a composition that is one ONNX op: the operand in f32 when its dtype is a 16- or
    /// 8-bit float (so the op rounds once, at the end, as the ONNX reference computes it), and
    /// the dtype to return to with [`Importer::narrow`].
    pub(crate) fn widen(&mut self, x: Val) -> NResult<(Val, DType)> {
        let dt = self.dtype(&x)?;
        if dt.is_float() && dt.bits() < 32 {
            Ok((self.cast_to(x, DType::F32)?, dt))
        } else {
            Ok((x, dt))
        }
    }

    /// Back to the dtype [`Importer::widen`] returned.
    pub(crate) fn narrow(&mut self, y: Val, dt: DType) -> NResult<Val> {
        self.cast_to(y, dt)
    }

    /// `op(x)`.
    pub(crate) fn un(&mut self, op: Op, x: Val) -> NResult<Val> {
        self.emit(op, &[x])
    }

    /// `op(x, y)`.
    pub(crate) fn bin(&mut self, op: Op, x: Val, y: Val) -> NResult<Val> {
        self.emit(op, &[x, y])
    }

    /// `op(x, y)` for an element-wise op with broadcasting (operands aligned first).
    pub(crate) fn bin_bc(&mut self, op: Op, x: Val, y: Val) -> NResult<Val> {
        let (x, y) = self.align2(x, y)?;
        self.emit(op, &[x, y])
    }

    pub(crate) fn add(&mut self, x: Val, y: Val) -> NResult<Val> {
        self.bin_bc(Op::Add(irops::add::Add {}), x, y)
    }

    pub(crate) fn sub(&mut self, x: Val, y: Val) -> NResult<Val> {
        self.bin_bc(Op::Sub(irops::sub::Sub {}), x, y)
    }

    pub(crate) fn mul(&mut self, x: Val, y: Val) -> NResult<Val> {
        self.bin_bc(Op::Mul(irops::mul::Mul {}), x, y)
    }

    pub(crate) fn div(&mut self, x: Val, y: Val) -> NResult<Val> {
        self.bin_bc(Op::Div(irops::div::Div {}), x, y)
    }

    pub(crate) fn compare(&mut self, p: irops::compare::Predicate, x: Val, y: Val) -> NResult<Val> {
        self.bin_bc(Op::Compare(irops::compare::Compare { predicate: p }), x, y)
    }

    pub(crate) fn select(&mut self, c: Val, x: Val, y: Val) -> NResult<Val> {
        let v = self.align(vec![c, x, y], None)?;
        self.emit(Op::Where(irops::where_::Where {}), &v)
    }

    /// Cast to `dtype` (no op when it already is).
    pub(crate) fn cast_to(&mut self, v: Val, dtype: DType) -> NResult<Val> {
        if self.dtype(&v)? == dtype {
            return Ok(v);
        }
        self.un(Op::Cast(irops::cast::Cast { dtype }), v)
    }

    /// Reshape to dims (one `-1` allowed).
    pub(crate) fn reshape(&mut self, x: Val, dims: Vec<Dim>) -> NResult<Val> {
        if self.shape(&x)? == dims {
            return Ok(x);
        }
        self.un(Op::Reshape(irops::reshape::Reshape { shape: dims }), x)
    }

    /// Permute dims (no op for the identity).
    pub(crate) fn transpose(&mut self, x: Val, perm: Vec<usize>) -> NResult<Val> {
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return Ok(x);
        }
        self.un(Op::Transpose(irops::transpose::Transpose { perm }), x)
    }

    /// Broadcast to dims (no op when already that shape).
    pub(crate) fn broadcast(&mut self, x: Val, dims: Vec<Dim>) -> NResult<Val> {
        if self.shape(&x)? == dims {
            return Ok(x);
        }
        self.un(
            Op::BroadcastTo(irops::broadcast_to::BroadcastTo { shape: dims }),
            x,
        )
    }

    /// Reduce over axes.
    pub(crate) fn reduce(
        &mut self,
        kind: irops::reduce::ReduceKind,
        x: Val,
        axes: Vec<i64>,
        keepdims: bool,
    ) -> NResult<Val> {
        self.un(
            Op::Reduce(irops::reduce::Reduce {
                kind,
                axes,
                keepdims,
                sequential: false,
            }),
            x,
        )
    }

    /// `exp(x − max) / Σ exp(x − max)` over `axis` as the ONNX reference computes it in a
    /// 16-bit float type: every step rounded to the type, bf16 sums accumulated in bf16 (numpy
    /// reduces bfloat16 arrays that way; float16 sums accumulate wider). A row of −∞ gives 0.
    pub(crate) fn stepwise_softmax(&mut self, x: Val, axis: i64) -> NResult<Val> {
        use irops::compare::Predicate;
        use irops::reduce::ReduceKind;
        let bf16 = self.dtype(&x)? == DType::BF16;
        let m = self.reduce(ReduceKind::Max, x.clone(), vec![axis], true)?;
        let ninf = self.scalar_like(&m, f64::NEG_INFINITY, "neg_inf")?;
        let zero = self.scalar_like(&m, 0.0, "zero")?;
        let dead = self.compare(Predicate::Eq, m.clone(), ninf)?;
        let m = self.select(dead, zero.clone(), m)?;
        let c = self.sub(x, m)?;
        let e = self.un(Op::Exp(irops::exp::Exp {}), c)?;
        let s = self.un(
            Op::Reduce(irops::reduce::Reduce {
                kind: ReduceKind::Sum,
                axes: vec![axis],
                keepdims: true,
                sequential: bf16,
            }),
            e.clone(),
        )?;
        let one_v = self.scalar_like(&s, 1.0, "one")?;
        let is0 = self.compare(Predicate::Eq, s.clone(), zero)?;
        let s = self.select(is0, one_v, s)?;
        self.div(e, s)
    }

    /// A scalar of `v`'s dtype.
    pub(crate) fn scalar_like(&mut self, v: &Val, x: f64, what: &str) -> NResult<Val> {
        let dt = self.dtype(v)?;
        Ok(self.scalar(dt, x, what))
    }

    /// `x[start:end:step]` along one axis.
    pub(crate) fn slice_axis(
        &mut self,
        x: Val,
        ax: usize,
        start: Dim,
        end: Dim,
        step: i64,
    ) -> NResult<Val> {
        self.un(
            Op::Slice(irops::slice::Slice {
                axis: ax as i64,
                start,
                end,
                step,
            }),
            x,
        )
    }

    /// `iota` of a shape along an axis.
    pub(crate) fn iota(&mut self, shape: Vec<Dim>, ax: i64, dtype: DType) -> NResult<Val> {
        self.emit(
            Op::Iota(irops::iota::Iota {
                shape,
                axis: ax,
                dtype,
            }),
            &[],
        )
    }
}
