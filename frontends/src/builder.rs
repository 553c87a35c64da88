//! The builder API: typed helpers that append IR nodes to a function, with names.
//!
//! ```
//! use fuselage_frontends::builder::ModelBuilder;
//! use fuselage_ir::{DType, Dim};
//!
//! let mut b = ModelBuilder::new(7);
//! let x = b.input("x", DType::F32, &["B".into(), Dim::from(16u64)]);
//! let h = b.linear("fc1", x, 16, 32, true).unwrap();
//! let h = b.gelu(h).unwrap();
//! let y = b.linear("fc2", h, 32, 4, true).unwrap();
//! b.output("y", y);
//! let module = b.finish().unwrap();
//! assert_eq!(module.functions["main"].outputs.len(), 1);
//! ```
//!
//! Every helper builds its op from the op's typed struct in [`fuselage_ir::ops`], so an
//! attribute renamed in the IR is a compile error here, not a runtime one. Ops without a helper
//! go through [`ModelBuilder::op`] with their struct (`Op::Gather(Gather { axis: 0 })`); an op
//! known only by name and JSON attributes (from a config file) is built with
//! [`Op::from_attrs`] first.

use crate::error::FrontendError;
use fuselage_ir::ops::attention::{Attention, AttnMask};
use fuselage_ir::ops::gelu::{Gelu, GeluApproximate};
use fuselage_ir::ops::reduce::{Reduce, ReduceKind};
use fuselage_ir::ops::rope::{Rope, RopeStyle};
use fuselage_ir::ops::{self, Op};
use fuselage_ir::{
    Constant, DType, Dim, Graph, Init, IrError, Module, NodeId, Tensor, TensorType, ValueId,
};

/// Result alias of the builder.
pub type BuildResult<T> = Result<T, FrontendError>;

/// How attention masks are applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mask {
    /// No mask.
    None,
    /// Causal (each query sees keys up to its own position).
    Causal,
}

impl From<Mask> for AttnMask {
    fn from(m: Mask) -> AttnMask {
        match m {
            Mask::None => AttnMask::None,
            Mask::Causal => AttnMask::Causal,
        }
    }
}

/// The weights of one Llama decoder block for [`ModelBuilder::llama_block_with`]: values of
/// constants (or any values) with projections in matmul layout `[in, out]`.
#[derive(Clone, Copy, Debug)]
pub struct LlamaLayerWeights {
    /// RMSNorm scale before attention, `[hidden]`.
    pub attn_norm: ValueId,
    /// Query projection `[hidden, heads·dh]`.
    pub q: ValueId,
    /// Key projection `[hidden, kv_heads·dh]`.
    pub k: ValueId,
    /// Value projection `[hidden, kv_heads·dh]`.
    pub v: ValueId,
    /// Output projection `[heads·dh, hidden]`.
    pub o: ValueId,
    /// RMSNorm scale before the MLP, `[hidden]`.
    pub ffn_norm: ValueId,
    /// SwiGLU gate projection `[hidden, ffn]`.
    pub gate: ValueId,
    /// SwiGLU up projection `[hidden, ffn]`.
    pub up: ValueId,
    /// SwiGLU down projection `[ffn, hidden]`.
    pub down: ValueId,
    /// Rope style of q and k: [`RopeStyle::Half`] (HF rotate-half rows) or
    /// [`RopeStyle::Interleaved`] (adjacent pairs).
    pub rope_style: RopeStyle,
}

/// Appends nodes to one function of a module being built. Parameters are seeded constants whose
/// seed is derived from the builder seed and the parameter name, so models are reproducible and
/// nothing is materialized until executed.
pub struct ModelBuilder {
    module: Module,
    graph: Graph,
    seed: u64,
    scope: Vec<String>,
    /// Standard deviation of seeded weight matrices.
    pub init_std: f64,
}

/// FNV-1a, used to derive stable per-parameter seeds from names.
fn name_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// LayerNorm over the last dim.
fn layer_norm_last(eps: f64) -> Op {
    Op::LayerNorm(ops::layer_norm::LayerNorm { axis: -1, eps })
}

/// RMSNorm over the last dim.
fn rms_norm_last(eps: f64) -> Op {
    Op::RmsNorm(ops::rms_norm::RmsNorm { axis: -1, eps })
}

impl ModelBuilder {
    /// A builder for a fresh module whose parameters derive from `seed`.
    pub fn new(seed: u64) -> Self {
        ModelBuilder {
            module: Module::new(),
            graph: Graph::new(),
            seed,
            scope: vec![],
            init_std: 0.02,
        }
    }

