//! Sessions of lowered programs: state tensors resident on the device between runs.
//!
//! [`DeviceSession`] implements [`Session`] for lowered programs: each function is lowered
//! once (on first use; the program an executor was built from is reused for its own
//! function), fed parameters are uploaded, state parameters are passed as the device tensors
//! the session holds, and kept outputs replace those tensors without leaving the device. Only
//! the outputs returned to the caller are downloaded.

use super::{lower, LowerError, LowerOptions, Program, Value};
use burn::tensor::backend::Backend;
use fuselage_ir::session::{missing_state, plan_feeds, plan_keeps, Session};
use fuselage_ir::{DType, IrError, Module, Tensor};
use std::collections::HashMap;
use std::sync::Arc;

/// A session over a module's functions lowered onto backend `B`, with its state on the device.
pub struct DeviceSession<'a, B: Backend> {
    module: &'a Module,
    device: B::Device,
    options: LowerOptions,
    /// A program already lowered from `module` (reused for its function).
    own: Option<&'a Program<B>>,
    programs: HashMap<String, Arc<Program<B>>>,
    /// State: the device tensor and its IR dtype.
    state: HashMap<String, (Value<B>, DType)>,
}

impl<'a, B: Backend> DeviceSession<'a, B> {
    /// A session over `module` lowering its functions onto `device` with `options`; `own`, a
    /// program lowered from this module, is used for its own function.
    pub fn new(
        module: &'a Module,
        device: B::Device,
        options: LowerOptions,
        own: Option<&'a Program<B>>,
    ) -> Self {
        DeviceSession {
            module,
            device,
            options,
            own: own.filter(|p| p.is_lowered_from(module, &p.function)),
            programs: HashMap::new(),
            state: HashMap::new(),
        }
    }

