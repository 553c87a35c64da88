//! Losses: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss, composed as the ONNX
//! reference computes them (class weights gathered with clipped indices, `ignore_index`
//! targets weighted 0, a weighted mean divided by the sum of the weights).

use super::{one, Convert};
use crate::onnx::import::Importer;
use crate::onnx::node::{bad, NResult, Node};
use crate::onnx::value::Val;
use fuselage_ir::ops::compare::Predicate;
use fuselage_ir::ops::reduce::ReduceKind;
use fuselage_ir::ops::{self as irops, Op};
use fuselage_ir::{DType, Dim};

pub(crate) const OPS: &[(&str, Convert)] = &[
    ("NegativeLogLikelihoodLoss", nll),
    ("SoftmaxCrossEntropyLoss", sce),
];

fn nll(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let target = cx.input(n, 1)?;
    let weight = cx.opt_input(n, 2)?;
    one(nll_of(cx, n, x, target, weight)?)
}

fn sce(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let x = cx.input(n, 0)?;
    let target = cx.input(n, 1)?;
    let weight = cx.opt_input(n, 2)?;
    let s = cx.un(Op::Softmax(irops::softmax::Softmax { axis: 1 }), x)?;
    let log_prob = cx.un(Op::Log(irops::log::Log {}), s)?;
    let loss = nll_of(cx, n, log_prob.clone(), target, weight)?;
    Ok(vec![loss, log_prob])
}

/// `−x[n, target[n, d…], d…]` per element, weighted and reduced.
fn nll_of(cx: &mut Importer, n: &Node, x: Val, target: Val, weight: Option<Val>) -> NResult<Val> {
    let xs = cx.shape(&x)?;
    if xs.len() < 2 {
        bad!("the input must be [N, C, d…], found rank {}", xs.len());
    }
    let ts = cx.shape(&target)?;
    if ts.len() + 1 != xs.len() {
        bad!("target must be [N, d…] for input [N, C, d…]");
    }
    let dt = cx.dtype(&x)?;
    let c = xs[1].clone();
    let ignore = n.has("ignore_index").then(|| n.i("ignore_index", -100));
    let t = cx.cast_to(target, DType::I64)?;
    // one_hot[n, c, d…] = (c == target[n, d…])
    let mut tshape = ts.clone();
    tshape.insert(1, Dim::from(1u64));
    let t1 = cx.reshape(t.clone(), tshape)?;
    let cls = cx.iota(xs.clone(), 1, DType::I64)?;
    let hit = cx.compare(Predicate::Eq, cls, t1)?;
    let zero = cx.scalar(dt, 0.0, "zero");
    let picked = cx.select(hit, x, zero.clone())?;
    let picked = cx.reduce(ReduceKind::Sum, picked, vec![1], false)?;
    let loss = cx.un(Op::Neg(irops::neg::Neg {}), picked)?;
    // Per-element weights: weight[clip(target)] and 0 at ignore_index, or 1/0 for ignore_index.
    let keep = match ignore {
        Some(ii) => {
            let iv = cx.scalar(DType::I64, ii as f64, "ignore_index");
            Some(cx.compare(Predicate::Ne, t.clone(), iv)?)
        }
        None => None,
    };
    let gw = match weight {
        Some(w) => {
            let cmax = c
                .fixed()
                .map(|c| c.saturating_sub(1) as f64)
                .unwrap_or(f64::MAX);
            let tc = cx.un(
                Op::Clamp(irops::clamp::Clamp {
                    min: Some(0.0),
                    max: Some(cmax),
                }),
                t,
            )?;
            let g = cx.bin(Op::Gather(irops::gather::Gather { axis: 0 }), w, tc)?;
            Some(match &keep {
                Some(k) => cx.select(k.clone(), g, zero.clone())?,
                None => g,
            })
        }
        None => match &keep {
            Some(k) => {
                let onev = cx.scalar(dt, 1.0, "one");
                Some(cx.select(k.clone(), onev, zero.clone())?)
            }
            None => None,
        },
    };
    let loss = match &keep {
        Some(k) => cx.select(k.clone(), loss, zero)?,
        None => loss,
    };
    let all: Vec<i64> = (0..ts.len() as i64).collect();
    let reduction = n.s_or("reduction", "mean");
    Ok(match (reduction.as_str(), gw) {
        ("none", Some(g)) => cx.mul(g, loss)?,
        ("none", None) => loss,
        ("sum", Some(g)) => {
            let l = cx.mul(g, loss)?;
            cx.reduce(ReduceKind::Sum, l, all, false)?
        }
        ("sum", None) => cx.reduce(ReduceKind::Sum, loss, all, false)?,
        ("mean", Some(g)) => {
            let l = cx.mul(g.clone(), loss)?;
            let num = cx.reduce(ReduceKind::Sum, l, all.clone(), false)?;
            let den = cx.reduce(ReduceKind::Sum, g, all, false)?;
            cx.div(num, den)?
        }
        ("mean", None) => cx.reduce(ReduceKind::Mean, loss, all, false)?,
        (other, _) => bad!("unknown reduction `{other}`"),
    })
}
