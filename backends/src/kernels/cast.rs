//! `cast` to or from a packed dtype: each element converted with [`DType::cast`] (the IR's
//! conversion: round to nearest even into the float formats, truncate and saturate into the
//! integers) straight into or out of packed codes, without an f32 copy of the packed side.

use super::packed::{code_of, decode_table, is_packed, PackedTensor};
use super::quantize::held_in_f32;
use super::registry::{
    any_cpu, wrong_op, KernelEntry, KernelOut, KernelRun, TypedCx, TypedIn, TypedOut,
};
use super::R;
use fuselage_ir::{DType, Op, TensorType};

fn applies(op: &Op, operands: &[TensorType], results: &[TensorType]) -> Result<(), String> {
    let Op::Cast(c) = op else {
        return Err(wrong_op(ENTRY.name, op));
    };
    let Some(from) = operands.first().map(|t| t.dtype) else {
        return Err("no operand".into());
    };
    if !is_packed(from) && !is_packed(c.dtype) {
        return Err(format!("neither {from} nor {} is a packed dtype", c.dtype));
    }
    // The f32 side holds f32, f16, bf16 and the integers the lowering keeps in f32.
    for d in [from, c.dtype] {
        if !(is_packed(d) || held_in_f32(d) || matches!(d, DType::I16 | DType::U16 | DType::Bool)) {
            return Err(format!("{d} is not held exactly in f32"));
        }
    }
    if results.len() != 1 {
        return Err(format!("{} results, expected 1", results.len()));
    }
    Ok(())
}

fn run(op: &Op, _cx: &TypedCx<'_>, v: &[TypedIn<'_>]) -> R<Vec<TypedOut>> {
    let Op::Cast(c) = op else {
        return Err(wrong_op(ENTRY.name, op));
    };
    let to = c.dtype;
    // Source values (exact in f32) and shape.
    let (values, shape): (Vec<f32>, Vec<usize>) = match v.first() {
        Some(TypedIn::Packed(p)) => {
            if is_packed(to) {
                // Code to code through a table of the 256 (or 16) source codes.
                let table = decode_table(p.dtype());
                let map: Vec<u8> = (0..=255u8)
                    .map(|code| code_of(to, to.cast(f64::from(table[usize::from(code)]))))
                    .collect();
                let codes: Vec<u8> = p
                    .codes()
                    .into_iter()
                    .map(|code| map[usize::from(code)])
                    .collect();
                return Ok(vec![TypedOut::Packed(PackedTensor::from_codes(
                    to,
                    p.shape(),
                    &codes,
                )?)]);
            }
            (p.decode_f32(), p.shape().to_vec())
        }
        Some(TypedIn::F32(x)) => (x.to_contiguous().into_owned(), x.shape.clone()),
        None => return Err(format!("{}: missing operand 0", ENTRY.name)),
    };
    if is_packed(to) {
        let p = PackedTensor::encode(to, &shape, values.iter().map(|&x| to.cast(f64::from(x))))?;
        Ok(vec![TypedOut::Packed(p)])
    } else {
        let out = values
            .into_iter()
            .map(|x| to.cast(f64::from(x)) as f32)
            .collect();
        Ok(vec![TypedOut::F32(KernelOut::row_major((out, shape)))])
    }
}

/// Cast to or from a packed dtype.
pub static ENTRY: KernelEntry = KernelEntry {
    name: "cast-packed",
    op: "cast",
    signature: "any <-> i8/u8/i4/f8e4m3fn/f8e5m2/f4e2m1 (packed)",
    doc: "Conversion into or out of packed codes (code to code through a table when both \
          sides are packed), exact to the IR's cast.",
    applies,
    cost: 1,
    requires: "any",
    guard: any_cpu,
    prepare: None,
    run: KernelRun::Typed(run),
};
