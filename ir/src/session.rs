//! Sessions: runs of a module's functions that keep named *state* tensors between runs.
//!
//! A decoder's KV cache, and later the weights, gradients and optimizer state of a training
//! step, are values a program reads and replaces on every run. A [`Session`] holds them under
//! names, so each run is fed only what changes: a parameter of the function whose name is fed
//! takes the fed tensor, every other parameter reads the state tensor of the same name, and the
//! outputs listed in `keep` replace state tensors instead of being returned.
//!
//! [`Executor::session`] opens one. The default ([`HostSession`])
//! keeps state as host tensors and runs each step with [`Executor::run`];
//! lowered programs override it to keep state resident on their device (no copy in or out
//! between runs).

use crate::error::IrError;
use crate::eval::Executor;
use crate::module::Module;
use crate::tensor::Tensor;
use std::collections::HashMap;

/// A sequence of runs over one module that keeps named state tensors between them.
pub trait Session {
    /// Run `function`. Each parameter named in `feeds` takes that tensor; every other parameter
    /// reads the state tensor of its name (an error names the missing ones). Each output named
    /// by a `(output, state)` pair of `keep` replaces state `state`; the other outputs are
    /// returned as `(name, tensor)` in output order.
    fn run(
        &mut self,
        function: &str,
        feeds: &[(&str, Tensor)],
        keep: &[(&str, &str)],
    ) -> Result<Vec<(String, Tensor)>, IrError>;

    /// Set (or replace) a state tensor.
    fn set_state(&mut self, name: &str, value: &Tensor) -> Result<(), IrError>;

    /// A copy of a state tensor on the host (`None` when there is no such state).
    fn state(&self, name: &str) -> Result<Option<Tensor>, IrError>;

    /// The names of the state tensors, sorted.
    fn state_names(&self) -> Vec<String>;

    /// Drop every state tensor.
    fn clear_state(&mut self);
}

