//! `conv`: N-D convolution (cross-correlation) in channels-first layout, ONNX `Conv`.

use super::util::{expect_arity_range, expect_float, fixed_dim, op_err, same_dtype};
use super::window::{fixed_all, next_index, result_numel, strides, Spatial};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::{Dim, TensorType};
use serde::{Deserialize, Serialize};

fn one() -> u64 {
    1
}

/// ONNX `Conv` for any spatial rank `r >= 1` (1-D, 2-D, 3-D models). Operands
/// `(x[N, C, D1…Dr], w[M, C/group, k1…kr], [bias[M]])`, one float dtype; result
/// `[N, M, O1…Or]` with `Oi = ⌊(Di + begin_i + end_i − dil_i·(k_i − 1) − 1) / stride_i⌋ + 1`
/// (an expression when `Di` is symbolic), and
///
/// `y[n, m, o] = bias[m] + Σ_{c < C/group} Σ_k x[n, g·C/group + c, o·stride + k·dil − begin] · w[m, c, k]`
///
/// with `g = m / (M/group)` and zero padding (cells outside the input contribute nothing).
/// `C`, `M` and the kernel must be fixed; `N` and the spatial dims may be symbolic. Errors:
/// ranks that differ, `group` not dividing `C` and `M`, `w` not having `C/group` input channels,
/// a bias not `[M]`, attribute vectors of the wrong length, zero strides/dilations, and (for
/// fixed sizes) an input too small for one window. `auto_pad` is resolved by importers into
/// explicit `pads`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conv {
    /// Strides per spatial axis (empty: all 1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub strides: Vec<u64>,
    /// Zero padding `[begin_1…begin_r, end_1…end_r]` (empty: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pads: Vec<u64>,
    /// Dilations per spatial axis (empty: all 1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dilations: Vec<u64>,
    /// Groups: channels split into this many independent convolutions (default 1).
    #[serde(default = "one")]
    pub group: u64,
}

/// Check the channel layout of a (transposed) convolution: `group` divides the input channels
/// `c` and the output channels `m`, and the weight's per-group channel count is `wc`.
pub(crate) fn check_groups(op: &str, group: u64, c: u64, m: u64, wc: u64) -> Result<(), OpError> {
    if group == 0 || !c.is_multiple_of(group) || !m.is_multiple_of(group) {
        crate::bail!(
            "{op}: group {group} must divide the input channels {c} and the output channels {m}"
        );
    }
    if wc != c / group {
        crate::bail!(
            "{op}: the weight has {wc} input channels per group, expected C/group = {c}/{group} = {}",
            c / group
        );
    }
    Ok(())
}

impl Default for Conv {
    /// Unit strides and dilations, no padding, one group.
    fn default() -> Self {
        Conv {
            strides: vec![],
            pads: vec![],
            dilations: vec![],
            group: 1,
        }
    }
}

impl Conv {
    /// Validated strides, pads and dilations for `r` spatial axes.
    pub fn spatial(&self, r: usize) -> Result<Spatial, OpError> {
        Spatial::new(Self::NAME, r, &self.strides, &self.pads, &self.dilations)
    }
}

