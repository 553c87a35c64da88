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

/// A tensor of integer `dtype` whose values mix the dtype's edges (`lo`, `lo + 1`, `-1`, `0`, `1`,
/// `hi - 1`, `hi`) with values drawn uniformly from its range, all clipped to `[-limit, limit]`
/// (the f64 reference holds 64-bit integers exactly only up to ±2^53), from `seed`.
pub fn edge_int_tensor(dtype: DType, shape: Vec<usize>, limit: f64, seed: u64) -> Tensor {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (lo, hi) = dtype.int_range().expect("integer dtype");
    let (lo, hi) = (lo.max(-limit), hi.min(limit));
    let edges = [lo, lo + 1.0, -1.0, 0.0, 1.0, hi - 1.0, hi];
    let n = shape.iter().product();
    let data: Vec<f64> = (0..n)
        .map(|_| {
            if rng.gen_bool(0.6) {
                edges[rng.gen_range(0..edges.len())].clamp(lo, hi)
            } else {
                rng.gen_range(lo..=hi).round()
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

/// Read `t` at an index of a broadcast result shape (numpy rules: shapes right-aligned, size-1
/// dims repeat). Written independently of the ops' broadcasting, for naive test formulas.
pub fn at_broadcast(t: &Tensor, out_idx: &[usize]) -> f64 {
    let off = out_idx.len() - t.rank();
    let idx: Vec<usize> = t
        .shape()
        .iter()
        .enumerate()
        .map(|(i, &d)| if d == 1 { 0 } else { out_idx[off + i] })
        .collect();
    t.at(&idx)
}

/// A shape that broadcasts against `shape`: its first `drop` dims removed and the dims whose bit
/// is set in `ones` replaced by 1.
pub fn broadcast_partner(shape: &[usize], drop: usize, ones: u32) -> Vec<usize> {
    shape[drop.min(shape.len())..]
        .iter()
        .enumerate()
        .map(|(i, &d)| if ones >> i & 1 == 1 { 1 } else { d })
        .collect()
}

/// All multi-indices of `shape` in row-major order.
pub fn indices(shape: &[usize]) -> Vec<Vec<usize>> {
    let n: usize = shape.iter().product();
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..n {
        out.push(idx.clone());
        for ax in (0..shape.len()).rev() {
            idx[ax] += 1;
            if idx[ax] < shape[ax] {
                break;
            }
            idx[ax] = 0;
        }
    }
    out
}

fn check_shape(got: &Tensor, dtype: DType, shape: &[usize], n: usize) -> Result<(), String> {
    if got.dtype() != dtype || got.shape() != shape || n != got.numel() {
        return Err(format!(
            "expected {dtype}{shape:?} with {n} values, found {got:?} ({} values)",
            got.numel()
        ));
    }
    Ok(())
}

/// Check `got` is `dtype[shape]` with elements exactly `dtype.round(naive[i])` (NaN equals NaN).
pub fn check_exact(
    got: &Tensor,
    dtype: DType,
    shape: &[usize],
    naive: &[f64],
) -> Result<(), String> {
    check_shape(got, dtype, shape, naive.len())?;
    for (i, (&g, &w)) in got.data().iter().zip(naive).enumerate() {
        let w = dtype.round(w);
        if !(g == w || g.is_nan() && w.is_nan()) {
            return Err(format!("element {i}: got {g}, expected {w} ({dtype})"));
        }
    }
    Ok(())
}

/// Like [`check_exact`] for naive formulas whose f64 summation order may differ from the op's:
/// accepts `dtype.round(w)` for any `w` within `1e-9·(1 + |naive|)` of the naive value, i.e. the
/// rounding may only differ where the exact result sits on a rounding boundary.
pub fn check_rounded(
    got: &Tensor,
    dtype: DType,
    shape: &[usize],
    naive: &[f64],
) -> Result<(), String> {
    check_shape(got, dtype, shape, naive.len())?;
    for (i, (&g, &w)) in got.data().iter().zip(naive).enumerate() {
        let d = 1e-9 * (1.0 + w.abs());
        // Rounding is monotonic: the op's result must lie between the roundings of w ∓ d.
        // (Exact equality first: for an infinite `w`, `w ∓ d` is NaN.)
        let ok = g == dtype.round(w)
            || (dtype.round(w - d) <= g && g <= dtype.round(w + d))
            || g.is_nan() && w.is_nan();
        if !ok {
            return Err(format!(
                "element {i}: got {g}, expected {} ({dtype}, naive {w})",
                dtype.round(w)
            ));
        }
    }
    Ok(())
}
