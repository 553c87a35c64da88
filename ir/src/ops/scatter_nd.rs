//! `scatter_nd`: ONNX ScatterND with `reduction`.

use super::gather_nd::index_rows;
use super::scatter_elements::ScatterReduction;
use super::util::{expect_arity, expect_dims_may_equal, expect_int, fixed_dim, join, op_err};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// ONNX ScatterND. Operands `(data, indices, updates)`: `data` of rank `r ≥ 1`; `indices` of
/// any integer dtype and rank `q ≥ 1` whose last dim `k` (fixed, `1 ≤ k ≤ r`) is the length of
/// an index tuple; `updates` of `data`'s dtype and shape `indices.shape[:-1] + data.shape[k:]`.
/// The result is `data` with, for every tuple `t = indices[i, :]` in row-major order of `i`,
/// the slice `out[t₀…t_{k−1}, …] = combine(that slice, updates[i, …])` element-wise (see
/// [`ScatterReduction`]; duplicate tuples with `none`, undefined in ONNX: the last one wins).
/// Values are combined in `f64` and the result is rounded once to the dtype.
///
/// Negative tuple entries count from the end of their axis (as in GatherND); an entry outside
/// `[-s, s)` is an evaluation error naming the index and the bound. Empty `indices` leave
/// `data` unchanged.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScatterNd {
    /// How updates combine with `data` (default `none`: replace).
    #[serde(default)]
    pub reduction: ScatterReduction,
}

impl ScatterNd {
    /// The destination rows of `data` viewed as `[rows, slice]`, one per index tuple in
    /// row-major order, and the slice length, after checking shapes and indices.
    pub fn destination_rows(
        &self,
        data_shape: &[usize],
        indices_shape: &[usize],
        indices: &[f64],
        updates_shape: &[usize],
    ) -> Result<(Vec<usize>, usize), OpError> {
        let (rows, slice) = index_rows(Self::NAME, data_shape, indices_shape, indices, 0)?;
        let q = indices_shape.len();
        let k = indices_shape[q - 1];
        let mut want = indices_shape[..q - 1].to_vec();
        want.extend_from_slice(&data_shape[k..]);
        if updates_shape != want {
            crate::bail!(
                "{}: updates {updates_shape:?} must have the shape {want:?} (indices \
                 {indices_shape:?} without the last dim, then data {data_shape:?} from axis {k})",
                Self::NAME
            );
        }
        Ok((rows, slice))
    }
}

