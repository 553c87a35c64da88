//! The [`Pass`] trait, the context a pass runs in ([`PassCx`]) and numeric tolerances by pass
//! kind ([`PassKind`], [`Tolerance`]).

use crate::error::PassError;
use fuselage_ir::{Executor, Module};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Whether a pass changed the module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Changed {
    /// The module is exactly as before.
    No,
    /// The pass rewrote something.
    Yes,
}

impl Changed {
    /// `true` for [`Changed::Yes`].
    pub fn is_changed(self) -> bool {
        self == Changed::Yes
    }
}

impl From<bool> for Changed {
    fn from(b: bool) -> Self {
        if b {
            Changed::Yes
        } else {
            Changed::No
        }
    }
}

impl From<Changed> for bool {
    fn from(c: Changed) -> bool {
        c.is_changed()
    }
}

/// What a pass may do to the numbers, which sets the numeric check's default tolerance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PassKind {
    /// Structural and layout rewrites (dce, cse, folding with the reference semantics, shape
    /// specialization, sharding): outputs must be bit-identical.
    Exact,
    /// Floating-point algebra (fusions, reassociation): ulp-level differences allowed.
    Algebra,
    /// Quantization and low-precision casts: judged by cosine similarity.
    Quantization,
}

impl PassKind {
    /// The default tolerance for passes of this kind.
    pub fn default_tolerance(self) -> Tolerance {
        match self {
            PassKind::Exact => Tolerance::EXACT,
            PassKind::Algebra => Tolerance {
                abs: 1e-6,
                rel: 1e-5,
                min_cosine: 0.0,
            },
            PassKind::Quantization => Tolerance {
                abs: f64::INFINITY,
                rel: f64::INFINITY,
                min_cosine: 0.999,
            },
        }
    }
}

/// A numeric tolerance: every element must satisfy `|after − before| ≤ abs + rel·|before|`
/// (NaN matches NaN, an infinity matches the same infinity), and every output's cosine
/// similarity must be at least `min_cosine`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Tolerance {
    /// Absolute term.
    pub abs: f64,
    /// Relative term (times `|before|`).
    pub rel: f64,
    /// Minimum cosine similarity per output (use `-1` or `0` to disable).
    pub min_cosine: f64,
}

impl Tolerance {
    /// Bit-identical outputs.
    pub const EXACT: Tolerance = Tolerance {
        abs: 0.0,
        rel: 0.0,
        min_cosine: -1.0,
    };

    /// Whether one element pair is within the elementwise bound.
    pub fn element_ok(&self, before: f64, after: f64) -> bool {
        if before.is_nan() || after.is_nan() {
            return before.is_nan() && after.is_nan();
        }
        if before == after {
            return true;
        }
        if before.is_infinite() || after.is_infinite() {
            return false;
        }
        (after - before).abs() <= self.abs + self.rel * before.abs()
    }
}

/// What a pass sees besides the module: statistics counters to bump, and an executor for passes
/// that must run the model (calibration).
pub struct PassCx<'a> {
    executor: &'a dyn Executor,
    calibrator: Option<&'a dyn Calibrator>,
    stats: BTreeMap<String, u64>,
    details: Option<PassDetails>,
}

/// What [`Calibrator::run_each`] hands each input's outputs to (with the input's index).
pub type EachOutputs<'f> = dyn FnMut(usize, &[fuselage_ir::Tensor]) -> Result<(), String> + 'f;

/// Runs a module on the calibration inputs, on the fastest executor available (the lowered CPU
/// program), for passes that collect statistics (`hero-quantize`'s static scales).
pub trait Calibrator {
    /// What runs the module (`cpu`, `reference`), for reports.
    fn name(&self) -> String;

    /// How many calibration inputs there are.
    fn inputs(&self) -> usize;

    /// Run `module`'s entry function on each calibration input in turn and hand its outputs to
    /// `each` (with the input's index); stop at the first error.
    fn run_each(&self, module: &Module, each: &mut EachOutputs<'_>) -> Result<(), String>;
}

/// What a pass decided, beyond its counters: structured data for `--json` and a few lines of
/// text for people (which module runs in which precision, say). Serializes as its data.
#[derive(Clone, Debug, PartialEq)]
pub struct PassDetails {
    /// Structured form (in the report's JSON as the pass's `details`).
    pub data: serde_json::Value,
    /// Human-readable lines, printed under the report's table.
    pub text: Vec<String>,
}

impl Serialize for PassDetails {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.data.serialize(s)
    }
}

