//! The [`PassManager`]: runs a [`Pipeline`] over a module and owns what every pass shares —
//! verification and the numeric check after each pass, timing, statistics, IR printing and
//! dumps, `fixpoint` groups and a step limit for bisecting.
//!
//! When a pass fails (its own error, the verifier or the numeric check), the module is rolled
//! back to its state before that pass, the error names the pass and the step, and the report of
//! the steps run so far is kept in [`PassManager::last_report`].

use crate::error::PassError;
use crate::numeric::{self, NumericCheck, NumericOptions};
use crate::pass::{Calibrator, Changed, Checked, Pass, PassCx, PassDetails, Tolerance};
use crate::pipeline::{Pipeline, Step};
use crate::registry;
use fuselage_ir::{Executor, Module, Reference, Tensor};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Default bound on the iterations of a `fixpoint` group without `max-iters`.
pub const DEFAULT_FIXPOINT_MAX_ITERS: usize = 10;

/// Options of a pass-manager run.
#[derive(Clone, Debug, PartialEq)]
pub struct PassManagerOptions {
    /// Verify the module after every pass (and the input before the first).
    pub verify: bool,
    /// The numeric check.
    pub numeric: NumericOptions,
    /// Print the IR after these passes (names, or `all`).
    pub print_ir_after: Vec<String>,
    /// Write `00-input.fir` and `NN-pass.fir` after every pass into this folder.
    pub dump_dir: Option<PathBuf>,
    /// Stop after this many pass executions (bisecting), reporting that it stopped.
    pub max_steps: Option<usize>,
    /// Iteration bound of `fixpoint` groups without their own `max-iters`.
    pub fixpoint_max_iters: usize,
}

impl Default for PassManagerOptions {
    fn default() -> Self {
        PassManagerOptions {
            verify: true,
            numeric: NumericOptions::default(),
            print_ir_after: vec![],
            dump_dir: None,
            max_steps: None,
            fixpoint_max_iters: DEFAULT_FIXPOINT_MAX_ITERS,
        }
    }
}

/// The IR printed after a pass (`print_ir_after`).
#[derive(Clone, Debug, PartialEq)]
pub struct IrDump {
    /// 1-based pass execution index.
    pub step: usize,
    /// The pass.
    pub pass: String,
    /// The module in text form.
    pub text: String,
}

/// One pass execution in a report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PassRun {
    /// 1-based pass execution index.
    pub step: usize,
    /// The pass.
    pub name: String,
    /// Iteration of the innermost enclosing `fixpoint` group (1-based), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iteration: Option<usize>,
    /// Wall time of the pass itself, in milliseconds (verification and checks excluded).
    pub ms: f64,
    /// Live nodes over all functions before the pass.
    pub nodes_before: usize,
    /// Live nodes after.
    pub nodes_after: usize,
    /// Whether the pass reported a change.
    pub changed: bool,
    /// The numeric check (absent when the pass changed nothing or the check is off or skipped).
    pub numeric: Option<NumericCheck>,
    /// Why the numeric check was skipped, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The pass's statistics counters.
    pub stats: BTreeMap<String, u64>,
    /// What the pass decided, when it says (per-module precision, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<PassDetails>,
}

/// The report of a pipeline run: one entry per executed pass.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PassReport {
    /// The pipeline, as a one-line spec.
    pub pipeline: String,
    /// The executor of the numeric check.
    pub executor: String,
    /// Live nodes before the first pass.
    pub nodes_before: usize,
    /// Live nodes after the last pass.
    pub nodes_after: usize,
    /// Total wall time in milliseconds, checks included.
    pub total_ms: f64,
    /// Executed passes in order.
    pub passes: Vec<PassRun>,
    /// Set when `max_steps` stopped the run: the number of passes executed.
    pub stopped_after_steps: Option<usize>,
    /// Remarks (fixpoint groups that hit their bound, …).
    pub notes: Vec<String>,
}

