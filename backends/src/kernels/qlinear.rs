//! `qlinear` on the INT8 GEMM ([`gemm_i8`]): packed i8 activations and weights, the integer
//! product exact in i32, the dequantizing epilogue (row scale, column scale, bias) in f32 inside
//! the GEMM's tiles, then the activation. A constant weight is packed once at lowering.

use super::packed::PackedTensor;
use super::qgemm::{gemm_i8, Epilogue, PackedI8Matrix, QIsa};
use super::registry::{
    any_cpu, f32_kernel_dtype, wrong_op, KernelEntry, KernelOut, KernelRun, Preparation, Prepared,
    PreparedRun, TypedCx, TypedIn, TypedOut,
};
use super::{View, R};
use fuselage_ir::ops::qlinear::Activation;
use fuselage_ir::{DType, Op, TensorType};

const NAME: &str = "qlinear-i8-gemm";

fn applies(op: &Op, operands: &[TensorType], results: &[TensorType]) -> Result<(), String> {
    let Op::QLinear(_) = op else {
        return Err(wrong_op(NAME, op));
    };
    if !(4..=5).contains(&operands.len()) {
        return Err(format!("{} operands, expected 4 or 5", operands.len()));
    }
    for i in [0, 2] {
        if operands[i].dtype != DType::I8 {
            return Err(format!("operand {i} is {}", operands[i].dtype));
        }
    }
    for (i, t) in operands.iter().enumerate().skip(1).filter(|(i, _)| *i != 2) {
        if !f32_kernel_dtype(t.dtype) {
            return Err(format!("operand {i} is {}", t.dtype));
        }
    }
    match results.first() {
        Some(r) if f32_kernel_dtype(r.dtype) => Ok(()),
        Some(r) => Err(format!("the result is {}", r.dtype)),
        None => Err("no result".into()),
    }
}

/// The codes of a packed i8 tensor as i8 values (no copy).
fn as_i8(p: &PackedTensor) -> R<&[i8]> {
    if p.dtype() != DType::I8 {
        return Err(format!(
            "{NAME}: a {} operand where i8 was expected",
            p.dtype()
        ));
    }
    let bytes = p.bytes();
    // SAFETY: u8 and i8 have the same size and alignment; every bit pattern is an i8.
    Ok(unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<i8>(), bytes.len()) })
}

/// Packs a constant i8 weight `[K, N]`.
fn pack_weight(w: &PackedTensor) -> R<PackedI8Matrix> {
    let [k, n] = w.shape() else {
        return Err(format!("{NAME}: the weight is {:?}, not [K, N]", w.shape()));
    };
    PackedI8Matrix::pack(as_i8(w)?, *k, *n)
}

/// One scale per row of `xq` (`[..., K]`) from `xs` (its rank, last dim 1, other dims 1 or
/// `xq`'s).
fn row_scales(xq_shape: &[usize], xs: &View<'_>) -> R<Vec<f32>> {
    let r = xq_shape.len();
    let lead = &xq_shape[..r.saturating_sub(1)];
    if xs.shape.len() != r
        || xs.shape.last() != Some(&1)
        || xs.shape[..r - 1]
            .iter()
            .zip(lead)
            .any(|(&s, &l)| s != 1 && s != l)
    {
        return Err(format!(
            "{NAME}: x_scale {:?} is not per tensor or per token of xq {xq_shape:?}",
            xs.shape
        ));
    }
    let rows: usize = lead.iter().product();
    Ok((0..rows)
        .map(|i| {
            let (mut rem, mut off) = (i, 0);
            for d in (0..lead.len()).rev() {
                let idx = rem % lead[d];
                rem /= lead[d];
                if xs.shape[d] != 1 {
                    off += idx * xs.strides[d];
                }
            }
            xs.data[off]
        })
        .collect())
}