/// Parameters of `function` in order, each either fed or read from state: returns, for each
/// parameter, `Ok(index into feeds)` or `Err(parameter name)` (state). Errors on unknown feed
/// names and unknown functions.
pub fn plan_feeds(
    module: &Module,
    function: &str,
    feeds: &[&str],
) -> Result<Vec<Result<usize, String>>, IrError> {
    let g = module
        .functions
        .get(function)
        .ok_or_else(|| IrError::Inputs {
            function: function.to_string(),
            message: format!(
                "no function `{function}` (module has: {})",
                module
                    .functions
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })?;
    let names = g.input_names();
    for f in feeds {
        if !names.iter().any(|n| n == f) {
            return Err(IrError::Inputs {
                function: function.to_string(),
                message: format!("fed `{f}`, which is not a parameter ({})", names.join(", ")),
            });
        }
    }
    Ok(names
        .into_iter()
        .map(|n| feeds.iter().position(|f| *f == n).ok_or(n))
        .collect())
}

/// Checks that every name in `keep` is an output of `function`; returns, per output, the state
/// it replaces (`None`: returned to the caller).
pub fn plan_keeps(
    module: &Module,
    function: &str,
    keep: &[(&str, &str)],
) -> Result<Vec<Option<String>>, IrError> {
    let g = module
        .functions
        .get(function)
        .ok_or_else(|| IrError::Inputs {
            function: function.to_string(),
            message: format!("no function `{function}`"),
        })?;
    for (o, _) in keep {
        if !g.outputs.iter().any(|x| x.name == *o) {
            return Err(IrError::Inputs {
                function: function.to_string(),
                message: format!(
                    "keeps output `{o}`, which the function does not have ({})",
                    g.outputs
                        .iter()
                        .map(|x| x.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
    }
    Ok(g.outputs
        .iter()
        .map(|o| {
            keep.iter()
                .find(|(k, _)| *k == o.name)
                .map(|(_, s)| s.to_string())
        })
        .collect())
}

/// The error of a parameter that is neither fed nor held as state.
pub fn missing_state(function: &str, missing: &[String]) -> IrError {
    IrError::Inputs {
        function: function.to_string(),
        message: format!(
            "parameter(s) {} are neither fed nor held as session state",
            missing.join(", ")
        ),
    }
}

/// The default session: state as host tensors, each run through [`Executor::run`].
pub struct HostSession<'a, E: Executor + ?Sized> {
    executor: &'a E,
    module: &'a Module,
    state: HashMap<String, Tensor>,
}

impl<'a, E: Executor + ?Sized> HostSession<'a, E> {
    /// A session over `module` run by `executor`, with no state.
    pub fn new(executor: &'a E, module: &'a Module) -> Self {
        HostSession {
            executor,
            module,
            state: HashMap::new(),
        }
    }
}

impl<E: Executor + ?Sized> Session for HostSession<'_, E> {
    fn run(
        &mut self,
        function: &str,
        feeds: &[(&str, Tensor)],
        keep: &[(&str, &str)],
    ) -> Result<Vec<(String, Tensor)>, IrError> {
        let names: Vec<&str> = feeds.iter().map(|(n, _)| *n).collect();
        let plan = plan_feeds(self.module, function, &names)?;
        let keeps = plan_keeps(self.module, function, keep)?;
        let mut inputs = Vec::with_capacity(plan.len());
        let mut missing = vec![];
        for p in &plan {
            match p {
                Ok(i) => inputs.push(feeds[*i].1.clone()),
                Err(n) => match self.state.get(n) {
                    Some(t) => inputs.push(t.clone()),
                    None => missing.push(n.clone()),
                },
            }
        }
        if !missing.is_empty() {
            return Err(missing_state(function, &missing));
        }
        let outs = self.executor.run(self.module, function, &inputs)?;
        let g = &self.module.functions[function];
        let mut returned = vec![];
        for ((t, o), k) in outs.into_iter().zip(&g.outputs).zip(keeps) {
            match k {
                Some(s) => {
                    self.state.insert(s, t);
                }
                None => returned.push((o.name.clone(), t)),
            }
        }
        Ok(returned)
    }

    fn set_state(&mut self, name: &str, value: &Tensor) -> Result<(), IrError> {
        self.state.insert(name.to_string(), value.clone());
        Ok(())
    }

    fn state(&self, name: &str) -> Result<Option<Tensor>, IrError> {
        Ok(self.state.get(name).cloned())
    }

    fn state_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.state.keys().cloned().collect();
        v.sort();
        v
    }

    fn clear_state(&mut self) {
        self.state.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::add::Add;
    use crate::{DType, Graph, Op, Reference, TensorType};

    /// `acc' = acc + x`, output `y = acc'` twice (one kept, one returned).
    fn accumulator() -> Module {
        let mut m = Module::new();
        let mut g = Graph::new();
        let acc = g.add_input("acc", TensorType::new(DType::F32, ["N".into()]));
        let x = g.add_input("x", TensorType::new(DType::F32, ["N".into()]));
        let y = g
            .add_inferred(&m, Op::Add(Add {}), vec![acc.into(), x.into()], None)
            .unwrap();
        g.add_output("acc_next", y.into());
        g.add_output("sum", y.into());
        m.functions.insert("step".into(), g);
        m
    }

    #[test]
    fn host_session_keeps_state_between_runs() {
        let m = accumulator();
        let mut s = Reference.session(&m);
        let x = Tensor::from_f32(vec![2], &[1.0, 2.0]).unwrap();
        let e = s
            .run("step", &[("x", x.clone())], &[("acc_next", "acc")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("acc") && e.contains("session state"), "{e}");
        s.set_state("acc", &Tensor::from_f32(vec![2], &[0.0, 0.0]).unwrap())
            .unwrap();
        for k in 1..=3 {
            let out = s
                .run("step", &[("x", x.clone())], &[("acc_next", "acc")])
                .unwrap();
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].0, "sum");
            assert_eq!(out[0].1.data(), &[k as f64, 2.0 * k as f64]);
        }
        assert_eq!(s.state_names(), vec!["acc".to_string()]);
        assert_eq!(s.state("acc").unwrap().unwrap().data(), &[3.0, 6.0]);
        let e = s
            .run("step", &[("y", x.clone())], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`y`"), "{e}");
        let e = s
            .run("step", &[("x", x)], &[("nope", "acc")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`nope`"), "{e}");
        s.clear_state();
        assert!(s.state_names().is_empty());
    }
}
