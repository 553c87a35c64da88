//! Execution of a [`Lowering::Kernel`](crate::Lowering::Kernel) instruction: the registry
//! entry the lowering chose runs on the operands, read in place (f32 kernels), or on the
//! register values themselves, packed ones included (typed kernels).

use super::super::host_view::{from_host, hold};
use super::super::{Instr, Program, Value};
use crate::kernels::registry::{KernelRun, PreparedRun, TypedCx, TypedIn, TypedOut};
use crate::kernels::round::round_in_place;
use crate::kernels::View;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use fuselage_ir::DType;
use std::collections::HashMap;
use std::sync::Arc;

/// A typed kernel's run function.
type TypedRun = fn(&fuselage_ir::Op, &TypedCx<'_>, &[TypedIn<'_>]) -> Result<Vec<TypedOut>, String>;

impl<B: Backend> Program<B> {
    /// A native f32 CPU kernel, the registry entry the lowering chose: operands are read in
    /// place; its result comes back rounded onto the result's dtype (bf16/f16 programs).
    pub(super) fn kernel(
        &self,
        ins: &Instr<B>,
        args: Vec<FloatTensor<B>>,
    ) -> Result<Vec<FloatTensor<B>>, String> {
        let entry = ins
            .kernel
            .ok_or("internal: a kernel instruction without a kernel")?;
        let KernelRun::F32(run) = entry.run else {
            return Err(format!(
                "internal: {} is a typed kernel run as an f32 one",
                entry.name
            ));
        };
        let held = args.iter().map(hold::<B>).collect::<Result<Vec<_>, _>>()?;
        let v = held
            .iter()
            .map(|h| h.view())
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = match (&ins.prepared, entry.prepare.map(|p| p.run)) {
            (Some(prepared), Some(PreparedRun::F32(run))) => run(&ins.op, &v, prepared)?,
            (Some(_), _) => {
                return Err(format!(
                    "internal: {} has a prepared operand but no f32 preparation",
                    entry.name
                ))
            }
            (None, _) => run(&ins.op, &v)?,
        };
        drop(v);
        drop(held);
        // The kernel computed in f32; a bf16/f16 result is rounded onto its dtype here, on the
        // host data, before it is uploaded (`exec` does not round kernel results again).
        let dtype = ins.result_types.first().map_or(DType::F32, |t| t.dtype);
        round_in_place(dtype, &mut out.data);
        Ok(vec![from_host::<B>(
            out.data,
            &out.shape,
            out.strides.as_deref(),
            &self.device,
        )?])
    }

    /// A typed kernel: packed operands are passed as they are, float ones read in place;
    /// packed results stay packed.
    pub(super) fn typed_kernel(
        &self,
        ins: &Instr<B>,
        run: TypedRun,
        args: Vec<Value<B>>,
        bindings: &HashMap<String, u64>,
    ) -> Result<Vec<Value<B>>, String> {
        // Exact-held operands are f32 values here (checked by the caller): read as f32.
        let args: Vec<Value<B>> = args
            .into_iter()
            .map(|v| match v {
                Value::Exact(_) => Value::Float(v.into_float(&self.device, &mut 0)),
                v => v,
            })
            .collect();
        let held = args
            .iter()
            .map(|v| v.as_float().map(hold::<B>).transpose())
            .collect::<Result<Vec<_>, _>>()?;
        let views: Vec<Option<View<'_>>> = held
            .iter()
            .map(|h| h.as_ref().map(|h| h.view()).transpose())
            .collect::<Result<_, _>>()?;
        let operands: Vec<TypedIn<'_>> = args
            .iter()
            .zip(&views)
            .map(|(a, v)| match (a, v) {
                (Value::Packed(p), _) => Ok(TypedIn::Packed(p)),
                (_, Some(v)) => Ok(TypedIn::F32(v.clone())),
                (_, None) => Err("internal: a float operand was not held".to_string()),
            })
            .collect::<Result<_, _>>()?;
        let shapes = ins
            .result_types
            .iter()
            .map(|t| t.resolve(bindings).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let cx = TypedCx {
            module: &self.module,
            bindings,
            operand_types: &ins.operand_types,
            result_types: &ins.result_types,
            result_shapes: &shapes,
        };
        let out = match (&ins.prepared, entry_prepared_run(ins)) {
            (Some(prepared), Some(PreparedRun::Typed(run))) => {
                run(&ins.op, &cx, &operands, prepared)?
            }
            (Some(_), _) => {
                return Err("internal: a prepared operand but no typed preparation".into())
            }
            (None, _) => run(&ins.op, &cx, &operands)?,
        };
        drop(operands);
        drop(views);
        drop(held);
        out.into_iter()
            .zip(&ins.result_types)
            .map(|(o, ty)| match o {
                TypedOut::Packed(p) => Ok(Value::Packed(Arc::new(p))),
                TypedOut::F32(k) => Value::from_float(
                    from_host::<B>(k.data, &k.shape, k.strides.as_deref(), &self.device)?,
                    ty.dtype,
                ),
            })
            .collect()
    }
}

/// The prepared run of the instruction's kernel, if it has a preparation.
fn entry_prepared_run<B: Backend>(ins: &Instr<B>) -> Option<PreparedRun> {
    ins.kernel.and_then(|k| k.prepare).map(|p| p.run)
}
