//! What `run --text` and `eval` do with real models: sentence embeddings, greedy generation and
//! perplexity, on any executor. Inputs are fed one sequence at a time without padding (so no
//! padded position can leak into a mean-pooled embedding).

use crate::Error;
use fuselage_frontends::Tokenizer;
use fuselage_ir::{DType, Executor, Module, Tensor};
use std::path::Path;

/// The tokenizer that belongs to a model spec: `tokenizer.json` of a model folder, or the
/// vocabulary a `.gguf` file carries. `None` for specs without one.
pub fn tokenizer_for(spec: &str) -> Result<Option<Tokenizer>, Error> {
    let p = Path::new(spec);
    if p.is_dir() && p.join("tokenizer.json").is_file() {
        return Ok(Some(
            Tokenizer::from_model_dir(p).map_err(crate::ModelError::from)?,
        ));
    }
    if p.extension().is_some_and(|e| e == "gguf") {
        return Ok(Some(crate::model::gguf_tokenizer(p)?));
    }
    Ok(None)
}

fn entry(module: &Module) -> Result<String, Error> {
    module
        .entry_name()
        .map(str::to_string)
        .ok_or_else(|| Error::Inputs("the module has no functions".into()))
}

/// Inputs for one token sequence: `input_ids` and, if the model takes it, an all-ones
/// `attention_mask`, as `[1, S]` int64 tensors in the entry function's parameter order.
fn sequence_inputs(module: &Module, ids: &[i64]) -> Result<Vec<Tensor>, Error> {
    let g = &module.functions[&entry(module)?];
    let n = ids.len();
    let mut out = vec![];
    for name in g.input_names() {
        let t = match name.as_str() {
            "input_ids" => Tensor::new(DType::I64, vec![1, n], ids.iter().map(|&i| i as f64).collect()),
            "attention_mask" => Tensor::new(DType::I64, vec![1, n], vec![1.0; n]),
            "token_type_ids" => Tensor::new(DType::I64, vec![1, n], vec![0.0; n]),
            other => {
                return Err(Error::Inputs(format!(
                    "text input needs a model whose inputs are input_ids (and attention_mask); this one takes `{other}`"
                )))
            }
        };
        out.push(t?);
    }
    Ok(out)
}

