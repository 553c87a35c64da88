//! Execution of a [`Lowering::Kernel`](crate::Lowering::Kernel) instruction: the registry
//! entry the lowering chose runs on the operands, read in place.

use super::super::host_view::{from_host, hold};
use super::super::{Instr, Program};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;

impl<B: Backend> Program<B> {
    /// A native CPU kernel (f32 on the CPU backend), the registry entry the lowering chose:
    /// operands are read in place.
    pub(super) fn kernel(
        &self,
        ins: &Instr<B>,
        args: Vec<FloatTensor<B>>,
    ) -> Result<Vec<FloatTensor<B>>, String> {
        let entry = ins
            .kernel
            .ok_or("internal: a kernel instruction without a kernel")?;
        let held = args.iter().map(hold::<B>).collect::<Result<Vec<_>, _>>()?;
        let v = held
            .iter()
            .map(|h| h.view())
            .collect::<Result<Vec<_>, _>>()?;
        let out = (entry.run)(&ins.op, &v)?;
        drop(v);
        drop(held);
        Ok(vec![from_host::<B>(
            out.data,
            &out.shape,
            out.strides.as_deref(),
            &self.device,
        )?])
    }
}
