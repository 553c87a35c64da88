//! `quant-report`: how much each quantized layer of a pipeline departs from FP32, on
//! calibration data.
//!
//! The pipeline is split at its first quantization pass (a pass of
//! [`PassKind::Quantization`](fuselage_passes::PassKind)): the steps before it give the FP32
//! program, that step gives the quantized one. Every node of the quantized program that a
//! quantization pass introduced and that carries a name (a `qlinear` keeps its GEMM's name, or
//! its weight's) is matched to the FP32 node of that name, or to the FP32 node reading the
//! weight constant of that name. Both values become extra outputs; both programs run on each
//! calibration input; per matched layer the report gives the SQNR (`10·log10(Σref² /
//! Σ(ref − q)²)`) and the cosine of the quantized program's value against the FP32 one —
//! errors accumulated up to that layer, as the model sees them — worst first, and the same for
//! the model's outputs.

use crate::{compile, executor, Backend, CompileOptions, Error};
use fuselage_ir::{Module, Op, Tensor, ValueId};
use fuselage_passes::{registry, PassKind, Pipeline, Step};
use serde::Serialize;

/// The error of one value of the quantized program against its FP32 counterpart.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ValueError {
    /// The layer (node name) or output name.
    pub name: String,
    /// The op in the quantized program (`qlinear`, …; the output name for outputs).
    pub op: String,
    /// `10·log10(Σref² / Σ(ref − q)²)` over every calibration input, in dB (∞ when equal).
    pub sqnr_db: f64,
    /// Cosine similarity over every calibration input.
    pub cosine: f64,
    /// Largest `|ref − q|`.
    pub max_abs: f64,
    /// Elements compared.
    pub elements: usize,
}

/// What [`quant_report`] found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QuantReport {
    /// The quantization step, as a one-line spec.
    pub step: String,
    /// The executor both programs ran on.
    pub backend: String,
    /// Calibration inputs run.
    pub inputs: usize,
    /// Per quantized layer, worst (lowest SQNR) first.
    pub layers: Vec<ValueError>,
    /// The model's outputs, in order.
    pub outputs: Vec<ValueError>,
}

impl QuantReport {
    /// A table, worst layer first.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{} on {} calibration input(s), backend {}: {} quantized layer(s), worst first\n",
            self.step,
            self.inputs,
            self.backend,
            self.layers.len()
        );
        let w = self
            .layers
            .iter()
            .chain(&self.outputs)
            .map(|l| l.name.chars().count())
            .max()
            .unwrap_or(5)
            .max(5);
        out.push_str(&format!(
            "{:<w$}  {:<10}  {:>8}  {:>9}  {:>10}\n",
            "layer", "op", "SQNR dB", "cosine", "max |err|"
        ));
        for l in self.layers.iter().chain(&self.outputs) {
            out.push_str(&format!(
                "{:<w$}  {:<10}  {:>8.2}  {:>9.6}  {:>10.3e}\n",
                l.name, l.op, l.sqnr_db, l.cosine, l.max_abs
            ));
        }
        out
    }
}

/// Running sums of one compared value.
#[derive(Default, Clone)]
struct Sums {
    ref2: f64,
    err2: f64,
    dot: f64,
    q2: f64,
    max_abs: f64,
    elements: usize,
}

impl Sums {
    fn add(&mut self, name: &str, r: &Tensor, q: &Tensor) -> Result<(), Error> {
        if r.shape() != q.shape() {
            return Err(Error::Inputs(format!(
                "quant-report: `{name}` is {:?} in the FP32 program and {:?} quantized",
                r.shape(),
                q.shape()
            )));
        }
        if let Some(i) = r.data().iter().position(|v| !v.is_finite()) {
            return Err(Error::Inputs(format!(
                "quant-report: the FP32 program's `{name}` holds {} at element {i} on this \
                 calibration input: no error can be measured against it",
                r.data()[i]
            )));
        }
        for (&a, &b) in r.data().iter().zip(q.data()) {
            self.ref2 += a * a;
            self.err2 += (a - b) * (a - b);
            self.dot += a * b;
            self.q2 += b * b;
            self.max_abs = self.max_abs.max((a - b).abs());
        }
        self.elements += r.data().len();
        Ok(())
    }

