//! The numeric check: seeded inputs for the entry function, output comparison (max abs error,
//! max rel error, cosine) against a [`Tolerance`], and the search for the first diverging node.
//!
//! ## Inputs
//! Symbolic dims take the size configured for that symbol ([`NumericOptions::sym_sizes`], by
//! default `B=2, S=8`) or [`NumericOptions::default_sym_size`]. When a pass fixes a dim (shape
//! specialization), the fixed size wins for both the before and the after run, so both run on the
//! same tensors. Floats are uniform in `[-1, 1)`; integers uniform in `[0, int_high)` (default
//! `[0, 2)`, so an index input never goes out of range of any gather table with two or more
//! rows); bools are 0 or 1.
//!
//! ## First diverging node
//! When outputs diverge, both modules run once more on the reference interpreter with an
//! observer that records every node's results. Nodes of the transformed graph are visited in
//! its topological order and matched to a node of the original graph:
//! 1. by name, when the node has a name that exactly one original node has, with the same
//!    number of results;
//! 2. otherwise by id, when the original node with the same id has the same op key
//!    ([`Op::key`](fuselage_ir::Op::key)), operand count and result types (nodes a pass left
//!    alone keep their id and op).
//!
//! Unmatched nodes are skipped. The first matched node whose results differ in shape or exceed
//! the tolerance is reported; if none does, the first diverging output is. The heuristic can be
//! fooled by a pass that renumbers nodes; it only affects the diagnosis, never the verdict.

use crate::pass::Tolerance;
use fuselage_ir::eval::run_function;
use fuselage_ir::{DType, Module, Node, NodeId, Tensor, TensorType};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Configuration of the numeric check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct NumericOptions {
    /// Run the check after every pass that reports a change.
    pub enabled: bool,
    /// Seed of the generated inputs.
    pub seed: u64,
    /// Sizes of named symbolic dims.
    pub sym_sizes: BTreeMap<String, u64>,
    /// Size of any symbol not in `sym_sizes`.
    pub default_sym_size: u64,
    /// Integer inputs are drawn uniformly from `[0, int_high)`.
    pub int_high: i64,
    /// Tolerance overrides by pass name (otherwise the pass kind's default).
    pub tolerance: BTreeMap<String, Tolerance>,
    /// Entry inputs to check on instead of seeded ones — a real sample such as a tokenized
    /// sentence, which a quantization check needs: seeded token ids are not text, and a
    /// model's activations on them can be far from any it was trained for.
    #[serde(skip)]
    pub inputs: Option<Vec<fuselage_ir::Tensor>>,
}

impl Default for NumericOptions {
    fn default() -> Self {
        NumericOptions {
            enabled: true,
            seed: 0,
            sym_sizes: [("B".to_string(), 2), ("S".to_string(), 8)]
                .into_iter()
                .collect(),
            default_sym_size: 4,
            int_high: 2,
            tolerance: BTreeMap::new(),
            inputs: None,
        }
    }
}

/// Comparison of one output.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OutputCheck {
    /// Output name.
    pub name: String,
    /// Largest `|after − before|`.
    pub max_abs: f64,
    /// Largest `|after − before| / max(|before|, |after|)` (0 where both are 0).
    pub max_rel: f64,
    /// Cosine similarity of the finite elements (1 when both are all zero).
    pub cosine: f64,
    /// Within the tolerance.
    pub passed: bool,
    /// Why not, when the shapes differ or an element is out of tolerance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// The numeric check of one pass.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NumericCheck {
    /// Largest absolute error over all outputs.
    pub max_abs: f64,
    /// Largest relative error over all outputs.
    pub max_rel: f64,
    /// Smallest cosine over all outputs.
    pub cosine_min: f64,
    /// Every output within the tolerance.
    pub passed: bool,
    /// The tolerance applied.
    pub tolerance: Tolerance,
    /// Per output.
    pub outputs: Vec<OutputCheck>,
}