impl OpSpec for ScatterNd {
    const NAME: &'static str = "scatter_nd";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        let op = Self::NAME;
        expect_arity(op, inputs, 3)?;
        let (d, i, u) = (&inputs[0], &inputs[1], &inputs[2]);
        expect_int(op, "indices operand", i)?;
        if u.dtype != d.dtype {
            crate::bail!("{op}: updates {u} must have the dtype of data {d} (insert a cast)");
        }
        let (r, q) = (d.rank(), i.rank());
        if r == 0 || q == 0 {
            crate::bail!("{op} expects data and indices of rank >= 1, found {d} and {i}");
        }
        let k = fixed_dim(
            op,
            "last dim of indices (the index tuple length)",
            &i.shape[q - 1],
        )?;
        if k == 0 || k > r as u64 {
            crate::bail!(
                "{op}: the index tuple length (last dim of indices {i}) must be in 1..={r} for \
                 data {d}, found {k}"
            );
        }
        let mut want = i.shape[..q - 1].to_vec();
        want.extend(d.shape[k as usize..].iter().cloned());
        let msg = format!("updates {u} must have the shape [{}]", join(&want));
        if u.rank() != want.len() {
            crate::bail!("{op}: {msg}");
        }
        for (x, y) in u.shape.iter().zip(&want) {
            expect_dims_may_equal(op, &msg, x, y)?;
        }
        Ok(vec![d.clone()])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity(Self::NAME, inputs, 3)?;
        let (d, idx, upd) = (inputs[0], inputs[1], inputs[2]);
        let (rows, slice) =
            self.destination_rows(d.shape(), idx.shape(), idx.data(), upd.shape())?;
        let mut out = d.data().to_vec();
        for (t, &r) in rows.iter().enumerate() {
            for s in 0..slice {
                let o = r * slice + s;
                out[o] = self.reduction.combine(out[o], upd.data()[t * slice + s]);
            }
        }
        Ok(vec![
            Tensor::new(d.dtype(), d.shape().to_vec(), out).map_err(op_err)?
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::ScatterNd;
    use crate::dtype::DType;
    use crate::module::Module;
    use crate::ops::scatter_elements::ScatterReduction;
    use crate::ops::testing::{check_rounded, eval_op, indices, rand_tensor};
    use crate::ops::{InferCx, Op, OpSpec};
    use crate::tensor::Tensor;
    use crate::types::{Dim, TensorType};
    use proptest::prelude::*;

    fn snd(reduction: ScatterReduction) -> Op {
        Op::ScatterNd(ScatterNd { reduction })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        /// Naive: every data position pulls, in row-major order of the tuples, the update
        /// elements whose tuple (wrapped) equals its leading `k` coordinates.
        #[test]
        fn matches_naive_pull(
            dshape in prop::collection::vec(1usize..4, 1..4),
            kk in 1usize..4,
            lead in prop::collection::vec(0usize..4, 0..3),
            red in prop::sample::select(vec![ScatterReduction::None, ScatterReduction::Add,
                ScatterReduction::Mul, ScatterReduction::Max, ScatterReduction::Min]),
            dt in prop::sample::select(vec![DType::F32, DType::BF16, DType::I8]),
            seed in 0u64..1000,
        ) {
            prop_assume!(kk <= dshape.len());
            let mut ishape = lead.clone();
            ishape.push(kk);
            let mut ushape = lead.clone();
            ushape.extend_from_slice(&dshape[kk..]);
            let data = rand_tensor(dt, dshape.clone(), seed);
            let upd = rand_tensor(dt, ushape.clone(), seed + 7);
            let ids = Tensor::from_fn(DType::I32, ishape.clone(), |p| {
                let s = dshape[p[p.len() - 1]] as i64;
                let h = p.iter().fold(seed as i64, |h, &x| h * 7 + x as i64 * 5 + 2);
                (h.rem_euclid(2 * s) - s) as f64
            });
            let out = eval_op(snd(red), &[data.clone(), ids.clone(), upd.clone()]).unwrap();
            let naive: Vec<f64> = indices(&dshape).into_iter().map(|pos| {
                let mut v = data.at(&pos);
                for t in indices(&lead) {
                    let hit = (0..kk).all(|j| {
                        let mut ip = t.clone();
                        ip.push(j);
                        let raw = ids.at(&ip);
                        let s = dshape[j] as f64;
                        (if raw < 0.0 { raw + s } else { raw }) as usize == pos[j]
                    });
                    if hit {
                        let mut up = t.clone();
                        up.extend_from_slice(&pos[kk..]);
                        let u = upd.at(&up);
                        v = match red {
                            ScatterReduction::None => u,
                            ScatterReduction::Add => v + u,
                            ScatterReduction::Mul => v * u,
                            _ if v.is_nan() || u.is_nan() => f64::NAN,
                            ScatterReduction::Max => if u > v { u } else { v },
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
        // test_scatternd: data [4,4,4], indices [[0],[2]], updates [2,4,4].
        let d = Tensor::from_fn(DType::F32, vec![4, 4, 4], |p| {
            (p[0] * 16 + p[1] * 4 + p[2]) as f64
        });
        let i = Tensor::new(DType::I64, vec![2, 1], vec![0., 2.]).unwrap();
        let u = Tensor::from_fn(DType::F32, vec![2, 4, 4], |p| {
            100.0 + (p[0] * 16 + p[1] * 4 + p[2]) as f64
        });
        let out = eval_op(snd(ScatterReduction::None), &[d.clone(), i, u.clone()]).unwrap();
        assert_eq!(out[0].at(&[0, 1, 2]), 106.0);
        assert_eq!(out[0].at(&[1, 1, 2]), 22.0);
        assert_eq!(out[0].at(&[2, 3, 3]), 131.0);
        // test_scatternd_add with duplicate tuples: both updates accumulate.
        let i = Tensor::new(DType::I64, vec![2, 1], vec![0., 0.]).unwrap();
        let out = eval_op(
            snd(ScatterReduction::Add),
            &[d.clone(), i.clone(), u.clone()],
        )
        .unwrap();
        assert_eq!(out[0].at(&[0, 0, 1]), 1.0 + 101.0 + 117.0);
        // Duplicates with `none`: the last tuple wins.
        let out = eval_op(snd(ScatterReduction::None), &[d.clone(), i, u]).unwrap();
        assert_eq!(out[0].at(&[0, 0, 1]), 117.0);
        // Full tuples (k = r) scatter scalars; negative entries count from the end.
        let i = Tensor::new(DType::I64, vec![2, 3], vec![-1., -1., -1., 0., 0., 0.]).unwrap();
        let u = Tensor::from_f32(vec![2], &[-5., -6.]).unwrap();
        let out = eval_op(snd(ScatterReduction::Min), &[d, i, u]).unwrap();
        assert_eq!(out[0].at(&[3, 3, 3]), -5.0);
        assert_eq!(out[0].at(&[0, 0, 0]), -6.0);
    }

    #[test]
    fn errors_and_empty() {
        let d = rand_tensor(DType::F32, vec![3, 2], 0);
        let red = ScatterReduction::None;
        let i = |shape: Vec<usize>, v: &[f64]| Tensor::new(DType::I64, shape, v.to_vec()).unwrap();
        let e = eval_op(
            snd(red),
            &[
                d.clone(),
                i(vec![1, 1], &[3.]),
                rand_tensor(DType::F32, vec![1, 2], 1),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("index 3 is out of range [-3, 3) for axis 0"),
            "{e}"
        );
        let e = eval_op(
            snd(red),
            &[
                d.clone(),
                i(vec![1, 1], &[0.]),
                rand_tensor(DType::F32, vec![1, 3], 1),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("must have the shape [1,2]"), "{e}");
        let e = eval_op(
            snd(red),
            &[
                d.clone(),
                i(vec![1, 3], &[0., 0., 0.]),
                rand_tensor(DType::F32, vec![1], 1),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("must be in 1..=2"), "{e}");
        let e = eval_op(
            snd(red),
            &[
                d.clone(),
                i(vec![1, 1], &[0.]),
                rand_tensor(DType::F16, vec![1, 2], 1),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("dtype of data"), "{e}");
        // No tuples: data unchanged.
        let out = eval_op(
            snd(ScatterReduction::Add),
            &[
                d.clone(),
                Tensor::zeros(DType::I64, vec![0, 1]),
                Tensor::zeros(DType::F32, vec![0, 2]),
            ],
        )
        .unwrap();
        assert_eq!(out[0], d);
    }

    #[test]
    fn symbolic_shapes() {
        let m = Module::new();
        let cx = InferCx { module: &m };
        // A KV-cache write: cache [B,H,S,D], tuples [B,H,1,3], updates [B,H,1,D].
        let s = |v: &[&str]| -> Vec<Dim> {
            v.iter()
                .map(|x| {
                    x.parse::<u64>()
                        .map(Dim::from)
                        .unwrap_or_else(|_| Dim::sym(x))
                })
                .collect()
        };
        let d = TensorType::new(DType::F32, s(&["B", "H", "S", "64"]));
        let i = TensorType::new(DType::I64, s(&["B", "H", "1", "3"]));
        let u = TensorType::new(DType::F32, s(&["B", "H", "1", "64"]));
        let out = ScatterNd::default()
            .infer(&cx, &[d.clone(), i.clone(), u])
            .unwrap();
        assert_eq!(out[0], d);
        let u = TensorType::new(DType::F32, s(&["B", "H", "1", "32"]));
        let e = ScatterNd::default()
            .infer(&cx, &[d, i, u])
            .unwrap_err()
            .to_string();
        assert!(e.contains("must have the shape [B,H,1,64]"), "{e}");
    }
}
