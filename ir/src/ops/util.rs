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
            (Some(Dim::Fixed(1)), Some(y)) => y.clone(),
            (Some(x), Some(Dim::Fixed(1))) => x.clone(),
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
