//! `fuselage bench`: time a model on an executor — warm-up runs, then timed runs, reported as
//! median, p90, min and mean, plus the process's peak resident memory.

use fuselage_ir::{Executor, Module, OpTime, Tensor};
use serde::Serialize;
use std::time::Instant;

/// Figures of one benchmark.
#[derive(Clone, Debug, Serialize)]
pub struct BenchFigures {
    /// Executor name (`reference`, `cpu`, …).
    pub backend: String,
    /// Untimed warm-up runs.
    pub warmup: usize,
    /// Timed runs.
    pub runs: usize,
    /// Median wall time of one run.
    pub median_ms: f64,
    /// 90th percentile (linear interpolation between order statistics, as numpy does).
    pub p90_ms: f64,
    /// Fastest run.
    pub min_ms: f64,
    /// Mean run.
    pub mean_ms: f64,
    /// Peak resident set size of the process so far (Linux `VmHWM`), if known.
    pub peak_rss_mb: Option<f64>,
    /// Time per op kind over the timed runs, slowest first (only with profiling; the per-op
    /// clock adds a little overhead to the timed runs).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub profile: Vec<OpTime>,
}

/// `q`-quantile of sorted samples with numpy's default linear interpolation.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Peak resident set size of this process in MB (Linux), `None` elsewhere.
pub fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Run `warmup` untimed and `runs` timed executions of the entry function; `progress` is called
/// after each run with (done, total). With `profile`, the executor records the time of each op
/// kind over the timed runs (when it can: the reference interpreter does not).
pub fn bench(
    module: &Module,
    inputs: &[Tensor],
    executor: &dyn Executor,
    warmup: usize,
    runs: usize,
    profile: bool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<BenchFigures, crate::Error> {
    let entry = module
        .entry_name()
        .ok_or_else(|| crate::Error::Inputs("the module has no functions".into()))?
        .to_string();
    let total = warmup + runs;
    for i in 0..warmup {
        executor.run(module, &entry, inputs)?;
        progress(i + 1, total);
    }
    let mut times = Vec::with_capacity(runs);
    if profile {
        executor.set_profiling(true);
    }
    for i in 0..runs {
        let t = Instant::now();
        let out = executor.run(module, &entry, inputs)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        drop(out);
        progress(warmup + i + 1, total);
    }
    let profile = if profile {
        let p = executor.op_profile();
        executor.set_profiling(false);
        p
    } else {
        Vec::new()
    };
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(BenchFigures {
        backend: executor.name().to_string(),
        warmup,
        runs,
        median_ms: quantile(&sorted, 0.5),
        p90_ms: quantile(&sorted, 0.9),
        min_ms: sorted.first().copied().unwrap_or(f64::NAN),
        mean_ms: times.iter().sum::<f64>() / times.len().max(1) as f64,
        peak_rss_mb: peak_rss_mb(),
        profile,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_match_numpy_linear() {
        let s = [1.0, 2.0, 3.0, 4.0, 10.0];
        assert_eq!(quantile(&s, 0.5), 3.0);
        // numpy.percentile([1,2,3,4,10], 90) == 7.6
        assert!((quantile(&s, 0.9) - 7.6).abs() < 1e-12);
        assert_eq!(quantile(&[5.0], 0.9), 5.0);
    }
}