    /// The lowered program of `function` (lowered now on first use).
    fn program(&mut self, function: &str) -> Result<ProgramRef<'a, B>, LowerError> {
        if let Some(p) = self.own.filter(|p| p.function == function) {
            return Ok(ProgramRef::Borrowed(p));
        }
        if let Some(p) = self.programs.get(function) {
            return Ok(ProgramRef::Shared(p.clone()));
        }
        let p = Arc::new(lower::<B>(
            self.module,
            function,
            &self.device,
            &self.options,
        )?);
        self.programs.insert(function.to_string(), p.clone());
        Ok(ProgramRef::Shared(p))
    }

    fn run_lowered(
        &mut self,
        function: &str,
        feeds: &[(&str, Tensor)],
        keep: &[(&str, &str)],
    ) -> Result<Vec<(String, Tensor)>, IrError> {
        let names: Vec<&str> = feeds.iter().map(|(n, _)| *n).collect();
        let plan = plan_feeds(self.module, function, &names)?;
        let keeps = plan_keeps(self.module, function, keep)?;
        let program = self.program(function)?;
        let program: &Program<B> = &program;
        let graph = &program.graph;
        let types = graph.input_types();
        let mut args = Vec::with_capacity(plan.len());
        let mut shapes: Vec<Vec<usize>> = Vec::with_capacity(plan.len());
        let mut missing = vec![];
        // State this run replaces is moved into the run, not shared with it: the program then
        // holds its only reference and may update it in place (an elementwise update of a
        // weight reuses its buffer; a freed one goes to the program's buffer pool). A run that
        // fails leaves those states unset (the next run names them as missing).
        let replaced: std::collections::HashSet<&str> =
            keeps.iter().flatten().map(|s| s.as_str()).collect();
        for (p, _) in plan.iter().zip(&types) {
            if let Err(n) = p {
                if !self.state.contains_key(n) {
                    missing.push(n.clone());
                }
            }
        }
        if !missing.is_empty() {
            return Err(missing_state(function, &missing));
        }
        for (p, ty) in plan.iter().zip(&types) {
            let (t, dtype) = match p {
                Ok(i) => {
                    let t = &feeds[*i].1;
                    let v = Value::upload(t, &self.device).map_err(|message| IrError::Inputs {
                        function: function.to_string(),
                        message: format!("parameter `{}`: {message}", feeds[*i].0),
                    })?;
                    (v, t.dtype())
                }
                Err(n) => {
                    let held = if replaced.contains(n.as_str()) {
                        self.state.remove(n)
                    } else {
                        self.state.get(n).cloned()
                    };
                    match held {
                        Some(v) => v,
                        None => {
                            missing.push(n.clone());
                            continue;
                        }
                    }
                }
            };
            if dtype != ty.dtype {
                return Err(IrError::Inputs {
                    function: function.to_string(),
                    message: format!(
                        "parameter `{}` expects {ty}, found dtype {dtype}",
                        match p {
                            Ok(i) => feeds[*i].0.to_string(),
                            Err(n) => n.clone(),
                        }
                    ),
                });
            }
            shapes.push(t.shape());
            args.push(t);
        }
        if !missing.is_empty() {
            return Err(missing_state(function, &missing));
        }
        let names = graph.input_names();
        let ty_refs: Vec<_> = types.iter().collect();
        let name_refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        let shape_refs: Vec<&[usize]> = shapes.iter().map(|s| s.as_slice()).collect();
        let bindings = fuselage_ir::eval::bind_shapes(
            &ty_refs,
            &name_refs,
            &shape_refs,
            &program.module.facts,
        )
        .map_err(|message| IrError::Inputs {
            function: function.to_string(),
            message,
        })?;
        let outs = program.run_values(args, &bindings)?;
        let out_types = graph.output_types();
        let mut returned = vec![];
        for (((t, o), k), ty) in outs
            .into_iter()
            .zip(&graph.outputs)
            .zip(keeps)
            .zip(out_types)
        {
            let dtype = ty.map(|t| t.dtype).unwrap_or(DType::F32);
            match k {
                Some(s) => {
                    self.state.insert(s, (t, dtype));
                }
                None => {
                    let t = t.download(dtype).map_err(|message| LowerError::Run {
                        function: function.to_string(),
                        node: graph.describe(o.value.node),
                        op: "return".into(),
                        message,
                    })?;
                    returned.push((o.name.clone(), t));
                }
            }
        }
        Ok(returned)
    }
}

/// A program the session borrowed or lowered.
enum ProgramRef<'a, B: Backend> {
    Borrowed(&'a Program<B>),
    Shared(Arc<Program<B>>),
}

impl<B: Backend> std::ops::Deref for ProgramRef<'_, B> {
    type Target = Program<B>;
    fn deref(&self) -> &Program<B> {
        match self {
            ProgramRef::Borrowed(p) => p,
            ProgramRef::Shared(p) => p,
        }
    }
}

impl<B: Backend> Session for DeviceSession<'_, B> {
    fn run(
        &mut self,
        function: &str,
        feeds: &[(&str, Tensor)],
        keep: &[(&str, &str)],
    ) -> Result<Vec<(String, Tensor)>, IrError> {
        self.run_lowered(function, feeds, keep)
    }

    fn set_state(&mut self, name: &str, value: &Tensor) -> Result<(), IrError> {
        let v = Value::upload(value, &self.device).map_err(|message| IrError::Inputs {
            function: String::new(),
            message: format!("state `{name}`: {message}"),
        })?;
        self.state.insert(name.to_string(), (v, value.dtype()));
        Ok(())
    }

    fn state(&self, name: &str) -> Result<Option<Tensor>, IrError> {
        match self.state.get(name) {
            None => Ok(None),
            Some((t, d)) => t
                .clone()
                .download(*d)
                .map(Some)
                .map_err(|message| IrError::Inputs {
                    function: String::new(),
                    message: format!("reading state `{name}`: {message}"),
                }),
        }
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
