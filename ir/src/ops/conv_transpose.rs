//! `conv_transpose`: N-D transposed convolution in channels-first layout, ONNX `ConvTranspose`.

use super::conv::check_groups;
use super::util::{expect_arity_range, expect_float, fixed_dim, op_err, same_dtype};
use super::window::{fixed_all, next_index, per_axis, result_numel, strides, Spatial};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::{Dim, TensorType};
use serde::{Deserialize, Serialize};

fn one() -> u64 {
    1
}

/// ONNX `ConvTranspose` for any spatial rank `r >= 1`. Operands
/// `(x[N, C, D1…Dr], w[C, M/group, k1…kr], [bias[M]])`, one float dtype; result `[N, M, O1…Or]`
/// with `Oi = stride_i·(Di − 1) + output_padding_i + dil_i·(k_i − 1) + 1 − begin_i − end_i`
/// (an expression when `Di` is symbolic). Every input cell scatters into the output:
///
/// `y[n, g·M/group + m, i·stride + k·dil − begin] += x[n, c, i] · w[c, m, k]` for `c` in group
/// `g = c / (C/group)`, plus `bias`; contributions that land outside `[0, Oi)` are dropped
/// (the pads crop the full result, `output_padding` extends it at the end).
/// `C`, `M` and the kernel must be fixed; `N` and the spatial dims may be symbolic. Errors like
/// [`Conv`](super::conv::Conv)'s, and a non-positive output size. ONNX's `output_shape` and
/// `auto_pad` are resolved by importers into `pads` and `output_padding`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvTranspose {
    /// Strides per spatial axis (empty: all 1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub strides: Vec<u64>,
    /// Cropping `[begin_1…begin_r, end_1…end_r]` of the full result (empty: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pads: Vec<u64>,
    /// Dilations per spatial axis (empty: all 1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dilations: Vec<u64>,
    /// Groups (default 1).
    #[serde(default = "one")]
    pub group: u64,
    /// Extra cells at the end of each spatial axis (empty: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_padding: Vec<u64>,
}

impl Default for ConvTranspose {
    /// Unit strides and dilations, no padding, one group.
    fn default() -> Self {
        ConvTranspose {
            strides: vec![],
            pads: vec![],
            dilations: vec![],
            group: 1,
            output_padding: vec![],
        }
    }
}

impl ConvTranspose {
    /// Validated strides, pads and dilations for `r` spatial axes, and the output padding.
    pub fn spatial(&self, r: usize) -> Result<(Spatial, Vec<u64>), OpError> {
        let sp = Spatial::new(Self::NAME, r, &self.strides, &self.pads, &self.dilations)?;
        let op = per_axis(Self::NAME, "output_padding", &self.output_padding, r, 0, 0)?;
        if let Some(bad) = op.iter().find(|&&v| v > i64::MAX as u64 / 4) {
            crate::bail!("conv_transpose: output_padding {bad} is out of range");
        }
        Ok((sp, op))
    }

    /// `stride·(d − 1) + extra` with `extra = output_padding + span − begin − end`.
    fn extra(sp: &Spatial, op: &[u64], i: usize, span: u64) -> i64 {
        op[i] as i64 + span as i64 - sp.begin[i] as i64 - sp.end[i] as i64
    }

    fn out_len(sp: &Spatial, op: &[u64], i: usize, d: u64, span: u64) -> Result<u64, OpError> {
        if d == 0 {
            crate::bail!("conv_transpose: spatial axis {i} is empty");
        }
        let v = sp.strides[i] as i128 * (d as i128 - 1) + Self::extra(sp, op, i, span) as i128;
        if v < 0 {
            crate::bail!(
                "conv_transpose: spatial axis {i} of size {d} gives output size {v} (pads {} + {} too large)",
                sp.begin[i],
                sp.end[i]
            );
        }
        u64::try_from(v).map_err(|_| OpError::new("conv_transpose: output size overflows"))
    }
}

