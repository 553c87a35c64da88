//! `gather_elements`: ONNX GatherElements (PyTorch `gather`, numpy `take_along_axis`).

use super::util::{expect_arity, expect_int, next_index, normalize_axis, normalize_index, op_err};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::{strides_of, Tensor};
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// ONNX GatherElements. Operands `(data, indices)` of equal rank (≥ 1); `indices` of any integer
/// dtype. The result has the shape of `indices` and the dtype of `data`:
/// `out[p] = data[p with p[axis] replaced by indices[p]]`, e.g. for rank 3 and `axis = 1`,
/// `out[i][j][k] = data[i][indices[i][j][k]][k]`.
///
/// - Negative indices count from the end of `axis`; an index outside `[-n, n)` (`n` =
///   `data.shape[axis]`) is an evaluation error naming the index and the bound.
/// - On the other axes `indices` may be smaller than `data` (PyTorch and onnxruntime accept
///   this; ONNX's reference requires equal sizes, a special case): a larger size is an error
///   (at type inference when both sizes are fixed, else at evaluation).
/// - Empty `indices` give an empty result whatever `data` holds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatherElements {
    /// The axis of `data` that `indices` index (negative counts from the end; default 0).
    #[serde(default)]
    pub axis: i64,
}

impl GatherElements {
    /// The flat row-major offset into `data` of every result element (in row-major order),
    /// after checking shapes and indices: the whole op is `out[p] = data[offsets[p]]`.
    pub fn source_offsets(
        &self,
        data_shape: &[usize],
        indices_shape: &[usize],
        indices: &[f64],
    ) -> Result<Vec<usize>, OpError> {
        element_offsets(Self::NAME, self.axis, data_shape, indices_shape, indices)
    }
}

/// The flat row-major offset into `data` (of shape `data_shape`) of every element of `indices`
/// (in row-major order), `indices` replacing the position on `axis`: the addressing shared by
/// `gather_elements` and `scatter_elements`. Checks the ranks, the sizes off `axis` and every
/// index; `op` names the op in errors.
pub(crate) fn element_offsets(
    op: &str,
    axis: i64,
    data_shape: &[usize],
    indices_shape: &[usize],
    indices: &[f64],
) -> Result<Vec<usize>, OpError> {
    let rank = data_shape.len();
    if indices_shape.len() != rank {
        crate::bail!("{op}: indices {indices_shape:?} must have the rank of data {data_shape:?}");
    }
    let ax = normalize_axis(op, axis, rank)?;
    for (k, (&i, &d)) in indices_shape.iter().zip(data_shape).enumerate() {
        if k != ax && i > d {
            crate::bail!(
                "{op}: indices {indices_shape:?} are larger than data {data_shape:?} on \
                 axis {k} (only axis {ax} is indexed)"
            );
        }
    }
    let n: usize = indices_shape.iter().product();
    if indices.len() != n {
        crate::bail!(
            "{op}: {} index values for shape {indices_shape:?}",
            indices.len()
        );
    }
    let strides = strides_of(data_shape);
    let mut pos = vec![0usize; rank];
    let mut out = Vec::with_capacity(n);
    for &raw in indices {
        let j = normalize_index(op, raw, data_shape[ax], ax)?;
        let off: usize = (0..rank)
            .map(|k| (if k == ax { j } else { pos[k] }) * strides[k])
            .sum();
        out.push(off);
        next_index(&mut pos, indices_shape);
    }
    Ok(out)
}

