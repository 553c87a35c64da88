//! DAG-aware extraction with a roofline cost model given as data (`costs.toml`).
//!
//! # Why not egg's `Extractor`
//!
//! egg's extractor charges a node its own cost plus the full cost of every child: the cost of a
//! *tree*. In a residual network every layer's output is used twice (by the next layer's norm
//! and by the residual add), so the tree cost of layer `n` counts layer `n-1` twice, layer
//! `n-2` four times, …: it doubles per layer, and past ~50 layers the per-node differences that
//! decide fused vs. unfused are below the precision of the sum (past ~1000 it is infinite).
//!
//! # What this does
//!
//! 1. **An acyclic order.** Every e-class gets a *level*: e-classes holding an original IR node
//!    get that node's position in a topological order of the input (the minimum, when rewrites
//!    merged several); e-classes created by rewrites get `(highest child level) + ε`, computed
//!    to a fixpoint. A node may only be chosen for a class if all its children have a strictly
//!    lower level. Any choice is then acyclic by construction — which matters because rewrites
//!    such as `transpose(transpose(x)) → x` put a class and its own descendants into one
//!    class — and every class holding an original node keeps at least that node as a candidate.
//! 2. **Shared classes are charged once.** A class used by two or more distinct parent classes
//!    (or by a parent and the graph's outputs) is *shared*: its cost is paid where it is
//!    defined, and its users are charged 0 for it. Unshared children are charged their full
//!    cost, so a fused node competes against the whole private part of its primitive expansion.
//!    Costs are then bounded by what a layer computes, not by depth, and the decision for each
//!    class is local: the same layer is extracted the same way at depth 4 and at depth 400.
//!    Since children have lower levels, one pass in level order computes every cost (no
//!    fixpoint iteration), linear in the size of the e-graph.
//!
//! This is the "tree cost with shared classes charged zero at their uses" family; the exact
//! DAG optimum (an ILP) is not needed because every fused op in `costs.toml` is cheaper than
//! even the unshared part of its expansion. Ties prefer an original node, so an unchanged
//! graph comes back unchanged.

use super::lang::{TensorAnalysis, TensorLang};
use super::RewriteError;
use egg::{EGraph, Id, Language};
use fuselage_ir::TensorType;
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

/// The device description and per-op flops of the cost model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostModel {
    /// The roofline.
    pub device: Device,
    /// Flops per output element by op name (`default` for the rest).
    pub flops: HashMap<String, f64>,
    /// Ops whose flops scale with the contracted dimension.
    pub contracting: OpList,
}

/// A roofline device description.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// Name for reports.
    pub name: String,
    /// Memory bandwidth.
    pub bytes_per_ns: f64,
    /// Peak compute.
    pub flops_per_ns: f64,
    /// Fixed cost of every op.
    pub launch_ns: f64,
    /// Size assumed for a symbolic dim.
    pub symbolic_dim: u64,
}

/// A list of op names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpList {
    /// The names.
    pub ops: Vec<String>,
}

impl CostModel {
    /// Parse a cost table.
    pub fn parse(text: &str) -> Result<CostModel, RewriteError> {
        toml::from_str(text).map_err(|e| RewriteError::Costs(e.to_string()))
    }

    /// The built-in table (`costs.toml`), parsed once.
    pub fn builtin() -> Result<&'static CostModel, RewriteError> {
        static MODEL: OnceLock<Result<CostModel, RewriteError>> = OnceLock::new();
        MODEL
            .get_or_init(|| CostModel::parse(include_str!("costs.toml")))
            .as_ref()
            .map_err(Clone::clone)
    }

    fn elems(&self, t: &TensorType) -> f64 {
        let size = |_: &str| self.device.symbolic_dim;
        t.shape.iter().map(|d| d.estimate(&size)).product()
    }

    fn bytes(&self, t: &TensorType) -> f64 {
        self.elems(t) * t.dtype.bits() as f64 / 8.0
    }

    /// Own cost of one e-node whose class has type `out`.
    pub fn node_cost(
        &self,
        eg: &EGraph<TensorLang, TensorAnalysis>,
        node: &TensorLang,
        out: Option<&TensorType>,
    ) -> f64 {
        let TensorLang::Op(name, ch) = node else {
            return 0.0;
        };
        if name.as_str() == "constant" {
            return 0.0;
        }
        let Some(out) = out else { return 0.0 };
        let tys: Vec<Option<&TensorType>> =
            ch[1..].iter().map(|c| eg[*c].data.ty.as_ref()).collect();
        let bytes: f64 = tys.iter().flatten().map(|t| self.bytes(t)).sum::<f64>() + self.bytes(out);
        let per = self
            .flops
            .get(name.as_str())
            .or_else(|| self.flops.get("default"))
            .copied()
            .unwrap_or(1.0);
        let mut flops = per * self.elems(out);
        if self.contracting.ops.iter().any(|o| o == name.as_str()) {
            let k = tys
                .first()
                .and_then(|t| t.and_then(|t| t.shape.last().cloned()))
                .map(|d| d.estimate(&|_: &str| self.device.symbolic_dim))
                .unwrap_or(1.0);
            flops *= k;
        }
        self.device.launch_ns
            + (bytes / self.device.bytes_per_ns).max(flops / self.device.flops_per_ns)
    }
}

