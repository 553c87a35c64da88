//! `quantize` into packed codes: absmax per scale group, the scale and each quotient computed
//! with the IR's [`QuantRule`] (in f64, as the reference does), so that codes and scales are
//! bit-exact to the reference semantics; the codes are stored packed ([`PackedTensor`]).

use super::packed::{code_of, is_packed, PackedTensor};
use super::registry::{
    any_cpu, wrong_op, KernelEntry, KernelOut, KernelRun, TypedCx, TypedIn, TypedOut,
};
use super::R;
use fuselage_ir::ops::quantize::{scale_index_map, QuantRule};
use fuselage_ir::{DType, Op, TensorType};

/// Float dtypes an f32 buffer holds exactly (the operand and the scale).
pub(crate) fn held_in_f32(d: DType) -> bool {
    matches!(d, DType::F32 | DType::F16 | DType::BF16)
}

fn applies(op: &Op, operands: &[TensorType], results: &[TensorType]) -> Result<(), String> {
    let Op::Quantize(q) = op else {
        return Err(wrong_op(ENTRY.name, op));
    };
    match operands.first() {
        Some(x) if held_in_f32(x.dtype) => {}
        Some(x) => return Err(format!("operand 0 is {}", x.dtype)),
        None => return Err("no operand".into()),
    }
    if !is_packed(q.dtype) {
        return Err(format!("the target {} is not a packed dtype", q.dtype));
    }
    if !held_in_f32(q.scale_dtype) {
        return Err(format!(
            "the scale dtype {} is wider than f32",
            q.scale_dtype
        ));
    }
    if results.len() != 2 {
        return Err(format!("{} results, expected 2", results.len()));
    }
    Ok(())
}

/// Codes and scales of `x` (row-major, `shape`) for the rule, with scales of `scale_shape`.
pub fn quantize_packed(
    rule: &QuantRule,
    target: DType,
    x: &[f32],
    shape: &[usize],
    scale_shape: &[usize],
) -> R<(PackedTensor, Vec<f32>)> {
    let map = scale_index_map(shape, scale_shape);
    let mut absmax = vec![0f32; scale_shape.iter().product()];
    for (&v, &s) in x.iter().zip(&map) {
        // f32 `max` ignores NaN, the reference's f64 `max` too.
        absmax[s] = absmax[s].max(v.abs());
    }
    let scales = absmax
        .iter()
        .map(|&a| rule.scale(f64::from(a)).map_err(|e| e.0))
        .collect::<R<Vec<f64>>>()?;
    let codes: Vec<u8> = x
        .iter()
        .zip(&map)
        .map(|(&v, &si)| code_of(target, rule.quantize(f64::from(v), scales[si])))
        .collect();
    let q = PackedTensor::from_codes(target, shape, &codes)?;
    Ok((q, scales.into_iter().map(|s| s as f32).collect()))
}

fn run(op: &Op, _cx: &TypedCx<'_>, v: &[TypedIn<'_>]) -> R<Vec<TypedOut>> {
    let Op::Quantize(q) = op else {
        return Err(wrong_op(ENTRY.name, op));
    };
    let Some(TypedIn::F32(x)) = v.first() else {
        return Err(format!("{}: operand 0 must be an f32 tensor", ENTRY.name));
    };
    let rule = q.rule().map_err(|e| e.0)?;
    let sshape = q
        .granularity
        .scale_shape("quantize", &x.shape)
        .map_err(|e| e.0)?;
    let (codes, scales) = quantize_packed(&rule, q.dtype, &x.to_contiguous(), &x.shape, &sshape)?;
    Ok(vec![
        TypedOut::Packed(codes),
        TypedOut::F32(KernelOut::row_major((scales, sshape))),
    ])
}

/// Quantize into packed codes.
pub static ENTRY: KernelEntry = KernelEntry {
    name: "quantize-packed",
    op: "quantize",
    signature: "f32/bf16/f16 -> i8/i4/f8e4m3fn/f8e5m2/f4e2m1 (packed), f32/bf16/f16",
    doc: "Symmetric quantization per tensor, token, channel or group into packed codes (two \
          per byte for i4/f4e2m1), bit-exact to the reference codecs.",
    applies,
    cost: 1,
    requires: "any",
    guard: any_cpu,
    prepare: None,
    run: KernelRun::Typed(run),
};