    fn finish(&self, name: String, op: String) -> ValueError {
        let sqnr_db = if self.err2 == 0.0 {
            f64::INFINITY
        } else {
            10.0 * (self.ref2 / self.err2).log10()
        };
        let cosine = if self.ref2 == 0.0 || self.q2 == 0.0 {
            if self.ref2 == self.q2 {
                1.0
            } else {
                0.0
            }
        } else {
            self.dot / (self.ref2.sqrt() * self.q2.sqrt())
        };
        ValueError {
            name,
            op,
            sqnr_db,
            cosine,
            max_abs: self.max_abs,
            elements: self.elements,
        }
    }
}

/// The index of the first top-level step that runs a quantization pass.
fn quantization_step(pipeline: &Pipeline) -> Result<usize, Error> {
    for (i, s) in pipeline.steps.iter().enumerate() {
        if let Step::Pass(p) = s {
            let mut options = p.options_json();
            if let Some(o) = options.as_object_mut() {
                o.remove("check");
            }
            if registry::create(&p.name, &options)?.kind() == PassKind::Quantization {
                return Ok(i);
            }
        }
    }
    Err(Error::Inputs(format!(
        "quant-report: the pipeline `{pipeline}` has no quantization pass (hero-quantize, \
         precision, …) at its top level"
    )))
}

/// `(name, op, FP32 value, quantized value)` of every named node the quantization step
/// introduced that has an FP32 counterpart, in the quantized program's order.
fn matched_layers(
    fp32: &Module,
    quant: &Module,
) -> Result<Vec<(String, String, ValueId, ValueId)>, Error> {
    let (Some(g32), Some(gq)) = (fp32.entry(), quant.entry()) else {
        return Err(Error::Inputs(
            "quant-report: the model has no entry function".into(),
        ));
    };
    let order = gq
        .topo_order()
        .map_err(|n| Error::Inputs(format!("quant-report: a cycle through {n}")))?;
    let mut out = vec![];
    for id in order {
        let Some(node) = gq.node(id) else { continue };
        let Some(name) = &node.name else { continue };
        // Only what the quantization step made: the same id in the FP32 program is another
        // node (or none).
        if g32
            .node(id)
            .is_some_and(|n| n.name.as_deref() == Some(name) && n.op == node.op)
        {
            continue;
        }
        if matches!(node.op, Op::Constant(_) | Op::Input(_)) {
            continue;
        }
        let by_name = g32
            .nodes()
            .find(|(_, n)| n.name.as_deref() == Some(name.as_str()) && n.results.len() == 1);
        let by_weight = || {
            g32.nodes().find(|(_, n)| {
                n.results.len() == 1
                    && n.operands.iter().any(|v| {
                        g32.node(v.node)
                            .is_some_and(|c| matches!(&c.op, Op::Constant(k) if k.name == *name))
                    })
            })
        };
        if let Some((fid, _)) = by_name.or_else(by_weight) {
            out.push((
                name.clone(),
                node.op.name().to_string(),
                ValueId::new(fid, 0),
                ValueId::new(id, 0),
            ));
        }
    }
    Ok(out)
}

/// `module` with `values` added as outputs after its own (named `quant-report.N`).
fn with_probes(module: &Module, values: &[ValueId]) -> Result<Module, Error> {
    let mut m = module.clone();
    let entry = m
        .entry_name()
        .map(str::to_string)
        .ok_or_else(|| Error::Inputs("quant-report: the model has no entry function".into()))?;
    let g = m.functions.get_mut(&entry).expect("the entry exists");
    for (i, v) in values.iter().enumerate() {
        g.add_output(&format!("quant-report.{i}"), *v);
    }
    Ok(m)
}