fn output<'a>(module: &Module, outs: &'a [Tensor], name: &str) -> Result<&'a Tensor, Error> {
    let g = &module.functions[&entry(module)?];
    g.outputs
        .iter()
        .position(|o| o.name == name)
        .and_then(|i| outs.get(i))
        .ok_or_else(|| {
            Error::Inputs(format!(
                "the model has no `{name}` output (outputs: {})",
                g.outputs
                    .iter()
                    .map(|o| o.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

/// Calibration inputs from a text: for an encoder (a `sentence_embedding` output) each of the
/// first `lines` non-empty lines is one sequence; for a decoder the first `tokens` tokens of
/// the whole text are one sequence. An empty text is an error.
pub fn calibration_inputs(
    module: &Module,
    tok: &Tokenizer,
    text: &str,
    lines: usize,
    tokens: usize,
) -> Result<Vec<Vec<Tensor>>, Error> {
    if text.trim().is_empty() {
        return Err(Error::Inputs("the calibration text is empty".into()));
    }
    let seqs: Vec<Vec<i64>> = if is_encoder(module) {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .take(lines)
            .map(|l| tok.encode(l).map_err(crate::ModelError::from))
            .collect::<Result<_, _>>()?
    } else {
        let mut ids = tok.encode(text).map_err(crate::ModelError::from)?;
        ids.truncate(tokens);
        vec![ids]
    };
    seqs.iter()
        .filter(|ids| !ids.is_empty())
        .map(|ids| sequence_inputs(module, ids))
        .collect()
}

/// Whether the model is an encoder with a `sentence_embedding` output.
pub fn is_encoder(module: &Module) -> bool {
    module
        .entry()
        .is_some_and(|g| g.outputs.iter().any(|o| o.name == "sentence_embedding"))
}

/// The sentence embedding of `text`.
pub fn embed(
    module: &Module,
    tok: &Tokenizer,
    text: &str,
    exec: &dyn Executor,
) -> Result<Vec<f64>, Error> {
    let ids = tok.encode(text).map_err(crate::ModelError::from)?;
    let outs = exec.run(module, &entry(module)?, &sequence_inputs(module, &ids)?)?;
    Ok(output(module, &outs, "sentence_embedding")?.data().to_vec())
}

/// Cosine similarity.
pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        return if na == nb { 1.0 } else { 0.0 };
    }
    dot / (na * nb)
}

/// Index of the largest logit (the first one on ties).
fn argmax(row: &[f64]) -> usize {
    row.iter()
        .enumerate()
        .fold((0usize, f64::NEG_INFINITY), |b, (i, &x)| {
            if x > b.1 {
                (i, x)
            } else {
                b
            }
        })
        .0
}

/// The name of the KV-cache function [`with_kv_cache`] derives.
pub const DECODE_FUNCTION: &str = "decode";

/// `module` with a KV-cache decode function (the `kv-cache` pass over the entry function),
/// unless it has one already. Errors say why a model cannot get one (not a causal decoder…).
pub fn with_kv_cache(module: &Module) -> Result<Module, Error> {
    if module.functions.contains_key(DECODE_FUNCTION) {
        return Ok(module.clone());
    }
    let mut m = module.clone();
    let entry = entry(module)?;
    fuselage_passes::kv_cache::derive(&mut m, &entry, DECODE_FUNCTION, "P")
        .map_err(|e| Error::Inputs(format!("no KV cache for this model: {e}")))?;
    Ok(m)
}

/// How a session runs a module's KV-cache function ([`DECODE_FUNCTION`]): the token-id
/// parameter, the `(present, past)` output/state pairs, and the empty cache (`P = 0`) a new
/// sequence starts from (batch 1).
#[derive(Clone, Debug)]
pub struct KvCachePlan {
    /// The token-id parameter of the decode function.
    pub ids_input: String,
    /// `(output, state)`: each `present_*` output replaces its `past_*` state.
    pub pairs: Vec<(String, String)>,
    /// The empty cache: every `past_*` parameter at `B = 1, P = 0`.
    pub empty: Vec<(String, Tensor)>,
}

impl KvCachePlan {
    /// The plan of `module`'s decode function; errors when it has none or takes parameters
    /// other than token ids and the cache.
    pub fn of(module: &Module) -> Result<KvCachePlan, Error> {
        let decode = module.functions.get(DECODE_FUNCTION).ok_or_else(|| {
            Error::Inputs(format!(
                "the module has no `{DECODE_FUNCTION}` function (add it with the kv-cache pass)"
            ))
        })?;
        let mut ids_input = None;
        let mut empty = vec![];
        let sizes: std::collections::HashMap<String, u64> =
            [("B".to_string(), 1u64), ("P".to_string(), 0u64)].into();
        for (name, ty) in decode.input_names().into_iter().zip(decode.input_types()) {
            if name.starts_with("past_") {
                let shape = ty
                    .resolve(&sizes)
                    .map_err(|e| Error::Inputs(format!("cache parameter `{name}` ({ty}): {e}")))?;
                empty.push((name, Tensor::zeros(ty.dtype, shape)));
            } else if ids_input.is_none() {
                ids_input = Some(name);
            } else {
                return Err(Error::Inputs(format!(
                    "`{DECODE_FUNCTION}` takes `{name}` besides token ids and the cache"
                )));
            }
        }
        let ids_input = ids_input
            .ok_or_else(|| Error::Inputs(format!("`{DECODE_FUNCTION}` takes no token ids")))?;
        let pairs = decode
            .outputs
            .iter()
            .filter_map(|o| {
                o.name
                    .strip_prefix("present_")
                    .map(|rest| (o.name.clone(), format!("past_{rest}")))
            })
            .collect();
        Ok(KvCachePlan {
            ids_input,
            pairs,
            empty,
        })
    }

    /// The pairs as [`Session::run`](fuselage_ir::Session::run) takes them.
    pub fn keep(&self) -> Vec<(&str, &str)> {
        self.pairs
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect()
    }

    /// Set the session's cache to the empty one (a new sequence).
    pub fn reset(&self, session: &mut dyn fuselage_ir::Session) -> Result<(), Error> {
        for (name, t) in &self.empty {
            session.set_state(name, t)?;
        }
        Ok(())
    }
}

/// One generated token, as reported while generating.
#[derive(Clone, Debug, PartialEq)]
pub struct GeneratedToken {
    /// 1-based index among the generated tokens.
    pub step: usize,
    /// Token id.
    pub id: i64,
    /// The text this token adds to the continuation (may be empty while a multi-byte
    /// character is incomplete).
    pub text: String,
    /// Seconds this step took (the prefill for the first token).
    pub seconds: f64,
}

/// A finished greedy generation with its timings.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    /// The continuation's text.
    pub text: String,
    /// Prompt token ids.
    pub prompt: Vec<i64>,
    /// Generated token ids.
    pub tokens: Vec<i64>,
    /// Seconds of the prefill (the prompt's run, which yields the first token).
    pub prefill_seconds: f64,
    /// Seconds of each later step (one token each).
    pub decode_seconds: Vec<f64>,
    /// Whether a KV cache was used.
    pub kv_cache: bool,
}

impl Generation {
    /// Decode steps per second (tokens after the first over their time); 0 without any.
    pub fn decode_tokens_per_s(&self) -> f64 {
        let t: f64 = self.decode_seconds.iter().sum();
        if self.decode_seconds.is_empty() || t <= 0.0 {
            0.0
        } else {
            self.decode_seconds.len() as f64 / t
        }
    }
}

/// Greedy generation of up to `max_tokens` tokens after `prompt`. With `kv_cache`, the prompt
/// runs once through the model's KV-cache function ([`with_kv_cache`]; `module` must have it)
/// in a session of `exec` that keeps the cache resident, and each later token runs alone;
/// without, the whole sequence is re-run for every token. `on_token` sees each token as it
/// comes.
pub fn generate_with(
    module: &Module,
    tok: &Tokenizer,
    prompt: &str,
    max_tokens: usize,
    exec: &dyn Executor,
    kv_cache: bool,
    on_token: &mut dyn FnMut(&GeneratedToken),
) -> Result<Generation, Error> {
    let prompt_ids = tok.encode(prompt).map_err(crate::ModelError::from)?;
    if prompt_ids.is_empty() {
        return Err(Error::Inputs("the prompt encodes to no tokens".into()));
    }
    let mut g = Generation {
        text: String::new(),
        prompt: prompt_ids.clone(),
        tokens: vec![],
        prefill_seconds: 0.0,
        decode_seconds: vec![],
        kv_cache,
    };
    let mut emit = |g: &mut Generation, id: i64, seconds: f64| -> Result<(), Error> {
        g.tokens.push(id);
        if g.tokens.len() == 1 {
            g.prefill_seconds = seconds;
        } else {
            g.decode_seconds.push(seconds);
        }
        let text = tok.decode(&g.tokens).map_err(crate::ModelError::from)?;
        // A piece that ends in an incomplete character decodes to U+FFFD: wait for the rest.
        let piece = if text.ends_with('\u{FFFD}') {
            String::new()
        } else {
            let p = text.get(g.text.len()..).unwrap_or("").to_string();
            g.text = text;
            p
        };
        on_token(&GeneratedToken {
            step: g.tokens.len(),
            id,
            text: piece,
            seconds,
        });
        Ok(())
    };
    if max_tokens == 0 {
        return Ok(g);
    }
    if !kv_cache {
        let mut ids = prompt_ids;
        for _ in 0..max_tokens {
            let t0 = std::time::Instant::now();
            let outs = exec.run(module, &entry(module)?, &sequence_inputs(module, &ids)?)?;
            let logits = output(module, &outs, "logits")?;
            let v = *logits.shape().last().unwrap_or(&0);
            let next = argmax(&logits.data()[logits.numel() - v..]) as i64;
            ids.push(next);
            emit(&mut g, next, t0.elapsed().as_secs_f64())?;
        }
        g.text = tok.decode(&g.tokens).map_err(crate::ModelError::from)?;
        return Ok(g);
    }
    let plan = KvCachePlan::of(module)?;
    let mut session = exec.session(module);
    plan.reset(session.as_mut())?;
    let keep = plan.keep();
    let ids_name = plan.ids_input.clone();
    let mut feed = prompt_ids;
    for _ in 0..max_tokens {
        let t0 = std::time::Instant::now();
        let n = feed.len();
        let ids = Tensor::new(
            DType::I64,
            vec![1, n],
            feed.iter().map(|&i| i as f64).collect(),
        )?;
        let outs = session.run(DECODE_FUNCTION, &[(ids_name.as_str(), ids)], &keep)?;
        let logits = outs
            .iter()
            .find(|(n, _)| n == "logits")
            .map(|(_, t)| t)
            .ok_or_else(|| Error::Inputs(format!("`{DECODE_FUNCTION}` has no `logits` output")))?;
        let v = *logits.shape().last().unwrap_or(&0);
        let next = argmax(&logits.data()[logits.numel() - v..]) as i64;
        emit(&mut g, next, t0.elapsed().as_secs_f64())?;
        feed = vec![next];
    }
    g.text = tok.decode(&g.tokens).map_err(crate::ModelError::from)?;
    Ok(g)
}

/// Greedy continuation of `prompt` by up to `max_tokens` tokens, re-running the whole
/// sequence each step (see [`generate_with`] for the KV-cache path). Returns the generated
/// text only.
pub fn generate(
    module: &Module,
    tok: &Tokenizer,
    prompt: &str,
    max_tokens: usize,
    exec: &dyn Executor,
    on_token: &mut dyn FnMut(usize),
) -> Result<String, Error> {
    let g = generate_with(module, tok, prompt, max_tokens, exec, false, &mut |t| {
        on_token(t.step)
    })?;
    Ok(g.text)
}

/// Perplexity of the first `max_tokens` tokens of `text` (all when `None`): one causal run over
/// the sequence, mean negative log-likelihood of each next token, `exp` of it. Returns
/// (perplexity, tokens scored).
pub fn perplexity(
    module: &Module,
    tok: &Tokenizer,
    text: &str,
    max_tokens: Option<usize>,
    exec: &dyn Executor,
) -> Result<(f64, usize), Error> {
    let mut ids = tok.encode(text).map_err(crate::ModelError::from)?;
    if let Some(n) = max_tokens {
        ids.truncate(n);
    }
    if ids.len() < 2 {
        return Err(Error::Inputs("perplexity needs at least two tokens".into()));
    }
    let outs = exec.run(module, &entry(module)?, &sequence_inputs(module, &ids)?)?;
    let logits = output(module, &outs, "logits")?;
    let v = *logits.shape().last().unwrap_or(&0);
    let d = logits.data();
    let mut nll = 0.0;
    for i in 0..ids.len() - 1 {
        let row = &d[i * v..(i + 1) * v];
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + row.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
        nll += lse - row[ids[i + 1] as usize];
    }
    let n = ids.len() - 1;
    Ok(((nll / n as f64).exp(), n))
}
