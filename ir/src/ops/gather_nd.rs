//! `gather_nd`: ONNX GatherND with `batch_dims`.

use super::util::{
    expect_arity, expect_dims_may_equal, expect_int, fixed_dim, normalize_index, op_err,
};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// ONNX GatherND. Operands `(data, indices)`: `data` of rank `r ≥ 1`, `indices` of any integer
/// dtype and rank `q ≥ 1` whose last dim `k` (fixed) is the length of an index tuple. With
/// `b = batch_dims` (`b < min(q, r)`, `1 ≤ k ≤ r − b`), the first `b` dims of `data` and
/// `indices` are batch dims and must be equal; every index tuple `indices[i₀…i_{q−2}, :]`
/// selects the slice `data[i₀…i_{b−1}, t₀…t_{k−1}, …]`. Result: `indices.shape[:-1] +
/// data.shape[b+k:]`, the dtype of `data`.
///
/// Negative tuple entries count from the end of their axis; an entry outside `[-s, s)` is an
/// evaluation error naming the index and the bound. Empty `indices` (or empty slices) give an
/// empty result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatherNd {
    /// Leading dims shared by `data` and `indices` (default 0).
    #[serde(default)]
    pub batch_dims: u64,
}

/// Index tuples resolved against `data` viewed as a matrix `[rows, slice]`: `rows[t]` is the
/// row the `t`-th tuple (row-major over `indices.shape[:-1]`) selects, `slice` the row length
/// (`prod(data.shape[b+k:])`). Shared by [`GatherNd`] (`b = batch_dims`) and
/// [`ScatterNd`](super::scatter_nd::ScatterNd) (`b = 0`).
pub fn index_rows(
    op: &str,
    data_shape: &[usize],
    indices_shape: &[usize],
    indices: &[f64],
    batch_dims: u64,
) -> Result<(Vec<usize>, usize), OpError> {
    let (r, q) = (data_shape.len(), indices_shape.len());
    let b = usize::try_from(batch_dims).unwrap_or(usize::MAX);
    if r == 0 || q == 0 || b >= r.min(q) {
        crate::bail!(
            "{op}: batch_dims {batch_dims} must be less than the ranks of data {data_shape:?} \
             and indices {indices_shape:?} (both >= 1)"
        );
    }
    let k = indices_shape[q - 1];
    if k == 0 || k > r - b {
        crate::bail!(
            "{op}: the index tuple length (last dim of indices {indices_shape:?}) must be in \
             1..={} for data {data_shape:?} and batch_dims {b}, found {k}",
            r - b
        );
    }
    if data_shape[..b] != indices_shape[..b] {
        crate::bail!(
            "{op}: the {b} batch dims of data {data_shape:?} and indices {indices_shape:?} \
             differ"
        );
    }
    if indices.len() != indices_shape.iter().product::<usize>() {
        crate::bail!(
            "{op}: {} index values for shape {indices_shape:?}",
            indices.len()
        );
    }
    let slice: usize = data_shape[b + k..].iter().product();
    // Rows of one batch entry, and the row stride of each tuple component.
    let per_batch: usize = data_shape[b..b + k].iter().product();
    let mut strides = vec![1usize; k];
    for j in (0..k.saturating_sub(1)).rev() {
        strides[j] = strides[j + 1] * data_shape[b + j + 1];
    }
    let tuples_per_batch: usize = indices_shape[b..q - 1].iter().product();
    let mut rows = Vec::with_capacity(indices.len() / k);
    for (t, tuple) in indices.chunks_exact(k).enumerate() {
        let batch = t.checked_div(tuples_per_batch).unwrap_or(0);
        let mut row = batch * per_batch;
        for (j, &raw) in tuple.iter().enumerate() {
            row += normalize_index(op, raw, data_shape[b + j], b + j)? * strides[j];
        }
        rows.push(row);
    }
    Ok((rows, slice))
}

impl GatherNd {
    /// The result shape for concrete operand shapes (unchecked; see [`index_rows`]).
    pub fn result_shape(&self, data_shape: &[usize], indices_shape: &[usize]) -> Vec<usize> {
        let q = indices_shape.len();
        let b = self.batch_dims as usize;
        let k = indices_shape.last().copied().unwrap_or(0);
        let mut out = indices_shape[..q.saturating_sub(1)].to_vec();
        out.extend_from_slice(data_shape.get(b + k..).unwrap_or(&[]));
        out
    }
}

