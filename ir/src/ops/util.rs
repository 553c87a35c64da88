//! Helpers shared by op implementations: arity and dtype checks, axis normalization,
//! numpy-style broadcasting of symbolic and concrete shapes, element-wise loops.

use crate::dtype::DType;
use crate::error::OpError;
use crate::tensor::{strides_of, Tensor};
use crate::types::{Dim, TensorType};

/// Check the operand count.
pub fn expect_arity<T>(op: &str, inputs: &[T], n: usize) -> Result<(), OpError> {
    if inputs.len() != n {
        crate::bail!(
            "{op} takes {n} operand{}, found {}",
            if n == 1 { "" } else { "s" },
            inputs.len()
        );
    }
    Ok(())
}

/// Check the operand count is within `lo..=hi`.
pub fn expect_arity_range<T>(op: &str, inputs: &[T], lo: usize, hi: usize) -> Result<(), OpError> {
    if inputs.len() < lo || inputs.len() > hi {
        crate::bail!("{op} takes {lo} to {hi} operands, found {}", inputs.len());
    }
    Ok(())
}

/// Check all operands share one dtype; returns it.
pub fn same_dtype(op: &str, inputs: &[TensorType]) -> Result<DType, OpError> {
    let d = inputs
        .first()
        .map(|t| t.dtype)
        .ok_or_else(|| OpError::new(format!("{op} needs operands")))?;
    for (i, t) in inputs.iter().enumerate() {
        if t.dtype != d {
            crate::bail!(
                "{op} operands must share a dtype: operand 0 is {d}, operand {i} is {} (insert a cast)",
                t.dtype
            );
        }
    }
    Ok(d)
}

/// Check the dtype is a float type.
pub fn expect_float(op: &str, what: &str, t: &TensorType) -> Result<(), OpError> {
    if !t.dtype.is_float() {
        crate::bail!("{op} expects a float {what}, found {t}");
    }
    Ok(())
}

/// Check the dtype is numeric (float or integer, not bool).
pub fn expect_numeric(op: &str, what: &str, t: &TensorType) -> Result<(), OpError> {
    if t.dtype == DType::Bool {
        crate::bail!("{op} expects a numeric {what}, found {t}");
    }
    Ok(())
}

/// Normalize a possibly negative axis against a rank.
pub fn normalize_axis(op: &str, axis: i64, rank: usize) -> Result<usize, OpError> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        crate::bail!("{op}: axis {axis} is out of range for rank {rank}");
    }
    Ok(a as usize)
}

/// Whether two dims are provably equal.
pub fn dims_equal(a: &Dim, b: &Dim) -> bool {
    a == b
}

/// numpy broadcasting of two symbolic shapes.
pub fn broadcast_dims(op: &str, a: &[Dim], b: &[Dim]) -> Result<Vec<Dim>, OpError> {
    let n = a.len().max(b.len());
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let da = if i + a.len() >= n {
            Some(&a[i + a.len() - n])
        } else {
            None
        };
        let db = if i + b.len() >= n {
            Some(&b[i + b.len() - n])
        } else {
            None
        };
        let d = match (da, db) {
            (Some(x), None) | (None, Some(x)) => x.clone(),
            (Some(x), Some(y)) if x == y => x.clone(),
            (Some(x), Some(y)) if x.fixed() == Some(1) => y.clone(),
            (Some(x), Some(y)) if y.fixed() == Some(1) => x.clone(),
            (Some(x), Some(y)) => crate::bail!(
                "{op}: shapes [{}] and [{}] do not broadcast (dim {x} vs {y})",
                join(a),
                join(b)
            ),
            (None, None) => unreachable!("i < n"),
        };
        out.push(d);
    }
    Ok(out)
}

/// numpy broadcasting of concrete shapes.
pub fn broadcast_shapes(op: &str, a: &[usize], b: &[usize]) -> Result<Vec<usize>, OpError> {
    let n = a.len().max(b.len());
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out.push(match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            (x, y) => crate::bail!("{op}: shapes {a:?} and {b:?} do not broadcast ({x} vs {y})"),
        });
    }
    Ok(out)
}

