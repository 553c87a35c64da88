//! `matmul`: batched matrix product with numpy broadcasting of the batch dims.

use super::util::{
    broadcast_dims, broadcast_shapes, broadcast_strides, expect_arity, expect_numeric, join,
    op_err, same_dtype,
};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::{strides_of, Tensor};
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// `a[..., M, K] · b[..., K, N] → [..., M, N]`; batch dims broadcast; accumulation in f64,
/// one rounding to the dtype at the end.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatMul {}

/// Columns of `b` per cache block in [`MatMul`]'s evaluation (`k × 128` f64 values: 576 KiB
/// for k = 576).
const COLS: usize = 128;

impl OpSpec for MatMul {
    const NAME: &'static str = "matmul";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        expect_arity(Self::NAME, inputs, 2)?;
        let d = same_dtype(Self::NAME, inputs)?;
        expect_numeric(Self::NAME, "operand", &inputs[0])?;
        let (a, b) = (&inputs[0].shape, &inputs[1].shape);
        if a.len() < 2 || b.len() < 2 {
            crate::bail!(
                "matmul needs operands of rank >= 2, found [{}] and [{}]",
                join(a),
                join(b)
            );
        }
        let (m, ka) = (&a[a.len() - 2], &a[a.len() - 1]);
        let (kb, n) = (&b[b.len() - 2], &b[b.len() - 1]);
        if ka != kb {
            crate::bail!(
                "matmul contraction dims differ: [{}] · [{}] ({ka} vs {kb})",
                join(a),
                join(b)
            );
        }
        let mut shape = broadcast_dims(Self::NAME, &a[..a.len() - 2], &b[..b.len() - 2])?;
        shape.push(m.clone());
        shape.push(n.clone());
        Ok(vec![TensorType::new(d, shape)])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity(Self::NAME, inputs, 2)?;
        let (a, b) = (inputs[0], inputs[1]);
        let (ra, rb) = (a.rank(), b.rank());
        if ra < 2 || rb < 2 {
            crate::bail!("matmul needs rank >= 2 operands");
        }
        let (m, k) = (a.shape()[ra - 2], a.shape()[ra - 1]);
        let (k2, n) = (b.shape()[rb - 2], b.shape()[rb - 1]);
        if k != k2 {
            crate::bail!("matmul contraction dims differ: {k} vs {k2}");
        }
        let batch = broadcast_shapes(Self::NAME, &a.shape()[..ra - 2], &b.shape()[..rb - 2])?;
        let sa = broadcast_strides(&a.shape()[..ra - 2], &batch);
        let sb = broadcast_strides(&b.shape()[..rb - 2], &batch);
        let nb: usize = batch.iter().product();
        let bstr = strides_of(&batch);
        let (da, db) = (a.data(), b.data());
        let mut out = vec![0.0; nb * m * n];
        for bi in 0..nb {
            let (mut oa, mut ob) = (0, 0);
            for ax in 0..batch.len() {
                let i = (bi / bstr[ax]) % batch[ax];
                oa += i * sa[ax];
                ob += i * sb[ax];
            }
            let (pa, pb) = (oa * m * k, ob * k * n);
            let po = bi * m * n;
            // i-k-j loop order over blocks of `COLS` columns: the `k × COLS` panel of b stays in
            // cache while every row of a passes over it, and rows of b are read contiguously.
            // Each output is still `Σ_k a[i,k]·b[k,j]` summed in ascending k from 0.0, so the
            // blocking does not change any result.
            for j0 in (0..n).step_by(COLS) {
                let j1 = (j0 + COLS).min(n);
                for i in 0..m {
                    let row = &mut out[po + i * n + j0..po + i * n + j1];
                    for kk in 0..k {
                        let x = da[pa + i * k + kk];
                        if x == 0.0 {
                            continue;
                        }
                        let brow = &db[pb + kk * n + j0..pb + kk * n + j1];
                        for (o, &y) in row.iter_mut().zip(brow) {
                            *o += x * y;
                        }
                    }
                }
            }
        }
        let mut shape = batch;
        shape.push(m);
        shape.push(n);
        Ok(vec![Tensor::new(a.dtype(), shape, out).map_err(op_err)?])
    }
}

#[cfg(test)]
mod tests {
    use crate::dtype::DType;
    use crate::ops::testing::{eval_op, rand_tensor};
    use crate::ops::{matmul::MatMul, Op};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn matches_naive_triple_loop(b in 1usize..3, m in 1usize..5, k in 1usize..6,
                                     n in 1usize..5, seed in 0u64..1000) {
            let x = rand_tensor(DType::F32, vec![b, m, k], seed);
            let w = rand_tensor(DType::F32, vec![k, n], seed + 7);
            let out = eval_op(Op::MatMul(MatMul {}), &[x.clone(), w.clone()]).unwrap();
            prop_assert_eq!(out[0].shape(), &[b, m, n][..]);
            for bb in 0..b { for i in 0..m { for j in 0..n {
                let mut s = 0.0;
                for kk in 0..k { s += x.at(&[bb, i, kk]) * w.at(&[kk, j]); }
                let got = out[0].at(&[bb, i, j]);
                // Same exact products; summation order may differ by the skipped zeros only.
                prop_assert!((got - s as f32 as f64).abs() <= 1e-6 * (1.0 + s.abs()));
            }}}
        }
    }

    #[test]
    fn column_blocks_match_naive_exactly() {
        // More columns than one cache block (and a ragged last block), batch broadcast on a.
        let (m, k, n) = (3, 7, 2 * super::COLS + 37);
        let x = rand_tensor(DType::F64, vec![2, m, k], 3);
        let w = rand_tensor(DType::F64, vec![k, n], 4);
        let out = eval_op(Op::MatMul(MatMul {}), &[x.clone(), w.clone()]).unwrap();
        for bb in 0..2 {
            for i in 0..m {
                for j in 0..n {
                    let mut s = 0.0;
                    for kk in 0..k {
                        s += x.at(&[bb, i, kk]) * w.at(&[kk, j]);
                    }
                    // f64, same order of summation: bit-identical.
                    assert_eq!(out[0].at(&[bb, i, j]), s, "[{bb},{i},{j}]");
                }
            }
        }
    }

    #[test]
    fn contraction_mismatch_names_both_shapes() {
        let x = rand_tensor(DType::F32, vec![2, 3], 0);
        let w = rand_tensor(DType::F32, vec![4, 5], 0);
        let e = eval_op(Op::MatMul(MatMul {}), &[x, w])
            .unwrap_err()
            .to_string();
        assert!(e.contains("[2,3]") && e.contains("[4,5]"), "{e}");
    }
}