impl OpSpec for GatherNd {
    const NAME: &'static str = "gather_nd";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        let op = Self::NAME;
        expect_arity(op, inputs, 2)?;
        let (d, i) = (&inputs[0], &inputs[1]);
        expect_int(op, "indices operand", i)?;
        let (r, q) = (d.rank(), i.rank());
        let b = usize::try_from(self.batch_dims).unwrap_or(usize::MAX);
        if r == 0 || q == 0 || b >= r.min(q) {
            crate::bail!(
                "{op}: batch_dims {} must be less than the ranks of data {d} and indices {i} \
                 (both >= 1)",
                self.batch_dims
            );
        }
        let k = fixed_dim(
            op,
            "last dim of indices (the index tuple length)",
            &i.shape[q - 1],
        )?;
        if k == 0 || k > (r - b) as u64 {
            crate::bail!(
                "{op}: the index tuple length (last dim of indices {i}) must be in 1..={} for \
                 data {d} and batch_dims {b}, found {k}",
                r - b
            );
        }
        for (x, y) in d.shape[..b].iter().zip(&i.shape[..b]) {
            expect_dims_may_equal(
                op,
                &format!("the batch dims of data {d} and indices {i} differ"),
                x,
                y,
            )?;
        }
        let mut shape = i.shape[..q - 1].to_vec();
        shape.extend(d.shape[b + k as usize..].iter().cloned());
        Ok(vec![TensorType::new(d.dtype, shape)])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity(Self::NAME, inputs, 2)?;
        let (d, idx) = (inputs[0], inputs[1]);
        let (rows, slice) = index_rows(
            Self::NAME,
            d.shape(),
            idx.shape(),
            idx.data(),
            self.batch_dims,
        )?;
        let mut out = Vec::with_capacity(rows.len() * slice);
        for r in rows {
            out.extend_from_slice(&d.data()[r * slice..(r + 1) * slice]);
        }
        let shape = self.result_shape(d.shape(), idx.shape());
        Ok(vec![Tensor::new(d.dtype(), shape, out).map_err(op_err)?])
    }
}

#[cfg(test)]
mod tests {
    use super::GatherNd;
    use crate::dtype::DType;
    use crate::module::Module;
    use crate::ops::testing::{check_exact, eval_op, indices, rand_tensor};
    use crate::ops::{InferCx, Op, OpSpec};
    use crate::tensor::Tensor;
    use crate::types::{Dim, TensorType};
    use proptest::prelude::*;

