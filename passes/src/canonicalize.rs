//! `canonicalize`: equality saturation with the rules in `rewrite/rules/*.rules`, then a
//! DAG-aware extraction, written back into the IR.
//!
//! Per function: every single-result node (except `input`, `call` and `for`) becomes an e-node;
//! inputs and the results of other nodes become opaque leaves. After saturation (bounded by
//! `node-limit`, `iter-limit` and `time-limit-ms`), [`extract`] picks one node per needed
//! e-class. Surviving original nodes keep their id and name, with operands rewired; new nodes
//! (fused ops) are inferred afresh and take the name of the original value they replace. Nodes
//! left unused are removed and the graph is renumbered in topological order. Graph inputs and
//! outputs (names, order, types) are kept.

use crate::error::PassError;
use crate::pass::{Changed, Pass, PassCx, PassKind};
use crate::rewrite::extract::{extract, CostModel};
use crate::rewrite::lang::{canonical_attrs, TensorAnalysis, TensorLang};
use crate::rewrite::rules::builtin_rules;
use crate::rewrite::RewriteError;
use egg::{EGraph, Id, Language, Rewrite, Runner, SimpleScheduler, StopReason, Symbol};
use fuselage_ir::{Graph, Module, NodeId, ValueId};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::OnceLock;
use std::time::Duration;

crate::pass_options! {
    /// Options of `canonicalize`: the limits of each function's saturation.
    pub struct CanonicalizeOptions {
        /// Stop saturating when the e-graph has this many e-nodes.
        node_limit: usize = 500_000,
        /// Stop saturating after this many iterations.
        iter_limit: usize = 30,
        /// Stop saturating after this many milliseconds (per function).
        time_limit_ms: u64 = 10_000,
    }
}

/// What happened to one function.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FunctionReport {
    /// Function name.
    pub function: String,
    /// Saturation iterations run.
    pub iterations: usize,
    /// E-nodes at the end.
    pub egraph_nodes: usize,
    /// Why saturation stopped (`saturated`, or the limit that was hit).
    pub stop_reason: String,
    /// How often each rule applied (rules that never applied are absent).
    pub applied: BTreeMap<String, usize>,
    /// Live nodes before.
    pub nodes_before: usize,
    /// Live nodes after.
    pub nodes_after: usize,
}

/// The `canonicalize` pass.
#[derive(Debug, Clone, Default)]
pub struct Canonicalize {
    /// Options.
    pub options: CanonicalizeOptions,
    /// Reports of the last run, one per function.
    pub reports: Vec<FunctionReport>,
}

fn rewrites() -> Result<&'static [Rewrite<TensorLang, TensorAnalysis>], RewriteError> {
    static RW: OnceLock<Result<Vec<Rewrite<TensorLang, TensorAnalysis>>, RewriteError>> =
        OnceLock::new();
    RW.get_or_init(|| builtin_rules()?.iter().map(|r| r.rewrite()).collect())
        .as_ref()
        .map(|v| v.as_slice())
        .map_err(Clone::clone)
}

impl Canonicalize {
    /// A pass with these options.
    pub fn new(options: CanonicalizeOptions) -> Self {
        Canonicalize {
            options,
            reports: vec![],
        }
    }

    /// The registry's constructor (its signature is the registry's, hence the large error).
    #[allow(clippy::result_large_err)]
    pub fn create(options: CanonicalizeOptions) -> Result<Self, PassError> {
        // Fail early on a bad rule file or cost table, naming the rule and line.
        rewrites().map_err(failed)?;
        CostModel::builtin().map_err(failed)?;
        Ok(Canonicalize::new(options))
    }

    /// Canonicalize every function of `m`; returns whether anything changed.
    pub fn run(&mut self, m: &mut Module) -> Result<bool, RewriteError> {
        let rules = rewrites()?;
        let model = CostModel::builtin()?;
        self.reports.clear();
        let mut changed = false;
        let names: Vec<String> = m.functions.keys().cloned().collect();
        for name in names {
            let Some(slot) = m.functions.get_mut(&name) else {
                continue;
            };
            let g = std::mem::take(slot);
            let result = rewrite_function(&self.options, rules, model, m, &name, &g);
            let slot = m.functions.get_mut(&name).expect("function still present");
            match result {
                Ok((new, report)) => {
                    changed |= new != g;
                    *slot = new;
                    self.reports.push(report);
                }
                Err(e) => {
                    *slot = g;
                    return Err(e);
                }
            }
        }
        Ok(changed)
    }
}

fn failed(e: RewriteError) -> PassError {
    PassError::Failed {
        pass: "canonicalize".into(),
        message: e.to_string(),
    }
}

