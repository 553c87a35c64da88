//! Ops: one file per op, one line per op in the `ops!` list below.
//!
//! Each op is a struct (its attributes, serde-serializable with unknown fields rejected) that
//! implements [`OpSpec`]: a name, type inference with clear errors, and reference semantics in
//! `f64` that round exactly to the result dtype. The `ops!` list generates the [`Op`] enum and
//! its dispatch, so adding an op is one file plus two lines (its `mod` and its `ops!` entry), and matches over `Op` stay exhaustive.

use crate::error::{IrError, OpError};
use crate::module::Module;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt::Debug;

pub mod testing;
pub mod util;
pub mod window;

// One module per op (declared here, outside the `ops!` macro, so that rustfmt sees them).
pub mod abs;
pub mod add;
pub mod all_gather;
pub mod all_reduce;
pub mod all_to_all;
pub mod argmax;
pub mod argmin;
pub mod attention;
pub mod avg_pool2d;
pub mod bitwise;
pub mod broadcast_to;
pub mod call;
pub mod cast;
pub mod clamp;
pub mod compare;
pub mod concat;
pub mod constant;
pub mod conv;
pub mod conv2d;
pub mod conv_transpose;
pub mod cos;
pub mod cumulative;
pub mod dequantize;
pub mod dims;
pub mod div;
pub mod erf;
pub mod exp;
pub mod for_loop;
pub mod gather;
pub mod gather_elements;
pub mod gather_nd;
pub mod gelu;
pub mod grid_sample;
pub mod group_norm;
pub mod input;
pub mod iota;
pub mod layer_norm;
pub mod linear;
pub mod log;
pub mod logical;
pub mod math;
pub mod matmul;
pub mod maximum;
pub mod minimum;
pub mod mmca_attention;
pub mod mod_;
pub mod mul;
pub mod neg;
pub mod not;
pub mod pad;
pub mod pool;
pub mod pow;
pub mod qlinear;
pub mod quantize;
pub mod reduce;
pub mod reduce_scatter;
pub mod relu;
pub mod reshape;
pub mod resize;
pub mod rms_norm;
pub mod rope;
pub mod rsqrt;
pub mod scatter_elements;
pub mod scatter_nd;
pub mod sigmoid;
pub mod silu;
pub mod sin;
pub mod slice;
pub mod softmax;
pub mod split;
pub mod sqrt;
pub mod sub;
pub mod tanh;
pub mod top_k;
pub mod transpose;
pub mod trilu;
pub mod upsample_nearest2d;
pub mod where_;

/// What type inference may look at besides operand types: the module (constants, functions).
pub struct InferCx<'a> {
    /// The module the node belongs to.
    pub module: &'a Module,
}

/// What reference evaluation may look at besides operand values.
pub struct EvalCx<'a> {
    /// The module the node belongs to.
    pub module: &'a Module,
    /// Symbol bindings of the running function (`B` → 2, …).
    pub bindings: &'a HashMap<String, u64>,
    /// The node's declared result types.
    pub result_types: &'a [TensorType],
}

impl EvalCx<'_> {
    /// Concrete shape of result `i` under the current bindings.
    pub fn result_shape(&self, i: usize) -> Result<Vec<usize>, OpError> {
        let ty = self
            .result_types
            .get(i)
            .ok_or_else(|| OpError::new(format!("node has no result {i}")))?;
        ty.resolve(self.bindings)
            .map_err(|e| OpError::new(format!("result type {ty}: {e}")))
    }
}

/// The contract every op implements.
pub trait OpSpec: Clone + Debug + PartialEq + Serialize + DeserializeOwned {
    /// The op's name in text form, JSON and the registry.
    const NAME: &'static str;

