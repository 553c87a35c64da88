//! `pad`: ONNX Pad (constant, reflect, edge, wrap), with negative pads that crop.

use super::util::{expect_arity, join, next_index, op_err};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::{strides_of, Tensor};
use crate::types::{Dim, TensorType};
use serde::{Deserialize, Serialize};

/// What fills the padding (ONNX Pad's `mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PadMode {
    /// The constant `value` (default).
    #[default]
    Constant,
    /// The mirror image without repeating the edge (numpy `reflect`: `[1,2,3]` padded by 2 on
    /// both sides is `[3,2,1,2,3,2,1]`); each pad must be smaller than the axis.
    Reflect,
    /// The edge value repeated (numpy `edge`).
    Edge,
    /// The axis repeated periodically (numpy `wrap`); pads may exceed the axis.
    Wrap,
}

/// ONNX Pad on one operand of any dtype. `pads` holds `2·rank` dims in ONNX order: the amounts
/// added before each axis, then after each axis (`[x1_begin, x2_begin, …, x1_end, x2_end, …]`).
/// A pad is a dim expression (symbols allowed, e.g. `S-1`); a negative value crops that many
/// elements from that side instead. Cropping comes first, then the cropped axis is padded from
/// its own elements (onnxruntime's behaviour). Result dims: `d + begin + end` as dim
/// expressions, the operand's dtype.
///
/// Errors (at type inference when everything involved is fixed, else at evaluation): a
/// negative result dim or a crop larger than the axis; `reflect` with a pad ≥ the (cropped)
/// axis size (numpy's old rule); `edge` or `wrap` padding of an empty axis.
///
/// `value` (default 0) fills `constant` padding, rounded to the dtype like any result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pad {
    /// Begin amounts of every axis, then end amounts (ONNX order), as dims.
    pub pads: Vec<Dim>,
    /// How padding is filled (default `constant`).
    #[serde(default)]
    pub mode: PadMode,
    /// The fill value of `constant` mode (default 0).
    #[serde(default)]
    pub value: f64,
}

/// Largest padded axis (a bound that keeps index arithmetic and allocation sizes sane).
const MAX_AXIS: u64 = 1 << 48;

impl Pad {
    /// A pad with integer amounts (ONNX order).
    pub fn new(pads: &[i64], mode: PadMode, value: f64) -> Pad {
        Pad {
            pads: pads.iter().map(|&p| Dim::from_i64(p)).collect(),
            mode,
            value,
        }
    }

    /// Check one axis of size `n` padded by `begin`/`end` (negative crops); returns the
    /// cropped size and the result size.
    fn check_axis(&self, n: u64, begin: i64, end: i64, axis: usize) -> Result<(u64, u64), OpError> {
        let op = Self::NAME;
        let (n, b, e) = (i128::from(n), i128::from(begin), i128::from(end));
        let crop = (-b).max(0) + (-e).max(0);
        if crop > n {
            crate::bail!(
                "{op}: pads {begin} and {end} crop {crop} elements from axis {axis} of size {n}"
            );
        }
        let m = n - crop;
        let (pb, pe) = (b.max(0), e.max(0));
        if pb + pe > 0 {
            match self.mode {
                PadMode::Constant => {}
                PadMode::Reflect if pb >= m || pe >= m => crate::bail!(
                    "{op}: reflect pads ({pb}, {pe}) must be smaller than the size {m} of axis \
                     {axis}"
                ),
                PadMode::Edge | PadMode::Wrap if m == 0 => crate::bail!(
                    "{op}: cannot {} pad the empty axis {axis}",
                    if self.mode == PadMode::Edge {
                        "edge"
                    } else {
                        "wrap"
                    }
                ),
                _ => {}
            }
        }
        let out = u64::try_from(m + pb + pe)
            .ok()
            .filter(|&v| v <= MAX_AXIS)
            .ok_or_else(|| OpError::new(format!("{op}: axis {axis} padded to {}", m + pb + pe)))?;
        Ok((m as u64, out))
    }