impl OpSpec for ConvTranspose {
    const NAME: &'static str = "conv_transpose";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        expect_arity_range(Self::NAME, inputs, 2, 3)?;
        let d = same_dtype(Self::NAME, inputs)?;
        let (x, w) = (&inputs[0], &inputs[1]);
        expect_float(Self::NAME, "x", x)?;
        if x.rank() < 3 || w.rank() != x.rank() {
            crate::bail!(
                "conv_transpose expects x[N,C,D1…Dr] (rank >= 3) and w[C,M/group,k1…kr] of the same rank, found {x} and {w}"
            );
        }
        let r = x.rank() - 2;
        let (sp, op) = self.spatial(r)?;
        let c = fixed_dim(Self::NAME, "channel dim C", &x.shape[1])?;
        let wc = fixed_dim(Self::NAME, "input channel dim of w", &w.shape[0])?;
        let mpg = fixed_dim(Self::NAME, "output channel dim M/group of w", &w.shape[1])?;
        let ks = fixed_all(Self::NAME, "kernel size", &w.shape[2..])?;
        if wc != c {
            crate::bail!("conv_transpose: w has {wc} input channels, x has {c}");
        }
        let m = mpg
            .checked_mul(self.group)
            .ok_or_else(|| OpError::new("conv_transpose: output channels overflow"))?;
        check_groups(Self::NAME, self.group, c, m, c / self.group.max(1))?;
        if let Some(b) = inputs.get(2) {
            if b.shape != [Dim::from(m)] {
                crate::bail!("conv_transpose bias must be [{m}], found {b}");
            }
        }
        let mut shape = vec![x.shape[0].clone(), Dim::from(m)];
        for (i, &k) in ks.iter().enumerate() {
            let span = sp.span(Self::NAME, i, k)?;
            let di = &x.shape[2 + i];
            shape.push(match di.fixed() {
                Some(v) => Dim::from(Self::out_len(&sp, &op, i, v, span)?),
                None => {
                    let de = |e: crate::dim::DimError| {
                        OpError::new(format!("conv_transpose: spatial axis {i}: {e}"))
                    };
                    di.sub(&Dim::from_i64(1))
                        .and_then(|v| v.mul_int(sp.strides[i] as i64))
                        .and_then(|v| v.add(&Dim::from_i64(Self::extra(&sp, &op, i, span))))
                        .map_err(de)?
                }
            });
        }
        Ok(vec![TensorType::new(d, shape)])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity_range(Self::NAME, inputs, 2, 3)?;
        let (x, w) = (inputs[0], inputs[1]);
        if x.rank() < 3 || w.rank() != x.rank() {
            crate::bail!("conv_transpose needs x and w of the same rank >= 3");
        }
        let r = x.rank() - 2;
        let (sp, op) = self.spatial(r)?;
        let (xs, ws) = (x.shape(), w.shape());
        let (n, c, mpg) = (xs[0], xs[1], ws[1]);
        if ws[0] != c {
            crate::bail!("conv_transpose: w has {} input channels, x has {c}", ws[0]);
        }
        let g = self.group as usize;
        let m = mpg * g;
        check_groups(
            Self::NAME,
            self.group,
            c as u64,
            m as u64,
            (c / g.max(1)) as u64,
        )?;
        let (dims, ks) = (&xs[2..], &ws[2..]);
        let mut out = Vec::with_capacity(r);
        for i in 0..r {
            let span = sp.span(Self::NAME, i, ks[i] as u64)?;
            out.push(Self::out_len(&sp, &op, i, dims[i] as u64, span)? as usize);
        }
        let bias = inputs.get(2).map(|b| b.data());
        if bias.is_some_and(|b| b.len() != m) {
            crate::bail!("conv_transpose bias must have {m} elements");
        }
        let mut shape = vec![n, m];
        shape.extend_from_slice(&out);
        let yst = strides(&shape);
        let (xst, wst) = (strides(xs), strides(ws));
        let mut y = vec![0.0; result_numel(Self::NAME, &shape)?];
        if let Some(b) = bias {
            for (i, v) in y.iter_mut().enumerate() {
                *v = b[(i / yst[1]) % m];
            }
        }
        let cpg = c / g;
        let (xd, wd) = (x.data(), w.data());
        let spatial_in: usize = dims.iter().product();
        if spatial_in > 0 && !y.is_empty() {
            for ni in 0..n {
                for ci in 0..c {
                    let grp = ci / cpg;
                    let mut i = vec![0usize; r];
                    loop {
                        let xv = xd[ni * xst[0]
                            + ci * xst[1]
                            + (0..r).map(|a| i[a] * xst[2 + a]).sum::<usize>()];
                        let mut k = vec![0usize; r];
                        loop {
                            let mut off = 0usize;
                            let mut inside = true;
                            for a in 0..r {
                                let p = (i[a] as i64) * sp.strides[a] as i64
                                    + (k[a] as i64) * sp.dilations[a] as i64
                                    - sp.begin[a] as i64;
                                if p < 0 || p >= out[a] as i64 {
                                    inside = false;
                                    break;
                                }
                                off += p as usize * yst[2 + a];
                            }
                            if inside {
                                let wsp: usize = (0..r).map(|a| k[a] * wst[2 + a]).sum();
                                for mi in 0..mpg {
                                    let oc = grp * mpg + mi;
                                    y[ni * yst[0] + oc * yst[1] + off] +=
                                        xv * wd[ci * wst[0] + mi * wst[1] + wsp];
                                }
                            }
                            if !next_index(&mut k, ks) {
                                break;
                            }
                        }
                        if !next_index(&mut i, dims) {
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
    use super::ConvTranspose;
    use crate::dtype::DType;
    use crate::module::Module;
    use crate::ops::conv::Conv;
    use crate::ops::testing::{check_rounded, eval_op, rand_tensor};
    use crate::ops::{InferCx, Op, OpSpec};
    use crate::types::{Dim, TensorType};
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// A transposed convolution is the adjoint of the convolution with the same weight,
        /// strides, pads, dilations and groups: `<conv_transpose(x), y> = <x, conv(y)>` whenever
        /// `output_padding < stride` (then `conv` maps the output size back to the input size).
        #[test]
        fn is_the_adjoint_of_conv(r in 1usize..4, g in 1u64..3, cpg in 1usize..3, mpg in 1usize..3,
                                  size in 1usize..5, k in 1usize..4, s in 1u64..4, dil in 1u64..3,
                                  p in 0u64..3, q in 0u64..3, opad in 0u64..3, seed in 0u64..1000) {
            let opad = opad.min(s - 1);
            let (c, m) = (g as usize * cpg, g as usize * mpg);
            let mut xs = vec![2, c];
            let mut ws = vec![c, mpg];
            for i in 0..r {
                xs.push(size + i);
                ws.push(if i == 0 { k } else { (k + i) % 3 + 1 });
            }
            let x = rand_tensor(DType::F64, xs.clone(), seed);
            let w = rand_tensor(DType::F64, ws, seed + 1);
            let mut pads = vec![p; r];
            pads.extend(std::iter::repeat_n(q, r));
            let mut strides = vec![1; r];
            strides[0] = s;
            let mut dilations = vec![1; r];
            dilations[r - 1] = dil;
            let mut output_padding = vec![0; r];
            output_padding[0] = opad;
            let ct = ConvTranspose {
                strides: strides.clone(), pads: pads.clone(), dilations: dilations.clone(),
                group: g, output_padding,
            };
            let t = match eval_op(Op::ConvTranspose(ct), &[x.clone(), w.clone()]) {
                Ok(t) => t,
                Err(e) => {
                    prop_assert!(e.to_string().contains("too large"), "{e}");
                    return Ok(());
                }
            };
            prop_assert_eq!(t[0].shape()[..2].to_vec(), vec![2, m]);
            let y = rand_tensor(DType::F64, t[0].shape().to_vec(), seed + 2);
            let conv = Conv { strides, pads, dilations, group: g };
            let cy = eval_op(Op::Conv(conv), &[y.clone(), w]).unwrap();
            prop_assert_eq!(cy[0].shape(), x.shape());
            let (lhs, rhs) = (dot(t[0].data(), y.data()), dot(x.data(), cy[0].data()));
            prop_assert!((lhs - rhs).abs() <= 1e-9 * (1.0 + lhs.abs()), "{lhs} vs {rhs}");
        }
    }

    /// A hand-computed 1-D case with output padding and a bias: the cells past the full
    /// result hold only the bias.
    #[test]
    fn output_padding_and_bias_by_hand() {
        let x = crate::tensor::Tensor::new(DType::F32, vec![1, 1, 2], vec![1.0, 2.0]).unwrap();
        let w =
            crate::tensor::Tensor::new(DType::F32, vec![1, 2, 2], vec![1.0, 10.0, 100.0, 1000.0])
                .unwrap();
        let b = crate::tensor::Tensor::new(DType::F32, vec![2], vec![0.5, -0.5]).unwrap();
        let op = ConvTranspose {
            strides: vec![3],
            pads: vec![1, 0],
            output_padding: vec![2],
            ..ConvTranspose::default()
        };
        let y = eval_op(Op::ConvTranspose(op), &[x, w, b]).unwrap();
        // Full result (length 3·1 + 2 = 5, + 2 output padding = 7), cropped by 1 at the start:
        // channel 0: [1, 10, 0, 2, 20, 0, 0] → [10, 0, 2, 20, 0, 0] + 0.5.
        let want = [
            10.5, 0.5, 2.5, 20.5, 0.5, 0.5, 999.5, -0.5, 199.5, 1999.5, -0.5, -0.5,
        ];
        check_rounded(&y[0], DType::F32, &[1, 2, 6], &want).unwrap();
    }

    #[test]
    fn symbolic_dims_and_errors() {
        let m = Module::new();
        let cx = InferCx { module: &m };
        let x = TensorType::new(DType::F32, [Dim::sym("N"), Dim::from(4u64), Dim::sym("L")]);
        let w = TensorType::fixed(DType::F32, &[4, 3, 4]);
        let op = ConvTranspose {
            strides: vec![2],
            pads: vec![1, 1],
            group: 2,
            ..ConvTranspose::default()
        };
        let t = op.infer(&cx, &[x, w]).unwrap();
        assert_eq!(t[0].shape[1], Dim::from(6u64));
        let l = &t[0].shape[2];
        for lv in 1..10u64 {
            let b = HashMap::from([("L".to_string(), lv)]);
            assert_eq!(l.eval(&b).unwrap(), (2 * (lv - 1) + 4 - 2) as i64, "{l}");
        }
        let x = rand_tensor(DType::F32, vec![1, 4, 3], 0);
        let e = eval_op(
            Op::ConvTranspose(ConvTranspose::default()),
            &[x.clone(), rand_tensor(DType::F32, vec![3, 2, 2], 0)],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("w has 3 input channels, x has 4"), "{e}");
        let big = ConvTranspose {
            pads: vec![3, 3],
            ..ConvTranspose::default()
        };
        let e = eval_op(
            Op::ConvTranspose(big),
            &[x.clone(), rand_tensor(DType::F32, vec![4, 2, 2], 0)],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("too large"), "{e}");
        let g3 = ConvTranspose {
            group: 3,
            ..ConvTranspose::default()
        };
        let e = eval_op(
            Op::ConvTranspose(g3),
            &[x, rand_tensor(DType::F32, vec![4, 2, 2], 0)],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("group 3 must divide"), "{e}");
        // A result too large to address is an error, not a panic.
        let huge = ConvTranspose {
            strides: vec![1 << 59],
            ..ConvTranspose::default()
        };
        let e = eval_op(
            Op::ConvTranspose(huge),
            &[
                rand_tensor(DType::F32, vec![1, 1, 3], 0),
                rand_tensor(DType::F32, vec![1, 1, 1], 0),
            ],
        )
        .unwrap_err()
        .to_string();
        // (The interpreter's memory budget catches it before the op's own size check.)
        assert!(
            e.contains("too large") || e.contains("memory budget"),
            "{e}"
        );
    }
}
