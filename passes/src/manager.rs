//! The [`PassManager`]: runs a [`Pipeline`] over a module and owns what every pass shares —
//! verification and the numeric check after each pass, timing, statistics, IR printing and
//! dumps, `fixpoint` groups and a step limit for bisecting.
//!
//! When a pass fails (its own error, the verifier or the numeric check), the module is rolled
//! back to its state before that pass, the error names the pass and the step, and the report of
//! the steps run so far is kept in [`PassManager::last_report`].

use crate::error::PassError;
use crate::numeric::{self, NumericCheck, NumericOptions};
use crate::pass::{Changed, Pass, PassCx};
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
        out
    }
}

impl fmt::Display for PassReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.table())
    }
}

enum Inst {
    Pass(Box<dyn Pass>),
    Fixpoint(Vec<Inst>, usize),
}

fn instantiate(steps: &[Step], default_iters: usize) -> Result<Vec<Inst>, PassError> {
    steps
        .iter()
        .map(|s| match s {
            Step::Pass(p) => registry::create(&p.name, &p.options_json()).map(Inst::Pass),
            Step::Fixpoint(f) => Ok(Inst::Fixpoint(
                instantiate(&f.steps, default_iters)?,
                f.max_iters.unwrap_or(default_iters),
            )),
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
        let t0 = Instant::now();
        for n in &self.options.print_ir_after {
            if n != "all" && !registry::PASS_NAMES.contains(&n.as_str()) {
                return Err(PassError::Config(format!(
                    "print-ir-after: unknown pass `{n}` (allowed: all, {})",
                    registry::PASS_NAMES.join(", ")
                )));
            }
        }
        let mut insts = instantiate(&pipeline.steps, self.options.fixpoint_max_iters)?;
        if self.options.verify {
            crate::irx::verify(module).map_err(|source| PassError::Verify {
                pass: "<input>".into(),
                step: 0,
                source,
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
            pipeline: pipeline.to_string(),
            executor: self.executor.name().to_string(),
            nodes_before: module.node_count(),
            ..Default::default()
        });
        let result = self.run_steps(&mut insts, module, None);
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
        insts: &mut [Inst],
        module: &mut Module,
        iteration: Option<usize>,
    ) -> Result<bool, PassError> {
        let mut any = false;
        for inst in insts.iter_mut() {
            if self.stopped {
                break;
            }
            match inst {
                Inst::Pass(p) => any |= self.run_pass(p.as_mut(), module, iteration)?,
                Inst::Fixpoint(inner, max_iters) => {
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
                        let names = pass_names(inner).join(",");
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
        let mut cx = PassCx::new(self.executor);
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
                    source,
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
            .unwrap_or_else(|| pass.kind().default_tolerance());
        let run_err = |message: String| PassError::NumericRun {
            pass: name.into(),
            step,
            message,
        };
        let (Some(eb), Some(ea)) = (before.entry(), after.entry()) else {
            return Ok((None, Some("no entry function".into())));
        };
        let shapes = numeric::concrete_shapes(&eb.input_types(), &ea.input_types(), opts)
            .map_err(run_err)?;
        let inputs = numeric::generate_inputs(&shapes, opts).map_err(run_err)?;
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

fn pass_names(insts: &[Inst]) -> Vec<String> {
    insts
        .iter()
        .map(|i| match i {
            Inst::Pass(p) => p.name().to_string(),
            Inst::Fixpoint(inner, _) => format!("fixpoint({})", pass_names(inner).join(",")),
        })
        .collect()
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