    /// Result types from operand types, or an error saying what was expected and found.
    fn infer(&self, cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError>;

    /// Reference semantics: computed in `f64`, rounded exactly to each result's dtype.
    fn eval(&self, cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError>;
}

macro_rules! ops {
    ($($variant:ident => $module:ident :: $ty:ident),* $(,)?) => {
        /// Every op, with its attributes.
        #[derive(Clone, Debug, PartialEq)]
        pub enum Op {
            $(
                #[doc = concat!("See [`", stringify!($module), "::", stringify!($ty), "`].")]
                $variant($module::$ty),
            )*
        }

        /// Names of all ops, in list order.
        pub const OP_NAMES: &[&str] = &[$(<$module::$ty as OpSpec>::NAME),*];

        impl Op {
            /// The op's name.
            pub fn name(&self) -> &'static str {
                match self { $(Op::$variant(_) => <$module::$ty as OpSpec>::NAME),* }
            }

            /// Type inference; result dims are simplified with the module's facts about
            /// symbols (so `max(S-1,0)` is `S-1` where `S >= 1`).
            pub fn infer(&self, cx: &InferCx, inputs: &[TensorType])
                -> Result<Vec<TensorType>, OpError> {
                let mut out = match self { $(Op::$variant(o) => o.infer(cx, inputs)),* }?;
                for t in &mut out {
                    for d in &mut t.shape {
                        if !d.is_const() {
                            *d = d.simplify(&cx.module.facts)?;
                        }
                    }
                }
                Ok(out)
            }

            /// Reference evaluation.
            pub fn eval(&self, cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
                match self { $(Op::$variant(o) => o.eval(cx, inputs)),* }
            }

            /// Attributes as a JSON object (`{}` when the op has none).
            pub fn attrs(&self) -> serde_json::Value {
                let v = match self { $(Op::$variant(o) => serde_json::to_value(o)),* };
                match v {
                    Ok(serde_json::Value::Null) | Err(_) => serde_json::json!({}),
                    Ok(v) => v,
                }
            }

            /// Build an op from its name and attributes, rejecting unknown names and fields.
            pub fn from_attrs(name: &str, attrs: serde_json::Value) -> Result<Op, IrError> {
                match name {
                    $(<$module::$ty as OpSpec>::NAME => serde_json::from_value(attrs)
                        .map(Op::$variant)
                        .map_err(|e| IrError::Attributes { op: name.to_string(), message: e.to_string() }),)*
                    _ => Err(IrError::UnknownOp {
                        name: name.to_string(),
                        allowed: OP_NAMES.join(", "),
                    }),
                }
            }
        }
    };
}

ops! {
    Input => input::Input,
    Constant => constant::Constant,
    Add => add::Add,
    MatMul => matmul::MatMul,
    Sub => sub::Sub,
    Mul => mul::Mul,
    Div => div::Div,
    Maximum => maximum::Maximum,
    Minimum => minimum::Minimum,
    Pow => pow::Pow,
    Neg => neg::Neg,
    Abs => abs::Abs,
    Exp => exp::Exp,
    Log => log::Log,
    Sqrt => sqrt::Sqrt,
    Rsqrt => rsqrt::Rsqrt,
    Tanh => tanh::Tanh,
    Erf => erf::Erf,
    Sin => sin::Sin,
    Cos => cos::Cos,
    Math => math::Math,
    Mod => mod_::Mod,
    Bitwise => bitwise::Bitwise,
    Relu => relu::Relu,
    Sigmoid => sigmoid::Sigmoid,
    Silu => silu::Silu,
    Gelu => gelu::Gelu,
    Clamp => clamp::Clamp,
    Compare => compare::Compare,
    Logical => logical::Logical,
    Not => not::Not,
    Where => where_::Where,
    Cast => cast::Cast,
    Iota => iota::Iota,
    Dims => dims::Dims,
    Softmax => softmax::Softmax,
    Reduce => reduce::Reduce,
    ArgMax => argmax::ArgMax,
    ArgMin => argmin::ArgMin,
    Cumulative => cumulative::Cumulative,
    TopK => top_k::TopK,
    Transpose => transpose::Transpose,
    Reshape => reshape::Reshape,
    BroadcastTo => broadcast_to::BroadcastTo,
    Concat => concat::Concat,
    Slice => slice::Slice,
    Split => split::Split,
    Gather => gather::Gather,
    GatherElements => gather_elements::GatherElements,
    ScatterElements => scatter_elements::ScatterElements,
    GatherNd => gather_nd::GatherNd,
    ScatterNd => scatter_nd::ScatterNd,
    Pad => pad::Pad,
    Trilu => trilu::Trilu,
    Call => call::Call,
    For => for_loop::For,
    Rope => rope::Rope,
    Attention => attention::Attention,
    MmcaAttention => mmca_attention::MmcaAttention,
    Conv2d => conv2d::Conv2d,
    GroupNorm => group_norm::GroupNorm,
    UpsampleNearest2d => upsample_nearest2d::UpsampleNearest2d,
    AvgPool2d => avg_pool2d::AvgPool2d,
    Conv => conv::Conv,
    ConvTranspose => conv_transpose::ConvTranspose,
    Pool => pool::Pool,
    Resize => resize::Resize,
    GridSample => grid_sample::GridSample,
    Quantize => quantize::Quantize,
    Dequantize => dequantize::Dequantize,
    LayerNorm => layer_norm::LayerNorm,
    RmsNorm => rms_norm::RmsNorm,
    Linear => linear::Linear,
    QLinear => qlinear::QLinear,
    AllGather => all_gather::AllGather,
    ReduceScatter => reduce_scatter::ReduceScatter,
    AllReduce => all_reduce::AllReduce,
    AllToAll => all_to_all::AllToAll,
}

impl Op {
    /// A key that is equal for ops with equal name and attributes (for CSE and hashing).
    pub fn key(&self) -> String {
        format!("{}{}", self.name(), self.attrs())
    }
}

#[derive(Serialize, Deserialize)]
struct OpRepr {
    op: String,
    #[serde(default)]
    attrs: serde_json::Value,
}

impl Serialize for Op {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        OpRepr {
            op: self.name().to_string(),
            attrs: self.attrs(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Op {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = OpRepr::deserialize(d)?;
        let attrs = if r.attrs.is_null() {
            serde_json::json!({})
        } else {
            r.attrs
        };
        Op::from_attrs(&r.op, attrs).map_err(serde::de::Error::custom)
    }
}
