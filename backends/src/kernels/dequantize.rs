//! `dequantize` of packed codes: `q · scale` per scale group, computed in f64 and rounded once
//! onto the result dtype, as the reference does; the codes are decoded through a 256-entry table.

use super::packed::{decode_table, PackedTensor};
use super::quantize::held_in_f32;
use super::registry::{
    any_cpu, wrong_op, KernelEntry, KernelOut, KernelRun, TypedCx, TypedIn, TypedOut,
};
use super::R;
use fuselage_ir::ops::quantize::scale_index_map;
use fuselage_ir::{DType, Op, TensorType};

fn applies(op: &Op, operands: &[TensorType], results: &[TensorType]) -> Result<(), String> {
    let Op::Dequantize(_) = op else {
        return Err(wrong_op(ENTRY.name, op));
    };
    match operands {
        [q, s] if super::packed::is_packed(q.dtype) && held_in_f32(s.dtype) => {}
        [q, s] => return Err(format!("operands are {} and {}", q.dtype, s.dtype)),
        _ => return Err(format!("{} operands, expected 2", operands.len())),
    }
    match results.first() {
        Some(r) if held_in_f32(r.dtype) => Ok(()),
        Some(r) => Err(format!("the result is {}", r.dtype)),
        None => Err("no result".into()),
    }
}

/// `q · scale` for each element, rounded onto `out`.
pub fn dequantize_packed(
    q: &PackedTensor,
    scales: &[f32],
    scale_shape: &[usize],
    out: DType,
) -> Vec<f32> {
    let table = decode_table(q.dtype());
    let map = scale_index_map(q.shape(), scale_shape);
    map.iter()
        .enumerate()
        .map(|(i, &si)| {
            let v = f64::from(table[usize::from(q.code(i))]) * f64::from(scales[si]);
            out.round(v) as f32
        })
        .collect()
}

fn run(op: &Op, cx: &TypedCx<'_>, v: &[TypedIn<'_>]) -> R<Vec<TypedOut>> {
    let Op::Dequantize(d) = op else {
        return Err(wrong_op(ENTRY.name, op));
    };
    let (Some(TypedIn::Packed(q)), Some(TypedIn::F32(s))) = (v.first(), v.get(1)) else {
        return Err(format!(
            "{}: operands must be packed codes and f32 scales",
            ENTRY.name
        ));
    };
    let want = d
        .granularity
        .scale_shape("dequantize", q.shape())
        .map_err(|e| e.0)?;
    if s.shape != want {
        return Err(format!(
            "dequantize: scale shape {:?} must be {want:?}",
            s.shape
        ));
    }
    let out = cx.result_types.first().map_or(d.dtype, |t| t.dtype);
    let data = dequantize_packed(q, &s.to_contiguous(), &want, out);
    Ok(vec![TypedOut::F32(KernelOut::row_major((
        data,
        q.shape().to_vec(),
    )))])
}

/// Dequantize packed codes.
pub static ENTRY: KernelEntry = KernelEntry {
    name: "dequantize-packed",
    op: "dequantize",
    signature: "i8/u8/i4/f8e4m3fn/f8e5m2/f4e2m1 (packed), f32/bf16/f16 -> f32/bf16/f16",
    doc: "q · scale per tensor, token, channel or group from packed codes, rounded once onto \
          the result dtype, bit-exact to the reference.",
    applies,
    cost: 1,
    requires: "any",
    guard: any_cpu,
    prepare: None,
    run: KernelRun::Typed(run),
};