/// Comma-joined dims for messages.
pub fn join(d: &[Dim]) -> String {
    d.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Strides to read `shape` as if broadcast to `out` (0 on broadcast axes).
pub fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let s = strides_of(shape);
    let off = out.len() - shape.len();
    (0..out.len())
        .map(|i| {
            if i < off || shape[i - off] == 1 {
                0
            } else {
                s[i - off]
            }
        })
        .collect()
}

/// Visit every multi-index of `shape` in row-major order with the flat offsets into operands of
/// the given (broadcast) strides.
pub fn for_each_index(shape: &[usize], strides: &[Vec<usize>], mut f: impl FnMut(&[usize])) {
    let n: usize = shape.iter().product();
    let mut idx = vec![0usize; shape.len()];
    let mut offs = vec![0usize; strides.len()];
    for _ in 0..n {
        f(&offs);
        for ax in (0..shape.len()).rev() {
            idx[ax] += 1;
            for (o, s) in offs.iter_mut().zip(strides) {
                *o += s[ax];
            }
            if idx[ax] < shape[ax] {
                break;
            }
            for (o, s) in offs.iter_mut().zip(strides) {
                *o -= s[ax] * shape[ax];
            }
            idx[ax] = 0;
        }
    }
}

/// Element-wise binary op with broadcasting; the result is rounded to `out`.
pub fn binary_map(
    op: &str,
    a: &Tensor,
    b: &Tensor,
    out: DType,
    f: impl Fn(f64, f64) -> f64,
) -> Result<Tensor, OpError> {
    let shape = broadcast_shapes(op, a.shape(), b.shape())?;
    let sa = broadcast_strides(a.shape(), &shape);
    let sb = broadcast_strides(b.shape(), &shape);
    let (da, db) = (a.data(), b.data());
    let mut v = Vec::with_capacity(shape.iter().product());
    for_each_index(&shape, &[sa, sb], |o| v.push(f(da[o[0]], db[o[1]])));
    Tensor::new(out, shape, v).map_err(|e| OpError::new(e.to_string()))
}

/// Element-wise ternary op with broadcasting; the result is rounded to `out`.
pub fn ternary_map(
    op: &str,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    out: DType,
    f: impl Fn(f64, f64, f64) -> f64,
) -> Result<Tensor, OpError> {
    let ab = broadcast_shapes(op, a.shape(), b.shape())?;
    let shape = broadcast_shapes(op, &ab, c.shape())?;
    let s = [
        broadcast_strides(a.shape(), &shape),
        broadcast_strides(b.shape(), &shape),
        broadcast_strides(c.shape(), &shape),
    ];
    let (da, db, dc) = (a.data(), b.data(), c.data());
    let mut v = Vec::with_capacity(shape.iter().product());
    for_each_index(&shape, &s, |o| v.push(f(da[o[0]], db[o[1]], dc[o[2]])));
    Tensor::new(out, shape, v).map_err(|e| OpError::new(e.to_string()))
}

/// Element-wise unary op; the result is rounded to `out`.
pub fn unary_map(a: &Tensor, out: DType, f: impl Fn(f64) -> f64) -> Result<Tensor, OpError> {
    Tensor::new(
        out,
        a.shape().to_vec(),
        a.data().iter().map(|&x| f(x)).collect(),
    )
    .map_err(|e| OpError::new(e.to_string()))
}

/// Type inference shared by same-dtype broadcasting binary ops.
pub fn infer_binary(op: &str, inputs: &[TensorType], numeric: bool) -> Result<TensorType, OpError> {
    expect_arity(op, inputs, 2)?;
    let d = same_dtype(op, inputs)?;
    if numeric {
        expect_numeric(op, "operand", &inputs[0])?;
    }
    Ok(TensorType::new(
        d,
        broadcast_dims(op, &inputs[0].shape, &inputs[1].shape)?,
    ))
}

/// Wrap an IR error from tensor construction into an op error.
pub fn op_err(e: crate::error::IrError) -> OpError {
    OpError::new(e.to_string())
}

