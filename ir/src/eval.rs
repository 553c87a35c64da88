//! The reference interpreter: runs any [`Module`] in `f64`, rounding every value exactly to its
//! dtype. It is the oracle of every test and of the pass manager's numeric check, so it is kept
//! plain and obviously correct; it frees each value after its last use so that large models fit.

use crate::dim::{DimError, Facts};
use crate::error::IrError;
use crate::graph::{Graph, NodeId};
use crate::module::Module;
use crate::ops::{EvalCx, Op};
use crate::tensor::Tensor;
use crate::types::TensorType;
use std::collections::HashMap;

/// Something that can run a function of a module on concrete inputs.
///
/// Passes that need to run a model (calibration, numeric checks) take `&dyn Executor`: the
/// reference interpreter by default, a lowered program when one is handed in for speed.
pub trait Executor {
    /// A short name for reports (`reference`, `cpu`, …).
    fn name(&self) -> &str;

    /// Run `function` of `module` on `inputs` (in parameter order); outputs in output order.
    fn run(
        &self,
        module: &Module,
        function: &str,
        inputs: &[Tensor],
    ) -> Result<Vec<Tensor>, IrError>;

    /// Start (`true`) or stop recording the time spent in each op kind. Executors that cannot
    /// profile ignore it (the default).
    fn set_profiling(&self, _on: bool) {}

    /// The time recorded per op kind since profiling was switched on, slowest first; empty when
    /// the executor does not profile.
    fn op_profile(&self) -> Vec<OpTime> {
        Vec::new()
    }

    /// Open a [`Session`](crate::session::Session) over `module`: runs that keep named state
    /// tensors between them. The default keeps the state on the host and runs each step with
    /// [`run`](Self::run); lowered programs keep it resident on their device.
    fn session<'a>(&'a self, module: &'a Module) -> Box<dyn crate::session::Session + 'a> {
        Box::new(crate::session::HostSession::new(self, module))
    }
}

/// Time spent in one op kind over the profiled runs (see [`Executor::op_profile`]).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct OpTime {
    /// Op name (`linear`, `attention`, …).
    pub op: String,
    /// Executions of this op kind.
    pub calls: u64,
    /// Total seconds spent in it.
    pub seconds: f64,
}

/// The f64 reference interpreter.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reference;

impl Executor for Reference {
    fn name(&self) -> &str {
        "reference"
    }

    fn run(
        &self,
        module: &Module,
        function: &str,
        inputs: &[Tensor],
    ) -> Result<Vec<Tensor>, IrError> {
        run_function(module, function, inputs, &mut |_, _, _| {})
    }
}

/// Bind symbolic dims of a function's input types from concrete input tensors.
///
/// A dim that is a symbol binds it; a dim that is linear in one symbol not yet bound
/// (`2*B`, `S+1`) is solved for it; every other dim is checked once its symbols are bound.
/// Bound sizes are checked against the module's facts (`S % 4 == 0`, and `>= 1` by default).
pub fn bind_inputs(
    function: &str,
    graph: &Graph,
    inputs: &[Tensor],
) -> Result<HashMap<String, u64>, IrError> {
    bind_inputs_with(function, graph, inputs, &Facts::default())
}

/// [`bind_inputs`] with the module's facts about symbols.
pub fn bind_inputs_with(
    function: &str,
    graph: &Graph,
    inputs: &[Tensor],
    facts: &Facts,
) -> Result<HashMap<String, u64>, IrError> {
    let tys = graph.input_types();
    let names = graph.input_names();
    let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape()).collect();
    let err = |message: String| IrError::Inputs {
        function: function.to_string(),
        message,
    };
    if tys.len() != inputs.len() {
        return Err(err(format!(
            "expected {} inputs ({}), found {}",
            tys.len(),
            names.join(", "),
            inputs.len()
        )));
    }
    for ((ty, t), name) in tys.iter().zip(inputs).zip(&names) {
        if ty.dtype != t.dtype() {
            return Err(err(format!(
                "input `{name}` expects {ty}, found dtype {}",
                t.dtype()
            )));
        }
    }
    let ty_refs: Vec<&TensorType> = tys.iter().collect();
    let name_refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    bind_shapes(&ty_refs, &name_refs, &shapes, facts).map_err(err)
}