impl<'a> PassCx<'a> {
    /// A context running models on `executor`, with no statistics yet.
    pub fn new(executor: &'a dyn Executor) -> Self {
        PassCx {
            executor,
            calibrator: None,
            stats: BTreeMap::new(),
            details: None,
        }
    }

    /// This context with calibration inputs.
    pub fn with_calibrator(mut self, calibrator: Option<&'a dyn Calibrator>) -> Self {
        self.calibrator = calibrator;
        self
    }

    /// The calibration inputs' runner, when the pipeline was given some.
    pub fn calibrator(&self) -> Option<&'a dyn Calibrator> {
        self.calibrator
    }

    /// Record what the pass decided (replaces earlier details of this run).
    pub fn set_details(&mut self, data: serde_json::Value, text: Vec<String>) {
        self.details = Some(PassDetails { data, text });
    }

    /// Take the details, leaving none.
    pub fn take_details(&mut self) -> Option<PassDetails> {
        self.details.take()
    }

    /// Add `n` to the counter `name` (created at 0).
    pub fn bump(&mut self, name: &str, n: u64) {
        if n == 0 && self.stats.contains_key(name) {
            return;
        }
        *self.stats.entry(name.to_string()).or_insert(0) += n;
    }

    /// The counters bumped so far.
    pub fn stats(&self) -> &BTreeMap<String, u64> {
        &self.stats
    }

    /// Take the counters, leaving none.
    pub fn take_stats(&mut self) -> BTreeMap<String, u64> {
        std::mem::take(&mut self.stats)
    }

    /// The executor for passes that run the model.
    pub fn executor(&self) -> &'a dyn Executor {
        self.executor
    }
}

/// A transformation of a module.
///
/// A pass is created from its options by the [registry](crate::registry) and may be run several
/// times (inside a `fixpoint` group). It reports whether it changed anything; the
/// [`PassManager`](crate::PassManager) verifies the module and checks its numbers after it.
pub trait Pass {
    /// The registered name (`dce`, `fold-constants`, …).
    fn name(&self) -> &'static str;

    /// Transform `m`.
    fn run(&mut self, m: &mut Module, cx: &mut PassCx) -> Result<Changed, PassError>;

    /// What the pass may do to the numbers; sets the numeric check's default tolerance.
    /// Passes that only restructure the graph return [`PassKind::Exact`].
    fn kind(&self) -> PassKind {
        PassKind::Algebra
    }

    /// The numeric check's tolerance after this pass: the kind's default unless a pipeline
    /// step sets its own (`check = { min-cosine = 0.99 }`, see [`Checked`]).
    fn tolerance(&self) -> Tolerance {
        self.kind().default_tolerance()
    }
}

/// A pass whose numeric check uses a tolerance given by the pipeline step (`check = { … }`)
/// instead of its kind's default.
pub struct Checked {
    /// The pass.
    pub pass: Box<dyn Pass>,
    /// The tolerance of its numeric check.
    pub tolerance: Tolerance,
}

impl Pass for Checked {
    fn name(&self) -> &'static str {
        self.pass.name()
    }

    fn run(&mut self, m: &mut Module, cx: &mut PassCx) -> Result<Changed, PassError> {
        self.pass.run(m, cx)
    }

    fn kind(&self) -> PassKind {
        self.pass.kind()
    }

    fn tolerance(&self) -> Tolerance {
        self.tolerance
    }
}

impl Tolerance {
    /// `base` with the keys of a pipeline step's `check` table applied (`abs`, `rel`,
    /// `min-cosine`; numbers).
    pub fn with_overrides(
        base: Tolerance,
        pass: &str,
        table: &serde_json::Value,
    ) -> Result<Tolerance, PassError> {
        let err = |message: String| PassError::Options {
            pass: pass.to_string(),
            message,
        };
        let obj = table
            .as_object()
            .ok_or_else(|| err(format!("check must be a table, found `{table}`")))?;
        let mut t = base;
        for (k, v) in obj {
            let x = v
                .as_f64()
                .ok_or_else(|| err(format!("check.{k} must be a number, found `{v}`")))?;
            match k.as_str() {
                "abs" => t.abs = x,
                "rel" => t.rel = x,
                "min-cosine" => t.min_cosine = x,
                other => {
                    return Err(err(format!(
                        "unknown check key `{other}` (allowed: abs, rel, min-cosine)"
                    )))
                }
            }
        }
        Ok(t)
    }
}
