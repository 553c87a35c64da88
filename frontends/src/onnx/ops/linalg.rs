//! Matrix products: MatMul, Gemm, Einsum.

use super::{one, Convert};
use crate::onnx::import::Importer;
use crate::onnx::node::{bad, err, unsup, NResult, Node};
use crate::onnx::value::Val;
use fuselage_ir::ops::reduce::ReduceKind;
use fuselage_ir::ops::{self as irops, Op};
use fuselage_ir::{DType, Dim};

pub(crate) const OPS: &[(&str, Convert)] =
    &[("MatMul", matmul), ("Gemm", gemm), ("Einsum", einsum)];

/// `x · y` with numpy's rules for 1-D operands (promote, multiply, drop the added dim).
pub(crate) fn matmul_np(cx: &mut Importer, x: Val, y: Val) -> NResult<Val> {
    let (rx, ry) = (cx.rank(&x)?, cx.rank(&y)?);
    let mm = Op::MatMul(irops::matmul::MatMul {});
    if rx >= 2 && ry >= 2 {
        return cx.bin(mm, x, y);
    }
    if rx == 0 || ry == 0 {
        bad!("MatMul operands must have rank >= 1");
    }
    let xs = cx.shape(&x)?;
    let ys = cx.shape(&y)?;
    let one_d = Dim::from(1u64);
    let x2 = if rx == 1 {
        cx.reshape(x, vec![one_d.clone(), xs[0].clone()])?
    } else {
        x
    };
    let y2 = if ry == 1 {
        cx.reshape(y, vec![ys[0].clone(), one_d])?
    } else {
        y
    };
    let p = cx.bin(mm, x2, y2)?;
    let mut ps = cx.shape(&p)?;
    if ry == 1 {
        ps.pop();
    }
    if rx == 1 {
        let l = ps.len();
        ps.remove(l - 1 - usize::from(ry != 1));
    }
    cx.reshape(p, ps)
}

fn matmul(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let (x, y) = (cx.input(n, 0)?, cx.input(n, 1)?);
    let dt = cx.dtype(&x)?;
    if !dt.is_float() {
        // Integer products in f64 (exact below 2^53), cast back.
        let xf = cx.cast_to(x, DType::F64)?;
        let yf = cx.cast_to(y, DType::F64)?;
        let p = matmul_np(cx, xf, yf)?;
        return one(cx.cast_to(p, dt)?);
    }
    one(matmul_np(cx, x, y)?)
}

fn gemm(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let (mut x, mut w) = (cx.input(n, 0)?, cx.input(n, 1)?);
    let c = cx.opt_input(n, 2)?;
    let (alpha, beta) = (n.f("alpha", 1.0), n.f("beta", 1.0));
    if cx.rank(&x)? != 2 || cx.rank(&w)? != 2 {
        bad!("Gemm operands must be matrices");
    }
    if n.flag("transA", false) {
        x = cx.transpose(x, vec![1, 0])?;
    }
    if n.flag("transB", false) {
        w = cx.transpose(w, vec![1, 0])?;
    }
    if let Some(c) = &c {
        let ws = cx.shape(&w)?;
        if alpha == 1.0 && beta == 1.0 && cx.shape(c)? == [ws[1].clone()] {
            return one(cx.emit(Op::Linear(irops::linear::Linear {}), &[x, w, c.clone()])?);
        }
    }
    let mut y = cx.bin(Op::MatMul(irops::matmul::MatMul {}), x, w)?;
    if alpha != 1.0 {
        let s = cx.scalar_like(&y, alpha, "alpha")?;
        y = cx.mul(y, s)?;
    }
    if let Some(mut c) = c {
        if beta != 1.0 {
            let s = cx.scalar_like(&c, beta, "beta")?;
            c = cx.mul(c, s)?;
        }
        y = cx.add(y, c)?;
    }
    one(y)
}