/// Bind the symbols of declared input types from concrete shapes (see [`bind_inputs`]).
pub fn bind_shapes(
    tys: &[&TensorType],
    names: &[&str],
    shapes: &[&[usize]],
    facts: &Facts,
) -> Result<HashMap<String, u64>, String> {
    let mut b: HashMap<String, u64> = HashMap::new();
    for ((ty, shape), name) in tys.iter().zip(shapes).zip(names) {
        if ty.rank() != shape.len() {
            return Err(format!(
                "input `{name}` expects {ty}, found shape {shape:?}"
            ));
        }
    }
    // Solve dims one symbol at a time until nothing changes, then check every dim.
    let mut progress = true;
    while progress {
        progress = false;
        for ((ty, shape), name) in tys.iter().zip(shapes).zip(names) {
            for (d, &n) in ty.shape.iter().zip(shape.iter()) {
                let rest = d
                    .partial_eval(&b)
                    .map_err(|e| format!("input `{name}` ({ty}): {e}"))?;
                if let Some((sym, c, k)) = rest.as_linear() {
                    let v = n as i128 - k as i128;
                    if c == 0 || v % c as i128 != 0 || v / (c as i128) < 0 {
                        return Err(format!(
                            "input `{name}` expects {ty}, found shape {shape:?}: no size of {sym} makes {d} = {n}"
                        ));
                    }
                    let x = (v / c as i128) as u64;
                    facts
                        .get(sym)
                        .check(sym, x)
                        .map_err(|m| format!("input `{name}` ({ty}, shape {shape:?}): {m}"))?;
                    b.insert(sym.to_string(), x);
                    progress = true;
                }
            }
        }
    }
    for ((ty, shape), name) in tys.iter().zip(shapes).zip(names) {
        for (d, &n) in ty.shape.iter().zip(shape.iter()) {
            match d.resolve(&b) {
                Ok(v) if v as usize == n => {}
                Ok(v) => {
                    let why = match d.as_sym() {
                        Some(s) => format!(", but an earlier input bound {s} = {v}"),
                        None if d.is_const() => String::new(),
                        None => format!(" (the dim {d} = {v})"),
                    };
                    return Err(format!(
                        "input `{name}` expects {ty}, found shape {shape:?}{why}"
                    ));
                }
                Err(DimError::Unbound(s)) => {
                    return Err(format!(
                        "input `{name}` ({ty}): the symbol {s} of {d} cannot be bound from the input shapes"
                    ))
                }
                Err(e) => return Err(format!("input `{name}` ({ty}, shape {shape:?}): {e}")),
            }
        }
    }
    Ok(b)
}

/// Check that a tensor matches a declared type under bindings.
fn check_result(t: &Tensor, ty: &TensorType, b: &HashMap<String, u64>) -> Result<(), String> {
    if t.dtype() != ty.dtype {
        return Err(format!("produced dtype {}, declared {ty}", t.dtype()));
    }
    match ty.resolve(b) {
        Ok(shape) if shape == t.shape() => Ok(()),
        Ok(shape) => Err(format!(
            "produced shape {:?}, declared {ty} = {shape:?}",
            t.shape()
        )),
        // A symbol not bound by the inputs: accept any size (it is checked by later uses).
        Err(DimError::Unbound(_)) => {
            if ty.rank() == t.rank() {
                Ok(())
            } else {
                Err(format!("produced rank {}, declared {ty}", t.rank()))
            }
        }
        Err(e) => Err(format!("declared {ty}: {e}")),
    }
}

