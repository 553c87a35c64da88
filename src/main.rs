//! The `fuselage` command line: a thin layer over the compile API in `lib.rs`.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use fuselage::ir::sample::SymbolSizes;
use fuselage::ir::Tensor;
use std::path::PathBuf;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "fuselage", version, about = "A compiler for trained models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every pass with its options and what it does.
    Passes {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Ops by kind, parameters, bytes and estimated FLOPs per token of a model.
    Inspect {
        /// builtin:NAME, a .fir or .json module, an .onnx or .gguf file, or a model folder.
        model: String,
        /// Sizes of symbolic dims for the estimate, e.g. `S=512` (defaults: B=1, others 128).
        #[arg(long, default_value = "")]
        bind: String,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Run a pass pipeline over a model and print the per-pass report.
    Compile {
        /// builtin:NAME, a .fir or .json module, an .onnx or .gguf file, or a model folder.
        model: String,
        /// A pipeline file (.toml) or a one-line spec such as `dce,fixpoint(cse,fold-constants)`.
        #[arg(long, short)]
        pipeline: String,
        /// Write the compiled module (.fir or .json).
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
        /// Print the IR after this pass (repeatable; `all` for every pass).
        #[arg(long)]
        print_ir_after: Vec<String>,
        /// Write the IR after every pass into this folder.
        #[arg(long)]
        dump_dir: Option<PathBuf>,
        /// Stop after N pass executions (to bisect which pass broke a model).
        #[arg(long)]
        max_steps: Option<usize>,
        /// Skip the numeric check after each pass.
        #[arg(long)]
        no_numeric_check: bool,
        /// Symbol sizes of the numeric check's inputs, e.g. `B=1,S=8`.
        #[arg(long)]
        bind: Option<String>,
        /// Run the numeric check on this text (its first line for an encoder, its first 64
        /// tokens for a decoder, through the model's tokenizer) instead of seeded inputs.
        #[arg(long)]
        check_text: Option<PathBuf>,
        /// Calibration text for passes that need statistics (`hero-quantize` m2's static
        /// scales): its first 32 lines for an encoder, its first 256 tokens for a decoder.
        #[arg(long)]
        calibration: Option<PathBuf>,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Run a model on the reference interpreter.
    Run {
        /// builtin:NAME, a .fir or .json module, an .onnx or .gguf file, or a model folder.
        model: String,
        /// An input: `FILE.npy` (in parameter order) or `NAME=FILE.npy` (repeatable). Without
        /// inputs, seeded sample inputs are used.
        #[arg(long)]
        input: Vec<String>,
        /// Write an output: `FILE.npy` (the first output) or `NAME=FILE.npy` (repeatable).
        #[arg(long)]
        output: Vec<String>,
        /// Symbol sizes of sample inputs, e.g. `B=1,S=8` (others: 4).
        #[arg(long, default_value = "")]
        bind: String,
        /// Text input: prints the sentence embedding (encoders) or a greedy continuation
        /// (decoders) instead of running on tensors.
        #[arg(long)]
        text: Option<String>,
        /// Tokens to generate for a decoder with `--text`.
        #[arg(long, default_value_t = 16)]
        max_tokens: usize,
        /// reference (exact f64 interpreter), cpu (lowered onto burn's CPU backend) or cuda.
        #[arg(long, default_value = "reference")]
        backend: fuselage::Backend,
        /// Seed of sample inputs.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Accuracy of a model (optionally compiled with a pipeline): sentence embeddings against a
    /// reference, or perplexity on a text.
    Eval {
        /// A model folder, .gguf, .onnx, .fir or .json (text tasks need a tokenizer).
        model: String,
        /// Compile with this pipeline and also compare against the model without it.
        #[arg(long)]
        pipeline: Option<String>,
        /// One sentence per line: embed each (no padding) and compare.
        #[arg(long)]
        embeddings: Option<PathBuf>,
        /// Reference embeddings `[n, dim]` (.npy) for --embeddings.
        #[arg(long)]
        reference: Option<PathBuf>,
        /// Perplexity of a decoder on this text.
        #[arg(long)]
        perplexity: Option<PathBuf>,
        /// Score only the first N tokens of the text.
        #[arg(long)]
        tokens: Option<usize>,
        /// Calibration text for passes that need statistics (`hero-quantize` m2's static
        /// scales): its first 32 lines for an encoder, its first 256 tokens for a decoder.
        #[arg(long)]
        calibration: Option<PathBuf>,
        /// reference (exact f64 interpreter), cpu (lowered onto burn's CPU backend) or cuda.
        #[arg(long, default_value = "reference")]
        backend: fuselage::Backend,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Per-layer error of a quantization pipeline against FP32 on calibration text: SQNR and
    /// cosine of every quantized layer's output (errors accumulated up to it), worst first,
    /// then the model's outputs.
    QuantReport {
        /// A model folder or .gguf file (with a tokenizer).
        model: String,
        /// The pipeline; the report splits it at its first quantization pass.
        #[arg(long)]
        pipeline: String,
        /// Calibration text: one sequence per line for an encoder, one long sequence for a
        /// decoder.
        #[arg(long)]
        text: PathBuf,
        /// Encoders: use the first N non-empty lines.
        #[arg(long, default_value_t = 8)]
        lines: usize,
        /// Decoders: use the first N tokens.
        #[arg(long, default_value_t = 128)]
        tokens: usize,
        /// Calibration text for passes that need statistics (`hero-quantize` m2's static
        /// scales): its first 32 lines for an encoder, its first 256 tokens for a decoder.
        #[arg(long)]
        calibration: Option<PathBuf>,
        /// reference (exact f64 interpreter), cpu (lowered onto burn's CPU backend) or cuda.
        #[arg(long, default_value = "cpu")]
        backend: fuselage::Backend,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Time a model: warm-up runs, then the median and p90 of timed runs, and peak memory.
    Bench {
        /// builtin:NAME, a .fir or .json module, an .onnx or .gguf file, or a model folder.
        model: String,
        /// Compile with this pipeline first (file or one-line spec).
        #[arg(long)]
        pipeline: Option<String>,
        /// Calibration text for passes that need statistics (`hero-quantize` m2's static
        /// scales): its first 32 lines for an encoder, its first 256 tokens for a decoder.
        #[arg(long)]
        calibration: Option<PathBuf>,
        /// Batch size (binds the symbol `B`).
        #[arg(long, default_value_t = 1)]
        batch: u64,
        /// Sequence length (binds the symbol `S`).
        #[arg(long, default_value_t = 128)]
        seq: u64,
        /// Untimed warm-up runs.
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// Timed runs.
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// cpu (lowered onto burn's CPU backend), cuda, or reference.
        #[arg(long, default_value = "cpu")]
        backend: fuselage::Backend,
        /// Worker threads of the CPU backend (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Also time each op kind over the timed runs and print where the time goes.
        #[arg(long)]
        profile: bool,
        /// Run every op on burn's own tensor operations instead of fuselage's CPU kernels (to
        /// compare the two paths).
        #[arg(long)]
        no_kernels: bool,
        /// Keep constant weights as they are instead of packing them for the GEMM's
        /// micro-kernel at lowering (the GEMM then packs them on every call; to compare).
        #[arg(long)]
        no_prepack: bool,
        /// Also report how each node was lowered and why (the kernel chosen, the kernels
        /// rejected and why, why an op has no burn lowering); `lowering` in the JSON.
        #[arg(long)]
        explain_lowering: bool,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// List the native CPU kernels of the lowering's registry and the CPU features detected.
    Kernels {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Print the registry as the Markdown table of docs/kernels.md.
        #[arg(long, conflicts_with = "json")]
        markdown: bool,
    },
    /// Greedy text generation by a decoder (a .gguf file or a model folder with a tokenizer),
    /// with a KV cache: the prompt runs once, then one token per step. Prints tokens as they
    /// come, then the prefill time and the decode speed (stderr; `--json`: one JSON line per
    /// token, then a summary object).
    Generate {
        /// A .gguf file or a model folder (the tokenizer comes with it).
        model: String,
        /// The prompt.
        #[arg(long)]
        prompt: String,
        /// Tokens to generate.
        #[arg(long, default_value_t = 32)]
        max_tokens: usize,
        /// cpu (lowered onto burn's CPU backend), cuda, or reference (exact f64 interpreter).
        #[arg(long, default_value = "cpu")]
        backend: fuselage::Backend,
        /// Re-run the whole sequence for every token instead of using the KV cache (to compare).
        #[arg(long)]
        no_cache: bool,
        /// Compile the imported model with this pipeline first (file or one-line spec, e.g.
        /// `precision{dtype=bf16}`); the KV-cache function is derived after it.
        #[arg(long)]
        pipeline: Option<String>,
        /// Time each op kind over the decode steps (after the prefill) and print where the
        /// time goes.
        #[arg(long)]
        profile: bool,
        /// Print JSON Lines: one object per token, then a summary object.
        #[arg(long)]
        json: bool,
    },
    /// Write a Graphviz DOT picture of a model's entry function.
    Dot {
        /// builtin:NAME, a .fir or .json module, an .onnx or .gguf file, or a model folder.
        model: String,
        /// Output .dot file (stdout when absent).
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
    },
}

/// `fuselage generate`: tokens to stdout as they come, timings to stderr (or JSON Lines).
#[allow(clippy::too_many_arguments)] // one per CLI flag
fn generate(
    model: &str,
    prompt: &str,
    max_tokens: usize,
    backend: fuselage::Backend,
    no_cache: bool,
    pipeline: Option<&str>,
    profile: bool,
    json: bool,
) -> Result<()> {
    use std::io::Write;
    let tok = fuselage::tasks::tokenizer_for(model)?
        .with_context(|| format!("`{model}` carries no tokenizer (a .gguf file or a model folder with tokenizer.json does)"))?;
    let mut m = fuselage::load(model)?;
    if let Some(p) = pipeline {
        let p = fuselage::Pipeline::load(p)?;
        let opts = fuselage::CompileOptions {
            numeric_check: false,
            ..Default::default()
        };
        m = fuselage::compile(&m, &p, &opts)?.module;
    }
    let (m, function) = if no_cache {
        let entry = m
            .entry_name()
            .context("the module has no functions")?
            .to_string();
        (m, entry)
    } else {
        (
            fuselage::tasks::with_kv_cache(&m)?,
            fuselage::tasks::DECODE_FUNCTION.to_string(),
        )
    };
    // Lower only the function that runs.
    let t0 = std::time::Instant::now();
    let exec = fuselage::executor_for(&m, &function, backend, &Default::default())?;
    let lower_seconds = t0.elapsed().as_secs_f64();
    if !json {
        print!("{prompt}");
        std::io::stdout().flush().ok();
    }
    let g = fuselage::tasks::generate_with(
        &m,
        &tok,
        prompt,
        max_tokens,
        exec.as_ref(),
        !no_cache,
        &mut |t| {
            if profile && t.step == 1 {
                // Profile the decode steps only: the prefill is done.
                exec.set_profiling(true);
            }
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "step": t.step, "token": t.id, "text": t.text, "ms": t.seconds * 1e3
                    })
                );
            } else {
                print!("{}", t.text);
                std::io::stdout().flush().ok();
            }
        },
    )?;
    let op_profile = if profile { exec.op_profile() } else { vec![] };
    let decode_ms: Vec<f64> = g.decode_seconds.iter().map(|s| s * 1e3).collect();
    let mut sorted = decode_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
    if json {
        println!(
            "{}",
            serde_json::json!({
                "model": model,
                "backend": backend.to_string(),
                "kv_cache": g.kv_cache,
                "prompt": prompt,
                "continuation": g.text,
                "prompt_tokens": g.prompt.len(),
                "generated_tokens": g.tokens.len(),
                "tokens": g.tokens,
                "lower_ms": lower_seconds * 1e3,
                "prefill_ms": g.prefill_seconds * 1e3,
                "decode_median_ms": median,
                "decode_tokens_per_s": g.decode_tokens_per_s(),
                "profile": op_profile,
            })
        );
    } else {
        println!();
        std::io::stdout().flush().ok();
        let total: f64 = op_profile.iter().map(|o| o.seconds).sum();
        for o in &op_profile {
            eprintln!(
                "{:<32} {:>7} calls {:>9.2} ms/step {:>5.1} %",
                o.op,
                o.calls,
                o.seconds * 1e3 / g.decode_seconds.len().max(1) as f64,
                100.0 * o.seconds / total.max(1e-12)
            );
        }
        eprintln!(
            "{} prompt tokens, prefill {:.1} ms; {} decode steps, median {:.2} ms, {:.1} tokens/s ({}; lowering {:.2} s)",
            g.prompt.len(),
            g.prefill_seconds * 1e3,
            g.decode_seconds.len(),
            median,
            g.decode_tokens_per_s(),
            if g.kv_cache { "KV cache" } else { "no cache: whole sequence per token" },
            lower_seconds
        );
    }
    Ok(())
}

fn split_named(arg: &str) -> (Option<String>, PathBuf) {
    match arg.split_once('=') {
        Some((n, p)) if !n.is_empty() && !n.contains('/') => {
            (Some(n.to_string()), PathBuf::from(p))
        }
        _ => (None, PathBuf::from(arg)),
    }
}

/// Calibration inputs from `--calibration TEXT` (lowered CPU program), or none.
fn calibration(
    model: &str,
    module: &fuselage::ir::Module,
    path: Option<&PathBuf>,
) -> Result<Option<fuselage::Calibration>> {
    let Some(path) = path else {
        return Ok(None);
    };
    let tok = fuselage::tasks::tokenizer_for(model)?
        .with_context(|| format!("--calibration: `{model}` carries no tokenizer"))?;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let inputs = fuselage::tasks::calibration_inputs(module, &tok, &text, 32, 256)
        .with_context(|| format!("--calibration {}", path.display()))?;
    Ok(Some(fuselage::Calibration {
        inputs,
        backend: fuselage::Backend::Cpu,
    }))
}

fn sizes(spec: &str, default: u64) -> Result<SymbolSizes> {
    let mut s = SymbolSizes::parse(spec)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("bad --bind `{spec}`"))?;
    s.default = default;
    Ok(s)
}

fn summary(t: &Tensor) -> (f64, f64, Vec<f64>) {
    let d = t.data();
    let sum: f64 = d.iter().sum();
    let mean = if d.is_empty() {
        0.0
    } else {
        sum / d.len() as f64
    };
    (sum, mean, d.iter().take(6).copied().collect())
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Passes { json } => {
            let passes = fuselage::passes::registry::passes();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({ "passes": passes }))?
                );
            } else {
                for p in passes {
                    println!("{:<16} {}", p.name, p.doc);
                    for o in p.options {
                        println!(
                            "    {:<18} {:<10} default {:<10} {}",
                            o.name,
                            o.ty,
                            o.default.to_string(),
                            o.doc
                        );
                    }
                }
            }
        }
        Command::Inspect { model, bind, json } => {
            let m = fuselage::load(&model)?;
            let i = fuselage::inspect(&m, &sizes(&format!("B=1,{bind}"), 128)?);
            if json {
                println!("{}", serde_json::to_string_pretty(&i)?);
            } else {
                print!("{i}");
            }
        }
        Command::Compile {
            model,
            pipeline,
            output,
            print_ir_after,
            dump_dir,
            max_steps,
            no_numeric_check,
            bind,
            check_text,
            calibration: calibration_text,
            json,
        } => {
            let m = fuselage::load(&model)?;
            let p = fuselage::Pipeline::load(&pipeline)?;
            let check_inputs = match &check_text {
                Some(path) => {
                    let tok = fuselage::tasks::tokenizer_for(&model)?
                        .with_context(|| format!("--check-text: `{model}` carries no tokenizer"))?;
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    fuselage::tasks::calibration_inputs(&m, &tok, &text, 1, 64)
                        .with_context(|| format!("--check-text {}", path.display()))?
                        .into_iter()
                        .next()
                }
                None => None,
            };
            let opts = fuselage::CompileOptions {
                numeric_check: !no_numeric_check,
                check_sizes: bind.as_deref().map(|b| sizes(b, 4)).transpose()?,
                print_ir_after,
                dump_dir,
                max_steps,
                check_inputs,
                calibration: calibration(&model, &m, calibration_text.as_ref())?,
            };
            let c = fuselage::compile(&m, &p, &opts)?;
            for (step, pass, text) in &c.ir_dumps {
                eprintln!("// ----- IR after {pass} (step {step}) -----\n{text}");
            }
            if let Some(o) = &output {
                fuselage::save(&c.module, o)?;
            }
            if json {
                let mut v = serde_json::to_value(&c.report)?;
                if let Some(o) = &output {
                    v["output"] = serde_json::json!(o.display().to_string());
                }
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{}", c.report.table());
                if let Some(o) = &output {
                    println!("wrote {}", o.display());
                }
            }
        }
        Command::Generate {
            model,
            prompt,
            max_tokens,
            backend,
            no_cache,
            pipeline,
            profile,
            json,
        } => generate(
            &model,
            &prompt,
            max_tokens,
            backend,
            no_cache,
            pipeline.as_deref(),
            profile,
            json,
        )?,
        Command::Run {
            model,
            input,
            output,
            bind,
            seed,
            json,
            text,
            max_tokens,
            backend,
        } => {
            // Read the inputs first: an ONNX model may need some of their values to be typed.
            let mut given = vec![];
            for a in &input {
                let (name, path) = split_named(a);
                given.push((name, fuselage::npy::read_npy(&path)?));
            }
            let options = fuselage::LoadOptions {
                input_values: given
                    .iter()
                    .filter_map(|(n, t)| n.clone().map(|n| (n, t.clone())))
                    .collect(),
            };
            let loaded = fuselage::load_with(&model, &options)?;
            for n in &loaded.notes {
                eprintln!("note: {n}");
            }
            if !loaded.specialized.is_empty() {
                eprintln!(
                    "note: specialized on the values of input(s) {} (they determine shapes)",
                    loaded.specialized.join(", ")
                );
                given.retain(|(n, _)| n.as_ref().is_none_or(|n| !loaded.specialized.contains(n)));
            }
            let m = loaded.module;
            if let Some(text) = text {
                let tok = fuselage::tasks::tokenizer_for(&model)?.with_context(|| {
                    format!("`{model}` carries no tokenizer (a model folder with tokenizer.json or a .gguf file does)")
                })?;
                if fuselage::tasks::is_encoder(&m) {
                    let exec = fuselage::executor(&m, backend)?;
                    let e = fuselage::tasks::embed(&m, &tok, &text, exec.as_ref())?;
                    if json {
                        println!("{}", serde_json::json!({ "text": text, "embedding": e }));
                    } else {
                        let head: Vec<String> =
                            e.iter().take(8).map(|x| format!("{x:.6}")).collect();
                        println!("embedding ({} dims): [{}, …]", e.len(), head.join(", "));
                    }
                } else {
                    // The KV-cache path when the model allows one (a causal decoder).
                    // Only the function that runs is lowered (one copy of the weights).
                    let (m, cached) = match fuselage::tasks::with_kv_cache(&m) {
                        Ok(kv) => (kv, true),
                        Err(e) => {
                            eprintln!("note: {e}; re-running the whole sequence per token");
                            (m, false)
                        }
                    };
                    let exec = if cached {
                        let decode = fuselage::tasks::DECODE_FUNCTION;
                        fuselage::executor_for(&m, decode, backend, &Default::default())?
                    } else {
                        fuselage::executor(&m, backend)?
                    };
                    let bar = indicatif::ProgressBar::new(max_tokens as u64);
                    let out = fuselage::tasks::generate_with(
                        &m,
                        &tok,
                        &text,
                        max_tokens,
                        exec.as_ref(),
                        cached,
                        &mut |t| bar.set_position(t.step as u64),
                    )?
                    .text;
                    bar.finish_and_clear();
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({ "prompt": text, "continuation": out })
                        );
                    } else {
                        println!("{text}{out}");
                    }
                }
                return Ok(());
            }
            let inputs = if input.is_empty() {
                fuselage::sample_inputs(&m, &sizes(&bind, 4)?, seed)?
            } else {
                fuselage::bind_named_inputs(&m, given)?
            };
            let exec = fuselage::executor(&m, backend)?;
            let outs = fuselage::run_with(&m, &inputs, exec.as_ref())?;
            for (i, a) in output.iter().enumerate() {
                let (name, path) = split_named(a);
                let t = match &name {
                    Some(n) => outs
                        .iter()
                        .find(|(o, _)| o == n)
                        .map(|(_, t)| t)
                        .with_context(|| {
                            format!(
                                "no output named `{n}` (outputs: {})",
                                outs.iter()
                                    .map(|(o, _)| o.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        })?,
                    None if i == 0 => &outs.first().context("the model has no outputs")?.1,
                    None => bail!("only the first --output may omit NAME= ({a})"),
                };
                fuselage::npy::write_npy(&path, t)?;
            }
            if json {
                let v: Vec<_> = outs
                    .iter()
                    .map(|(n, t)| {
                        let (sum, mean, head) = summary(t);
                        serde_json::json!({"name": n, "dtype": t.dtype().name(), "shape": t.shape(),
                            "sum": sum, "mean": mean, "head": head})
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({ "outputs": v }))?
                );
            } else {
                for (n, t) in &outs {
                    let (sum, mean, head) = summary(t);
                    println!(
                        "{n}: {}{:?} sum {sum:.9e} mean {mean:.6e} first {:?}",
                        t.dtype(),
                        t.shape(),
                        head.iter().map(|x| format!("{x:.6}")).collect::<Vec<_>>()
                    );
                }
            }
        }
        Command::Eval {
            model,
            pipeline,
            embeddings,
            reference,
            perplexity,
            tokens,
            calibration: calibration_text,
            backend,
            json,
        } => {
            let base = fuselage::load(&model)?;
            let tok = fuselage::tasks::tokenizer_for(&model)?
                .with_context(|| format!("`{model}` carries no tokenizer"))?;
            // The numeric check after each pass runs on the task's own data (its first
            // sentence, or the first 64 tokens of its text), not on seeded token ids.
            let sample = match (&embeddings, &perplexity) {
                (Some(path), _) | (None, Some(path)) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    fuselage::tasks::calibration_inputs(&base, &tok, &text, 1, 64)
                        .with_context(|| format!("text {}", path.display()))?
                        .into_iter()
                        .next()
                }
                (None, None) => None,
            };
            let compiled = match &pipeline {
                Some(p) => {
                    let p = fuselage::Pipeline::load(p)?;
                    let opts = fuselage::CompileOptions {
                        check_inputs: sample,
                        calibration: calibration(&model, &base, calibration_text.as_ref())?,
                        ..fuselage::CompileOptions::default()
                    };
                    let c = fuselage::compile(&base, &p, &opts)?;
                    // What the passes decided (which module runs in which precision, …).
                    for run in &c.report.passes {
                        if let Some(d) = run.details.as_ref().filter(|d| !d.text.is_empty()) {
                            eprintln!("step {} {}:", run.step, run.name);
                            for line in &d.text {
                                eprintln!("  {line}");
                            }
                        }
                    }
                    Some(c.module)
                }
                None => None,
            };
            let m = compiled.as_ref().unwrap_or(&base);
            let exec = fuselage::executor(m, backend)?;
            let exec = exec.as_ref();
            let base_exec = match &compiled {
                Some(_) => Some(fuselage::executor(&base, backend)?),
                None => None,
            };
            let mut out =
                serde_json::json!({ "model": model, "pipeline": pipeline, "backend": exec.name() });
            if let Some(path) = &embeddings {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
                let bar = indicatif::ProgressBar::new(lines.len() as u64);
                let mut embs = vec![];
                let mut base_embs = vec![];
                for l in &lines {
                    embs.push(fuselage::tasks::embed(m, &tok, l, exec)?);
                    if let Some(be) = &base_exec {
                        base_embs.push(fuselage::tasks::embed(&base, &tok, l, be.as_ref())?);
                    }
                    bar.inc(1);
                }
                bar.finish_and_clear();
                let stats = |c: Vec<f64>| {
                    let mean = c.iter().sum::<f64>() / c.len().max(1) as f64;
                    let min = c.iter().cloned().fold(f64::INFINITY, f64::min);
                    serde_json::json!({ "cosine_mean": mean, "cosine_min": min })
                };
                out["sentences"] = serde_json::json!(lines.len());
                if let Some(rp) = &reference {
                    let r = fuselage::npy::read_npy(rp)?;
                    let dim = *r.shape().last().unwrap_or(&0);
                    if r.shape().len() != 2 || r.shape()[0] != embs.len() {
                        bail!(
                            "{}: reference has shape {:?}, expected [{}, {}]",
                            rp.display(),
                            r.shape(),
                            embs.len(),
                            embs.first().map_or(0, |e| e.len())
                        );
                    }
                    let c: Vec<f64> = embs
                        .iter()
                        .enumerate()
                        .map(|(i, e)| fuselage::tasks::cosine(e, &r.data()[i * dim..(i + 1) * dim]))
                        .collect();
                    let s = stats(c);
                    out["cosine_mean"] = s["cosine_mean"].clone();
                    out["cosine_min"] = s["cosine_min"].clone();
                }
                if compiled.is_some() {
                    let c = embs
                        .iter()
                        .zip(&base_embs)
                        .map(|(a, b)| fuselage::tasks::cosine(a, b))
                        .collect();
                    out["against_uncompiled"] = stats(c);
                }
            }
            if let Some(path) = &perplexity {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let (ppl, n) = fuselage::tasks::perplexity(m, &tok, &text, tokens, exec)?;
                out["perplexity"] = serde_json::json!(ppl);
                out["tokens"] = serde_json::json!(n);
                if let Some(be) = &base_exec {
                    let (b, _) =
                        fuselage::tasks::perplexity(&base, &tok, &text, tokens, be.as_ref())?;
                    out["baseline"] = serde_json::json!({ "perplexity": b });
                    out["perplexity_delta"] = serde_json::json!(ppl - b);
                }
            }
            if embeddings.is_none() && perplexity.is_none() {
                bail!("eval needs --embeddings SENTENCES.txt or --perplexity TEXT.txt");
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else if let Some(o) = out.as_object() {
                for (k, v) in o {
                    if !v.is_null() {
                        println!("{k:<20} {v}");
                    }
                }
            }
        }
        Command::QuantReport {
            model,
            pipeline,
            text,
            lines,
            tokens,
            calibration: calibration_text,
            backend,
            json,
        } => {
            let base = fuselage::load(&model)?;
            let tok = fuselage::tasks::tokenizer_for(&model)?
                .with_context(|| format!("`{model}` carries no tokenizer"))?;
            let p = fuselage::Pipeline::load(&pipeline)?;
            let t = std::fs::read_to_string(&text)
                .with_context(|| format!("reading {}", text.display()))?;
            let inputs = fuselage::tasks::calibration_inputs(&base, &tok, &t, lines, tokens)
                .with_context(|| format!("calibration text {}", text.display()))?;
            let cal = calibration(&model, &base, calibration_text.as_ref())?;
            let r = fuselage::quant_report::quant_report(&base, &p, &inputs, backend, cal)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", r.table());
            }
        }
        Command::Bench {
            model,
            pipeline,
            calibration: calibration_text,
            batch,
            seq,
            warmup,
            runs,
            backend,
            threads,
            profile,
            no_kernels,
            no_prepack,
            explain_lowering,
            json,
        } => {
            if let Some(t) = threads {
                // Read by rayon (burn-ndarray) and matrixmultiply when their pools start, which is
                // after this point: the process has not run any parallel work yet.
                std::env::set_var("RAYON_NUM_THREADS", t.to_string());
                std::env::set_var("MATMUL_NUM_THREADS", t.to_string());
            }
            let mut m = fuselage::load(&model)?;
            if let Some(p) = &pipeline {
                let p = fuselage::Pipeline::load(p)?;
                let opts = fuselage::CompileOptions {
                    numeric_check: false,
                    calibration: calibration(&model, &m, calibration_text.as_ref())?,
                    ..Default::default()
                };
                m = fuselage::compile(&m, &p, &opts)?.module;
            }
            let sizes = sizes(&format!("B={batch},S={seq}"), seq)?;
            let inputs = fuselage::sample_inputs(&m, &sizes, 0)?;
            let bar = indicatif::ProgressBar::new((warmup + runs) as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} runs")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_message("bench");
            let options = fuselage::backends::LowerOptions {
                native_kernels: !no_kernels,
                prepare_constants: !no_prepack,
                ..Default::default()
            };
            let (exec, lowering) = match fuselage::lower_program(&m, backend, &options)? {
                Some(p) => {
                    let lowering = explain_lowering.then(|| p.explain_lowering());
                    (fuselage::program_executor(p), lowering)
                }
                None if explain_lowering => bail!(
                    "--explain-lowering needs a lowered backend (--backend cpu or cuda); \
                     the reference interpreter runs the module as it is"
                ),
                None => (fuselage::executor_with(&m, backend, &options)?, None),
            };
            let f = fuselage::bench::bench(
                &m,
                &inputs,
                exec.as_ref(),
                warmup,
                runs,
                profile,
                &mut |d, _| bar.set_position(d as u64),
            )?;
            bar.finish_and_clear();
            if json {
                let mut v = serde_json::to_value(&f)?;
                v["model"] = serde_json::json!(model);
                v["batch"] = serde_json::json!(batch);
                v["seq"] = serde_json::json!(seq);
                v["pipeline"] = serde_json::json!(pipeline);
                v["threads"] = serde_json::json!(threads);
                v["kernels"] = serde_json::json!(!no_kernels);
                v["prepacked"] = serde_json::json!(!no_kernels && !no_prepack);
                if let Some(l) = &lowering {
                    v["lowering"] = fuselage::lowering_json(l);
                }
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                if let Some(l) = &lowering {
                    print!("{}", fuselage::backends::render_explain(l));
                }
                println!(
                    "{model} on {} at B={batch} S={seq}: median {:.3} ms, p90 {:.3} ms, min {:.3} ms over {runs} runs (after {warmup} warm-up); peak RSS {}",
                    f.backend,
                    f.median_ms,
                    f.p90_ms,
                    f.min_ms,
                    f.peak_rss_mb.map(|m| format!("{m:.1} MB")).unwrap_or_else(|| "unknown".into())
                );
                if profile {
                    if f.profile.is_empty() {
                        println!("(the {} executor does not profile ops)", f.backend);
                    }
                    let total: f64 = f.profile.iter().map(|p| p.seconds).sum();
                    if !f.profile.is_empty() {
                        println!(
                            "{:<36} {:>10} {:>12} {:>7}",
                            "op [kernel]", "calls/run", "ms/run", "share"
                        );
                    }
                    for p in &f.profile {
                        println!(
                            "{:<36} {:>10.1} {:>12.3} {:>6.1}%",
                            p.op,
                            p.calls as f64 / runs.max(1) as f64,
                            p.seconds * 1e3 / runs.max(1) as f64,
                            100.0 * p.seconds / total.max(f64::MIN_POSITIVE)
                        );
                    }
                }
            }
        }
        Command::Kernels { json, markdown } => {
            use fuselage::backends::kernels::{cpu::CpuFeatures, registry};
            if markdown {
                print!("{}", registry::markdown_table());
            } else if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&fuselage::kernels_json())?
                );
            } else {
                let f = CpuFeatures::get();
                println!("CPU features: {}", f.summary());
                let isa = fuselage::backends::kernels::packed_gemm::GemmIsa::detect();
                println!(
                    "GEMM micro-kernel for packed weights: {} (K block {})",
                    isa.describe(),
                    isa.kc()
                );
                println!(
                    "{:<22} {:<12} {:<36} {:>4} {:<5} what it does",
                    "kernel", "op", "signature", "cost", "here"
                );
                for e in registry::KERNELS {
                    println!(
                        "{:<22} {:<12} {:<36} {:>4} {:<5} {}",
                        e.name,
                        e.op,
                        e.signature,
                        e.cost,
                        if (e.guard)(f) { "yes" } else { "no" },
                        e.doc
                    );
                }
            }
        }
        Command::Dot { model, output } => {
            let m = fuselage::load(&model)?;
            let entry = m
                .entry_name()
                .context("the module has no functions")?
                .to_string();
            let dot = fuselage::ir::dot::to_dot(&m, &entry)?;
            match output {
                Some(p) => fuselage::npy::write_atomic(&p, dot.as_bytes())
                    .with_context(|| format!("writing {}", p.display()))?,
                None => print!("{dot}"),
            }
        }
    }
    Ok(())
}
