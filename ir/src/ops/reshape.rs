//! `reshape`: same elements in row-major order, new shape.
//!
//! Entries of `shape` are sizes (`i64`, `-1` = infer exactly one dim from the element count) or
//! symbol names (`"S"`). Type inference checks the element counts as monomials (fixed product ×
//! multiset of symbols): the result's monomial must equal the operand's, so a symbol can be
//! moved but not merged with another or invented; a `-1` must resolve to a single fixed size or a
//! single symbol.

use super::util::{expect_arity, op_err};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::{Dim, TensorType};
use serde::{Deserialize, Serialize};

/// One entry of a reshape target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ReshapeDim {
    /// A size, or `-1` to infer this dim.
    Size(i64),
    /// A symbolic dim.
    Sym(String),
}

/// Reshape to `shape` (row-major, no data movement).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reshape {
    /// The target shape: sizes, one optional `-1`, or symbol names.
    pub shape: Vec<ReshapeDim>,
}

/// Fixed product and sorted symbol multiset of a shape.
fn monomial(dims: &[Dim]) -> Result<(u64, Vec<String>), OpError> {
    let mut f: u64 = 1;
    let mut syms = vec![];
    for d in dims {
        match d {
            Dim::Fixed(n) => {
                f = f
                    .checked_mul(*n)
                    .ok_or_else(|| OpError::new("reshape: element count overflows u64"))?
            }
            Dim::Sym(s) => syms.push(s.clone()),
        }
    }
    syms.sort();
    Ok((f, syms))
}

fn show(f: u64, syms: &[String]) -> String {
    let mut parts = vec![];
    if f != 1 || syms.is_empty() {
        parts.push(f.to_string());
    }
    parts.extend(syms.iter().cloned());
    parts.join("·")
}

impl Reshape {
    fn shape_str(&self) -> String {
        let v: Vec<String> = self
            .shape
            .iter()
            .map(|d| match d {
                ReshapeDim::Size(n) => n.to_string(),
                ReshapeDim::Sym(s) => s.clone(),
            })
            .collect();
        v.join(",")
    }

    /// Validate entries: returns the position of the `-1`, if any.
    fn infer_pos(&self) -> Result<Option<usize>, OpError> {
        let mut pos = None;
        for (i, d) in self.shape.iter().enumerate() {
            match d {
                ReshapeDim::Size(-1) => {
                    if pos.is_some() {
                        crate::bail!("reshape target [{}] has more than one -1", self.shape_str());
                    }
                    pos = Some(i);
                }
                ReshapeDim::Size(n) if *n < 0 => {
                    crate::bail!(
                        "reshape target [{}] has size {n}; sizes are >= 0 or -1 (infer)",
                        self.shape_str()
                    )
                }
                ReshapeDim::Sym(s) if s.is_empty() => {
                    crate::bail!("reshape target has an empty symbol name")
                }
                _ => {}
            }
        }
        Ok(pos)
    }
}