/// Compile `module` with `pipeline` split at its first quantization pass, run the FP32 and
/// the quantized program on `inputs` (each a full set of entry inputs) on `backend`, and
/// compare every quantized layer and output (module docs).
pub fn quant_report(
    module: &Module,
    pipeline: &Pipeline,
    inputs: &[Vec<Tensor>],
    backend: Backend,
    calibration: Option<crate::Calibration>,
) -> Result<QuantReport, Error> {
    if inputs.is_empty() {
        return Err(Error::Inputs(
            "quant-report: no calibration inputs (an empty file?)".into(),
        ));
    }
    let i = quantization_step(pipeline)?;
    let opts = CompileOptions {
        numeric_check: false,
        calibration,
        ..CompileOptions::default()
    };
    let before = Pipeline {
        steps: pipeline.steps[..i].to_vec(),
    };
    let step = Pipeline {
        steps: pipeline.steps[i..=i].to_vec(),
    };
    let fp32 = compile(module, &before, &opts)?.module;
    let quant = compile(&fp32, &step, &opts)?.module;
    let layers = matched_layers(&fp32, &quant)?;
    let n_out = fp32.entry().map_or(0, |g| g.outputs.len());
    let out_names: Vec<String> = fp32
        .entry()
        .map(|g| g.outputs.iter().map(|o| o.name.clone()).collect())
        .unwrap_or_default();
    let p32 = with_probes(&fp32, &layers.iter().map(|l| l.2).collect::<Vec<_>>())?;
    let pq = with_probes(&quant, &layers.iter().map(|l| l.3).collect::<Vec<_>>())?;
    let (e32, eq) = (executor(&p32, backend)?, executor(&pq, backend)?);
    let entry = p32.entry_name().unwrap_or_default().to_string();
    let mut sums = vec![Sums::default(); n_out + layers.len()];
    for x in inputs {
        let r = e32.run(&p32, &entry, x)?;
        let q = eq.run(&pq, &entry, x)?;
        for (k, s) in sums.iter_mut().enumerate() {
            let name = out_names
                .get(k)
                .cloned()
                .unwrap_or_else(|| layers[k - n_out].0.clone());
            let (Some(a), Some(b)) = (r.get(k), q.get(k)) else {
                return Err(Error::Inputs(format!(
                    "quant-report: output {k} (`{name}`) missing from a run"
                )));
            };
            s.add(&name, a, b)?;
        }
    }
    let outputs = out_names
        .iter()
        .zip(&sums)
        .map(|(n, s)| s.finish(n.clone(), "output".into()))
        .collect();
    let mut report_layers: Vec<ValueError> = layers
        .iter()
        .zip(&sums[n_out..])
        .map(|((name, op, _, _), s)| s.finish(name.clone(), op.clone()))
        .collect();
    report_layers.sort_by(|a, b| a.sqnr_db.total_cmp(&b.sqnr_db));
    Ok(QuantReport {
        step: step.to_string(),
        backend: e32.name().to_string(),
        inputs: inputs.len(),
        layers: report_layers,
        outputs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mlp_layers_are_matched_and_measured_worst_first() {
        let m = crate::load("builtin:mlp").unwrap();
        let p = Pipeline::parse("dce,hero-quantize,canonicalize").unwrap();
        let sizes = fuselage_ir::sample::SymbolSizes::parse("B=4").unwrap();
        let inputs: Vec<Vec<Tensor>> = (0..3)
            .map(|seed| crate::sample_inputs(&m, &sizes, seed).unwrap())
            .collect();
        let r = quant_report(&m, &p, &inputs, Backend::Reference, None).unwrap();
        assert_eq!(r.step, "hero-quantize");
        assert_eq!(r.inputs, 3);
        assert!(!r.layers.is_empty(), "{}", r.table());
        assert!(r.layers.iter().all(|l| l.op == "qlinear"), "{}", r.table());
        for w in r.layers.windows(2) {
            assert!(w[0].sqnr_db <= w[1].sqnr_db, "worst first: {}", r.table());
        }
        for l in r.layers.iter().chain(&r.outputs) {
            assert!(l.sqnr_db.is_finite() && l.sqnr_db > 10.0, "{}", r.table());
            assert!(l.cosine > 0.99 && l.cosine <= 1.0 + 1e-12, "{}", r.table());
            assert!(
                l.max_abs > 0.0,
                "quantization changes every layer: {}",
                r.table()
            );
        }
    }

    #[test]
    fn pipelines_without_quantization_and_empty_inputs_are_errors() {
        let m = crate::load("builtin:mlp").unwrap();
        let p = Pipeline::parse("dce,cse").unwrap();
        let sizes = fuselage_ir::sample::SymbolSizes::parse("B=2").unwrap();
        let x = vec![crate::sample_inputs(&m, &sizes, 0).unwrap()];
        let e = quant_report(&m, &p, &x, Backend::Reference, None).unwrap_err();
        assert!(e.to_string().contains("no quantization pass"), "{e}");
        let p = Pipeline::parse("hero-quantize").unwrap();
        let e = quant_report(&m, &p, &[], Backend::Reference, None).unwrap_err();
        assert!(e.to_string().contains("no calibration inputs"), "{e}");
    }
}