impl OpSpec for Conv {
    const NAME: &'static str = "conv";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        expect_arity_range(Self::NAME, inputs, 2, 3)?;
        let d = same_dtype(Self::NAME, inputs)?;
        let (x, w) = (&inputs[0], &inputs[1]);
        expect_float(Self::NAME, "x", x)?;
        if x.rank() < 3 || w.rank() != x.rank() {
            crate::bail!(
                "conv expects x[N,C,D1…Dr] (rank >= 3) and w[M,C/group,k1…kr] of the same rank, found {x} and {w}"
            );
        }
        let r = x.rank() - 2;
        let sp = self.spatial(r)?;
        let c = fixed_dim(Self::NAME, "channel dim C", &x.shape[1])?;
        let m = fixed_dim(Self::NAME, "output channel dim M of w", &w.shape[0])?;
        let wc = fixed_dim(Self::NAME, "weight channel dim", &w.shape[1])?;
        let ks = fixed_all(Self::NAME, "kernel size", &w.shape[2..])?;
        check_groups(Self::NAME, self.group, c, m, wc)?;
        if let Some(b) = inputs.get(2) {
            if b.shape != [Dim::from(m)] {
                crate::bail!("conv bias must be [{m}], found {b}");
            }
        }
        let mut shape = vec![x.shape[0].clone(), Dim::from(m)];
        for (i, &k) in ks.iter().enumerate() {
            let span = sp.span(Self::NAME, i, k)?;
            shape.push(sp.count_dim(Self::NAME, i, &x.shape[2 + i], span, false)?);
        }
        Ok(vec![TensorType::new(d, shape)])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity_range(Self::NAME, inputs, 2, 3)?;
        let (x, w) = (inputs[0], inputs[1]);
        if x.rank() < 3 || w.rank() != x.rank() {
            crate::bail!("conv needs x and w of the same rank >= 3");
        }
        let r = x.rank() - 2;
        let sp = self.spatial(r)?;
        let (xs, ws) = (x.shape(), w.shape());
        let (n, c, m, wc) = (xs[0], xs[1], ws[0], ws[1]);
        check_groups(Self::NAME, self.group, c as u64, m as u64, wc as u64)?;
        let (dims, ks) = (&xs[2..], &ws[2..]);
        let mut out = Vec::with_capacity(r);
        for i in 0..r {
            let span = sp.span(Self::NAME, i, ks[i] as u64)?;
            out.push(sp.count(Self::NAME, i, dims[i] as u64, span, false)? as usize);
        }
        let bias = inputs.get(2).map(|b| b.data());
        if bias.is_some_and(|b| b.len() != m) {
            crate::bail!("conv bias must have {m} elements");
        }
        let (xst, wst) = (strides(xs), strides(ws));
        let (xd, wd) = (x.data(), w.data());
        let opg = m / self.group as usize;
        let mut shape = vec![n, m];
        shape.extend_from_slice(&out);
        let total = result_numel(Self::NAME, &shape)?;
        let mut y = Vec::with_capacity(total);
        if total > 0 {
            let mut pos = vec![0usize; r];
            for ni in 0..n {
                for oc in 0..m {
                    let g = oc / opg;
                    let mut o = vec![0usize; r];
                    loop {
                        let mut acc = bias.map_or(0.0, |b| b[oc]);
                        let mut k = vec![0usize; r];
                        loop {
                            let mut inside = true;
                            for i in 0..r {
                                let p = (o[i] as i64) * sp.strides[i] as i64
                                    + (k[i] as i64) * sp.dilations[i] as i64
                                    - sp.begin[i] as i64;
                                if p < 0 || p >= dims[i] as i64 {
                                    inside = false;
                                    break;
                                }
                                pos[i] = p as usize;
                            }
                            if inside {
                                let xsp: usize = (0..r).map(|i| pos[i] * xst[2 + i]).sum();
                                let wsp: usize = (0..r).map(|i| k[i] * wst[2 + i]).sum();
                                for ic in 0..wc {
                                    let xi = ni * xst[0] + (g * wc + ic) * xst[1] + xsp;
                                    let wi = oc * wst[0] + ic * wst[1] + wsp;
                                    acc += xd[xi] * wd[wi];
                                }
                            }
                            if !next_index(&mut k, ks) {
                                break;
                            }
                        }
                        y.push(acc);
                        if !next_index(&mut o, &out) {
                            break;
                        }
                    }
                }
            }
        }
        Ok(vec![Tensor::new(x.dtype(), shape, y).map_err(op_err)?])
    }
}