    /// The module built so far (constants; the function is added by [`finish`](Self::finish)).
    pub fn module(&self) -> &Module {
        &self.module
    }

    /// Enter a name scope (`encoder.layer.0` …); names of nodes and parameters get the prefix.
    pub fn push_scope(&mut self, s: impl Into<String>) {
        self.scope.push(s.into());
    }

    /// Leave the innermost name scope.
    pub fn pop_scope(&mut self) {
        self.scope.pop();
    }

    /// A scoped name.
    pub fn scoped(&self, name: &str) -> String {
        if self.scope.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.scope.join("."))
        }
    }

    /// Add a function input.
    pub fn input(&mut self, name: &str, dtype: DType, dims: &[Dim]) -> ValueId {
        self.graph
            .add_input(name, TensorType::new(dtype, dims.iter().cloned()))
            .into()
    }

    /// Mark a value as a named output.
    pub fn output(&mut self, name: &str, v: ValueId) {
        self.graph.add_output(name, v);
    }

    /// Type of a value.
    pub fn ty(&self, v: ValueId) -> BuildResult<TensorType> {
        self.graph
            .value_type(v)
            .cloned()
            .ok_or_else(|| FrontendError::Config(format!("value {v} does not exist")))
    }

    /// Append an op (built from its typed struct); returns its results.
    pub fn op_multi(
        &mut self,
        op: Op,
        operands: &[ValueId],
        name: Option<&str>,
    ) -> BuildResult<Vec<ValueId>> {
        let name = name.map(|n| self.scoped(n));
        let context = name.clone().unwrap_or_else(|| self.scoped(op.name()));
        let id = self
            .graph
            .add_inferred(&self.module, op, operands.to_vec(), name)
            .map_err(|source| FrontendError::build(context, source))?;
        let n = self.graph.node(id).map(|n| n.results.len()).unwrap_or(0);
        Ok((0..n as u32).map(|s| ValueId::new(id, s)).collect())
    }

    /// Append a single-result op built from its typed struct, e.g.
    /// `b.op(Op::Gather(Gather { axis: 0 }), &[table, ids])`. (An op known only by name and
    /// JSON attributes, e.g. from a config file, is built with [`Op::from_attrs`] first.)
    pub fn op(&mut self, op: Op, operands: &[ValueId]) -> BuildResult<ValueId> {
        let what = op.name();
        let results = self.op_multi(op, operands, None)?;
        single(what, results)
    }

    /// Append a single-result op with a node name.
    pub fn named(&mut self, name: &str, op: Op, operands: &[ValueId]) -> BuildResult<ValueId> {
        let what = op.name();
        let results = self.op_multi(op, operands, Some(name))?;
        single(what, results)
    }

    fn constant_node(&mut self, name: String) -> BuildResult<ValueId> {
        self.op(Op::Constant(ops::constant::Constant { name }), &[])
    }

    /// A seeded parameter (normal with `init_std`, or a constant fill) named within the scope.
    pub fn param(
        &mut self,
        name: &str,
        dtype: DType,
        shape: &[usize],
        init: Init,
    ) -> BuildResult<ValueId> {
        let full = self.scoped(name);
        let seed = self.seed ^ name_hash(&full);
        let c = Constant::seeded(TensorType::fixed(dtype, shape), seed, init);
        let full = self.module.fresh_constant_name(&full);
        self.module.add_constant(full.clone(), c);
        self.constant_node(full)
    }

    /// A dense constant from a tensor.
    pub fn constant(&mut self, name: &str, t: &Tensor) -> BuildResult<ValueId> {
        let full = self.module.fresh_constant_name(&self.scoped(name));
        self.module
            .add_constant(full.clone(), Constant::from_tensor(t));
        self.constant_node(full)
    }

    /// Add a constant under exactly `name` (no scope, no renaming) with the storage it has, e.g.
    /// file storage over a memory-mapped weights file, and return its `constant` node. Errors
    /// when the name is taken or the storage does not fit the type.
    pub fn add_constant(&mut self, name: &str, c: Constant) -> BuildResult<ValueId> {
        if self.module.constants.contains_key(name) {
            return Err(FrontendError::Config(format!(
                "constant `{name}` is defined twice"
            )));
        }
        c.check(name)
            .map_err(|source| FrontendError::build(name, source))?;
        self.module.add_constant(name.to_string(), c);
        self.constant_node(name.to_string())
    }

    /// `x · w + b` as one `linear` op with given weight `w[in, out]` and optional bias, named
    /// `name` (in scope).
    pub fn linear_with(
        &mut self,
        name: &str,
        x: ValueId,
        w: ValueId,
        bias: Option<ValueId>,
    ) -> BuildResult<ValueId> {
        let mut operands = vec![x, w];
        operands.extend(bias);
        self.named(name, Op::Linear(ops::linear::Linear {}), &operands)
    }

    /// LayerNorm over the last dim as one op with given scale and optional bias.
    pub fn layer_norm_with(
        &mut self,
        name: &str,
        x: ValueId,
        scale: ValueId,
        bias: Option<ValueId>,
        eps: f64,
    ) -> BuildResult<ValueId> {
        let mut operands = vec![x, scale];
        operands.extend(bias);
        self.named(name, layer_norm_last(eps), &operands)
    }

    /// RMSNorm over the last dim as one op with a given scale.
    pub fn rms_norm_with(
        &mut self,
        name: &str,
        x: ValueId,
        scale: ValueId,
        eps: f64,
    ) -> BuildResult<ValueId> {
        self.named(name, rms_norm_last(eps), &[x, scale])
    }

    /// Add a prebuilt constant (e.g. imported dense weights) under a scoped, fresh name and
    /// return the value of its `constant` node.
    pub fn add_constant_scoped(&mut self, name: &str, c: Constant) -> BuildResult<ValueId> {
        let full = self.module.fresh_constant_name(&self.scoped(name));
        c.check(&full)
            .map_err(|source| FrontendError::build(full.clone(), source))?;
        self.module.add_constant(full.clone(), c);
        self.constant_node(full)
    }

    /// A scalar constant of a dtype.
    pub fn scalar(&mut self, name: &str, dtype: DType, v: f64) -> BuildResult<ValueId> {
        self.constant(name, &Tensor::scalar(dtype, v))
    }

    fn weight(&mut self, name: &str, dtype: DType, shape: &[usize]) -> BuildResult<ValueId> {
        let std = self.init_std;
        self.param(name, dtype, shape, Init::Normal { mean: 0.0, std })
    }

    fn float_dtype(&self, x: ValueId) -> BuildResult<DType> {
        let t = self.ty(x)?;
        if !t.dtype.is_float() {
            return Err(FrontendError::Config(format!(
                "expected a float value, found {t}"
            )));
        }
        Ok(t.dtype)
    }

    /// A binary op on `a` and `b`, e.g. `b.binary(Op::Pow(Pow {}), x, y)` (the element-wise
    /// ones have helpers: [`add`](Self::add), [`maximum`](Self::maximum), …). An op that does
    /// not take two operands is a build error from its type inference.
    pub fn binary(&mut self, op: Op, a: ValueId, b: ValueId) -> BuildResult<ValueId> {
        self.op(op, &[a, b])
    }

    /// `a + b`.
    pub fn add(&mut self, a: ValueId, b: ValueId) -> BuildResult<ValueId> {
        self.binary(Op::Add(ops::add::Add {}), a, b)
    }

    /// `a - b`.
    pub fn sub(&mut self, a: ValueId, b: ValueId) -> BuildResult<ValueId> {
        self.binary(Op::Sub(ops::sub::Sub {}), a, b)
    }

    /// `a * b`.
    pub fn mul(&mut self, a: ValueId, b: ValueId) -> BuildResult<ValueId> {
        self.binary(Op::Mul(ops::mul::Mul {}), a, b)
    }

    /// `a / b`.
    pub fn div(&mut self, a: ValueId, b: ValueId) -> BuildResult<ValueId> {
        self.binary(Op::Div(ops::div::Div {}), a, b)
    }

    /// Element-wise `max(a, b)` (NaN propagates).
    pub fn maximum(&mut self, a: ValueId, b: ValueId) -> BuildResult<ValueId> {
        self.binary(Op::Maximum(ops::maximum::Maximum {}), a, b)
    }

    /// `a · b` (batched).
    pub fn matmul(&mut self, a: ValueId, b: ValueId) -> BuildResult<ValueId> {
        self.op(Op::MatMul(ops::matmul::MatMul {}), &[a, b])
    }

    /// A unary op on `x`, e.g. `b.unary(Op::Exp(Exp {}), x)` (some have helpers:
    /// [`sqrt`](Self::sqrt), [`rsqrt`](Self::rsqrt), [`erf`](Self::erf), [`silu`](Self::silu),
    /// [`gelu`](Self::gelu), [`cast`](Self::cast)). An op that does not take one operand is a
    /// build error from its type inference.
    pub fn unary(&mut self, op: Op, x: ValueId) -> BuildResult<ValueId> {
        self.op(op, &[x])
    }

    /// `√x`.
    pub fn sqrt(&mut self, x: ValueId) -> BuildResult<ValueId> {
        self.unary(Op::Sqrt(ops::sqrt::Sqrt {}), x)
    }

    /// `1 / √x`.
    pub fn rsqrt(&mut self, x: ValueId) -> BuildResult<ValueId> {
        self.unary(Op::Rsqrt(ops::rsqrt::Rsqrt {}), x)
    }

    /// `erf x`.
    pub fn erf(&mut self, x: ValueId) -> BuildResult<ValueId> {
        self.unary(Op::Erf(ops::erf::Erf {}), x)
    }

    /// `x · sigmoid(x)`.
    pub fn silu(&mut self, x: ValueId) -> BuildResult<ValueId> {
        self.unary(Op::Silu(ops::silu::Silu {}), x)
    }

    /// `x` converted to `dtype`.
    pub fn cast(&mut self, x: ValueId, dtype: DType) -> BuildResult<ValueId> {
        self.unary(Op::Cast(ops::cast::Cast { dtype }), x)
    }

    /// GELU (erf form) as one op.
    pub fn gelu(&mut self, x: ValueId) -> BuildResult<ValueId> {
        self.gelu_with(x, GeluApproximate::None)
    }

    /// GELU as one op, with the given formula (erf or tanh).
    pub fn gelu_with(&mut self, x: ValueId, approximate: GeluApproximate) -> BuildResult<ValueId> {
        self.unary(Op::Gelu(Gelu { approximate }), x)
    }

    /// GELU written in primitives as framework exports do: `x · 0.5 · (1 + erf(x / √2))`.
    pub fn gelu_primitives(&mut self, x: ValueId) -> BuildResult<ValueId> {
        let d = self.float_dtype(x)?;
        let sqrt2 = self.scalar("sqrt2", d, std::f64::consts::SQRT_2)?;
        let one = self.scalar("one", d, 1.0)?;
        let half = self.scalar("half", d, 0.5)?;
        let t = self.div(x, sqrt2)?;
        let t = self.erf(t)?;
        let t = self.add(t, one)?;
        let t = self.mul(x, t)?;
        self.mul(t, half)
    }

    /// Mean over the last axis, keeping it.
    pub fn mean_last(&mut self, x: ValueId) -> BuildResult<ValueId> {
        self.reduce(x, ReduceKind::Mean, &[-1], true)
    }

    /// Reduce `x` over `axes` (negative ones count from the end), keeping them as size 1 when
    /// `keepdims`.
    pub fn reduce(
        &mut self,
        x: ValueId,
        kind: ReduceKind,
        axes: &[i64],
        keepdims: bool,
    ) -> BuildResult<ValueId> {
        let op = Reduce {
            kind,
            axes: axes.to_vec(),
            keepdims,
            sequential: false,
        };
        self.unary(Op::Reduce(op), x)
    }

    /// `x · w + b` with a seeded weight `[in, out]` (matmul layout) and optional bias, as one
    /// `linear` op.
    pub fn linear(
        &mut self,
        name: &str,
        x: ValueId,
        d_in: usize,
        d_out: usize,
        bias: bool,
    ) -> BuildResult<ValueId> {
        let (w, b) = self.affine_params(name, x, d_in, d_out, bias)?;
        self.linear_with(name, x, w, b)
    }

    /// Seeded `name.weight [in, out]` and optional `name.bias [out]` of an affine map on `x`.
    fn affine_params(
        &mut self,
        name: &str,
        x: ValueId,
        d_in: usize,
        d_out: usize,
        bias: bool,
    ) -> BuildResult<(ValueId, Option<ValueId>)> {
        let d = self.float_dtype(x)?;
        self.push_scope(name);
        let w = self.weight("weight", d, &[d_in, d_out]);
        let b = if bias {
            Some(self.param(
                "bias",
                d,
                &[d_out],
                Init::Normal {
                    mean: 0.0,
                    std: 0.02,
                },
            ))
        } else {
            None
        };
        self.pop_scope();
        Ok((w?, b.transpose()?))
    }

    /// The same affine map written as a framework export writes it: `matmul` then `add`.
    pub fn linear_primitives(
        &mut self,
        name: &str,
        x: ValueId,
        d_in: usize,
        d_out: usize,
        bias: bool,
    ) -> BuildResult<ValueId> {
        let (w, b) = self.affine_params(name, x, d_in, d_out, bias)?;
        let y = self.matmul(x, w)?;
        match b {
            Some(b) => self.add(y, b),
            None => Ok(y),
        }
    }

    /// Seeded scale of a normalization over `dim` (normal around 1), `weight` in the scope.
    fn norm_scale(&mut self, d: DType, dim: usize) -> BuildResult<ValueId> {
        self.param(
            "weight",
            d,
            &[dim],
            Init::Normal {
                mean: 1.0,
                std: 0.02,
            },
        )
    }

    /// Seeded bias of a normalization over `dim` (normal around 0), `bias` in the scope.
    fn norm_bias(&mut self, d: DType, dim: usize) -> BuildResult<ValueId> {
        self.param(
            "bias",
            d,
            &[dim],
            Init::Normal {
                mean: 0.0,
                std: 0.02,
            },
        )
    }

    /// LayerNorm over the last dim as one op, with seeded scale and bias (normal around 1 and 0).
    pub fn layer_norm(
        &mut self,
        name: &str,
        x: ValueId,
        dim: usize,
        eps: f64,
    ) -> BuildResult<ValueId> {
        let d = self.float_dtype(x)?;
        self.push_scope(name);
        let g = self.norm_scale(d, dim);
        let b = self.norm_bias(d, dim);
        self.pop_scope();
        let (g, b) = (g?, b?);
        self.named(name, layer_norm_last(eps), &[x, g, b])
    }

    /// LayerNorm written in primitives as exporters emit it:
    /// `d = x - mean(x); v = mean(d·d); y = d · rsqrt(v + eps) · g + b`.
    pub fn layer_norm_primitives(
        &mut self,
        name: &str,
        x: ValueId,
        dim: usize,
        eps: f64,
    ) -> BuildResult<ValueId> {
        let dt = self.float_dtype(x)?;
        self.push_scope(name);
        let g = self.norm_scale(dt, dim);
        let b = self.norm_bias(dt, dim);
        let e = self.scalar("eps", dt, eps);
        self.pop_scope();
        let (g, b, e) = (g?, b?, e?);
        let m = self.mean_last(x)?;
        let d = self.sub(x, m)?;
        let sq = self.mul(d, d)?;
        let v = self.mean_last(sq)?;
        let v = self.add(v, e)?;
        let r = self.rsqrt(v)?;
        let n = self.mul(d, r)?;
        let n = self.mul(n, g)?;
        self.add(n, b)
    }

    /// RMSNorm as one op with a seeded scale.
    pub fn rms_norm(
        &mut self,
        name: &str,
        x: ValueId,
        dim: usize,
        eps: f64,
    ) -> BuildResult<ValueId> {
        let d = self.float_dtype(x)?;
        self.push_scope(name);
        let g = self.norm_scale(d, dim);
        self.pop_scope();
        let g = g?;
        self.named(name, rms_norm_last(eps), &[x, g])
    }

    /// RMSNorm written in primitives: `x · rsqrt(mean(x·x) + eps) · g`.
    pub fn rms_norm_primitives(
        &mut self,
        name: &str,
        x: ValueId,
        dim: usize,
        eps: f64,
    ) -> BuildResult<ValueId> {
        let dt = self.float_dtype(x)?;
        self.push_scope(name);
        let g = self.norm_scale(dt, dim);
        let e = self.scalar("eps", dt, eps);
        self.pop_scope();
        let (g, e) = (g?, e?);
        self.rms_norm_core(x, g, e)
    }

    fn rms_norm_core(&mut self, x: ValueId, g: ValueId, e: ValueId) -> BuildResult<ValueId> {
        let sq = self.mul(x, x)?;
        let v = self.mean_last(sq)?;
        let v = self.add(v, e)?;
        let r = self.rsqrt(v)?;
        let n = self.mul(x, r)?;
        self.mul(n, g)
    }

    /// RMSNorm in primitives with a given scale value `g` (e.g. imported weights).
    pub fn rms_norm_primitives_with(
        &mut self,
        name: &str,
        x: ValueId,
        g: ValueId,
        eps: f64,
    ) -> BuildResult<ValueId> {
        let dt = self.float_dtype(x)?;
        self.push_scope(name);
        let e = self.scalar("eps", dt, eps);
        self.pop_scope();
        self.rms_norm_core(x, g, e?)
    }

    /// Reshape to dims (sizes, symbols or expressions; one `-1` is inferred).
    pub fn reshape(&mut self, x: ValueId, dims: &[Dim]) -> BuildResult<ValueId> {
        self.op(
            Op::Reshape(ops::reshape::Reshape {
                shape: dims.to_vec(),
            }),
            &[x],
        )
    }

    /// Permute dims.
    pub fn transpose(&mut self, x: ValueId, perm: &[usize]) -> BuildResult<ValueId> {
        let perm = perm.to_vec();
        self.unary(Op::Transpose(ops::transpose::Transpose { perm }), x)
    }

    /// `x[start:end]` along `axis` (python semantics, step 1; negative axes count from the end).
    pub fn slice(&mut self, x: ValueId, axis: i64, start: i64, end: i64) -> BuildResult<ValueId> {
        let op = ops::slice::Slice::new(axis, start, end, 1);
        self.unary(Op::Slice(op), x)
    }

    /// Rows of `data` along `axis` picked by the integer `indices`.
    pub fn gather(&mut self, data: ValueId, indices: ValueId, axis: i64) -> BuildResult<ValueId> {
        self.op(Op::Gather(ops::gather::Gather { axis }), &[data, indices])
    }

    /// A `dtype[shape]` tensor whose value is the index along `axis`, e.g. the positions
    /// `0..S` as `iota(&["S".into()], 0, DType::I64)`.
    pub fn iota(&mut self, shape: &[Dim], axis: i64, dtype: DType) -> BuildResult<ValueId> {
        let op = ops::iota::Iota {
            shape: shape.to_vec(),
            axis,
            dtype,
        };
        self.op(Op::Iota(op), &[])
    }

    /// Rotary embedding of `x[..., S, D]` at integer `positions` (all of D rotates).
    pub fn rope(
        &mut self,
        x: ValueId,
        positions: ValueId,
        style: RopeStyle,
        theta: f64,
    ) -> BuildResult<ValueId> {
        let op = Rope {
            style,
            theta,
            rotary_dim: None,
        };
        self.op(Op::Rope(op), &[x, positions])
    }

    /// Scaled-dot-product attention as one op on heads `q[B,H,Sq,D]`, `k[B,Hk,Sk,D]`,
    /// `v[B,Hk,Sk,Dv]` plus additive `biases` (each broadcasting to `[B,H,Sq,Sk]`), scale
    /// `1/√D`; result `[B,H,Sq,Dv]`.
    pub fn attention_op(
        &mut self,
        [q, k, v]: [ValueId; 3],
        mask: Mask,
        biases: &[ValueId],
    ) -> BuildResult<ValueId> {
        let mut operands = vec![q, k, v];
        operands.extend_from_slice(biases);
        let op = Attention {
            mask: mask.into(),
            scale: None,
        };
        self.op(Op::Attention(op), &operands)
    }

    /// Multi-head attention block on `x[B,S,hidden]`: q/k/v projections, optional rope on q and
    /// k, scaled-dot-product attention with GQA (`kv_heads` dividing `heads`), output projection.
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        &mut self,
        name: &str,
        x: ValueId,
        hidden: usize,
        heads: usize,
        kv_heads: usize,
        mask: Mask,
        bias: Option<ValueId>,
        rope: Option<(ValueId, f64)>,
        primitives: bool,
        qkv_bias: bool,
    ) -> BuildResult<ValueId> {
        if heads == 0
            || kv_heads == 0
            || !hidden.is_multiple_of(heads)
            || !heads.is_multiple_of(kv_heads)
        {
            return Err(FrontendError::Config(format!(
                "{name}: hidden {hidden}, heads {heads}, kv_heads {kv_heads} do not divide"
            )));
        }
        let dh = hidden / heads;
        let sh = self.ty(x)?.shape;
        if sh.len() != 3 {
            return Err(FrontendError::Config(format!(
                "{name}: attention input must be [B,S,hidden], found rank {}",
                sh.len()
            )));
        }
        let (bd, sd) = (sh[0].clone(), sh[1].clone());
        self.push_scope(name);
        let proj = |b: &mut Self, n: &str, x: ValueId, o: usize, bias: bool| {
            if primitives {
                b.linear_primitives(n, x, hidden, o, bias)
            } else {
                b.linear(n, x, hidden, o, bias)
            }
        };
        let res = (|| {
            let q = proj(self, "q", x, heads * dh, qkv_bias)?;
            let k = proj(self, "k", x, kv_heads * dh, qkv_bias)?;
            let v = proj(self, "v", x, kv_heads * dh, qkv_bias)?;
            let rope = rope.map(|(pos, theta)| (pos, theta, RopeStyle::Half));
            let a = self.attention_core(
                [q, k, v],
                [&bd, &sd],
                [hidden, heads, kv_heads],
                mask,
                bias,
                rope,
            )?;
            proj(self, "o", a, hidden, qkv_bias)
        })();
        self.pop_scope();
        res
    }

    /// Split projected `q, k, v` (`[B,S,heads·dh]`) into heads, apply rope `(positions, theta,
    /// style)`, attend, and merge the heads back to `[B,S,hidden]`.
    fn attention_core(
        &mut self,
        [q, k, v]: [ValueId; 3],
        [bd, sd]: [&Dim; 2],
        [hidden, heads, kv_heads]: [usize; 3],
        mask: Mask,
        bias: Option<ValueId>,
        rope: Option<(ValueId, f64, RopeStyle)>,
    ) -> BuildResult<ValueId> {
        let dh = hidden / heads;
        let split = |b: &mut Self, t: ValueId, h: usize| -> BuildResult<ValueId> {
            let t = b.reshape(t, &[bd.clone(), sd.clone(), Dim::from(h), Dim::from(dh)])?;
            b.transpose(t, &[0, 2, 1, 3])
        };
        let mut q = split(self, q, heads)?;
        let mut k = split(self, k, kv_heads)?;
        let v = split(self, v, kv_heads)?;
        if let Some((pos, theta, style)) = rope {
            q = self.rope(q, pos, style, theta)?;
            k = self.rope(k, pos, style, theta)?;
        }
        let biases: Vec<ValueId> = bias.into_iter().collect();
        let a = self.attention_op([q, k, v], mask, &biases)?;
        let a = self.transpose(a, &[0, 2, 1, 3])?;
        self.reshape(a, &[bd.clone(), sd.clone(), Dim::from(hidden)])
    }

    /// Two-layer MLP `fc2(act(fc1(x)))` with GELU.
    pub fn mlp(
        &mut self,
        name: &str,
        x: ValueId,
        hidden: usize,
        ffn: usize,
        primitives: bool,
    ) -> BuildResult<ValueId> {
        self.push_scope(name);
        let res = (|| {
            if primitives {
                let h = self.linear_primitives("fc1", x, hidden, ffn, true)?;
                let h = self.gelu_primitives(h)?;
                self.linear_primitives("fc2", h, ffn, hidden, true)
            } else {
                let h = self.linear("fc1", x, hidden, ffn, true)?;
                let h = self.gelu(h)?;
                self.linear("fc2", h, ffn, hidden, true)
            }
        })();
        self.pop_scope();
        res
    }

    /// SwiGLU MLP (Llama): `down(silu(gate(x)) · up(x))`, no biases.
    pub fn swiglu(
        &mut self,
        name: &str,
        x: ValueId,
        hidden: usize,
        ffn: usize,
    ) -> BuildResult<ValueId> {
        self.push_scope(name);
        let res = (|| {
            let g = self.linear_primitives("gate", x, hidden, ffn, false)?;
            let u = self.linear_primitives("up", x, hidden, ffn, false)?;
            let g = self.silu(g)?;
            let h = self.mul(g, u)?;
            self.linear_primitives("down", h, ffn, hidden, false)
        })();
        self.pop_scope();
        res
    }

    /// A post-LN BERT encoder layer (attention, add & norm, MLP, add & norm).
    pub fn bert_layer(
        &mut self,
        name: &str,
        x: ValueId,
        cfg: &crate::builtin::BertConfig,
        mask_bias: Option<ValueId>,
        primitives: bool,
    ) -> BuildResult<ValueId> {
        self.push_scope(name);
        let res = (|| {
            let h = cfg.hidden;
            let a = self.attention(
                "attention",
                x,
                h,
                cfg.heads,
                cfg.heads,
                Mask::None,
                mask_bias,
                None,
                primitives,
                true,
            )?;
            let x1 = self.add(x, a)?;
            let x1 = if primitives {
                self.layer_norm_primitives("attention_norm", x1, h, cfg.eps)?
            } else {
                self.layer_norm("attention_norm", x1, h, cfg.eps)?
            };
            let m = self.mlp("mlp", x1, h, cfg.ffn, primitives)?;
            let x2 = self.add(x1, m)?;
            if primitives {
                self.layer_norm_primitives("output_norm", x2, h, cfg.eps)
            } else {
                self.layer_norm("output_norm", x2, h, cfg.eps)
            }
        })();
        self.pop_scope();
        res
    }

    /// A pre-norm Llama decoder block (RMSNorm, causal GQA attention with rope, RMSNorm, SwiGLU).
    pub fn llama_block(
        &mut self,
        name: &str,
        x: ValueId,
        cfg: &crate::builtin::LlamaConfig,
        positions: ValueId,
    ) -> BuildResult<ValueId> {
        self.push_scope(name);
        let res = (|| {
            let h = cfg.hidden;
            let n = self.rms_norm_primitives("input_norm", x, h, cfg.eps)?;
            let a = self.attention(
                "attention",
                n,
                h,
                cfg.heads,
                cfg.kv_heads,
                Mask::Causal,
                None,
                Some((positions, cfg.rope_theta)),
                true,
                false,
            )?;
            let x1 = self.add(x, a)?;
            let n = self.rms_norm_primitives("post_attention_norm", x1, h, cfg.eps)?;
            let m = self.swiglu("mlp", n, h, cfg.ffn)?;
            self.add(x1, m)
        })();
        self.pop_scope();
        res
    }

    /// A pre-norm Llama decoder block like [`llama_block`](Self::llama_block), with given weights
    /// (projections in matmul layout `[in, out]`) instead of seeded parameters.
    pub fn llama_block_with(
        &mut self,
        name: &str,
        x: ValueId,
        cfg: &crate::builtin::LlamaConfig,
        positions: ValueId,
        w: &LlamaLayerWeights,
    ) -> BuildResult<ValueId> {
        let h = cfg.hidden;
        if cfg.heads == 0
            || cfg.kv_heads == 0
            || !h.is_multiple_of(cfg.heads)
            || !cfg.heads.is_multiple_of(cfg.kv_heads)
        {
            return Err(FrontendError::Config(format!(
                "{name}: hidden {h}, heads {}, kv_heads {} do not divide",
                cfg.heads, cfg.kv_heads
            )));
        }
        let sh = self.ty(x)?.shape;
        if sh.len() != 3 {
            return Err(FrontendError::Config(format!(
                "{name}: block input must be [B,S,hidden], found rank {}",
                sh.len()
            )));
        }
        let (bd, sd) = (sh[0].clone(), sh[1].clone());
        self.push_scope(name);
        let res = (|| {
            let n = self.rms_norm_with("input_norm", x, w.attn_norm, cfg.eps)?;
            self.push_scope("attention");
            let a = (|| {
                let q = self.matmul(n, w.q)?;
                let k = self.matmul(n, w.k)?;
                let v = self.matmul(n, w.v)?;
                let a = self.attention_core(
                    [q, k, v],
                    [&bd, &sd],
                    [h, cfg.heads, cfg.kv_heads],
                    Mask::Causal,
                    None,
                    Some((positions, cfg.rope_theta, w.rope_style)),
                )?;
                self.matmul(a, w.o)
            })();
            self.pop_scope();
            let x1 = self.add(x, a?)?;
            let n = self.rms_norm_with("post_attention_norm", x1, w.ffn_norm, cfg.eps)?;
            self.push_scope("mlp");
            let m = (|| {
                let g = self.matmul(n, w.gate)?;
                let u = self.matmul(n, w.up)?;
                let g = self.silu(g)?;
                let hm = self.mul(g, u)?;
                self.matmul(hm, w.down)
            })();
            self.pop_scope();
            self.add(x1, m?)
        })();
        self.pop_scope();
        res
    }

    /// Finish: put the graph in `main`, verify and return the module.
    pub fn finish(self) -> BuildResult<Module> {
        self.finish_named("main")
    }

    /// Finish into a function of the given name.
    pub fn finish_named(mut self, name: &str) -> BuildResult<Module> {
        self.module.functions.insert(name.to_string(), self.graph);
        fuselage_ir::verify::verify(&self.module)
            .map_err(|source: IrError| FrontendError::build(format!("module (@{name})"), source))?;
        Ok(self.module)
    }

    /// The id of the node defining a value (for tests and advanced surgery).
    pub fn node_of(v: ValueId) -> NodeId {
        v.node
    }
}

/// The one result of an op appended as a single-result op.
fn single(op: &str, results: Vec<ValueId>) -> BuildResult<ValueId> {
    results.first().copied().ok_or_else(|| {
        FrontendError::Config(format!("{op} has no results; append it with op_multi"))
    })
}
