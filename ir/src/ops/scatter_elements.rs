//! `scatter_elements`: ONNX ScatterElements (PyTorch `scatter` / `scatter_reduce`).

use super::util::{expect_arity, expect_dims_may_equal, expect_int, normalize_axis, op_err};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// How a scatter combines an update with the value already at its destination (ONNX's
/// `reduction` attribute of ScatterElements and ScatterND).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScatterReduction {
    /// The update replaces the value (default). Where several updates hit one destination
    /// (ONNX leaves this undefined) they are applied in row-major order of the updates: the
    /// last one wins.
    #[default]
    None,
    /// `old + update`.
    Add,
    /// `old · update`.
    Mul,
    /// `max(old, update)`; NaN propagates (numpy `maximum`).
    Max,
    /// `min(old, update)`; NaN propagates (numpy `minimum`).
    Min,
}

impl ScatterReduction {
    /// Combine the value at a destination with one update (in `f64`).
    pub fn combine(self, old: f64, update: f64) -> f64 {
        match self {
            ScatterReduction::None => update,
            ScatterReduction::Add => old + update,
            ScatterReduction::Mul => old * update,
            ScatterReduction::Max | ScatterReduction::Min if old.is_nan() || update.is_nan() => {
                f64::NAN
            }
            ScatterReduction::Max => old.max(update),
            ScatterReduction::Min => old.min(update),
        }
    }
}

/// ONNX ScatterElements. Operands `(data, indices, updates)`, all of one rank (≥ 1); `indices`
/// of any integer dtype and shaped like `updates`; `updates` of `data`'s dtype. The result is
/// `data` with, for every position `p` of `updates` in row-major order,
/// `out[p with p[axis] replaced by indices[p]] = combine(that value, updates[p])` (see
/// [`ScatterReduction`]; duplicates with `none`: the last update wins). Values are combined in
/// `f64` and the result is rounded once to the dtype.
///
/// - Negative indices count from the end of `axis`; an index outside `[-n, n)` is an
///   evaluation error naming the index and the bound.
/// - On the other axes `indices`/`updates` may be smaller than `data`, not larger.
/// - Empty `updates` leave `data` unchanged.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScatterElements {
    /// The axis of `data` that `indices` index (negative counts from the end; default 0).
    #[serde(default)]
    pub axis: i64,
    /// How updates combine with `data` (default `none`: replace).
    #[serde(default)]
    pub reduction: ScatterReduction,
}

impl ScatterElements {
    /// The flat row-major offset into `data` that each update (in row-major order) goes to,
    /// after checking shapes and indices.
    pub fn destination_offsets(
        &self,
        data_shape: &[usize],
        indices_shape: &[usize],
        indices: &[f64],
        updates_shape: &[usize],
    ) -> Result<Vec<usize>, OpError> {
        let op = Self::NAME;
        if indices_shape != updates_shape {
            crate::bail!(
                "{op}: updates {updates_shape:?} must be shaped like indices {indices_shape:?}"
            );
        }
        super::gather_elements::element_offsets(op, self.axis, data_shape, indices_shape, indices)
    }
}