#[cfg(test)]
mod tests {
    use super::Conv;
    use crate::dtype::DType;
    use crate::module::Module;
    use crate::ops::conv2d::Conv2d;
    use crate::ops::testing::{check_rounded, eval_op, indices, rand_tensor};
    use crate::ops::{InferCx, Op, OpSpec};
    use crate::tensor::Tensor;
    use crate::types::{Dim, TensorType};
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// Naive: zero-pad the input explicitly into a larger array, then every output is a dot
    /// product of a dilated window of the padded array with the filter.
    fn naive(
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        op: &Conv,
    ) -> Option<(Vec<usize>, Vec<f64>)> {
        let r = x.rank() - 2;
        let (xs, ws) = (x.shape().to_vec(), w.shape().to_vec());
        let pads = if op.pads.is_empty() {
            vec![0; 2 * r]
        } else {
            op.pads.iter().map(|&p| p as usize).collect()
        };
        let st: Vec<usize> = (0..r)
            .map(|i| op.strides.get(i).map_or(1, |&v| v as usize))
            .collect();
        let dl: Vec<usize> = (0..r)
            .map(|i| op.dilations.get(i).map_or(1, |&v| v as usize))
            .collect();
        let mut pshape = xs.clone();
        for i in 0..r {
            pshape[2 + i] += pads[i] + pads[r + i];
        }
        let padded = Tensor::from_fn(DType::F64, pshape.clone(), |idx| {
            let mut src = idx.to_vec();
            for i in 0..r {
                let p = idx[2 + i] as i64 - pads[i] as i64;
                if p < 0 || p >= xs[2 + i] as i64 {
                    return 0.0;
                }
                src[2 + i] = p as usize;
            }
            x.at(&src)
        });
        let mut out = vec![xs[0], ws[0]];
        for i in 0..r {
            let room = pshape[2 + i].checked_sub(dl[i] * (ws[2 + i] - 1) + 1)?;
            out.push(room / st[i] + 1);
        }
        let cpg = ws[1];
        let opg = ws[0] / op.group as usize;
        let mut y = vec![];
        for idx in indices(&out) {
            let (n, m) = (idx[0], idx[1]);
            let mut s = b.map_or(0.0, |b| b.at(&[m]));
            for widx in indices(&ws[1..]) {
                let mut p = vec![n, (m / opg) * cpg + widx[0]];
                for i in 0..r {
                    p.push(idx[2 + i] * st[i] + widx[1 + i] * dl[i]);
                }
                let mut wi = vec![m];
                wi.extend_from_slice(&widx);
                s += padded.at(&p) * w.at(&wi);
            }
            y.push(s);
        }
        Some((out, y))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn matches_naive_padded_convolution(r in 1usize..4, g in 1u64..3, cpg in 1usize..3,
                                            opg in 1usize..3, size in 2usize..6, k in 1usize..4,
                                            s in 1u64..3, dil in 1u64..3, p in 0u64..3,
                                            q in 0u64..2, bias in proptest::bool::ANY,
                                            seed in 0u64..1000) {
            let (c, m) = (g as usize * cpg, g as usize * opg);
            let mut xs = vec![2, c];
            let mut ws = vec![m, cpg];
            for i in 0..r {
                xs.push(size + i);
                ws.push(if i == 0 { k } else { (k + i) % 3 + 1 });
            }
            let x = rand_tensor(DType::F64, xs, seed);
            let wt = rand_tensor(DType::F64, ws, seed + 1);
            let b = rand_tensor(DType::F64, vec![m], seed + 2);
            let mut pads = vec![p; r];
            pads.extend(std::iter::repeat_n(q, r));
            let mut strides = vec![1; r];
            strides[0] = s;
            let mut dilations = vec![1; r];
            dilations[r - 1] = dil;
            let op = Conv { strides, pads, dilations, group: g };
            let mut ins = vec![x.clone(), wt.clone()];
            if bias { ins.push(b.clone()); }
            let got = eval_op(Op::Conv(op.clone()), &ins);
            match (got, naive(&x, &wt, bias.then_some(&b), &op)) {
                (Ok(got), Some((shape, want))) => {
                    check_rounded(&got[0], DType::F64, &shape, &want).map_err(TestCaseError::fail)?
                }
                // Only a kernel span larger than the padded input may fail.
                (Err(e), None) => prop_assert!(e.to_string().contains("no room"), "{e}"),
                (got, want) => prop_assert!(false, "{got:?} vs {want:?}"),
            }
        }

        /// The 2-D case agrees with the existing `conv2d` op.
        #[test]
        fn two_d_agrees_with_conv2d(pt in 0u64..2, pl in 0u64..2, pb in 0u64..2, pr in 0u64..2,
                                    sh in 1u64..3, dw in 1u64..3, seed in 0u64..1000) {
            let x = rand_tensor(DType::F32, vec![1, 4, 6, 5], seed);
            let w = rand_tensor(DType::F32, vec![6, 2, 3, 2], seed + 1);
            let b = rand_tensor(DType::F32, vec![6], seed + 2);
            let ins = [x, w, b];
            let new = Conv { strides: vec![sh, 1], pads: vec![pt, pl, pb, pr], dilations: vec![1, dw], group: 2 };
            let old = Conv2d { stride: [sh, 1], padding: [pt, pl, pb, pr], dilation: [1, dw], groups: 2 };
            let a = eval_op(Op::Conv(new), &ins).unwrap();
            let o = eval_op(Op::Conv2d(old), &ins).unwrap();
            prop_assert_eq!(&a[0], &o[0]);
        }
    }