impl PassReport {
    /// A human-readable table.
    pub fn table(&self) -> String {
        let mut rows: Vec<[String; 8]> = vec![[
            "step".into(),
            "pass".into(),
            "ms".into(),
            "nodes".into(),
            "changed".into(),
            "max abs / max rel / cos min".into(),
            "check".into(),
            "stats".into(),
        ]];
        for p in &self.passes {
            let name = match p.iteration {
                Some(i) => format!("{} (iter {i})", p.name),
                None => p.name.clone(),
            };
            let (num, check) = match (&p.numeric, &p.note) {
                (Some(n), _) => (
                    format!(
                        "{:.2e} / {:.2e} / {:.6}",
                        n.max_abs, n.max_rel, n.cosine_min
                    ),
                    if n.passed { "ok" } else { "FAIL" }.to_string(),
                ),
                (None, Some(_)) => ("-".into(), "skipped".into()),
                (None, None) => ("-".into(), "-".into()),
            };
            let stats = p
                .stats
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ");
            rows.push([
                p.step.to_string(),
                name,
                format!("{:.2}", p.ms),
                format!("{} → {}", p.nodes_before, p.nodes_after),
                if p.changed { "yes" } else { "no" }.into(),
                num,
                check,
                stats,
            ]);
        }
        let mut w = [0usize; 8];
        for r in &rows {
            for (i, c) in r.iter().enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        for r in &rows {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate() {
                let pad = w[i] - c.chars().count();
                if i == 0 || i == 2 {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(c);
                } else {
                    line.push_str(c);
                    if i + 1 < r.len() {
                        line.push_str(&" ".repeat(pad));
                    }
                }
                if i + 1 < r.len() {
                    line.push_str("  ");
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out.push_str(&format!(
            "{} passes, {} → {} nodes, {:.1} ms total (numeric check on `{}`)\n",
            self.passes.len(),
            self.nodes_before,
            self.nodes_after,
            self.total_ms,
            self.executor
        ));
        if let Some(n) = self.stopped_after_steps {
            out.push_str(&format!("stopped after {n} steps (max-steps)\n"));
        }
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        for p in &self.passes {
            if let Some(d) = p.details.as_ref().filter(|d| !d.text.is_empty()) {
                out.push_str(&format!("\nstep {} {}:\n", p.step, p.name));
                for line in &d.text {
                    out.push_str(&format!("  {line}\n"));
                }
            }
        }
        out
    }
}

impl fmt::Display for PassReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.table())
    }
}

/// A pipeline with its passes created: what [`PassManager::run_scheduled`] runs. Built from a
/// [`Pipeline`] by [`Scheduled::from_pipeline`], or by hand to run passes that are not in the
/// registry.
pub enum Scheduled {
    /// One pass.
    Pass(Box<dyn Pass>),
    /// A group rerun until no pass in it reports a change, at most `max_iters` times.
    Fixpoint {
        /// The group.
        steps: Vec<Scheduled>,
        /// Iteration bound.
        max_iters: usize,
    },
}

impl Scheduled {
    /// Create every pass of `pipeline` through the registry; groups without `max-iters` get
    /// `default_iters`.
    pub fn from_pipeline(
        pipeline: &Pipeline,
        default_iters: usize,
    ) -> Result<Vec<Scheduled>, PassError> {
        instantiate(&pipeline.steps, default_iters)
    }