/// Run a function, calling `observe(node, node_ref, results)` after every node (used for tracing
/// and for locating the first diverging node in the numeric check).
pub fn run_function(
    module: &Module,
    function: &str,
    inputs: &[Tensor],
    observe: &mut dyn FnMut(NodeId, &crate::graph::Node, &[Tensor]),
) -> Result<Vec<Tensor>, IrError> {
    let graph = module
        .functions
        .get(function)
        .ok_or_else(|| IrError::Inputs {
            function: function.to_string(),
            message: format!(
                "no such function (module has: {})",
                module
                    .functions
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })?;
    let bindings = bind_inputs_with(function, graph, inputs, &module.facts)?;
    let order = graph.topo_order().map_err(|id| IrError::Verify {
        function: function.to_string(),
        node: graph.describe(id),
        message: "graph has a cycle or a missing operand".into(),
    })?;
    let mut remaining = graph.use_counts();
    let mut values: HashMap<NodeId, Vec<Option<Tensor>>> = HashMap::new();
    let input_pos: HashMap<NodeId, usize> = graph
        .inputs
        .iter()
        .enumerate()
        .map(|(i, &n)| (n, i))
        .collect();
    for id in order {
        let node = graph.node(id).expect("topo order yields live nodes");
        let eval_err = |message: String| IrError::Eval {
            function: function.to_string(),
            node: graph.describe(id),
            op: node.op.name().to_string(),
            message,
        };
        let results = if let Op::Input(_) = node.op {
            let i = *input_pos
                .get(&id)
                .ok_or_else(|| eval_err("input node is not a parameter of the function".into()))?;
            vec![inputs[i].clone()]
        } else {
            let mut args: Vec<Tensor> = Vec::with_capacity(node.operands.len());
            for o in &node.operands {
                let slot = values
                    .get_mut(&o.node)
                    .and_then(|v| v.get_mut(o.slot as usize))
                    .ok_or_else(|| eval_err(format!("operand {o} is not available")))?;
                let left = remaining.get_mut(o).expect("counted use");
                *left -= 1;
                let t = if *left == 0 {
                    slot.take()
                } else {
                    slot.clone()
                };
                args.push(t.ok_or_else(|| eval_err(format!("operand {o} was already freed")))?);
            }
            for (k, ty) in node.results.iter().enumerate() {
                if let Ok(shape) = ty.resolve(&bindings) {
                    crate::limits::check_budget(
                        &format!("result {k} ({ty} = {shape:?})"),
                        crate::limits::elements(&shape),
                        8,
                    )
                    .map_err(eval_err)?;
                }
            }
            let refs: Vec<&Tensor> = args.iter().collect();
            let cx = EvalCx {
                module,
                bindings: &bindings,
                result_types: &node.results,
            };
            let out = node.op.eval(&cx, &refs).map_err(|e| eval_err(e.0))?;
            if out.len() != node.results.len() {
                return Err(eval_err(format!(
                    "produced {} results, declared {}",
                    out.len(),
                    node.results.len()
                )));
            }
            for (k, (t, ty)) in out.iter().zip(&node.results).enumerate() {
                check_result(t, ty, &bindings).map_err(|m| eval_err(format!("result {k}: {m}")))?;
            }
            out
        };
        observe(id, node, &results);
        values.insert(id, results.into_iter().map(Some).collect());
    }
    let mut outs = Vec::with_capacity(graph.outputs.len());
    for o in &graph.outputs {
        let t = values
            .get(&o.value.node)
            .and_then(|v| v.get(o.value.slot as usize))
            .and_then(|t| t.clone())
            .ok_or_else(|| IrError::Eval {
                function: function.to_string(),
                node: graph.describe(o.value.node),
                op: "return".into(),
                message: format!("output `{}` ({}) was not computed", o.name, o.value),
            })?;
        outs.push(t);
    }
    Ok(outs)
}