/// Type inference of element-wise unary ops: one operand, result of the same type. With
/// `float_only` the operand must be a float type, otherwise any numeric type.
pub fn infer_unary(
    op: &str,
    inputs: &[TensorType],
    float_only: bool,
) -> Result<TensorType, OpError> {
    expect_arity(op, inputs, 1)?;
    if float_only {
        expect_float(op, "operand", &inputs[0])?;
    } else {
        expect_numeric(op, "operand", &inputs[0])?;
    }
    Ok(inputs[0].clone())
}

/// Evaluation of element-wise unary ops: `f` applied in f64, rounded once to the operand dtype.
pub fn eval_unary(
    op: &str,
    inputs: &[&Tensor],
    f: impl Fn(f64) -> f64,
) -> Result<Vec<Tensor>, OpError> {
    expect_arity(op, inputs, 1)?;
    Ok(vec![unary_map(inputs[0], inputs[0].dtype(), f)?])
}

/// Evaluation of same-dtype broadcasting binary ops: `f` in f64, rounded once to the dtype.
pub fn eval_binary(
    op: &str,
    inputs: &[&Tensor],
    f: impl Fn(f64, f64) -> f64,
) -> Result<Vec<Tensor>, OpError> {
    expect_arity(op, inputs, 2)?;
    let (a, b) = (inputs[0], inputs[1]);
    Ok(vec![binary_map(op, a, b, a.dtype(), f)?])
}

/// Split a concrete shape around `axis` into `(outer, len, inner)` element counts, so that
/// element `(o, i, n)` lives at `(o * len + i) * inner + n`.
pub fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let outer = shape[..axis].iter().product();
    let inner = shape[axis + 1..].iter().product();
    (outer, shape[axis], inner)
}

/// Normalize a list of axes against a rank, rejecting duplicates; sorted ascending.
pub fn normalize_axes(op: &str, axes: &[i64], rank: usize) -> Result<Vec<usize>, OpError> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let n = normalize_axis(op, a, rank)?;
        if out.contains(&n) {
            crate::bail!("{op}: axis {a} is listed twice in {axes:?} (rank {rank})");
        }
        out.push(n);
    }
    out.sort_unstable();
    Ok(out)
}

/// Flat row-major offset of a multi-index under the given strides.
pub fn flat_offset(idx: &[usize], strides: &[usize]) -> usize {
    idx.iter().zip(strides).map(|(i, s)| i * s).sum()
}

/// Resolve symbolic dims to sizes under the running function's bindings.
pub fn resolve_dims(
    op: &str,
    dims: &[Dim],
    bindings: &std::collections::HashMap<String, u64>,
) -> Result<Vec<usize>, OpError> {
    dims.iter()
        .map(|d| {
            d.resolve(bindings)
                .map(|n| n as usize)
                .map_err(|e| OpError::new(format!("{op}: {e}")))
        })
        .collect()
}

/// Check that a value is an integer dtype (indices, positions, token types).
pub fn expect_int(op: &str, what: &str, t: &TensorType) -> Result<(), OpError> {
    if !t.dtype.is_int() {
        crate::bail!("{op} expects an integer {what}, found {t}");
    }
    Ok(())
}

/// A possibly negative index (an integer held as `f64`) into an axis of size `n`, normalized to
/// `0..n` (negative counts from the end), or an error naming the index and the bound.
pub fn normalize_index(op: &str, raw: f64, n: usize, axis: usize) -> Result<usize, OpError> {
    let n_f = n as f64;
    let j = if raw < 0.0 { raw + n_f } else { raw };
    if !(j >= 0.0 && j < n_f) || raw.fract() != 0.0 {
        crate::bail!("{op} index {raw} is out of range [-{n}, {n}) for axis {axis} of size {n}");
    }
    Ok(j as usize)
}

/// Advance a multi-index over `shape` by one step in row-major order (wrapping to all zeros
/// after the last index).
pub fn next_index(idx: &mut [usize], shape: &[usize]) {
    for ax in (0..idx.len().min(shape.len())).rev() {
        idx[ax] += 1;
        if idx[ax] < shape[ax] {
            return;
        }
        idx[ax] = 0;
    }
}