impl OpSpec for GatherElements {
    const NAME: &'static str = "gather_elements";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        expect_arity(Self::NAME, inputs, 2)?;
        let (d, i) = (&inputs[0], &inputs[1]);
        expect_int(Self::NAME, "indices operand", i)?;
        if d.rank() == 0 || i.rank() != d.rank() {
            crate::bail!(
                "{} expects data of rank >= 1 and indices of the same rank, found {d} and {i}",
                Self::NAME
            );
        }
        let ax = normalize_axis(Self::NAME, self.axis, d.rank())?;
        for (k, (id, dd)) in i.shape.iter().zip(&d.shape).enumerate() {
            if let (Some(a), Some(b)) = (id.fixed(), dd.fixed()) {
                if k != ax && a > b {
                    crate::bail!(
                        "{}: indices {i} are larger than data {d} on axis {k} (only axis {ax} \
                         is indexed)",
                        Self::NAME
                    );
                }
            }
        }
        Ok(vec![TensorType::new(d.dtype, i.shape.clone())])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity(Self::NAME, inputs, 2)?;
        let (d, idx) = (inputs[0], inputs[1]);
        let offs = self.source_offsets(d.shape(), idx.shape(), idx.data())?;
        let out = offs.iter().map(|&o| d.data()[o]).collect();
        Ok(vec![
            Tensor::new(d.dtype(), idx.shape().to_vec(), out).map_err(op_err)?
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::GatherElements;
    use crate::dtype::DType;
    use crate::module::Module;
    use crate::ops::testing::{check_exact, eval_op, indices, rand_tensor};
    use crate::ops::{InferCx, Op, OpSpec};
    use crate::tensor::Tensor;
    use crate::types::{Dim, TensorType};
    use proptest::prelude::*;

    fn ge(axis: i64) -> Op {
        Op::GatherElements(GatherElements { axis })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Naive: for every result position, copy it, overwrite the axis coordinate with the
        /// (wrapped) index and read `data` there through `Tensor::at`.
        #[test]
        fn matches_naive_take_along_axis(
            dshape in prop::collection::vec(1usize..5, 1..4),
            axis in -3i64..3,
            shrink in prop::collection::vec(0usize..2, 3),
            ilen in 0usize..6,
            dt in prop::sample::select(vec![DType::F32, DType::BF16, DType::I32, DType::Bool]),
            it in prop::sample::select(vec![DType::I64, DType::I32, DType::I8]),
            seed in 0u64..1000,
        ) {
            let rank = dshape.len() as i64;
            prop_assume!(axis >= -rank && axis < rank);
            let a = axis.rem_euclid(rank) as usize;
            let n = dshape[a];
            let ishape: Vec<usize> = dshape.iter().enumerate()
                .map(|(k, &d)| if k == a { ilen } else { d.saturating_sub(shrink[k]) })
                .collect();
            let data = rand_tensor(dt, dshape.clone(), seed);
            // In-range indices, positive and negative.
            let ids = Tensor::from_fn(it, ishape.clone(), |p| {
                let h = p.iter().fold(seed as usize, |h, &x| h * 31 + x * 7 + 3);
                let k = (h % (2 * n)) as f64;
                if k < n as f64 { k } else { k - 2.0 * n as f64 }
            });
            let out = eval_op(ge(axis), &[data.clone(), ids.clone()]).unwrap();
            let naive: Vec<f64> = indices(&ishape).into_iter().map(|p| {
                let raw = ids.at(&p);
                let mut q = p.clone();
                q[a] = if raw < 0.0 { (raw + n as f64) as usize } else { raw as usize };
                data.at(&q)
            }).collect();
            check_exact(&out[0], dt, &ishape, &naive).map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn onnx_examples() {
        // ONNX test_gather_elements_0 / _1 / _negative_indices.
        let d = Tensor::from_f32(vec![2, 2], &[1., 2., 3., 4.]).unwrap();
        let i = Tensor::new(DType::I64, vec![2, 2], vec![0., 0., 1., 0.]).unwrap();
        let out = eval_op(ge(1), &[d, i]).unwrap();
        assert_eq!(out[0].data(), &[1., 1., 4., 3.]);
        let d = Tensor::from_f32(vec![3, 3], &[1., 2., 3., 4., 5., 6., 7., 8., 9.]).unwrap();
        let i = Tensor::new(DType::I32, vec![2, 3], vec![1., 2., 0., 2., 0., 0.]).unwrap();
        let out = eval_op(ge(0), &[d.clone(), i]).unwrap();
        assert_eq!(out[0].data(), &[4., 8., 3., 7., 2., 3.]);
        let i = Tensor::new(DType::I32, vec![2, 3], vec![-1., -2., 0., -2., 0., 0.]).unwrap();
        let out = eval_op(ge(0), &[d, i]).unwrap();
        assert_eq!(out[0].data(), &[7., 5., 3., 4., 2., 3.]);
    }

    #[test]
    fn errors_and_empty() {
        let d = rand_tensor(DType::F32, vec![3, 2], 0);
        // Out of range, both signs: the message names the index and the bound.
        for bad in [3.0, -4.0] {
            let i = Tensor::new(DType::I64, vec![1, 2], vec![0.0, bad]).unwrap();
            let e = eval_op(ge(0), &[d.clone(), i]).unwrap_err().to_string();
            assert!(
                e.contains(&format!("index {bad} is out of range [-3, 3)")),
                "{e}"
            );
        }
        // Float indices, rank mismatch, larger non-axis dim.
        let e = eval_op(ge(0), &[d.clone(), rand_tensor(DType::F32, vec![1, 2], 0)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("integer indices"), "{e}");
        let e = eval_op(ge(0), &[d.clone(), Tensor::zeros(DType::I64, vec![2])])
            .unwrap_err()
            .to_string();
        assert!(e.contains("same rank"), "{e}");
        let e = eval_op(ge(0), &[d.clone(), Tensor::zeros(DType::I64, vec![1, 3])])
            .unwrap_err()
            .to_string();
        assert!(e.contains("larger than data"), "{e}");
        let e = eval_op(ge(2), &[d.clone(), Tensor::zeros(DType::I64, vec![1, 1])])
            .unwrap_err()
            .to_string();
        assert!(e.contains("out of range for rank 2"), "{e}");
        // Empty indices: empty result; an empty axis with indices: out of range.
        let out = eval_op(ge(1), &[d.clone(), Tensor::zeros(DType::I64, vec![3, 0])]).unwrap();
        assert_eq!(out[0].shape(), &[3, 0]);
        let e = eval_op(
            ge(1),
            &[
                Tensor::zeros(DType::F32, vec![2, 0]),
                Tensor::zeros(DType::I64, vec![2, 1]),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("out of range [-0, 0)"), "{e}");
    }

    #[test]
    fn symbolic_shapes() {
        let m = Module::new();
        let cx = InferCx { module: &m };
        let d = TensorType::new(DType::F16, vec![Dim::sym("B"), Dim::sym("S")]);
        let i = TensorType::new(DType::I64, vec![Dim::sym("B"), Dim::from(1u64)]);
        let out = GatherElements { axis: -1 }.infer(&cx, &[d, i]).unwrap();
        assert_eq!(out[0].to_string(), "f16[B,1]");
    }
}