impl OpSpec for ScatterElements {
    const NAME: &'static str = "scatter_elements";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        let op = Self::NAME;
        expect_arity(op, inputs, 3)?;
        let (d, i, u) = (&inputs[0], &inputs[1], &inputs[2]);
        expect_int(op, "indices operand", i)?;
        if u.dtype != d.dtype {
            crate::bail!("{op}: updates {u} must have the dtype of data {d} (insert a cast)");
        }
        if d.rank() == 0 || i.rank() != d.rank() || u.rank() != d.rank() {
            crate::bail!(
                "{op} expects data of rank >= 1 and indices and updates of the same rank, \
                 found {d}, {i} and {u}"
            );
        }
        let ax = normalize_axis(op, self.axis, d.rank())?;
        for (k, ((id, ud), dd)) in i.shape.iter().zip(&u.shape).zip(&d.shape).enumerate() {
            expect_dims_may_equal(
                op,
                &format!("updates {u} must be shaped like indices {i}"),
                id,
                ud,
            )?;
            if let (Some(a), Some(b)) = (id.fixed(), dd.fixed()) {
                if k != ax && a > b {
                    crate::bail!(
                        "{op}: indices {i} are larger than data {d} on axis {k} (only axis \
                         {ax} is indexed)"
                    );
                }
            }
        }
        Ok(vec![d.clone()])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity(Self::NAME, inputs, 3)?;
        let (d, idx, upd) = (inputs[0], inputs[1], inputs[2]);
        let dest = self.destination_offsets(d.shape(), idx.shape(), idx.data(), upd.shape())?;
        let mut out = d.data().to_vec();
        for (&o, &u) in dest.iter().zip(upd.data()) {
            out[o] = self.reduction.combine(out[o], u);
        }
        Ok(vec![
            Tensor::new(d.dtype(), d.shape().to_vec(), out).map_err(op_err)?
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::{ScatterElements, ScatterReduction};
    use crate::dtype::DType;
    use crate::module::Module;
    use crate::ops::testing::{check_rounded, eval_op, indices, rand_tensor};
    use crate::ops::{InferCx, Op, OpSpec};
    use crate::tensor::Tensor;
    use crate::types::{Dim, TensorType};
    use proptest::prelude::*;

    fn se(axis: i64, reduction: ScatterReduction) -> Op {
        Op::ScatterElements(ScatterElements { axis, reduction })
    }

    const ALL: [ScatterReduction; 5] = [
        ScatterReduction::None,
        ScatterReduction::Add,
        ScatterReduction::Mul,
        ScatterReduction::Max,
        ScatterReduction::Min,
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Naive: for every data position, walk all updates in row-major order and fold the
        /// ones whose destination is that position (written as a pull, not a push).
        #[test]
        fn matches_naive_pull(
            dshape in prop::collection::vec(1usize..5, 1..4),
            axis in -3i64..3,
            shrink in prop::collection::vec(0usize..2, 3),
            ilen in 0usize..7,
            red in prop::sample::select(ALL.to_vec()),
            dt in prop::sample::select(vec![DType::F32, DType::F16, DType::I32]),
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
            let upd = rand_tensor(dt, ishape.clone(), seed + 1);
            // Indices with many duplicates, both signs.
            let ids = Tensor::from_fn(DType::I64, ishape.clone(), |p| {
                let h = p.iter().fold(seed as usize, |h, &x| h * 17 + x * 5 + 1);
                let k = (h % (2 * n)) as f64;
                if k < n as f64 { k } else { k - 2.0 * n as f64 }
            });
            let out = eval_op(se(axis, red), &[data.clone(), ids.clone(), upd.clone()]).unwrap();
            let wrap = |raw: f64| if raw < 0.0 { (raw + n as f64) as usize } else { raw as usize };
            let naive: Vec<f64> = indices(&dshape).into_iter().map(|q| {
                let mut v = data.at(&q);
                for p in indices(&ishape) {
                    let hits = (0..q.len()).all(|k| if k == a { wrap(ids.at(&p)) == q[k] } else { p[k] == q[k] });
                    if hits {
                        let u = upd.at(&p);
                        v = match red {
                            ScatterReduction::None => u,
                            ScatterReduction::Add => v + u,
                            ScatterReduction::Mul => v * u,
                            ScatterReduction::Max if v.is_nan() || u.is_nan() => f64::NAN,
                            ScatterReduction::Max => if u > v { u } else { v },
                            ScatterReduction::Min if v.is_nan() || u.is_nan() => f64::NAN,
                            ScatterReduction::Min => if u < v { u } else { v },
                        };
                    }
                }
                v
            }).collect();
            check_rounded(&out[0], dt, &dshape, &naive).map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn onnx_examples() {
        // ONNX test_scatter_elements_with_axis / _with_duplicate_indices (add) /
        // _with_negative_indices / _with_reduction_max.
        let d = Tensor::from_f32(vec![1, 5], &[1., 2., 3., 4., 5.]).unwrap();
        let i = Tensor::new(DType::I64, vec![1, 2], vec![1., 3.]).unwrap();
        let u = Tensor::from_f32(vec![1, 2], &[1.1, 2.1]).unwrap();
        let out = eval_op(se(1, ScatterReduction::None), &[d.clone(), i, u.clone()]).unwrap();
        assert_eq!(out[0].to_f32_vec(), vec![1., 1.1, 3., 2.1, 5.]);
        let i = Tensor::new(DType::I64, vec![1, 2], vec![1., 1.]).unwrap();
        let out = eval_op(
            se(1, ScatterReduction::Add),
            &[d.clone(), i.clone(), u.clone()],
        )
        .unwrap();
        assert_eq!(out[0].to_f32_vec(), vec![1., 5.2, 3., 4., 5.]);
        // Duplicates with `none`: the last update in row-major order wins.
        let out = eval_op(
            se(1, ScatterReduction::None),
            &[d.clone(), i.clone(), u.clone()],
        )
        .unwrap();
        assert_eq!(out[0].to_f32_vec(), vec![1., 2.1, 3., 4., 5.]);
        let out = eval_op(se(1, ScatterReduction::Max), &[d.clone(), i, u.clone()]).unwrap();
        assert_eq!(out[0].to_f32_vec(), vec![1., 2.1, 3., 4., 5.]);
        let i = Tensor::new(DType::I64, vec![1, 2], vec![1., -3.]).unwrap();
        let out = eval_op(se(1, ScatterReduction::None), &[d, i, u]).unwrap();
        assert_eq!(out[0].to_f32_vec(), vec![1., 1.1, 2.1, 4., 5.]);
        // NaN propagates through max/min.
        let d = Tensor::from_f32(vec![2], &[1., f32::NAN]).unwrap();
        let i = Tensor::new(DType::I32, vec![2], vec![0., 1.]).unwrap();
        let u = Tensor::from_f32(vec![2], &[f32::NAN, 3.]).unwrap();
        let out = eval_op(se(0, ScatterReduction::Min), &[d, i, u]).unwrap();
        assert!(out[0].data().iter().all(|v| v.is_nan()));
    }

    #[test]
    fn errors_and_empty() {
        let d = rand_tensor(DType::F32, vec![3, 2], 0);
        let u = rand_tensor(DType::F32, vec![1, 2], 1);
        let red = ScatterReduction::None;
        for bad in [3.0, -4.0] {
            let i = Tensor::new(DType::I64, vec![1, 2], vec![0.0, bad]).unwrap();
            let e = eval_op(se(0, red), &[d.clone(), i, u.clone()])
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("index {bad} is out of range [-3, 3)")),
                "{e}"
            );
        }
        let i = Tensor::zeros(DType::I64, vec![1, 2]);
        let e = eval_op(
            se(0, red),
            &[d.clone(), i.clone(), rand_tensor(DType::F32, vec![2, 2], 1)],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("must be shaped like indices"), "{e}");
        let e = eval_op(
            se(0, red),
            &[d.clone(), i.clone(), rand_tensor(DType::F16, vec![1, 2], 1)],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("dtype of data"), "{e}");
        let e = eval_op(
            se(0, red),
            &[
                d.clone(),
                Tensor::zeros(DType::I64, vec![1, 3]),
                rand_tensor(DType::F32, vec![1, 3], 1),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("larger than data"), "{e}");
        // Empty updates leave data as it is.
        let out = eval_op(
            se(1, ScatterReduction::Mul),
            &[
                d.clone(),
                Tensor::zeros(DType::I64, vec![3, 0]),
                Tensor::zeros(DType::F32, vec![3, 0]),
            ],
        )
        .unwrap();
        assert_eq!(out[0], d);
        // Unknown reduction names are rejected.
        let r: Result<ScatterElements, _> =
            serde_json::from_str(r#"{"axis":0,"reduction":"mean"}"#);
        assert!(r.is_err());
        let s: ScatterElements = serde_json::from_str("{}").unwrap();
        assert_eq!(s.reduction, ScatterReduction::None);
    }

    #[test]
    fn symbolic_shapes() {
        let m = Module::new();
        let cx = InferCx { module: &m };
        let d = TensorType::new(DType::F32, vec![Dim::sym("B"), Dim::from(8u64)]);
        let i = TensorType::new(DType::I64, vec![Dim::sym("B"), Dim::sym("K")]);
        let u = TensorType::new(DType::F32, vec![Dim::sym("B"), Dim::sym("K")]);
        let op = ScatterElements {
            axis: 1,
            reduction: ScatterReduction::Add,
        };
        let out = op.infer(&cx, &[d.clone(), i, u]).unwrap();
        assert_eq!(out[0], d);
        let i = TensorType::new(DType::I64, vec![Dim::sym("B"), Dim::from(2u64)]);
        let u = TensorType::new(DType::F32, vec![Dim::sym("B"), Dim::from(3u64)]);
        let e = op.infer(&cx, &[d, i, u]).unwrap_err().to_string();
        assert!(e.contains("must be shaped like indices"), "{e}");
    }
}