    fn label(steps: &[Scheduled]) -> String {
        steps
            .iter()
            .map(|i| match i {
                Scheduled::Pass(p) => p.name().to_string(),
                Scheduled::Fixpoint { steps, .. } => format!("fixpoint({})", Self::label(steps)),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn instantiate(steps: &[Step], default_iters: usize) -> Result<Vec<Scheduled>, PassError> {
    steps
        .iter()
        .map(|s| match s {
            Step::Pass(p) => {
                let mut options = p.options_json();
                let check = options.as_object_mut().and_then(|o| o.remove("check"));
                let pass = registry::create(&p.name, &options)?;
                Ok(Scheduled::Pass(match check {
                    None => pass,
                    Some(table) => {
                        let base = pass.kind().default_tolerance();
                        let tolerance = Tolerance::with_overrides(base, &p.name, &table)?;
                        Box::new(Checked { pass, tolerance })
                    }
                }))
            }
            Step::Fixpoint(f) => Ok(Scheduled::Fixpoint {
                steps: instantiate(&f.steps, default_iters)?,
                max_iters: f.max_iters.unwrap_or(default_iters),
            }),
        })
        .collect()
}

/// Cached outputs of the current module on the check's inputs.
struct Cache {
    shapes: Vec<(fuselage_ir::DType, Vec<usize>)>,
    outputs: Vec<Tensor>,
}

/// Runs pipelines.
pub struct PassManager<'e> {
    options: PassManagerOptions,
    executor: &'e dyn Executor,
    calibrator: Option<&'e dyn Calibrator>,
    sink: Box<dyn FnMut(&IrDump) + 'e>,
    last: Option<PassReport>,
    // Run state.
    steps_done: usize,
    stopped: bool,
    cache: Option<Cache>,
}

impl PassManager<'static> {
    /// A pass manager checking numerics on the reference interpreter, printing IR to stderr.
    pub fn new(options: PassManagerOptions) -> Self {
        PassManager::with_executor(options, &Reference)
    }
}

impl<'e> PassManager<'e> {
    /// A pass manager whose numeric check (and whose passes that run the model) use `executor`.
    pub fn with_executor(options: PassManagerOptions, executor: &'e dyn Executor) -> Self {
        PassManager {
            options,
            executor,
            calibrator: None,
            sink: Box::new(|d: &IrDump| {
                eprintln!(
                    "// ----- IR after step {} `{}` -----\n{}",
                    d.step, d.pass, d.text
                )
            }),
            last: None,
            steps_done: 0,
            stopped: false,
            cache: None,
        }
    }

    /// Give passes calibration inputs to collect statistics on (see [`Calibrator`]).
    pub fn set_calibrator(&mut self, calibrator: &'e dyn Calibrator) {
        self.calibrator = Some(calibrator);
    }

    /// Send `print_ir_after` output to `sink` instead of stderr.
    pub fn set_ir_sink(&mut self, sink: impl FnMut(&IrDump) + 'e) {
        self.sink = Box::new(sink);
    }

    /// The options.
    pub fn options(&self) -> &PassManagerOptions {
        &self.options
    }

    /// The report of the last run, also when it failed (then it holds the steps before the
    /// failing one).
    pub fn last_report(&self) -> Option<&PassReport> {
        self.last.as_ref()
    }

    /// Run `pipeline` over `module`. All passes are created (names and options checked) before
    /// the first one runs.
    pub fn run(
        &mut self,
        pipeline: &Pipeline,
        module: &mut Module,
    ) -> Result<PassReport, PassError> {
        let mut steps = Scheduled::from_pipeline(pipeline, self.options.fixpoint_max_iters)?;
        self.run_inner(&pipeline.to_string(), &mut steps, module)
    }

    /// Run passes created elsewhere (for passes outside the registry).
    pub fn run_scheduled(
        &mut self,
        steps: &mut [Scheduled],
        module: &mut Module,
    ) -> Result<PassReport, PassError> {
        let label = Scheduled::label(steps);
        self.run_inner(&label, steps, module)
    }

    fn run_inner(
        &mut self,
        label: &str,
        insts: &mut [Scheduled],
        module: &mut Module,
    ) -> Result<PassReport, PassError> {
        let t0 = Instant::now();
        let mut known: Vec<String> = registry::PASS_NAMES.iter().map(|s| s.to_string()).collect();
        collect_names(insts, &mut known);
        for n in &self.options.print_ir_after {
            if n != "all" && !known.contains(n) {
                return Err(PassError::Config(format!(
                    "print-ir-after: unknown pass `{n}` (allowed: all, {})",
                    known.join(", ")
                )));
            }
        }
        if self.options.verify {
            crate::irx::verify(module).map_err(|source| PassError::Verify {
                pass: "<input>".into(),
                step: 0,
                source: Box::new(source),
            })?;
        }
        if let Some(dir) = &self.options.dump_dir {
            std::fs::create_dir_all(dir).map_err(|e| PassError::Io {
                path: dir.display().to_string(),
                message: e.to_string(),
            })?;
            write_atomic(&dir.join("00-input.fir"), &crate::irx::print_module(module))?;
        }
        self.steps_done = 0;
        self.stopped = false;
        self.cache = None;
        self.last = Some(PassReport {
            pipeline: label.to_string(),
            executor: self.executor.name().to_string(),
            nodes_before: module.node_count(),
            ..Default::default()
        });
        let result = self.run_steps(insts, module, None);
        let report = self.last.as_mut().expect("set above");
        report.nodes_after = module.node_count();
        report.total_ms = t0.elapsed().as_secs_f64() * 1e3;
        if self.stopped {
            report.stopped_after_steps = Some(self.steps_done);
        }
        result?;
        Ok(report.clone())
    }

    fn run_steps(
        &mut self,
        insts: &mut [Scheduled],
        module: &mut Module,
        iteration: Option<usize>,
    ) -> Result<bool, PassError> {
        let mut any = false;
        for inst in insts.iter_mut() {
            if self.stopped {
                break;
            }
            match inst {
                Scheduled::Pass(p) => any |= self.run_pass(p.as_mut(), module, iteration)?,
                Scheduled::Fixpoint {
                    steps: inner,
                    max_iters,
                } => {
                    let max_iters = *max_iters;
                    let mut converged = false;
                    for it in 1..=max_iters {
                        let changed = self.run_steps(inner, module, Some(it))?;
                        any |= changed;
                        if !changed || self.stopped {
                            converged = !changed;
                            break;
                        }
                    }
                    if !converged && !self.stopped {
                        let names = Scheduled::label(inner);
                        self.report()
                            .notes
                            .push(format!(
                                "fixpoint({names}) still changed the module after {max_iters} iterations"
                            ));
                    }
                }
            }
        }
        Ok(any)
    }

    fn report(&mut self) -> &mut PassReport {
        self.last.get_or_insert_with(PassReport::default)
    }

    fn run_pass(
        &mut self,
        pass: &mut dyn Pass,
        module: &mut Module,
        iteration: Option<usize>,
    ) -> Result<bool, PassError> {
        if let Some(max) = self.options.max_steps {
            if self.steps_done >= max {
                self.stopped = true;
                return Ok(false);
            }
        }
        self.steps_done += 1;
        let step = self.steps_done;
        let name = pass.name();
        let before = module.clone();
        let nodes_before = module.node_count();
        let mut cx = PassCx::new(self.executor).with_calibrator(self.calibrator);
        let t = Instant::now();
        let res = pass.run(module, &mut cx);
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let changed = match res {
            Ok(c) => c,
            Err(e) => {
                *module = before;
                return Err(e);
            }
        };
        if changed == Changed::No && *module != before {
            *module = before;
            return Err(PassError::Failed {
                pass: name.into(),
                message: "the pass reported no change but changed the module".into(),
            });
        }
        if self.options.verify && changed.is_changed() {
            if let Err(source) = crate::irx::verify(module) {
                *module = before;
                return Err(PassError::Verify {
                    pass: name.into(),
                    step,
                    source: Box::new(source),
                });
            }
        }
        let (numeric, note) = if self.options.numeric.enabled && changed.is_changed() {
            match self.numeric_check(&before, module, pass, step) {
                Ok(x) => x,
                Err(e) => {
                    *module = before;
                    self.cache = None;
                    return Err(e);
                }
            }
        } else {
            (None, None)
        };
        let run = PassRun {
            step,
            name: name.to_string(),
            iteration,
            ms,
            nodes_before,
            nodes_after: module.node_count(),
            changed: changed.is_changed(),
            numeric,
            note,
            stats: cx.take_stats(),
            details: cx.take_details(),
        };
        self.report().passes.push(run);
        if self
            .options
            .print_ir_after
            .iter()
            .any(|p| p == "all" || p == name)
        {
            let dump = IrDump {
                step,
                pass: name.to_string(),
                text: crate::irx::print_module(module),
            };
            (self.sink)(&dump);
        }
        if let Some(dir) = &self.options.dump_dir {
            write_atomic(
                &dir.join(format!("{step:02}-{name}.fir")),
                &crate::irx::print_module(module),
            )?;
        }
        Ok(changed.is_changed())
    }

    /// Run the check; `Ok((None, Some(note)))` when it cannot run the original module.
    fn numeric_check(
        &mut self,
        before: &Module,
        after: &Module,
        pass: &dyn Pass,
        step: usize,
    ) -> Result<(Option<NumericCheck>, Option<String>), PassError> {
        let name = pass.name();
        let opts = &self.options.numeric;
        let tol = opts
            .tolerance
            .get(name)
            .copied()
            .unwrap_or_else(|| pass.tolerance());
        let run_err = |message: String| PassError::NumericRun {
            pass: name.into(),
            step,
            message,
        };
        let (Some(eb), Some(ea)) = (before.entry(), after.entry()) else {
            return Ok((None, Some("no entry function".into())));
        };
        let (shapes, inputs) = match &opts.inputs {
            Some(given) => {
                if given.len() != ea.input_types().len() {
                    return Err(run_err(format!(
                        "{} check inputs given for an entry function of {} inputs",
                        given.len(),
                        ea.input_types().len()
                    )));
                }
                let shapes = given
                    .iter()
                    .map(|t| (t.dtype(), t.shape().to_vec()))
                    .collect();
                (shapes, given.clone())
            }
            None => {
                let shapes = numeric::concrete_shapes(&eb.input_types(), &ea.input_types(), opts)
                    .map_err(run_err)?;
                let inputs = numeric::generate_inputs(&shapes, opts).map_err(run_err)?;
                (shapes, inputs)
            }
        };
        let before_out = match self.cache.take() {
            Some(c) if c.shapes == shapes => c.outputs,
            _ => {
                let entry = before.entry_name().unwrap_or("main");
                match self.executor.run(before, entry, &inputs) {
                    Ok(o) => o,
                    Err(e) => {
                        return Ok((
                            None,
                            Some(format!(
                                "skipped: the module does not run on `{}` before the pass: {e}",
                                self.executor.name()
                            )),
                        ))
                    }
                }
            }
        };
        let entry = after.entry_name().unwrap_or("main");
        let after_out = self
            .executor
            .run(after, entry, &inputs)
            .map_err(|e| run_err(format!("the module ran before the pass but not after: {e}")))?;
        let names: Vec<String> = ea.outputs.iter().map(|o| o.name.clone()).collect();
        let check = numeric::compare_outputs(&names, &before_out, &after_out, tol);
        if !check.passed {
            let first = numeric::first_diverging_node(before, after, &inputs, &tol);
            return Err(PassError::Numeric {
                pass: name.into(),
                step,
                summary: check.summary(),
                first_diverging: first,
            });
        }
        self.cache = Some(Cache {
            shapes,
            outputs: after_out,
        });
        Ok((Some(check), None))
    }
}

fn collect_names(steps: &[Scheduled], out: &mut Vec<String>) {
    for s in steps {
        match s {
            Scheduled::Pass(p) => {
                if !out.iter().any(|n| n == p.name()) {
                    out.push(p.name().to_string());
                }
            }
            Scheduled::Fixpoint { steps, .. } => collect_names(steps, out),
        }
    }
}

/// Write a file through a temporary file and a rename, never leaving it half-written.
pub fn write_atomic(path: &Path, contents: &str) -> Result<(), PassError> {
    let io = |e: std::io::Error| PassError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, contents).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pass::PassKind;
    use fuselage_ir::text::parse_module;
    use fuselage_ir::{Constant, DType, Tensor, TensorType};
    use std::cell::RefCell;

    const SRC: &str = r#"
module {
  const @"w" : f32[3,3] = {"kind":"seeded","seed":1,"dist":"normal","mean":0.0,"std":0.5}
  func @main(%0 "x": f32[B,3]) {
    %1 = constant {"name":"w"} : f32[3,3]
    %2 = constant {"name":"w"} : f32[3,3]
    %3 "h1" = matmul(%0, %1) : f32[B,3]
    %4 "h2" = matmul(%0, %2) : f32[B,3]
    %5 "sum" = add(%3, %4) : f32[B,3]
    %6 = add(%5, %5) : f32[B,3]
    return %5 "out"
  }
}
"#;

    fn model() -> Module {
        parse_module(SRC, "test.fir").unwrap()
    }

    /// Scales the constant `w` by `factor`.
    struct Perturb {
        factor: f64,
        kind: PassKind,
    }
    impl Pass for Perturb {
        fn name(&self) -> &'static str {
            "perturb"
        }
        fn kind(&self) -> PassKind {
            self.kind
        }
        fn run(&mut self, m: &mut Module, _: &mut PassCx) -> Result<Changed, PassError> {
            let w = m.constants["w"].value("w").unwrap();
            let data = w.data().iter().map(|x| x * self.factor).collect();
            let t = Tensor::new(DType::F32, w.shape().to_vec(), data).unwrap();
            m.add_constant("w", Constant::from_tensor(&t));
            Ok(Changed::Yes)
        }
    }