impl Pass for Canonicalize {
    fn name(&self) -> &'static str {
        "canonicalize"
    }

    /// f32 algebra: fused ops round once where their expansions rounded at every step.
    fn kind(&self) -> PassKind {
        PassKind::Algebra
    }

    fn run(&mut self, m: &mut Module, cx: &mut PassCx) -> Result<Changed, PassError> {
        let changed = Canonicalize::run(self, m).map_err(failed)?;
        for r in &self.reports {
            cx.bump("egraph-nodes", r.egraph_nodes as u64);
            cx.bump("iterations", r.iterations as u64);
            cx.bump(
                "nodes-removed",
                r.nodes_before.saturating_sub(r.nodes_after) as u64,
            );
            if r.stop_reason != "saturated" {
                cx.bump(
                    &format!(
                        "stopped-by-{}",
                        r.stop_reason.split(' ').next().unwrap_or("")
                    ),
                    1,
                );
            }
            for (rule, n) in &r.applied {
                cx.bump(&format!("rule:{rule}"), *n as u64);
            }
        }
        Ok(changed.into())
    }
}

fn leaf_name(v: ValueId) -> Symbol {
    Symbol::from(format!("%{}#{}", v.node.0, v.slot))
}

/// Rewrite one function (taken out of `module`, which still holds the constants).
fn rewrite_function(
    opts: &CanonicalizeOptions,
    rules: &[Rewrite<TensorLang, TensorAnalysis>],
    model: &CostModel,
    module: &Module,
    function: &str,
    g: &Graph,
) -> Result<(Graph, FunctionReport), RewriteError> {
    let err = |message: String| RewriteError::Function {
        function: function.to_string(),
        message,
    };
    let order = g.topo_order().map_err(|id| {
        err(format!(
            "{} is on a cycle or uses a missing value",
            g.describe(id)
        ))
    })?;

    // IR → e-graph.
    let mut eg: EGraph<TensorLang, TensorAnalysis> = EGraph::new(TensorAnalysis::new(module));
    let mut class_of: HashMap<ValueId, Id> = HashMap::with_capacity(order.len());
    let mut orig_level: HashMap<Id, u32> = HashMap::new();
    let mut orig_enodes: Vec<(TensorLang, NodeId)> = vec![];
    let mut leaves: HashMap<Symbol, ValueId> = HashMap::new();
    let mut unmodelled: Vec<NodeId> = vec![];
    let mut roots: Vec<Id> = vec![];
    for (i, &id) in order.iter().enumerate() {
        let node = g.node(id).expect("topo order yields live nodes");
        let level = i as u32 + 1;
        let operands: Vec<Id> = node
            .operands
            .iter()
            .map(|v| {
                class_of.get(v).copied().ok_or_else(|| {
                    err(format!("{} uses {v}, which does not exist", g.describe(id)))
                })
            })
            .collect::<Result<_, _>>()?;
        let name = node.op.name();
        let mut enode = None;
        if node.results.len() == 1 && !matches!(name, "input" | "call" | "for") {
            let attrs = canonical_attrs(&node.op);
            let ops = operands.clone();
            let tys: Option<Vec<_>> = ops.iter().map(|c| eg[*c].data.ty.clone()).collect();
            let sym = Symbol::from(name);
            if let Some(tys) = tys {
                if eg.analysis.infer(sym, attrs, &tys).as_ref() == Some(&node.results[0]) {
                    let mut ch = vec![eg.add(TensorLang::Attr(attrs))];
                    ch.extend(ops);
                    enode = Some(TensorLang::Op(sym, ch));
                }
            }
        }
        match enode {
            Some(n) => {
                let c = eg.add(n.clone());
                orig_enodes.push((n, id));
                orig_level.entry(c).or_insert(level);
                class_of.insert(ValueId::new(id, 0), c);
            }
            None => {
                if name != "input" {
                    unmodelled.push(id);
                    roots.extend(operands.iter().copied());
                }
                for (slot, ty) in node.results.iter().enumerate() {
                    let v = ValueId::new(id, slot as u32);
                    let s = leaf_name(v);
                    eg.analysis.leaf_types.insert(s, ty.clone());
                    leaves.insert(s, v);
                    let c = eg.add(TensorLang::Leaf(s));
                    orig_level.entry(c).or_insert(level);
                    class_of.insert(v, c);
                }
            }
        }
    }
    for o in &g.outputs {
        let c = class_of
            .get(&o.value)
            .ok_or_else(|| err(format!("output `{}` ({}) does not exist", o.name, o.value)))?;
        roots.push(*c);
    }

    // Saturate.
    let runner: Runner<TensorLang, TensorAnalysis> = Runner::new(TensorAnalysis::default())
        .with_egraph(eg)
        .with_node_limit(opts.node_limit)
        .with_iter_limit(opts.iter_limit)
        .with_time_limit(Duration::from_millis(opts.time_limit_ms))
        .with_scheduler(SimpleScheduler)
        .run(rules);
    let mut report = FunctionReport {
        function: function.to_string(),
        iterations: runner.iterations.len(),
        egraph_nodes: runner.egraph.total_size(),
        stop_reason: match &runner.stop_reason {
            Some(StopReason::Saturated) | None => "saturated".into(),
            Some(StopReason::IterationLimit(n)) => format!("iter-limit {n}"),
            Some(StopReason::NodeLimit(n)) => format!("node-limit {n}"),
            Some(StopReason::TimeLimit(s)) => format!("time-limit {s}s"),
            Some(StopReason::Other(s)) => s.clone(),
        },
        nodes_before: g.len(),
        ..Default::default()
    };
    for it in &runner.iterations {
        for (r, n) in &it.applied {
            *report.applied.entry(r.to_string()).or_default() += n;
        }
    }
    let mut eg = runner.egraph;

    // Extract.
    let mut levels: HashMap<Id, u32> = HashMap::with_capacity(orig_level.len());
    for (c, l) in orig_level {
        let c = eg.find(c);
        let e = levels.entry(c).or_insert(l);
        *e = (*e).min(l);
    }
    let mut orig: HashMap<TensorLang, NodeId> = HashMap::with_capacity(orig_enodes.len());
    let mut class_orig: HashMap<Id, NodeId> = HashMap::new();
    for (n, id) in &orig_enodes {
        let n = n.clone().map_children(|c| eg.find(c));
        orig.entry(n).or_insert(*id);
        // The last named original node of a class names a new node that replaces it.
        let c = eg.find(class_of[&ValueId::new(*id, 0)]);
        if g.node(*id).is_some_and(|n| n.name.is_some()) || !class_orig.contains_key(&c) {
            class_orig.insert(c, *id);
        }
    }
    let orig_set: HashSet<TensorLang> = orig.keys().cloned().collect();
    let ex = extract(&eg, &levels, &orig_set, &roots, model).map_err(err)?;

    // E-graph → IR.
    let mut out = g.clone();
    let mut val: HashMap<Id, ValueId> = HashMap::with_capacity(ex.order.len());
    for &c in &ex.order {
        let v = match &ex.choice[&c] {
            TensorLang::Attr(_) => continue,
            TensorLang::Leaf(s) => leaves[s],
            n @ TensorLang::Op(name, ch) => {
                let operands: Vec<ValueId> = ch[1..].iter().map(|x| val[&eg.find(*x)]).collect();
                if let Some(&id) = orig.get(n) {
                    out.node_mut(id).expect("original node").operands = operands;
                    ValueId::new(id, 0)
                } else {
                    let attrs = eg[ch[0]]
                        .data
                        .attrs
                        .ok_or_else(|| err(format!("`{name}` has no attributes")))?;
                    let op = eg.analysis.op(*name, attrs).ok_or_else(|| {
                        err(format!(
                            "`{name}` with attributes {attrs} is not a valid op"
                        ))
                    })?;
                    let label = class_orig
                        .get(&c)
                        .and_then(|id| g.node(*id))
                        .and_then(|n| n.name.clone());
                    let id = out
                        .add_inferred(module, op, operands, label)
                        .map_err(|e| err(e.to_string()))?;
                    let got = &out.node(id).expect("just added").results[0];
                    if Some(got) != eg[c].data.ty.as_ref() {
                        return Err(err(format!(
                            "new `{name}` node infers {got}, its e-class has {:?}",
                            eg[c].data.ty
                        )));
                    }
                    ValueId::new(id, 0)
                }
            }
        };
        val.insert(c, v);
    }
    let remap = |v: &ValueId| -> Result<ValueId, RewriteError> {
        let c = eg.find(
            *class_of
                .get(v)
                .ok_or_else(|| err(format!("value {v} does not exist")))?,
        );
        val.get(&c)
            .copied()
            .ok_or_else(|| err(format!("value {v} was not extracted")))
    };
    for id in &unmodelled {
        let ops: Vec<ValueId> = g.node(*id).expect("live").operands.clone();
        let ops = ops.iter().map(remap).collect::<Result<Vec<_>, _>>()?;
        out.node_mut(*id).expect("live").operands = ops;
    }
    for i in 0..out.outputs.len() {
        out.outputs[i].value = remap(&g.outputs[i].value)?;
    }

    // Dead-code elimination, then renumber in topological order.
    let mut live: HashSet<NodeId> = HashSet::new();
    let mut stack: Vec<NodeId> = out.outputs.iter().map(|o| o.value.node).collect();
    while let Some(id) = stack.pop() {
        if live.insert(id) {
            if let Some(n) = out.node(id) {
                stack.extend(n.operands.iter().map(|v| v.node));
            }
        }
    }
    live.extend(out.inputs.iter().copied());
    let dead: Vec<NodeId> = out.node_ids().filter(|id| !live.contains(id)).collect();
    for id in dead {
        out.remove_node(id);
    }
    let out = out.compacted().map_err(|id| {
        err(format!(
            "rewritten graph has a cycle at {}",
            out.describe(id)
        ))
    })?;
    report.nodes_after = out.len();
    Ok((out, report))
}
