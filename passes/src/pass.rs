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
    stats: BTreeMap<String, u64>,
}

impl<'a> PassCx<'a> {
    /// A context running models on `executor`, with no statistics yet.
    pub fn new(executor: &'a dyn Executor) -> Self {
        PassCx {
            executor,
            stats: BTreeMap::new(),
        }
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
}