    /// For one axis of size `n` padded by `begin`/`end`: the source index along the axis of
    /// every result position, `None` where `constant` padding fills it.
    pub fn axis_source(
        &self,
        n: usize,
        begin: i64,
        end: i64,
        axis: usize,
    ) -> Result<Vec<Option<usize>>, OpError> {
        let (m, out) = self.check_axis(n as u64, begin, end, axis)?;
        let (m, crop_b, pb) = (m as i64, (-begin).max(0), begin.max(0));
        let src = |c: i64| -> Option<i64> {
            if (0..m).contains(&c) {
                return Some(c);
            }
            match self.mode {
                PadMode::Constant => None,
                PadMode::Edge => Some(c.clamp(0, m - 1)),
                PadMode::Reflect => Some(if c < 0 { -c } else { 2 * (m - 1) - c }),
                PadMode::Wrap => Some(c.rem_euclid(m)),
            }
        };
        Ok((0..out as i64)
            .map(|o| src(o - pb).map(|c| (c + crop_b) as usize))
            .collect())
    }

    /// Begin and end amounts of every axis under `bindings`.
    pub fn amounts(
        &self,
        rank: usize,
        bindings: &std::collections::HashMap<String, u64>,
    ) -> Result<Vec<(i64, i64)>, OpError> {
        if self.pads.len() != 2 * rank {
            crate::bail!(
                "{}: pads has {} entries, expected 2·rank = {} (begins, then ends)",
                Self::NAME,
                self.pads.len(),
                2 * rank
            );
        }
        (0..rank)
            .map(|i| {
                Ok((
                    self.pads[i].eval(bindings)?,
                    self.pads[rank + i].eval(bindings)?,
                ))
            })
            .collect()
    }
}

impl OpSpec for Pad {
    const NAME: &'static str = "pad";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        let op = Self::NAME;
        expect_arity(op, inputs, 1)?;
        let x = &inputs[0];
        let rank = x.rank();
        if self.pads.len() != 2 * rank {
            crate::bail!(
                "{op}: pads [{}] has {} entries, expected 2·rank = {} for {x} (begins, then ends)",
                join(&self.pads),
                self.pads.len(),
                2 * rank
            );
        }
        let mut shape = Vec::with_capacity(rank);
        for (i, d) in x.shape.iter().enumerate() {
            let (b, e) = (&self.pads[i], &self.pads[rank + i]);
            let out = d.add(b)?.add(e)?;
            if let (Some(n), Some(bv), Some(ev)) = (d.fixed(), b.as_const(), e.as_const()) {
                self.check_axis(n, bv, ev, i)?;
            } else if let Some(v) = out.as_const().filter(|&v| v < 0) {
                crate::bail!("{op}: axis {i} of {x} padded by {b} and {e} has size {v}");
            }
            shape.push(out);
        }
        Ok(vec![TensorType::new(x.dtype, shape)])
    }

    fn eval(&self, cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity(Self::NAME, inputs, 1)?;
        let x = inputs[0];
        let amounts = self.amounts(x.rank(), cx.bindings)?;
        let maps: Vec<Vec<Option<usize>>> = amounts
            .iter()
            .zip(x.shape())
            .enumerate()
            .map(|(i, (&(b, e), &n))| self.axis_source(n, b, e, i))
            .collect::<Result<_, _>>()?;
        let shape: Vec<usize> = maps.iter().map(|m| m.len()).collect();
        let strides = strides_of(x.shape());
        let n = crate::tensor::checked_numel(&shape).ok_or_else(|| {
            OpError::new(format!("{}: result shape {shape:?} overflows", Self::NAME))
        })?;
        let mut out = Vec::with_capacity(n);
        let mut pos = vec![0usize; shape.len()];
        for _ in 0..n {
            let mut off = Some(0usize);
            for (k, &p) in pos.iter().enumerate() {
                off = match (off, maps[k][p]) {
                    (Some(o), Some(s)) => Some(o + s * strides[k]),
                    _ => None,
                };
            }
            out.push(off.map_or(self.value, |o| x.data()[o]));
            next_index(&mut pos, &shape);
        }
        Ok(vec![Tensor::new(x.dtype(), shape, out).map_err(op_err)?])
    }
}

#[cfg(test)]
mod tests {
    use super::{Pad, PadMode};
    use crate::dtype::DType;
    use crate::module::Module;
    use crate::ops::testing::{check_exact, eval_op, indices, rand_tensor};
    use crate::ops::{InferCx, Op, OpSpec};
    use crate::tensor::Tensor;
    use crate::types::{Dim, TensorType};
    use proptest::prelude::*;

    fn pad(pads: &[i64], mode: PadMode, value: f64) -> Op {
        Op::Pad(Pad::new(pads, mode, value))
    }