/// Einsum: equations with explicit or implicit output, ellipsis, repeated indices (diagonals),
/// any number of operands (contracted pairwise, left to right).
fn einsum(cx: &mut Importer, n: &Node) -> NResult<Vec<Val>> {
    let eq = n.s_or("equation", "").replace(' ', "");
    let args = cx.inputs(n)?;
    let (lhs, out) = match eq.split_once("->") {
        Some((l, o)) => (l.to_string(), Some(o.to_string())),
        None => (eq.clone(), None),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != args.len() {
        bad!(
            "equation `{eq}` has {} terms but the node has {} inputs",
            terms.len(),
            args.len()
        );
    }
    // Expand `...` into fresh index letters (uppercase, not used by ONNX equations' lowercase).
    let mut ell_rank = 0usize;
    let mut parsed: Vec<Vec<char>> = vec![];
    for (t, a) in terms.iter().zip(&args) {
        let r = cx.rank(a)?;
        let letters = t.chars().filter(|c| c.is_ascii_alphabetic()).count();
        if t.contains("...") {
            if r < letters {
                bad!("term `{t}` has more indices than operand rank {r}");
            }
            ell_rank = ell_rank.max(r - letters);
        } else if letters != r {
            bad!("term `{t}` has {letters} indices but the operand has rank {r}");
        }
    }
    let ell: Vec<char> = (0..ell_rank).map(|i| (b'A' + i as u8) as char).collect();
    for (t, a) in terms.iter().zip(&args) {
        let r = cx.rank(a)?;
        let letters = t.chars().filter(|c| c.is_ascii_alphabetic()).count();
        let mut v = vec![];
        let mut rest = *t;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("...") {
                v.extend(&ell[ell_rank - (r - letters)..]);
                rest = after;
            } else {
                let c = rest.chars().next().unwrap_or('?');
                if !c.is_ascii_lowercase() && !c.is_ascii_uppercase() {
                    bad!("bad character `{c}` in equation `{eq}`");
                }
                v.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        parsed.push(v);
    }
    let out: Vec<char> = match out {
        Some(o) => {
            let mut v = vec![];
            let mut rest = o.as_str();
            while !rest.is_empty() {
                if let Some(after) = rest.strip_prefix("...") {
                    v.extend(&ell);
                    rest = after;
                } else {
                    let c = rest.chars().next().unwrap_or('?');
                    v.push(c);
                    rest = &rest[c.len_utf8()..];
                }
            }
            v
        }
        None => {
            // Implicit: ellipsis dims, then indices appearing once, alphabetically.
            let mut count = std::collections::BTreeMap::new();
            for t in &parsed {
                for &c in t.iter().filter(|c| c.is_ascii_lowercase()) {
                    *count.entry(c).or_insert(0) += 1;
                }
            }
            let mut v = ell.clone();
            v.extend(count.into_iter().filter(|(_, k)| *k == 1).map(|(c, _)| c));
            v
        }
    };
    // Take diagonals of repeated indices within a term, then sum indices that appear in no
    // other term and not in the output.
    let mut ops: Vec<(Val, Vec<char>)> = vec![];
    for (a, t) in args.into_iter().zip(parsed) {
        let (a, t) = diagonalize(cx, a, t)?;
        ops.push((a, t));
    }
    let needed = |ops: &[(Val, Vec<char>)], skip: usize, c: char| {
        out.contains(&c)
            || ops
                .iter()
                .enumerate()
                .any(|(i, (_, t))| i != skip && t.contains(&c))
    };
    for i in 0..ops.len() {
        let (a, t) = ops[i].clone();
        let summed: Vec<i64> = (0..t.len())
            .filter(|&k| !needed(&ops, i, t[k]))
            .map(|k| k as i64)
            .collect();
        if !summed.is_empty() {
            let a = cx.reduce(ReduceKind::Sum, a, summed.clone(), false)?;
            let t: Vec<char> = t
                .iter()
                .enumerate()
                .filter(|(k, _)| !summed.contains(&(*k as i64)))
                .map(|(_, &c)| c)
                .collect();
            ops[i] = (a, t);
        }
    }
    // Contract pairwise, left to right.
    let mut it = ops.into_iter();
    let Some((mut acc, mut at)) = it.next() else {
        bad!("no operands")
    };
    let rest: Vec<(Val, Vec<char>)> = it.collect();
    for (j, (b, bt)) in rest.iter().enumerate() {
        let later: Vec<char> = rest[j + 1..]
            .iter()
            .flat_map(|(_, t)| t.iter().copied())
            .chain(out.iter().copied())
            .collect();
        let (v, t) = contract(cx, acc, &at, b.clone(), bt, &later)?;
        acc = v;
        at = t;
    }
    // Sum what is left that the output does not keep, then permute to the output order.
    let summed: Vec<i64> = (0..at.len())
        .filter(|&k| !out.contains(&at[k]))
        .map(|k| k as i64)
        .collect();
    if !summed.is_empty() {
        acc = cx.reduce(ReduceKind::Sum, acc, summed.clone(), false)?;
        at = at
            .iter()
            .enumerate()
            .filter(|(k, _)| !summed.contains(&(*k as i64)))
            .map(|(_, &c)| c)
            .collect();
    }
    let perm: Vec<usize> = out
        .iter()
        .map(|c| at.iter().position(|x| x == c))
        .collect::<Option<_>>()
        .ok_or_else(|| err(format!("equation `{eq}`: an output index is in no input")))?;
    if perm.len() != at.len() {
        bad!("equation `{eq}`: output repeats an index");
    }
    one(cx.transpose(acc, perm)?)
}

/// Replace repeated indices of one term by their diagonal (`ii -> i`).
fn diagonalize(cx: &mut Importer, mut a: Val, mut t: Vec<char>) -> NResult<(Val, Vec<char>)> {
    loop {
        let dup = (0..t.len()).find_map(|i| {
            t[i + 1..]
                .iter()
                .position(|&c| c == t[i])
                .map(|j| (i, i + 1 + j))
        });
        let Some((i, j)) = dup else {
            return Ok((a, t));
        };
        let s = cx.shape(&a)?;
        if s[i] != s[j] {
            bad!("repeated index `{}` over dims {} and {}", t[i], s[i], s[j]);
        }
        // mask[.., i, .., j, ..] = (i == j); sum over j.
        let pi = cx.iota(s.clone(), i as i64, DType::I64)?;
        let pj = cx.iota(s, j as i64, DType::I64)?;
        let eq = cx.compare(fuselage_ir::ops::compare::Predicate::Eq, pi, pj)?;
        let dt = cx.dtype(&a)?;
        let m = cx.cast_to(eq, dt)?;
        let am = cx.mul(a, m)?;
        a = cx.reduce(ReduceKind::Sum, am, vec![j as i64], false)?;
        t.remove(j);
    }
}

/// Contract two operands over the indices they share that are not needed later; returns the
/// product with its index letters ([batch…, a-only…, b-only…]).
fn contract(
    cx: &mut Importer,
    a: Val,
    at: &[char],
    b: Val,
    bt: &[char],
    later: &[char],
) -> NResult<(Val, Vec<char>)> {
    let shared: Vec<char> = at.iter().copied().filter(|c| bt.contains(c)).collect();
    let batch: Vec<char> = shared
        .iter()
        .copied()
        .filter(|c| later.contains(c))
        .collect();
    let k: Vec<char> = shared
        .iter()
        .copied()
        .filter(|c| !later.contains(c))
        .collect();
    let m: Vec<char> = at.iter().copied().filter(|c| !bt.contains(c)).collect();
    let nn: Vec<char> = bt.iter().copied().filter(|c| !at.contains(c)).collect();
    let pos = |t: &[char], c: char| t.iter().position(|&x| x == c);
    let (sa, sb) = (cx.shape(&a)?, cx.shape(&b)?);
    let dims = |t: &[char], s: &[Dim], cs: &[char]| -> Vec<Dim> {
        cs.iter()
            .filter_map(|&c| pos(t, c).map(|i| s[i].clone()))
            .collect()
    };
    let perm_a: Vec<usize> = batch
        .iter()
        .chain(&m)
        .chain(&k)
        .filter_map(|&c| pos(at, c))
        .collect();
    let perm_b: Vec<usize> = batch
        .iter()
        .chain(&k)
        .chain(&nn)
        .filter_map(|&c| pos(bt, c))
        .collect();
    let x = cx.transpose(a, perm_a)?;
    let y = cx.transpose(b, perm_b)?;
    let bd = dims(at, &sa, &batch);
    let (md, kd, nd) = (dims(at, &sa, &m), dims(at, &sa, &k), dims(bt, &sb, &nn));
    let prod = |d: &[Dim]| Dim::product(d).map_err(err);
    let mut xa = bd.clone();
    xa.extend([prod(&md)?, prod(&kd)?]);
    let mut yb = bd.clone();
    yb.extend([prod(&kd)?, prod(&nd)?]);
    let x = cx.reshape(x, xa)?;
    let y = cx.reshape(y, yb)?;
    let dt = cx.dtype(&x)?;
    if !dt.is_float() {
        unsup!("integer einsum contractions ({dt})");
    }
    let p = cx.bin(Op::MatMul(irops::matmul::MatMul {}), x, y)?;
    let mut pd = bd;
    pd.extend(md);
    pd.extend(nd);
    let p = cx.reshape(p, pd)?;
    let letters: Vec<char> = batch.iter().chain(&m).chain(&nn).copied().collect();
    Ok((p, letters))
}