/// Check that two dims can be equal: an error (naming `what`) only when both are fixed and
/// differ; symbolic dims are checked at evaluation, when their sizes are known.
pub fn expect_dims_may_equal(op: &str, what: &str, a: &Dim, b: &Dim) -> Result<(), OpError> {
    if let (Some(x), Some(y)) = (a.fixed(), b.fixed()) {
        if x != y {
            crate::bail!("{op}: {what}: {a} vs {b}");
        }
    }
    Ok(())
}

/// Check the rank of an operand.
pub fn expect_rank(op: &str, what: &str, t: &TensorType, rank: usize) -> Result<(), OpError> {
    if t.rank() != rank {
        crate::bail!("{op} expects {what} of rank {rank}, found {t}");
    }
    Ok(())
}

/// A fixed dim, or an error naming what needed it to be fixed.
pub fn fixed_dim(op: &str, what: &str, d: &Dim) -> Result<u64, OpError> {
    d.fixed()
        .ok_or_else(|| OpError::new(format!("{op} needs a fixed {what}, found {d}")))
}

/// The functions `g` calls (`call` callees and `for` bodies), in node order, with repeats.
/// The one place that knows which ops name a function.
pub fn callees(g: &crate::graph::Graph) -> Vec<String> {
    g.nodes()
        .filter_map(|(_, n)| match &n.op {
            crate::ops::Op::Call(c) => Some(c.callee.clone()),
            crate::ops::Op::For(f) => Some(f.body.clone()),
            _ => None,
        })
        .collect()
}

/// Functions reachable from `start` through `call`/`for` ops, checking that none of them can
/// reach itself again (recursion is rejected: the reference has no recursion depth to spend).
pub fn check_no_recursion(module: &crate::module::Module, start: &str) -> Result<(), OpError> {
    // Iterative DFS with an explicit path so that deep call chains cannot overflow the stack.
    let mut path: Vec<(String, Vec<String>)> = Vec::new();
    let mut done: std::collections::HashSet<String> = std::collections::HashSet::new();
    let g = match module.functions.get(start) {
        Some(g) => g,
        None => return Ok(()),
    };
    path.push((start.to_string(), callees(g)));
    while let Some((_, pending)) = path.last_mut() {
        match pending.pop() {
            Some(next) => {
                if let Some(pos) = path.iter().position(|(f, _)| *f == next) {
                    let cycle: Vec<&str> = path[pos..].iter().map(|(f, _)| f.as_str()).collect();
                    crate::bail!(
                        "recursive call: @{} -> @{next} (recursion is not supported; unroll it or use `for`)",
                        cycle.join(" -> @")
                    );
                }
                if done.contains(&next) {
                    continue;
                }
                if let Some(g) = module.functions.get(&next) {
                    let c = callees(g);
                    path.push((next, c));
                }
            }
            None => {
                let (f, _) = path.pop().expect("non-empty path");
                done.insert(f);
            }
        }
    }
    Ok(())
}

/// Maximum nesting of `call`/`for` bodies in the reference interpreter.
pub const MAX_CALL_DEPTH: usize = 256;