    /// numpy.pad of one axis by explicit construction (no index formula): the cropped axis,
    /// then `pb` elements prepended and `pe` appended one at a time the way numpy describes
    /// each mode.
    fn naive_axis(v: &[usize], pb: usize, pe: usize, mode: PadMode) -> Vec<Option<usize>> {
        let m = v.len();
        let mut out: Vec<Option<usize>> = v.iter().map(|&i| Some(i)).collect();
        let mut before: Vec<Option<usize>> = vec![];
        let mut after: Vec<Option<usize>> = vec![];
        for t in 1..=pb {
            before.insert(
                0,
                match mode {
                    PadMode::Constant => None,
                    PadMode::Edge => Some(v[0]),
                    PadMode::Reflect => Some(v[t]),
                    PadMode::Wrap => Some(v[(m - t % m) % m]),
                },
            );
        }
        for t in 1..=pe {
            after.push(match mode {
                PadMode::Constant => None,
                PadMode::Edge => Some(v[m - 1]),
                PadMode::Reflect => Some(v[m - 1 - t]),
                PadMode::Wrap => Some(v[(t - 1) % m]),
            });
        }
        before.append(&mut out);
        before.append(&mut after);
        before
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn matches_naive_numpy_pad(
            // Mostly axes of 2..6 and pads of -1..=2 (so that most reflect cases are valid),
            // sometimes empty or unit axes.
            shape in prop::collection::vec(prop_oneof![4 => 2usize..6, 1 => 0usize..2], 0..4),
            raw in prop::collection::vec(prop_oneof![4 => -1i64..3, 1 => -3i64..6], 8),
            mode in prop::sample::select(vec![PadMode::Constant, PadMode::Reflect,
                                              PadMode::Edge, PadMode::Wrap]),
            dt in prop::sample::select(vec![DType::F32, DType::F16, DType::I32, DType::Bool]),
            seed in 0u64..1000,
        ) {
            let r = shape.len();
            let pads: Vec<i64> = raw[..2 * r].to_vec();
            let x = rand_tensor(dt, shape.clone(), seed);
            // Per axis: the cropped source indices, then the padded map (None: the value).
            let mut maps = vec![];
            let mut ok = true;
            for k in 0..r {
                let (b, e) = (pads[k], pads[r + k]);
                let (cb, ce) = ((-b).max(0) as usize, (-e).max(0) as usize);
                if cb + ce > shape[k] { ok = false; break; }
                let v: Vec<usize> = (cb..shape[k] - ce).collect();
                let (pb, pe) = (b.max(0) as usize, e.max(0) as usize);
                let bad = match mode {
                    PadMode::Reflect => pb + pe > 0 && (pb >= v.len() || pe >= v.len()),
                    PadMode::Edge | PadMode::Wrap => pb + pe > 0 && v.is_empty(),
                    PadMode::Constant => false,
                };
                if bad { ok = false; break; }
                maps.push(naive_axis(&v, pb, pe, mode));
            }
            let got = eval_op(pad(&pads, mode, 1.5), std::slice::from_ref(&x));
            if !ok {
                prop_assert!(got.is_err());
                return Ok(());
            }
            let got = got.unwrap();
            let oshape: Vec<usize> = maps.iter().map(|m| m.len()).collect();
            let naive: Vec<f64> = indices(&oshape).into_iter().map(|o| {
                let src: Option<Vec<usize>> = o.iter().enumerate().map(|(k, &i)| maps[k][i]).collect();
                src.map_or(1.5, |s| x.at(&s))
            }).collect();
            check_exact(&got[0], dt, &oshape, &naive).map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn onnx_examples() {
        // test_reflect_pad / test_edge_pad / test_wrap_pad style cases on [3,2].
        let x = Tensor::from_f32(vec![3, 2], &[1., 2., 3., 4., 5., 6.]).unwrap();
        let run = |pads: &[i64], mode, value| {
            eval_op(pad(pads, mode, value), std::slice::from_ref(&x)).unwrap()[0].clone()
        };
        let y = run(&[0, 1, 0, 1], PadMode::Reflect, 0.0);
        assert_eq!(y.shape(), &[3, 4]);
        assert_eq!(
            y.to_f32_vec(),
            vec![2., 1., 2., 1., 4., 3., 4., 3., 6., 5., 6., 5.]
        );
        let y = run(&[1, 0, 1, 0], PadMode::Edge, 0.0);
        assert_eq!(y.to_f32_vec(), vec![1., 2., 1., 2., 3., 4., 5., 6., 5., 6.]);
        let y = run(&[0, 3, 0, 0], PadMode::Wrap, 0.0);
        assert_eq!(
            y.to_f32_vec(),
            vec![2., 1., 2., 1., 2., 4., 3., 4., 3., 4., 6., 5., 6., 5., 6.]
        );
        let y = run(&[1, 0, 0, 1], PadMode::Constant, 1.2);
        assert_eq!(y.shape(), &[4, 3]);
        assert_eq!(y.data()[0], 1.2f32 as f64);
        // Negative pads crop: drop the first row and the last column, then pad one at the end.
        let y = run(&[-1, 0, 1, -1], PadMode::Edge, 0.0);
        assert_eq!(y.shape(), &[3, 1]);
        assert_eq!(y.to_f32_vec(), vec![3., 5., 5.]);
    }

    #[test]
    fn errors() {
        let x = rand_tensor(DType::F32, vec![3, 2], 0);
        let err = |pads: &[i64], mode| {
            eval_op(pad(pads, mode, 0.0), std::slice::from_ref(&x))
                .unwrap_err()
                .to_string()
        };
        let e = err(&[0, 2, 0, 0], PadMode::Reflect);
        assert!(
            e.contains("reflect pads (2, 0) must be smaller than the size 2 of axis 1"),
            "{e}"
        );
        let e = err(&[0, 0], PadMode::Constant);
        assert!(e.contains("expected 2·rank = 4"), "{e}");
        let e = err(&[-2, 0, -2, 0], PadMode::Constant);
        assert!(e.contains("crop 4 elements from axis 0 of size 3"), "{e}");
        let e = err(&[0, -2, 0, 1], PadMode::Wrap);
        assert!(e.contains("cannot wrap pad the empty axis 1"), "{e}");
        // The same checks at evaluation for symbolic pads.
        let mut g = crate::graph::Graph::new();
        let m = Module::new();
        let xin = g.add_input("x", TensorType::new(DType::F32, vec![Dim::sym("N")]));
        let p = Pad {
            pads: vec![Dim::sym("N"), Dim::from(0u64)],
            mode: PadMode::Reflect,
            value: 0.0,
        };
        let n = g
            .add_inferred(&m, Op::Pad(p), vec![xin.into()], None)
            .unwrap();
        g.add_output("y", n.into());
        let mut m = m;
        m.functions.insert("main".into(), g);
        use crate::eval::Executor;
        let e = crate::eval::Reference
            .run(&m, "main", &[rand_tensor(DType::F32, vec![3], 0)])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("reflect pads (3, 0) must be smaller than the size 3"),
            "{e}"
        );
    }

    #[test]
    fn symbolic_dims() {
        let m = Module::new();
        let cx = InferCx { module: &m };
        let x = TensorType::new(DType::F32, vec![Dim::sym("B"), Dim::sym("S")]);
        let p = Pad {
            pads: vec![
                Dim::from(0u64),
                Dim::from(1u64),
                Dim::from(0u64),
                Dim::parse("S-1").unwrap(),
            ],
            mode: PadMode::Constant,
            value: 0.0,
        };
        let out = p.infer(&cx, std::slice::from_ref(&x)).unwrap();
        assert_eq!(out[0].to_string(), "f32[B,2*S]");
        let p = Pad::new(&[0, -1, 0, 0], PadMode::Constant, 0.0);
        assert_eq!(p.infer(&cx, &[x]).unwrap()[0].to_string(), "f32[B,S-1]");
        let json = serde_json::to_string(&Pad {
            pads: vec![Dim::from(1u64), Dim::parse("S-1").unwrap()],
            mode: PadMode::Reflect,
            value: 0.0,
        })
        .unwrap();
        assert_eq!(json, r#"{"pads":[1,"S-1"],"mode":"reflect","value":0.0}"#);
        let x = TensorType::fixed(DType::F32, &[2]);
        let e = Pad::new(&[-2, -1], PadMode::Constant, 0.0)
            .infer(&cx, &[x])
            .unwrap_err()
            .to_string();
        assert!(e.contains("crop 3 elements"), "{e}");
    }
}