impl OpSpec for Reshape {
    const NAME: &'static str = "reshape";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        expect_arity(Self::NAME, inputs, 1)?;
        let x = &inputs[0];
        let pos = self.infer_pos()?;
        let known: Vec<Dim> = self
            .shape
            .iter()
            .filter_map(|d| match d {
                ReshapeDim::Size(-1) => None,
                ReshapeDim::Size(n) => Some(Dim::Fixed(*n as u64)),
                ReshapeDim::Sym(s) => Some(Dim::Sym(s.clone())),
            })
            .collect();
        let (fi, si) = monomial(&x.shape)?;
        let (fo, so) = monomial(&known)?;
        let mismatch = || {
            OpError::new(format!(
                "reshape cannot turn {x} ({} elements) into [{}] ({} elements)",
                show(fi, &si),
                self.shape_str(),
                show(fo, &so)
            ))
        };
        let inferred = match pos {
            None => {
                if fi != fo || si != so {
                    return Err(mismatch());
                }
                None
            }
            Some(_) => {
                // The -1 is the quotient of the two monomials; it must be one dim.
                let mut rest = si.clone();
                for s in &so {
                    match rest.iter().position(|r| r == s) {
                        Some(p) => {
                            rest.remove(p);
                        }
                        None => return Err(mismatch()),
                    }
                }
                if fo == 0 {
                    crate::bail!(
                        "reshape cannot infer -1 in [{}]: the other dims have 0 elements",
                        self.shape_str()
                    );
                }
                if !fi.is_multiple_of(fo) {
                    return Err(mismatch());
                }
                let q = fi / fo;
                match (q, rest.len()) {
                    (q, 0) => Some(Dim::Fixed(q)),
                    (1, 1) => Some(Dim::Sym(rest[0].clone())),
                    _ => crate::bail!(
                        "reshape of {x} to [{}]: -1 would be {}, which is not a single dim \
                         (name it with a symbol or split it)",
                        self.shape_str(),
                        show(q, &rest)
                    ),
                }
            }
        };
        let shape = self.shape.iter().map(|d| match d {
            ReshapeDim::Size(-1) => inferred.clone().expect("-1 was inferred"),
            ReshapeDim::Size(n) => Dim::Fixed(*n as u64),
            ReshapeDim::Sym(s) => Dim::Sym(s.clone()),
        });
        Ok(vec![TensorType::new(x.dtype, shape)])
    }

    fn eval(&self, cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity(Self::NAME, inputs, 1)?;
        let x = inputs[0];
        let pos = self.infer_pos()?;
        let mut shape = Vec::with_capacity(self.shape.len());
        for d in &self.shape {
            shape.push(match d {
                ReshapeDim::Size(-1) => 1,
                ReshapeDim::Size(n) => *n as usize,
                ReshapeDim::Sym(s) => match cx.bindings.get(s) {
                    Some(&n) => n as usize,
                    None => crate::bail!("reshape: symbol {s} is not bound"),
                },
            });
        }
        if let Some(p) = pos {
            let other: usize = shape.iter().product();
            if other == 0 || !x.numel().is_multiple_of(other) {
                crate::bail!(
                    "reshape cannot infer -1: {:?} ({} elements) into {shape:?}",
                    x.shape(),
                    x.numel()
                );
            }
            shape[p] = x.numel() / other;
        }
        if shape.iter().product::<usize>() != x.numel() {
            crate::bail!(
                "reshape of shape {:?} ({} elements) to {shape:?} (target [{}]) changes the element count",
                x.shape(),
                x.numel(),
                self.shape_str()
            );
        }
        Ok(vec![x.reshaped(shape).map_err(op_err)?])
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // naive reference formulas index like the math
mod tests {
    use super::{Reshape, ReshapeDim};
    use crate::dtype::DType;
    use crate::graph::Graph;
    use crate::module::Module;
    use crate::ops::testing::{eval_op, rand_tensor};
    use crate::ops::{InferCx, Op, OpSpec};
    use crate::types::{Dim, TensorType};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn keeps_row_major_order(a in 1usize..5, b in 1usize..5, c in 1usize..4,
                                 infer in proptest::bool::ANY, seed in 0u64..1000) {
            let x = rand_tensor(DType::F32, vec![a, b, c], seed);
            let first = if infer { ReshapeDim::Size(-1) } else { ReshapeDim::Size((a * b) as i64) };
            let op = Reshape { shape: vec![first, ReshapeDim::Size(c as i64)] };
            let out = eval_op(Op::Reshape(op), std::slice::from_ref(&x)).unwrap();
            prop_assert_eq!(out[0].shape(), &[a * b, c][..]);
            // Naive: element (i, j, k) lands at row i*b + j, column k.
            for i in 0..a { for j in 0..b { for k in 0..c {
                prop_assert_eq!(out[0].at(&[i * b + j, k]), x.at(&[i, j, k]));
            }}}
        }
    }

    fn infer(op: &Reshape, ty: TensorType) -> Result<Vec<TensorType>, crate::error::OpError> {
        let m = Module::new();
        op.infer(&InferCx { module: &m }, &[ty])
    }

    #[test]
    fn symbolic_monomials() {
        let ty = TensorType::new(DType::F32, ["B".into(), "S".into(), 384u64.into()]);
        let op: Reshape = serde_json::from_str(r#"{"shape":["B","S",6,-1]}"#).unwrap();
        let t = infer(&op, ty.clone()).unwrap();
        assert_eq!(
            t[0].shape,
            vec![Dim::from("B"), "S".into(), 6u64.into(), 64u64.into()]
        );
        let op: Reshape = serde_json::from_str(r#"{"shape":[-1,"S",384]}"#).unwrap();
        assert_eq!(infer(&op, ty.clone()).unwrap()[0].shape[0], Dim::from("B"));
        // B·S cannot be one dim, and a new symbol cannot appear.
        let op: Reshape = serde_json::from_str(r#"{"shape":[-1,384]}"#).unwrap();
        let e = infer(&op, ty.clone()).unwrap_err().to_string();
        assert!(e.contains("not a single dim"), "{e}");
        let op: Reshape = serde_json::from_str(r#"{"shape":["N",384]}"#).unwrap();
        let e = infer(&op, ty).unwrap_err().to_string();
        assert!(e.contains("384·B·S elements"), "{e}");
        // Evaluation resolves symbols from the bindings.
        let mut g = Graph::new();
        let m = Module::new();
        let x = g.add_input("x", TensorType::new(DType::F32, ["B".into(), 6u64.into()]));
        let op: Reshape = serde_json::from_str(r#"{"shape":[2,"B",3]}"#).unwrap();
        let y = g
            .add_inferred(&m, Op::Reshape(op), vec![x.into()], None)
            .unwrap();
        g.add_output("y", y.into());
        let mut m = m;
        m.functions.insert("main".into(), g);
        let xt = rand_tensor(DType::F32, vec![5, 6], 3);
        let out =
            crate::eval::run_function(&m, "main", std::slice::from_ref(&xt), &mut |_, _, _| {})
                .unwrap();
        assert_eq!(out[0].shape(), &[2, 5, 3]);
        assert_eq!(out[0].data(), xt.data());
    }

    #[test]
    fn element_count_mismatch_is_a_type_error() {
        let x = rand_tensor(DType::F32, vec![2, 3], 0);
        let op = Reshape {
            shape: vec![ReshapeDim::Size(4), ReshapeDim::Size(2)],
        };
        let e = eval_op(Op::Reshape(op), std::slice::from_ref(&x))
            .unwrap_err()
            .to_string();
        assert!(e.contains("6 elements") && e.contains("8 elements"), "{e}");
        let op = Reshape {
            shape: vec![ReshapeDim::Size(-1), ReshapeDim::Size(-1)],
        };
        let e = eval_op(Op::Reshape(op), &[x]).unwrap_err().to_string();
        assert!(e.contains("more than one -1"), "{e}");
    }
}