thread_local! {
    static CALL_DEPTH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Guard counting nested function evaluations on this thread; errors past [`MAX_CALL_DEPTH`]
/// (a recursion that slipped past type inference ends in an error, not a stack overflow).
pub struct CallDepthGuard(());

impl CallDepthGuard {
    /// Enter one nesting level.
    pub fn enter(op: &str, callee: &str) -> Result<Self, OpError> {
        let d = CALL_DEPTH.with(|c| c.get());
        if d >= MAX_CALL_DEPTH {
            crate::bail!(
                "{op} @{callee}: nesting deeper than {MAX_CALL_DEPTH} calls (recursive module?)"
            );
        }
        CALL_DEPTH.with(|c| c.set(d + 1));
        Ok(CallDepthGuard(()))
    }
}

impl Drop for CallDepthGuard {
    fn drop(&mut self) {
        CALL_DEPTH.with(|c| c.set(c.get().saturating_sub(1)));
    }
}

/// `-1`, the default axis of the normalization ops.
pub fn minus_one() -> i64 {
    -1
}

/// Check the operands of a normalization over `x.shape[axis..]` with optional per-element
/// parameters shaped like the normalized dims; returns the normalized axis.
pub fn check_norm_operands(
    op: &str,
    axis: i64,
    eps: f64,
    inputs: &[TensorType],
    max_operands: usize,
) -> Result<usize, OpError> {
    expect_arity_range(op, inputs, 1, max_operands)?;
    same_dtype(op, inputs)?;
    expect_float(op, "operand", &inputs[0])?;
    if !(eps >= 0.0 && eps.is_finite()) {
        crate::bail!("{op}: eps must be finite and >= 0, found {eps}");
    }
    let x = &inputs[0];
    let a = normalize_axis(op, axis, x.rank())?;
    let norm = &x.shape[a..];
    for (i, p) in inputs.iter().enumerate().skip(1) {
        if p.shape != norm {
            crate::bail!(
                "{op}: operand {i} must be shaped like the normalized dims [{}] of {x}, found {p}",
                join(norm)
            );
        }
    }
    Ok(a)
}

/// Check a collective's world size (>= 1).
pub fn check_world(op: &str, world: u64) -> Result<(), OpError> {
    if world == 0 {
        crate::bail!("{op}: world size must be >= 1, found 0");
    }
    Ok(())
}

/// Reference semantics of a collective: on one rank (`world == 1`) every collective is the
/// identity; with more ranks the reference interpreter has no peers to talk to.
pub fn single_rank(
    op: &str,
    mesh_axis: &str,
    world: u64,
    inputs: &[&Tensor],
) -> Result<Vec<Tensor>, OpError> {
    expect_arity(op, inputs, 1)?;
    check_world(op, world)?;
    if world != 1 {
        crate::bail!(
            "{op} over mesh axis `{mesh_axis}` with world {world} needs a communicator (execution arrives with the collectives backend); the reference interpreter runs single-rank programs (world = 1)"
        );
    }
    Ok(vec![inputs[0].clone()])
}

/// `d · k` as a dim.
pub fn scale_dim(op: &str, d: &Dim, k: u64, what: &str) -> Result<Dim, OpError> {
    let k = i64::try_from(k).map_err(|_| OpError::new(format!("{op}: {what} factor {k}")))?;
    d.mul_int(k)
        .map_err(|e| OpError::new(format!("{op}: {what} {d}·{k}: {e}")))
}

/// `d / k` as a dim; the division must be exact (a fixed `d` is checked now, a symbolic one
/// when its symbols are bound).
pub fn divide_dim(op: &str, d: &Dim, k: u64, what: &str) -> Result<Dim, OpError> {
    d.div_exact(k)
        .map_err(|e| OpError::new(format!("{op}: world {k} must divide the {what} {d} ({e})")))
}

#[cfg(test)]
mod tests {
    use crate::ops::Op;

    /// Every structural op's attributes survive `{"op", "attrs"}` JSON, with defaults filled in
    /// and unknown fields rejected.
    #[test]
    fn attrs_round_trip_through_json() {
        let cases = [
            ("transpose", r#"{"perm":[1,0]}"#),
            ("reshape", r#"{"shape":["B",-1,64]}"#),
            ("broadcast_to", r#"{"shape":["B",4]}"#),
            ("concat", r#"{"axis":-1}"#),
            (
                "slice",
                r#"{"axis":1,"start":-3,"end":9223372036854775807}"#,
            ),
            ("split", r#"{"axis":0,"sizes":[2,3]}"#),
            ("gather", r#"{"axis":0}"#),
            ("gather_elements", r#"{"axis":-1}"#),
            ("scatter_elements", r#"{"axis":1,"reduction":"max"}"#),
            ("gather_nd", r#"{"batch_dims":1}"#),
            ("scatter_nd", r#"{"reduction":"mul"}"#),
            (
                "pad",
                r#"{"pads":[0,1,"S-1",-2],"mode":"wrap","value":-1.5}"#,
            ),
            ("trilu", r#"{"upper":false,"k":-2}"#),
            (
                "rope",
                r#"{"style":"interleaved","theta":500000.0,"rotary_dim":32}"#,
            ),
            ("attention", r#"{"mask":"causal"}"#),
            ("mmca_attention", r#"{"empty_row":"zero"}"#),
            (
                "conv2d",
                r#"{"stride":[2,2],"padding":[1,1,1,1],"groups":2}"#,
            ),
            ("group_norm", r#"{"groups":32,"eps":1e-6}"#),
            ("upsample_nearest2d", r#"{"scale":2}"#),
            ("avg_pool2d", r#"{"kernel":[2,2],"stride":[2,2]}"#),
            (
                "conv",
                r#"{"strides":[2],"pads":[1,0],"dilations":[2],"group":2}"#,
            ),
            (
                "conv_transpose",
                r#"{"strides":[2,2],"pads":[1,1,0,0],"output_padding":[1,0]}"#,
            ),
            (
                "pool",
                r#"{"kind":"max","kernel":[3,3],"strides":[2,2],"ceil_mode":true,"indices":true,"storage_order":1}"#,
            ),
            ("pool", r#"{"kind":"lp","kernel":[2],"p":3}"#),
            (
                "resize",
                r#"{"axes":[2,3],"sizes":["2*H",8],"scales":[2.0,2.0],"mode":"cubic","coordinate_transformation_mode":"align_corners","cubic_coeff_a":-0.5,"exclude_outside":true,"antialias":true}"#,
            ),
            (
                "resize",
                r#"{"sizes":[1,3],"coordinate_transformation_mode":"tf_crop_and_resize","roi":[0,0,1,0.5],"extrapolation_value":1.5,"nearest_mode":"ceil"}"#,
            ),
            (
                "grid_sample",
                r#"{"mode":"cubic","padding_mode":"reflection","align_corners":true}"#,
            ),
            (
                "quantize",
                r#"{"dtype":"i4","granularity":{"kind":"per_group","axis":-1,"size":128},"convention":"deepspeed"}"#,
            ),
            (
                "dequantize",
                r#"{"dtype":"bf16","granularity":{"kind":"per_token"}}"#,
            ),
            ("all_gather", r#"{"axis":0,"mesh_axis":"tp","world":4}"#),
            ("reduce_scatter", r#"{"axis":0,"mesh_axis":"dp","world":2}"#),
            (
                "all_reduce",
                r#"{"mesh_axis":"tp","world":8,"reduce":"max"}"#,
            ),
            (
                "all_to_all",
                r#"{"split_axis":2,"concat_axis":1,"mesh_axis":"sp","world":4}"#,
            ),
            ("call", r#"{"callee":"block"}"#),
            ("math", r#"{"fn":"round"}"#),
            ("mod", r#"{"fmod":true}"#),
            ("bitwise", r#"{"kind":"shr"}"#),
            (
                "cumulative",
                r#"{"kind":"prod","axis":-1,"exclusive":true,"reverse":true}"#,
            ),
            (
                "argmax",
                r#"{"axis":1,"keepdims":true,"select_last_index":true}"#,
            ),
            ("argmin", r#"{"axis":-1,"select_last_index":false}"#),
            ("reduce", r#"{"kind":"prod","axes":[0,-1]}"#),
            ("for", r#"{"body":"step","trip_count":50}"#),
        ];
        for (name, attrs) in cases {
            let op = Op::from_attrs(name, serde_json::from_str(attrs).unwrap())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(op.name(), name);
            let json = serde_json::to_string(&op).unwrap();
            let back: Op = serde_json::from_str(&json).unwrap();
            assert_eq!(back, op, "{json}");
            let mut bad: serde_json::Value = serde_json::from_str(attrs).unwrap();
            bad["bogus"] = serde_json::json!(1);
            assert!(
                Op::from_attrs(name, bad).is_err(),
                "{name} accepted an unknown field"
            );
        }
    }
}
