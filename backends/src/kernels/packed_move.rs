//! Data movement on packed values: `reshape` relabels the packed bytes; `transpose`,
//! `broadcast_to`, `concat`, `slice`, `split` and `gather` move the codes (one byte each, never
//! decoded) with the op's own reference index semantics, so that a packed weight or cache can be
//! reshaped, sliced or gathered from without widening it to f32.

use super::packed::{is_packed, PackedTensor};
use super::registry::{any_cpu, KernelEntry, KernelRun, TypedCx, TypedIn, TypedOut};
use super::R;
use fuselage_ir::ops::EvalCx;
use fuselage_ir::{DType, Op, Tensor, TensorType};

/// The ops these kernels run, and which of their operands are data (the rest are indices).
fn data_operands(op: &Op, n: usize) -> Option<Vec<bool>> {
    match op {
        Op::Reshape(_) | Op::Transpose(_) | Op::BroadcastTo(_) | Op::Slice(_) | Op::Split(_) => {
            Some((0..n).map(|i| i == 0).collect())
        }
        Op::Concat(_) => Some(vec![true; n]),
        Op::Gather(_) => Some((0..n).map(|i| i == 0).collect()),
        _ => None,
    }
}

fn applies(op: &Op, operands: &[TensorType], results: &[TensorType]) -> Result<(), String> {
    let data = data_operands(op, operands.len())
        .ok_or_else(|| format!("`{}` is not a data-movement op", op.name()))?;
    for (i, (t, is_data)) in operands.iter().zip(data).enumerate() {
        if is_data && !is_packed(t.dtype) {
            return Err(format!("operand {i} is {}, not packed", t.dtype));
        }
        if !is_data && t.dtype.is_float() {
            return Err(format!("operand {i} is {}, not indices", t.dtype));
        }
    }
    if let Some(r) = results.iter().find(|r| !is_packed(r.dtype)) {
        return Err(format!("a result is {}", r.dtype));
    }
    Ok(())
}

fn run(op: &Op, cx: &TypedCx<'_>, v: &[TypedIn<'_>]) -> R<Vec<TypedOut>> {
    let dtype = match v.first() {
        Some(TypedIn::Packed(p)) => p.dtype(),
        _ => return Err(format!("{}: operand 0 must be packed", op.name())),
    };
    if let (Op::Reshape(_), Some(TypedIn::Packed(p)), Some(shape)) =
        (op, v.first(), cx.result_shapes.first())
    {
        return Ok(vec![TypedOut::Packed(p.reshaped(shape)?)]);
    }
    // The codes as a u8 tensor, indices as they are; the reference moves them.
    let tensors: Vec<Tensor> = v
        .iter()
        .zip(cx.operand_types)
        .map(|(x, ty)| match x {
            TypedIn::Packed(p) => {
                let codes = p.codes().into_iter().map(f64::from).collect();
                Tensor::new(DType::U8, p.shape().to_vec(), codes).map_err(|e| e.to_string())
            }
            TypedIn::F32(x) => {
                let vals = x.to_contiguous().iter().map(|&a| f64::from(a)).collect();
                Tensor::new(ty.dtype, x.shape.clone(), vals).map_err(|e| e.to_string())
            }
        })
        .collect::<R<_>>()?;
    let refs: Vec<&Tensor> = tensors.iter().collect();
    let as_codes: Vec<TensorType> = cx
        .result_types
        .iter()
        .map(|t| t.with_dtype(DType::U8))
        .collect();
    let ecx = EvalCx {
        module: cx.module,
        bindings: cx.bindings,
        result_types: &as_codes,
    };
    let out = op.eval(&ecx, &refs).map_err(|e| e.0)?;
    out.iter()
        .map(|t| {
            let codes: Vec<u8> = t.data().iter().map(|&c| c as u8).collect();
            PackedTensor::from_codes(dtype, t.shape(), &codes).map(TypedOut::Packed)
        })
        .collect()
}

macro_rules! entry {
    ($name:ident, $kernel:literal, $op:literal, $sig:literal, $doc:literal) => {
        #[doc = $doc]
        pub static $name: KernelEntry = KernelEntry {
            name: $kernel,
            op: $op,
            signature: $sig,
            doc: $doc,
            applies,
            cost: 1,
            requires: "any",
            guard: any_cpu,
            prepare: None,
            run: KernelRun::Typed(run),
        };
    };
}

entry!(
    RESHAPE,
    "reshape-packed",
    "reshape",
    "packed -> packed",
    "A new shape over the same packed bytes (no copy of the elements)."
);
entry!(
    TRANSPOSE,
    "transpose-packed",
    "transpose",
    "packed -> packed",
    "Permutes the codes of a packed tensor without decoding them."
);
entry!(
    BROADCAST_TO,
    "broadcast_to-packed",
    "broadcast_to",
    "packed -> packed",
    "Broadcasts the codes of a packed tensor without decoding them."
);
entry!(
    CONCAT,
    "concat-packed",
    "concat",
    "packed, … -> packed",
    "Concatenates packed tensors code by code."
);
entry!(
    SLICE,
    "slice-packed",
    "slice",
    "packed -> packed",
    "Slices the codes of a packed tensor without decoding them."
);
entry!(
    SPLIT,
    "split-packed",
    "split",
    "packed -> packed, …",
    "Splits the codes of a packed tensor without decoding them."
);
entry!(
    GATHER,
    "gather-packed",
    "gather",
    "packed, int -> packed",
    "Gathers rows of codes (a packed embedding table, a cache) without decoding them."
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_data_movement_with_packed_data_applies() {
        let t =
            |d: DType, s: &[u64]| TensorType::new(d, s.iter().map(|&n| fuselage_ir::Dim::from(n)));
        let g = Op::from_attrs("gather", serde_json::json!({"axis": 0})).unwrap();
        let ok = applies(
            &g,
            &[t(DType::I8, &[4, 2]), t(DType::I64, &[3])],
            &[t(DType::I8, &[3, 2])],
        );
        assert!(ok.is_ok(), "{ok:?}");
        let f = applies(
            &g,
            &[t(DType::F32, &[4, 2]), t(DType::I64, &[3])],
            &[t(DType::F32, &[3, 2])],
        );
        assert!(f.unwrap_err().contains("not packed"));
        let relu = Op::from_attrs("relu", serde_json::json!({})).unwrap();
        assert!(applies(&relu, &[t(DType::I8, &[2])], &[t(DType::I8, &[2])]).is_err());
    }
}