impl NumericCheck {
    /// A one-line summary.
    pub fn summary(&self) -> String {
        let worst: Vec<String> = self
            .outputs
            .iter()
            .filter(|o| !o.passed)
            .map(|o| match &o.problem {
                Some(p) => format!("output `{}`: {p}", o.name),
                None => format!("output `{}`", o.name),
            })
            .collect();
        format!(
            "max abs {:.3e}, max rel {:.3e}, cosine min {:.9} (tolerance abs {:e}, rel {:e}, \
             cosine ≥ {}){}",
            self.max_abs,
            self.max_rel,
            self.cosine_min,
            self.tolerance.abs,
            self.tolerance.rel,
            self.tolerance.min_cosine,
            if worst.is_empty() {
                String::new()
            } else {
                format!("; {}", worst.join("; "))
            }
        )
    }
}

/// Concrete input shapes for a check of `before` against `after` input types.
pub fn concrete_shapes(
    before: &[TensorType],
    after: &[TensorType],
    opts: &NumericOptions,
) -> Result<Vec<(DType, Vec<usize>)>, String> {
    if before.len() != after.len() {
        return Err(format!(
            "the pass changed the number of entry inputs from {} to {}",
            before.len(),
            after.len()
        ));
    }
    let mut bound: HashMap<String, u64> = HashMap::new();
    for (i, (b, a)) in before.iter().zip(after).enumerate() {
        if b.dtype != a.dtype || b.rank() != a.rank() {
            return Err(format!("the pass changed entry input {i} from {b} to {a}"));
        }
        for (db, da) in b.shape.iter().zip(&a.shape) {
            match (db.fixed(), da.fixed(), db.as_sym(), da.as_sym()) {
                (Some(x), Some(y), _, _) if x != y => {
                    return Err(format!("the pass changed entry input {i} from {b} to {a}"))
                }
                (None, Some(n), Some(s), _) | (Some(n), None, _, Some(s)) => {
                    if let Some(prev) = bound.insert(s.to_string(), n) {
                        if prev != n {
                            return Err(format!(
                                "symbol {s} is fixed to both {prev} and {n} by the pass"
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let size = |s: &str| -> u64 {
        bound
            .get(s)
            .or_else(|| opts.sym_sizes.get(s))
            .copied()
            .unwrap_or(opts.default_sym_size)
    };
    let mut all: HashMap<String, u64> = HashMap::new();
    for t in before.iter().chain(after) {
        for s in t.symbols() {
            let v = size(&s);
            all.insert(s, v);
        }
    }
    before
        .iter()
        .zip(after)
        .map(|(b, a)| {
            let shape = b
                .shape
                .iter()
                .zip(&a.shape)
                .map(|(db, da)| match (db.fixed(), da.fixed()) {
                    (Some(n), _) | (_, Some(n)) => Ok(n as usize),
                    _ => db
                        .resolve(&all)
                        .map(|n| n as usize)
                        .map_err(|e| format!("entry input {b}: {e}")),
                })
                .collect::<Result<Vec<usize>, String>>()?;
            Ok((b.dtype, shape))
        })
        .collect()
}

/// Seeded inputs of the given shapes.
pub fn generate_inputs(
    shapes: &[(DType, Vec<usize>)],
    opts: &NumericOptions,
) -> Result<Vec<Tensor>, String> {
    shapes
        .iter()
        .enumerate()
        .map(|(i, (dtype, shape))| {
            let seed = opts
                .seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(i as u64);
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let n: usize = fuselage_ir::tensor::checked_numel(shape)
                .ok_or_else(|| format!("input {i} shape {shape:?} overflows"))?;
            let data: Vec<f64> = if *dtype == DType::Bool {
                (0..n).map(|_| rng.gen_range(0..2) as f64).collect()
            } else if dtype.is_int() {
                let (lo, hi) = dtype.int_range().unwrap_or((0.0, 1.0));
                let lo = lo.max(0.0) as i64;
                let hi = (opts.int_high as f64).min(hi + 1.0) as i64;
                let hi = hi.max(lo + 1);
                (0..n).map(|_| rng.gen_range(lo..hi) as f64).collect()
            } else {
                (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect()
            };
            Tensor::new(*dtype, shape.clone(), data).map_err(|e| e.to_string())
        })
        .collect()
}

/// Compare two result tensors.
pub fn compare_tensors(
    name: &str,
    before: &Tensor,
    after: &Tensor,
    tol: &Tolerance,
) -> OutputCheck {
    if before.shape() != after.shape() {
        return OutputCheck {
            name: name.to_string(),
            max_abs: f64::INFINITY,
            max_rel: f64::INFINITY,
            cosine: 0.0,
            passed: false,
            problem: Some(format!(
                "shape {:?} before, {:?} after",
                before.shape(),
                after.shape()
            )),
        };
    }
    let (mut max_abs, mut max_rel) = (0.0f64, 0.0f64);
    let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    let mut first_bad: Option<(usize, f64, f64)> = None;
    for (i, (&a, &b)) in before.data().iter().zip(after.data()).enumerate() {
        if !tol.element_ok(a, b) && first_bad.is_none() {
            first_bad = Some((i, a, b));
        }
        if a.is_finite() && b.is_finite() {
            let d = (b - a).abs();
            max_abs = max_abs.max(d);
            let m = a.abs().max(b.abs());
            if m > 0.0 {
                max_rel = max_rel.max(d / m);
            }
            dot += a * b;
            na += a * a;
            nb += b * b;
        } else if !(a == b || (a.is_nan() && b.is_nan())) {
            max_abs = f64::INFINITY;
            max_rel = f64::INFINITY;
        }
    }
    let cosine = if na == 0.0 && nb == 0.0 {
        1.0
    } else if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        (dot / (na.sqrt() * nb.sqrt())).clamp(-1.0, 1.0)
    };
    let mut problem = first_bad.map(|(i, a, b)| {
        let idx = unravel(i, before.shape());
        format!("element {idx:?} is {b} after, {a} before")
    });
    if problem.is_none() && cosine < tol.min_cosine {
        problem = Some(format!("cosine {cosine} below {}", tol.min_cosine));
    }
    OutputCheck {
        name: name.to_string(),
        max_abs,
        max_rel,
        cosine,
        passed: problem.is_none(),
        problem,
    }
}

fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for ax in (0..shape.len()).rev() {
        let d = shape[ax].max(1);
        idx[ax] = i % d;
        i /= d;
    }
    idx
}

/// Compare all outputs.
pub fn compare_outputs(
    names: &[String],
    before: &[Tensor],
    after: &[Tensor],
    tol: Tolerance,
) -> NumericCheck {
    let mut outputs: Vec<OutputCheck> = before
        .iter()
        .zip(after)
        .enumerate()
        .map(|(i, (b, a))| {
            let name = names.get(i).cloned().unwrap_or_else(|| format!("#{i}"));
            compare_tensors(&name, b, a, &tol)
        })
        .collect();
    if before.len() != after.len() {
        outputs.push(OutputCheck {
            name: "<count>".into(),
            max_abs: f64::INFINITY,
            max_rel: f64::INFINITY,
            cosine: 0.0,
            passed: false,
            problem: Some(format!(
                "{} outputs before, {} after",
                before.len(),
                after.len()
            )),
        });
    }
    NumericCheck {
        max_abs: outputs.iter().map(|o| o.max_abs).fold(0.0, f64::max),
        max_rel: outputs.iter().map(|o| o.max_rel).fold(0.0, f64::max),
        cosine_min: outputs.iter().map(|o| o.cosine).fold(1.0, f64::min),
        passed: outputs.iter().all(|o| o.passed),
        tolerance: tol,
        outputs,
    }
}

type Trace = Vec<(NodeId, Node, Vec<Tensor>)>;

fn trace(m: &Module, inputs: &[Tensor]) -> Result<Trace, String> {
    let entry = m.entry_name().ok_or("module has no functions")?;
    let mut out: Trace = vec![];
    run_function(m, entry, inputs, &mut |id, n, r| {
        out.push((id, n.clone(), r.to_vec()))
    })
    .map_err(|e| e.to_string())?;
    Ok(out)
}

/// Find the first node of `after` whose values diverge from its counterpart in `before` (see
/// the module docs for the matching heuristic). Returns a description.
pub fn first_diverging_node(
    before: &Module,
    after: &Module,
    inputs: &[Tensor],
    tol: &Tolerance,
) -> String {
    let tb = match trace(before, inputs) {
        Ok(t) => t,
        Err(e) => return format!("<could not trace the module before the pass: {e}>"),
    };
    let ta = match trace(after, inputs) {
        Ok(t) => t,
        Err(e) => return format!("<could not trace the module after the pass: {e}>"),
    };
    let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut by_id: HashMap<NodeId, usize> = HashMap::new();
    for (k, (id, n, _)) in tb.iter().enumerate() {
        if let Some(name) = &n.name {
            by_name.entry(name.as_str()).or_default().push(k);
        }
        by_id.insert(*id, k);
    }
    let fname = after.entry_name().unwrap_or("?");
    let describe = |id: NodeId, n: &Node| match &n.name {
        Some(name) => format!("{id} \"{name}\" ({}) in @{fname}", n.op.name()),
        None => format!("{id} ({}) in @{fname}", n.op.name()),
    };
    for (id, n, vals) in &ta {
        if let fuselage_ir::Op::Input(_) = n.op {
            continue;
        }
        let by_name_match = n.name.as_deref().and_then(|name| match by_name.get(name) {
            Some(v) if v.len() == 1 && tb[v[0]].1.results.len() == n.results.len() => {
                Some((v[0], "name"))
            }
            _ => None,
        });
        let matched = by_name_match.or_else(|| {
            by_id.get(id).and_then(|&k| {
                let bn = &tb[k].1;
                (bn.op.key() == n.op.key()
                    && bn.operands.len() == n.operands.len()
                    && bn.results == n.results)
                    .then_some((k, "id and op"))
            })
        });
        let Some((k, how)) = matched else { continue };
        let (bid, _, bvals) = &tb[k];
        for (slot, (b, a)) in bvals.iter().zip(vals).enumerate() {
            let c = compare_tensors("", b, a, tol);
            if !c.passed {
                return format!(
                    "{} result {slot} (matched to {bid} before the pass by {how}): {}",
                    describe(*id, n),
                    c.problem.unwrap_or_default()
                );
            }
        }
    }
    // No matched node diverges: report the first diverging output.
    let Some(g) = after.entry() else {
        return "<no entry function>".into();
    };
    let run = |m: &Module| {
        m.entry_name()
            .ok_or_else(|| "no entry".to_string())
            .and_then(|e| run_function(m, e, inputs, &mut |_, _, _| {}).map_err(|e| e.to_string()))
    };
    match (run(before), run(after)) {
        (Ok(bo), Ok(ao)) => {
            for (i, (b, a)) in bo.iter().zip(&ao).enumerate() {
                let c = compare_tensors("", b, a, tol);
                if !c.passed {
                    let o = &g.outputs[i];
                    let desc = g
                        .node(o.value.node)
                        .map(|n| describe(o.value.node, n))
                        .unwrap_or_else(|| o.value.to_string());
                    return format!(
                        "output `{}` defined by {desc} (no matched node diverges): {}",
                        o.name,
                        c.problem.unwrap_or_default()
                    );
                }
            }
            "<outputs agree on the reference interpreter; the executor diverges>".into()
        }
        (Err(e), _) | (_, Err(e)) => format!("<could not rerun: {e}>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_use_configured_sizes_and_pass_fixed_dims() {
        let o = NumericOptions::default();
        let b = vec![
            TensorType::new(DType::F32, ["B".into(), "S".into(), 3u64.into()]),
            TensorType::new(DType::I64, ["T".into()]),
        ];
        assert_eq!(
            concrete_shapes(&b, &b, &o).unwrap(),
            vec![(DType::F32, vec![2, 8, 3]), (DType::I64, vec![4])]
        );
        let a = vec![
            TensorType::new(DType::F32, [1u64.into(), "S".into(), 3u64.into()]),
            TensorType::new(DType::I64, ["T".into()]),
        ];
        assert_eq!(concrete_shapes(&b, &a, &o).unwrap()[0].1, vec![1, 8, 3]);
        let bad = vec![TensorType::new(
            DType::F16,
            ["B".into(), "S".into(), 3u64.into()],
        )];
        assert!(concrete_shapes(&b, &bad, &o)
            .unwrap_err()
            .contains("number of entry inputs"));
        let bad = vec![b[0].clone(), TensorType::new(DType::I32, ["T".into()])];
        assert!(concrete_shapes(&b, &bad, &o)
            .unwrap_err()
            .contains("changed entry input 1"));
    }

    #[test]
    fn inputs_are_seeded_and_ints_in_range() {
        let o = NumericOptions::default();
        let s = vec![
            (DType::F32, vec![4, 4]),
            (DType::I64, vec![100]),
            (DType::Bool, vec![9]),
        ];
        let a = generate_inputs(&s, &o).unwrap();
        assert_eq!(a, generate_inputs(&s, &o).unwrap());
        assert!(a[0].data().iter().all(|x| (-1.0..1.0).contains(x)));
        assert!(a[1].data().iter().all(|x| *x == 0.0 || *x == 1.0));
        assert!(a[1].data().contains(&1.0));
        assert!(a[2].data().iter().all(|x| *x == 0.0 || *x == 1.0));
        let o2 = NumericOptions {
            seed: 1,
            ..o.clone()
        };
        assert_ne!(a[0], generate_inputs(&s, &o2).unwrap()[0]);
        let u = generate_inputs(
            &[(DType::U8, vec![50])],
            &NumericOptions {
                int_high: 1000,
                ..o
            },
        )
        .unwrap();
        assert!(u[0].data().iter().all(|x| (0.0..=255.0).contains(x)));
    }

    #[test]
    fn comparison_figures() {
        let a = Tensor::new(DType::F64, vec![4], vec![1.0, 2.0, 0.0, f64::NAN]).unwrap();
        let b = Tensor::new(DType::F64, vec![4], vec![1.0, 2.5, 0.0, f64::NAN]).unwrap();
        let c = compare_tensors("y", &a, &b, &Tolerance::EXACT);
        assert!(!c.passed);
        assert_eq!(c.max_abs, 0.5);
        assert_eq!(c.max_rel, 0.2);
        assert!(c.cosine < 1.0 && c.cosine > 0.99);
        assert!(c
            .problem
            .unwrap()
            .contains("element [1] is 2.5 after, 2 before"));
        let same = compare_tensors("y", &a, &a, &Tolerance::EXACT);
        assert!(same.passed, "NaN matches NaN");
        assert_eq!((same.max_abs, same.max_rel), (0.0, 0.0));
        let loose = Tolerance {
            abs: 0.0,
            rel: 0.25,
            min_cosine: 0.0,
        };
        assert!(compare_tensors("y", &a, &b, &loose).passed);
        let strict_cos = Tolerance {
            min_cosine: 0.99999,
            ..loose
        };
        assert!(!compare_tensors("y", &a, &b, &strict_cos).passed);
        let d = Tensor::new(DType::F64, vec![2, 2], vec![1.0, 2.0, 0.0, 0.0]).unwrap();
        let e = compare_tensors("y", &a, &d, &Tolerance::EXACT);
        assert!(!e.passed && e.problem.unwrap().contains("shape"));
        let inf = Tensor::new(DType::F64, vec![1], vec![f64::INFINITY]).unwrap();
        let one = Tensor::new(DType::F64, vec![1], vec![1.0]).unwrap();
        assert!(compare_tensors("y", &inf, &inf, &Tolerance::EXACT).passed);
        assert!(!compare_tensors("y", &inf, &one, &loose).passed);
    }
}