/// `act(xq·w · xs ⊗ ws + bias)` onto the result dtype.
fn qlinear(
    op: &Op,
    cx: &TypedCx<'_>,
    xq: &PackedTensor,
    xs: &View<'_>,
    w: &PackedI8Matrix,
    ws: &View<'_>,
    bias: Option<&View<'_>>,
) -> R<Vec<TypedOut>> {
    let Op::QLinear(q) = op else {
        return Err(wrong_op(NAME, op));
    };
    let (k, n) = (w.rows(), w.cols());
    let shape = xq.shape();
    if shape.last() != Some(&k) {
        return Err(format!(
            "{NAME}: xq {shape:?} · w [{k}, {n}] do not contract"
        ));
    }
    let rows: usize = shape[..shape.len() - 1].iter().product();
    let row_scale = row_scales(shape, xs)?;
    let col_scale: Vec<f32> = match ws.numel() {
        1 => vec![ws.to_contiguous()[0]; n],
        len if len == n => ws.to_contiguous().into_owned(),
        _ => return Err(format!("{NAME}: w_scale {:?} for {n} columns", ws.shape)),
    };
    let bias = bias.map(|b| b.to_contiguous());
    if bias.as_ref().is_some_and(|b| b.len() != n) {
        return Err(format!("{NAME}: the bias does not have {n} elements"));
    }
    let mut out = super::buffer::for_overwrite(rows * n);
    let epilogue = Epilogue {
        row_scale: &row_scale,
        col_scale: &col_scale,
        bias: bias.as_deref(),
    };
    gemm_i8(rows, as_i8(xq)?, w, epilogue, &mut out, n, true)?;
    let mut out = match q.activation {
        Activation::None => out,
        Activation::Relu => {
            out.iter_mut().for_each(|x| *x = x.max(0.0));
            out
        }
        Activation::Gelu => super::gelu_erf(&out),
        Activation::GeluTanh => super::gelu_tanh(&out),
        Activation::Silu => super::silu(&out),
    };
    let dtype = cx.result_types.first().map_or(DType::F32, |t| t.dtype);
    super::round::round_in_place(dtype, &mut out);
    let mut out_shape = shape[..shape.len() - 1].to_vec();
    out_shape.push(n);
    Ok(vec![TypedOut::F32(KernelOut::row_major((out, out_shape)))])
}

/// A run's operands: `xq`, `x_scale`, the weight (when not prepared), `w_scale`, the bias.
type QOperands<'v, 'a> = (
    &'v PackedTensor,
    &'v View<'a>,
    Option<&'v PackedTensor>,
    &'v View<'a>,
    Option<&'v View<'a>>,
);

/// The operands `(xq, xs[, w], ws[, bias])` a run receives.
fn operands<'v, 'a>(v: &'v [TypedIn<'a>], with_weight: bool) -> R<QOperands<'v, 'a>> {
    let bad = || format!("{NAME}: operands must be (i8 xq, x_scale, i8 wq, w_scale[, bias])");
    let mut it = v.iter();
    let Some(TypedIn::Packed(xq)) = it.next() else {
        return Err(bad());
    };
    let Some(TypedIn::F32(xs)) = it.next() else {
        return Err(bad());
    };
    let w = if with_weight {
        let Some(TypedIn::Packed(w)) = it.next() else {
            return Err(bad());
        };
        Some(*w)
    } else {
        None
    };
    let Some(TypedIn::F32(ws)) = it.next() else {
        return Err(bad());
    };
    let bias = match it.next() {
        Some(TypedIn::F32(b)) => Some(b),
        Some(TypedIn::Packed(_)) => return Err(bad()),
        None => None,
    };
    Ok((xq, xs, w, ws, bias))
}

fn run(op: &Op, cx: &TypedCx<'_>, v: &[TypedIn<'_>]) -> R<Vec<TypedOut>> {
    let (xq, xs, w, ws, bias) = operands(v, true)?;
    let w = pack_weight(w.ok_or_else(|| format!("{NAME}: no weight"))?)?;
    qlinear(op, cx, xq, xs, &w, ws, bias)
}

fn prepare(_: &Op, operands: &[Option<TypedIn<'_>>]) -> R<Option<Prepared>> {
    let Some(Some(TypedIn::Packed(w))) = operands.get(2) else {
        return Ok(None);
    };
    let packed = pack_weight(w)?;
    let bytes = packed.bytes();
    Ok(Some(Prepared {
        replaces: vec![2],
        what: format!(
            "i8 weight {:?} packed for the {} INT8 micro-kernel ({:.1} MiB)",
            w.shape(),
            QIsa::detect().describe(),
            bytes as f64 / (1 << 20) as f64
        ),
        bytes,
        data: Box::new(packed),
    }))
}

fn run_prepared(
    op: &Op,
    cx: &TypedCx<'_>,
    v: &[TypedIn<'_>],
    prepared: &Prepared,
) -> R<Vec<TypedOut>> {
    let (xq, xs, _, ws, bias) = operands(v, false)?;
    qlinear(
        op,
        cx,
        xq,
        xs,
        prepared.get::<PackedI8Matrix>(NAME)?,
        ws,
        bias,
    )
}

/// The registry entry of `qlinear`.
pub static ENTRY: KernelEntry = KernelEntry {
    name: NAME,
    op: "qlinear",
    signature: "i8 (packed), float, i8 (packed), float[, float] -> float",
    doc: "INT8 GEMM: the i8 product exact in i32 (i16-pair multiply-adds, no i16 saturation), the dequantizing epilogue (row scale × column scale + bias) in f32 in the GEMM's tiles, then the activation; columns over threads.",
    applies,
    cost: 10,
    requires: "any (AVX2 micro-kernel where present)",
    guard: any_cpu,
    prepare: Some(Preparation {
        doc: "a constant i8 weight, packed into the INT8 micro-kernel's panels (i16 pairs; the program keeps only that form)",
        prepare,
        run: PreparedRun::Typed(run_prepared),
    }),
    run: KernelRun::Typed(run),
};