    #[test]
    fn symbolic_spatial_dims_give_expressions() {
        let m = Module::new();
        let cx = InferCx { module: &m };
        let x = TensorType::new(
            DType::F32,
            [
                Dim::sym("N"),
                Dim::from(4u64),
                Dim::sym("H"),
                Dim::from(9u64),
            ],
        );
        let w = TensorType::fixed(DType::F32, &[8, 4, 3, 3]);
        let op = Conv {
            strides: vec![2, 2],
            pads: vec![1, 1, 0, 1],
            ..Conv::default()
        };
        let t = op.infer(&cx, &[x, w]).unwrap();
        let h = &t[0].shape[2];
        assert_eq!(t[0].shape[3], Dim::from(5u64));
        for hv in 2..20u64 {
            let b = HashMap::from([("H".to_string(), hv)]);
            assert_eq!(h.eval(&b).unwrap(), ((hv + 1 - 3) / 2 + 1) as i64, "{h}");
        }
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let x = rand_tensor(DType::F32, vec![1, 4, 5], 0);
        let run = |op: Conv, w: Vec<usize>| {
            let w = rand_tensor(DType::F32, w, 1);
            eval_op(Op::Conv(op), &[x.clone(), w])
                .unwrap_err()
                .to_string()
        };
        let e = run(Conv::default(), vec![2, 3, 3]);
        assert!(e.contains("expected C/group = 4/1 = 4"), "{e}");
        let g3 = Conv {
            group: 3,
            ..Conv::default()
        };
        let e = run(g3, vec![3, 1, 3]);
        assert!(e.contains("group 3 must divide"), "{e}");
        let e = run(Conv::default(), vec![2, 4, 7]);
        assert!(e.contains("no room for a window of span 7"), "{e}");
        let bad = Conv {
            strides: vec![1, 1],
            ..Conv::default()
        };
        let e = run(bad, vec![2, 4, 3]);
        assert!(e.contains("one entry per spatial axis (1)"), "{e}");
        let e = run(Conv::default(), vec![2, 4, 3, 3]);
        assert!(e.contains("same rank"), "{e}");
        let i = rand_tensor(DType::I32, vec![1, 4, 5], 0);
        let e = eval_op(
            Op::Conv(Conv::default()),
            &[i.clone(), rand_tensor(DType::I32, vec![1, 4, 3], 0)],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("expects a float x"), "{e}");
        let e = eval_op(
            Op::Conv(Conv::default()),
            &[
                x.clone(),
                rand_tensor(DType::F32, vec![2, 4, 3], 0),
                rand_tensor(DType::F32, vec![3], 0),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("bias must be [2]"), "{e}");
    }

    #[test]
    fn empty_batch_gives_an_empty_result() {
        let x = Tensor::zeros(DType::F32, vec![0, 2, 4]);
        let w = rand_tensor(DType::F32, vec![3, 2, 2], 0);
        let y = eval_op(Op::Conv(Conv::default()), &[x, w]).unwrap();
        assert_eq!(y[0].shape(), &[0, 3, 3]);
    }
}