    /// Declares a wrong result type.
    struct BreakTypes;
    impl Pass for BreakTypes {
        fn name(&self) -> &'static str {
            "break-types"
        }
        fn run(&mut self, m: &mut Module, _: &mut PassCx) -> Result<Changed, PassError> {
            let g = m.functions.get_mut("main").unwrap();
            g.node_mut(NodeId(5)).unwrap().results[0] = TensorType::fixed(DType::F32, &[7]);
            Ok(Changed::Yes)
        }
    }

    /// Changes the module but says it did not, or toggles a name and always says it did.
    struct Renamer {
        honest: bool,
    }
    impl Pass for Renamer {
        fn name(&self) -> &'static str {
            "renamer"
        }
        fn kind(&self) -> PassKind {
            PassKind::Exact
        }
        fn run(&mut self, m: &mut Module, _: &mut PassCx) -> Result<Changed, PassError> {
            let n = m
                .functions
                .get_mut("main")
                .unwrap()
                .node_mut(NodeId(5))
                .unwrap();
            n.name = Some(
                if n.name.as_deref() == Some("a") {
                    "b"
                } else {
                    "a"
                }
                .into(),
            );
            Ok(self.honest.into())
        }
    }

    use fuselage_ir::NodeId;

    fn quiet(opts: PassManagerOptions) -> PassManager<'static> {
        let mut pm = PassManager::new(opts);
        pm.set_ir_sink(|_| {});
        pm
    }

    #[test]
    fn runs_a_pipeline_with_checks_and_fixpoint() {
        let mut m = model();
        let p = Pipeline::parse("fixpoint(cse,dce),fold-constants").unwrap();
        let mut pm = quiet(PassManagerOptions::default());
        let r = pm.run(&p, &mut m).unwrap();
        let names: Vec<_> = r
            .passes
            .iter()
            .map(|p| (p.name.as_str(), p.iteration))
            .collect();
        assert_eq!(
            names,
            vec![
                ("cse", Some(1)),
                ("dce", Some(1)),
                ("cse", Some(2)),
                ("dce", Some(2)),
                ("fold-constants", None)
            ]
        );
        assert!(r.passes[0].changed && r.passes[1].changed && !r.passes[2].changed);
        assert_eq!(r.passes[0].stats["nodes-merged"], 2);
        assert_eq!((r.passes[1].nodes_before, r.passes[1].nodes_after), (5, 4));
        let n = r.passes[0].numeric.as_ref().unwrap();
        assert!(n.passed && n.max_abs == 0.0 && n.outputs[0].name == "out");
        assert!(r.passes[2].numeric.is_none(), "unchanged: no check");
        assert_eq!((r.nodes_before, r.nodes_after), (7, 4));
        assert_eq!(r.pipeline, "fixpoint(cse,dce),fold-constants");
        assert!(r.notes.is_empty() && r.stopped_after_steps.is_none());
        let t = r.table();
        assert!(
            t.contains("cse (iter 1)") && t.contains("7 → 5") && t.contains("ok"),
            "{t}"
        );
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["passes"][0]["numeric"]["passed"], serde_json::json!(true));
    }

    #[test]
    fn numeric_failure_names_pass_and_first_diverging_node_and_rolls_back() {
        let orig = model();
        let mut m = orig.clone();
        let mut pm = quiet(PassManagerOptions::default());
        let mut steps = vec![
            Scheduled::Pass(registry::create("dce", &serde_json::Value::Null).unwrap()),
            Scheduled::Pass(Box::new(Perturb {
                factor: 1.001,
                kind: PassKind::Exact,
            })),
        ];
        let e = pm.run_scheduled(&mut steps, &mut m).unwrap_err();
        let PassError::Numeric {
            pass,
            step,
            first_diverging,
            summary,
        } = &e
        else {
            panic!("{e}")
        };
        assert_eq!((pass.as_str(), *step), ("perturb", 2));
        assert!(
            first_diverging.starts_with("%1 (constant) in @main result 0"),
            "{first_diverging}"
        );
        assert!(summary.contains("output `out`"), "{summary}");
        // Rolled back to the module after dce; the report keeps the dce step.
        let mut after_dce = orig.clone();
        crate::testutil::run_pass("dce", &mut after_dce);
        assert_eq!(m, after_dce);
        assert_eq!(pm.last_report().unwrap().passes.len(), 1);
    }

    #[test]
    fn a_pipeline_step_sets_its_own_check_tolerance() {
        // `precision` to bf16 moves the numbers well past 1e-6 but keeps the cosine near 1.
        let run = |spec: &str| {
            let p = Pipeline::parse(spec).unwrap();
            let mut m = model();
            quiet(PassManagerOptions::default()).run(&p, &mut m)
        };
        let r = run("precision{check={min-cosine=0.99}}").unwrap();
        let n = r.passes[0].numeric.as_ref().unwrap();
        assert!(n.passed && n.max_abs > 0.0, "{}", n.summary());
        let e = run("precision{check={abs=0, rel=0}}").unwrap_err();
        assert!(matches!(e, PassError::Numeric { .. }), "{e}");
        let e = run("precision{check={cosine=1}}").unwrap_err().to_string();
        assert!(e.contains("unknown check key `cosine`"), "{e}");
        let e = run("precision{check=0.99}").unwrap_err().to_string();
        assert!(e.contains("check must be a table"), "{e}");
        let toml = "[[pass]]\nname = \"precision\"\ncheck = { abs = 0.0, rel = 0.0 }\n";
        let p = Pipeline::from_toml_str(toml).unwrap();
        assert_eq!(p.to_string(), "precision{check={abs=0.0,rel=0.0}}");
        let e = quiet(PassManagerOptions::default())
            .run(&p, &mut model())
            .unwrap_err();
        assert!(matches!(e, PassError::Numeric { .. }), "{e}");
    }

    #[test]
    fn tolerance_by_kind_and_override() {
        let tiny = || {
            vec![Scheduled::Pass(Box::new(Perturb {
                factor: 1.0 + 1e-6,
                kind: PassKind::Algebra,
            }))]
        };
        let mut m = model();
        let r = quiet(PassManagerOptions::default())
            .run_scheduled(&mut tiny(), &mut m)
            .unwrap();
        let n = r.passes[0].numeric.as_ref().unwrap();
        assert!(
            n.passed && n.max_abs > 0.0 && n.max_rel < 1e-5,
            "{}",
            n.summary()
        );
        let mut opts = PassManagerOptions::default();
        opts.numeric
            .tolerance
            .insert("perturb".into(), Tolerance::EXACT);
        let e = quiet(opts)
            .run_scheduled(&mut tiny(), &mut model())
            .unwrap_err();
        assert!(matches!(e, PassError::Numeric { .. }), "{e}");
    }

    #[test]
    fn verify_failure_and_lying_pass() {
        let mut m = model();
        let e = quiet(PassManagerOptions::default())
            .run_scheduled(&mut [Scheduled::Pass(Box::new(BreakTypes))], &mut m)
            .unwrap_err();
        assert!(
            matches!(&e, PassError::Verify { pass, step: 1, .. } if pass == "break-types"),
            "{e}"
        );
        assert_eq!(m, model(), "rolled back");
        let e = quiet(PassManagerOptions::default())
            .run_scheduled(
                &mut [Scheduled::Pass(Box::new(Renamer { honest: false }))],
                &mut m,
            )
            .unwrap_err();
        assert!(
            e.to_string().contains("reported no change but changed"),
            "{e}"
        );
    }

    #[test]
    fn fixpoint_bound_is_reported() {
        let mut steps = vec![Scheduled::Fixpoint {
            steps: vec![Scheduled::Pass(Box::new(Renamer { honest: true }))],
            max_iters: 3,
        }];
        let r = quiet(PassManagerOptions::default())
            .run_scheduled(&mut steps, &mut model())
            .unwrap();
        assert_eq!(r.passes.len(), 3);
        assert!(r.notes[0].contains("fixpoint(renamer) still changed the module after 3"));
    }

    #[test]
    fn max_steps_stops_and_says_so() {
        let mut m = model();
        let opts = PassManagerOptions {
            max_steps: Some(1),
            ..Default::default()
        };
        let r = quiet(opts)
            .run(&Pipeline::parse("cse,dce").unwrap(), &mut m)
            .unwrap();
        assert_eq!(r.passes.len(), 1);
        assert_eq!(r.stopped_after_steps, Some(1));
        assert!(r.table().contains("stopped after 1 steps"));
        assert_eq!(m.node_count(), 5, "cse ran, dce did not");
    }

    #[test]
    fn print_ir_after_and_dump_dir() {
        let dir = std::env::temp_dir().join(format!("fuselage-dump-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let dumps = RefCell::new(vec![]);
        let opts = PassManagerOptions {
            print_ir_after: vec!["dce".into()],
            dump_dir: Some(dir.clone()),
            ..Default::default()
        };
        let mut m = model();
        {
            let mut pm = PassManager::new(opts);
            pm.set_ir_sink(|d: &IrDump| dumps.borrow_mut().push(d.clone()));
            pm.run(&Pipeline::parse("cse,dce").unwrap(), &mut m)
                .unwrap();
        }
        let dumps = dumps.into_inner();
        assert_eq!(dumps.len(), 1);
        assert_eq!((dumps[0].step, dumps[0].pass.as_str()), (2, "dce"));
        assert_eq!(parse_module(&dumps[0].text, "dump").unwrap(), m);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        assert_eq!(files, vec!["00-input.fir", "01-cse.fir", "02-dce.fir"]);
        let last = std::fs::read_to_string(dir.join("02-dce.fir")).unwrap();
        assert_eq!(parse_module(&last, "02-dce.fir").unwrap(), m);
        std::fs::remove_dir_all(&dir).unwrap();
        let bad = PassManagerOptions {
            print_ir_after: vec!["dcee".into()],
            ..Default::default()
        };
        let e = quiet(bad)
            .run(&Pipeline::parse("dce").unwrap(), &mut model())
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("unknown pass `dcee` (allowed: all, dce"),
            "{e}"
        );
    }

    #[test]
    fn shape_specialization_is_checked_on_the_bound_sizes() {
        let mut m = model();
        let r = quiet(PassManagerOptions::default())
            .run(
                &Pipeline::parse("shape-infer{bind=\"B=5\"}").unwrap(),
                &mut m,
            )
            .unwrap();
        assert!(r.passes[0].numeric.as_ref().unwrap().passed);
        assert_eq!(m.entry().unwrap().input_types()[0].to_string(), "f32[5,3]");
    }

    #[test]
    fn unknown_pass_fails_before_anything_runs() {
        let mut m = model();
        let e = quiet(PassManagerOptions::default())
            .run(&Pipeline::parse("dce,nope").unwrap(), &mut m)
            .unwrap_err();
        assert!(matches!(e, PassError::UnknownPass { .. }));
        assert_eq!(m, model());
    }
}