/// Level of a class in the acyclic order: (original position, steps above it).
type Level = (u32, u32);

/// The chosen node of every class needed by the roots, and the order to build them in.
#[derive(Debug)]
pub struct Extraction {
    /// Chosen node per (canonical) class.
    pub choice: HashMap<Id, TensorLang>,
    /// Needed classes, children before parents.
    pub order: Vec<Id>,
    /// Total cost of the extracted DAG (each class once).
    pub dag_cost: f64,
}

/// Extract from `eg`: `orig_level` gives classes holding original IR nodes their position
/// (1-based, canonical ids); `orig_nodes` are the original e-nodes (canonical), preferred on
/// ties; `roots` are the values the rest of the graph needs.
pub fn extract(
    eg: &EGraph<TensorLang, TensorAnalysis>,
    orig_level: &HashMap<Id, u32>,
    orig_nodes: &HashSet<TensorLang>,
    roots: &[Id],
    model: &CostModel,
) -> Result<Extraction, String> {
    // 1. Levels.
    let mut level: HashMap<Id, Level> = HashMap::with_capacity(eg.number_of_classes());
    let mut pending: Vec<Id> = vec![];
    for class in eg.classes() {
        if class.data.attrs.is_some() {
            level.insert(class.id, (0, 0));
        } else if let Some(&l) = orig_level.get(&class.id) {
            level.insert(class.id, (l, 0));
        } else {
            pending.push(class.id);
        }
    }
    pending.sort();
    loop {
        let mut changed = false;
        for &id in &pending {
            let best = eg[id]
                .iter()
                .filter_map(|n| {
                    n.children()
                        .iter()
                        .map(|c| level.get(&eg.find(*c)).copied())
                        .try_fold((0u32, 0u32), |m, l| l.map(|l| m.max(l)))
                        .map(|(a, b)| (a, b + 1))
                })
                .min();
            if let Some(b) = best {
                if level.get(&id).is_none_or(|&cur| b < cur) {
                    level.insert(id, b);
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }

    // 2. Shared classes: used by ≥ 2 distinct parent classes, or by a parent and a root.
    let mut edges: Vec<(Id, Id)> = vec![];
    for class in eg.classes() {
        for n in class.iter() {
            for c in n.children() {
                let c = eg.find(*c);
                if eg[c].data.attrs.is_none() {
                    edges.push((c, class.id));
                }
            }
        }
    }
    edges.sort_unstable();
    edges.dedup();
    let mut users: HashMap<Id, usize> = HashMap::new();
    for (c, _) in &edges {
        *users.entry(*c).or_default() += 1;
    }
    for r in roots {
        *users.entry(eg.find(*r)).or_default() += 1;
    }
    let shared = |c: Id| users.get(&c).copied().unwrap_or(0) >= 2;

    // 3. Costs in level order.
    let mut by_level: Vec<(Level, Id)> = level.iter().map(|(&id, &l)| (l, id)).collect();
    by_level.sort_unstable();
    let mut best: HashMap<Id, (f64, TensorLang)> = HashMap::with_capacity(by_level.len());
    for &(lv, id) in &by_level {
        let class = &eg[id];
        let mut pick: Option<(f64, bool, &TensorLang)> = None;
        'nodes: for n in class.iter() {
            let mut cost = model.node_cost(eg, n, class.data.ty.as_ref());
            let mut seen: Vec<Id> = Vec::with_capacity(n.len());
            for c in n.children() {
                let c = eg.find(*c);
                match (level.get(&c), best.get(&c)) {
                    (Some(&cl), Some((cc, _))) if cl < lv => {
                        if !seen.contains(&c) {
                            seen.push(c);
                            if !shared(c) {
                                cost += cc;
                            }
                        }
                    }
                    _ => continue 'nodes,
                }
            }
            let is_new = !orig_nodes.contains(n);
            let better = match pick {
                None => true,
                Some((pc, pnew, pn)) => {
                    (cost, is_new, n).partial_cmp(&(pc, pnew, pn)) == Some(std::cmp::Ordering::Less)
                }
            };
            if better {
                pick = Some((cost, is_new, n));
            }
        }
        if let Some((cost, _, n)) = pick {
            best.insert(id, (cost, n.clone()));
        }
    }

    // 4. The classes the roots need, children first.
    let mut needed: HashSet<Id> = HashSet::new();
    let mut stack: Vec<Id> = roots.iter().map(|r| eg.find(*r)).collect();
    while let Some(id) = stack.pop() {
        if !needed.insert(id) {
            continue;
        }
        let (_, n) = best
            .get(&id)
            .ok_or_else(|| format!("no extractable node for e-class {id} ({:?})", eg[id].nodes))?;
        for c in n.children() {
            stack.push(eg.find(*c));
        }
    }
    let mut order: Vec<Id> = needed.into_iter().collect();
    order.sort_unstable_by_key(|id| (level[id], *id));
    let mut dag_cost = 0.0;
    let mut choice = HashMap::with_capacity(order.len());
    for id in &order {
        let n = best[id].1.clone();
        dag_cost += model.node_cost(eg, &n, eg[*id].data.ty.as_ref());
        choice.insert(*id, n);
    }
    Ok(Extraction {
        choice,
        order,
        dag_cost,
    })
}
