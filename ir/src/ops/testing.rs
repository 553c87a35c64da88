//! Helpers for op tests: seeded random tensors and one-op modules run through the reference
//! interpreter (so every op test also exercises type inference and the result-type check).

use crate::dtype::DType;
use crate::error::IrError;
use crate::eval::{Executor, Reference};
use crate::graph::{Graph, ValueId};
use crate::module::Module;
use crate::ops::Op;
use crate::tensor::Tensor;
use crate::types::TensorType;
use rand::{Rng, SeedableRng};

/// A tensor of `shape` with values uniform in [-2, 2) (rounded to `dtype`), or small integers for
/// integer dtypes, from `seed`.
pub fn rand_tensor(dtype: DType, shape: Vec<usize>, seed: u64) -> Tensor {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n = shape.iter().product();
    let data: Vec<f64> = (0..n)
        .map(|_| {
            if dtype == DType::Bool {
                rng.gen_range(0..2) as f64
            } else if dtype.is_int() {
                let (lo, hi) = dtype.int_range().expect("int range");
                rng.gen_range(lo.max(-100.0)..=hi.min(100.0)).round()
            } else {
                rng.gen_range(-2.0..2.0)
            }
        })
        .collect();
    Tensor::new(dtype, shape, data).expect("consistent shape")
}

/// Build a module whose `main` applies `op` to inputs of the given tensors' concrete types, and
/// return the inferred result types and the module.
pub fn one_op_module(op: Op, inputs: &[Tensor]) -> Result<Module, IrError> {
    one_op_module_with(Module::new(), op, inputs)
}

/// Like [`one_op_module`] but starting from a module that already has constants or functions.
pub fn one_op_module_with(mut m: Module, op: Op, inputs: &[Tensor]) -> Result<Module, IrError> {
    let mut g = Graph::new();
    let ids: Vec<ValueId> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| {
            g.add_input(&format!("x{i}"), TensorType::fixed(t.dtype(), t.shape()))
                .into()
        })
        .collect();
    let n = g.add_inferred(&m, op, ids, None)?;
    let nres = g.node(n).map(|n| n.results.len()).unwrap_or(0);
    for k in 0..nres {
        g.add_output(&format!("y{k}"), ValueId::new(n, k as u32));
    }
    m.functions.insert("main".into(), g);
    Ok(m)
}

/// Run one op on inputs through type inference and the reference interpreter.
pub fn eval_op(op: Op, inputs: &[Tensor]) -> Result<Vec<Tensor>, IrError> {
    let m = one_op_module(op, inputs)?;
    Reference.run(&m, "main", inputs)
}

/// Run one op in a module that already holds constants or functions.
pub fn eval_op_in(m: Module, op: Op, inputs: &[Tensor]) -> Result<Vec<Tensor>, IrError> {
    let m = one_op_module_with(m, op, inputs)?;
    Reference.run(&m, "main", inputs)
}