    fn gnd(batch_dims: u64) -> Op {
        Op::GatherNd(GatherNd { batch_dims })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        /// Naive: for every result position `o`, the tuple is `indices[o[..q-1], :]` and the
        /// data position is `o[..b] ++ tuple ++ o[q-1..]` (read through `Tensor::at`).
        #[test]
        fn matches_naive_per_element(
            dshape in prop::collection::vec(1usize..4, 1..5),
            b in 0usize..3,
            kk in 1usize..4,
            mid in prop::collection::vec(0usize..3, 0..3),
            dt in prop::sample::select(vec![DType::F32, DType::I8, DType::F8E4M3FN]),
            seed in 0u64..1000,
        ) {
            let r = dshape.len();
            prop_assume!(b < r && kk <= r - b);
            let mut ishape = dshape[..b].to_vec();
            ishape.extend_from_slice(&mid);
            ishape.push(kk);
            prop_assume!(b < ishape.len());
            let data = rand_tensor(dt, dshape.clone(), seed);
            let ids = Tensor::from_fn(DType::I64, ishape.clone(), |p| {
                let s = dshape[b + p[p.len() - 1]] as i64;
                let h = p.iter().fold(seed as i64, |h, &x| h * 13 + x as i64 * 3 + 1);
                // In [-s, s).
                (h.rem_euclid(2 * s) - s) as f64
            });
            let out = eval_op(gnd(b as u64), &[data.clone(), ids.clone()]).unwrap();
            let q = ishape.len();
            let mut oshape = ishape[..q - 1].to_vec();
            oshape.extend_from_slice(&dshape[b + kk..]);
            let naive: Vec<f64> = indices(&oshape).into_iter().map(|o| {
                let mut dpos = o[..b].to_vec();
                for j in 0..kk {
                    let mut ip = o[..q - 1].to_vec();
                    ip.push(j);
                    let raw = ids.at(&ip);
                    let s = dshape[b + j] as f64;
                    dpos.push(if raw < 0.0 { raw + s } else { raw } as usize);
                }
                dpos.extend_from_slice(&o[q - 1..]);
                data.at(&dpos)
            }).collect();
            check_exact(&out[0], dt, &oshape, &naive).map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn onnx_examples() {
        let d = Tensor::from_f32(vec![2, 2, 2], &[0., 1., 2., 3., 4., 5., 6., 7.]).unwrap();
        let i32t =
            |shape: Vec<usize>, v: &[f64]| Tensor::new(DType::I64, shape, v.to_vec()).unwrap();
        // test_gathernd_example_float32: indices [[[0,1]],[[1,0]]] → [[[2,3]],[[4,5]]].
        let out = eval_op(gnd(0), &[d.clone(), i32t(vec![2, 1, 2], &[0., 1., 1., 0.])]).unwrap();
        assert_eq!(out[0].shape(), &[2, 1, 2]);
        assert_eq!(out[0].to_f32_vec(), vec![2., 3., 4., 5.]);
        // test_gathernd_example_int32_batch_dim1: indices [[1],[0]] → [[2,3],[4,5]].
        let out = eval_op(gnd(1), &[d.clone(), i32t(vec![2, 1], &[1., 0.])]).unwrap();
        assert_eq!(out[0].shape(), &[2, 2]);
        assert_eq!(out[0].to_f32_vec(), vec![2., 3., 4., 5.]);
        // Full tuples give scalars; negative entries count from the end.
        let out = eval_op(
            gnd(0),
            &[d.clone(), i32t(vec![2, 3], &[1., -1., 0., 0., 0., -1.])],
        )
        .unwrap();
        assert_eq!(out[0].shape(), &[2]);
        assert_eq!(out[0].to_f32_vec(), vec![6., 1.]);
        // batch_dims 2 with full tuples.
        let out = eval_op(gnd(2), &[d, i32t(vec![2, 2, 1], &[1., 0., 0., 1.])]).unwrap();
        assert_eq!(out[0].to_f32_vec(), vec![1., 2., 4., 7.]);
    }

    #[test]
    fn errors_and_empty() {
        let d = rand_tensor(DType::F32, vec![3, 2], 0);
        let i = |shape: Vec<usize>, v: &[f64]| Tensor::new(DType::I64, shape, v.to_vec()).unwrap();
        let e = eval_op(gnd(0), &[d.clone(), i(vec![1, 2], &[3., 0.])])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("index 3 is out of range [-3, 3) for axis 0"),
            "{e}"
        );
        let e = eval_op(gnd(0), &[d.clone(), i(vec![1, 2], &[0., -3.])])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("index -3 is out of range [-2, 2) for axis 1"),
            "{e}"
        );
        let e = eval_op(gnd(0), &[d.clone(), i(vec![1, 3], &[0., 0., 0.])])
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be in 1..=2"), "{e}");
        let e = eval_op(gnd(0), &[d.clone(), Tensor::zeros(DType::I64, vec![2, 0])])
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be in 1..=2"), "{e}");
        let e = eval_op(gnd(1), &[d.clone(), i(vec![2, 1], &[0., 0.])])
            .unwrap_err()
            .to_string();
        assert!(e.contains("batch dims"), "{e}");
        let e = eval_op(gnd(2), &[d.clone(), i(vec![3, 1], &[0., 0., 0.])])
            .unwrap_err()
            .to_string();
        assert!(e.contains("batch_dims 2 must be less"), "{e}");
        let e = eval_op(gnd(0), &[d.clone(), rand_tensor(DType::F32, vec![1, 1], 0)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("integer indices"), "{e}");
        // Empty tuple lists give an empty result.
        let out = eval_op(
            gnd(0),
            &[d.clone(), Tensor::zeros(DType::I64, vec![0, 4, 1])],
        )
        .unwrap();
        assert_eq!(out[0].shape(), &[0, 4, 2]);
        let out = eval_op(
            gnd(0),
            &[
                Tensor::zeros(DType::F32, vec![3, 0]),
                i(vec![2, 1], &[2., -3.]),
            ],
        )
        .unwrap();
        assert_eq!(out[0].shape(), &[2, 0]);
    }

    #[test]
    fn symbolic_shapes() {
        let m = Module::new();
        let cx = InferCx { module: &m };
        let d = TensorType::new(
            DType::F32,
            vec![Dim::sym("B"), Dim::sym("S"), Dim::from(8u64)],
        );
        let i = TensorType::new(
            DType::I64,
            vec![Dim::sym("B"), Dim::sym("N"), Dim::from(1u64)],
        );
        let out = GatherNd { batch_dims: 1 }
            .infer(&cx, &[d.clone(), i])
            .unwrap();
        assert_eq!(out[0].to_string(), "f32[B,N,8]");
        let i = TensorType::new(DType::I64, vec![Dim::sym("N"), Dim::sym("K")]);
        let e = GatherNd { batch_dims: 0 }
            .infer(&cx, &[d, i])
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs a fixed last dim of indices"), "{e}");
    }
}
