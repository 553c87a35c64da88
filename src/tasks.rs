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

/// Greedy continuation of `prompt` by up to `max_tokens` tokens (the whole sequence is re-run
/// each step; there is no KV cache yet). Returns the generated text only.
pub fn generate(
    module: &Module,
    tok: &Tokenizer,
    prompt: &str,
    max_tokens: usize,
    exec: &dyn Executor,
    on_token: &mut dyn FnMut(usize),
) -> Result<String, Error> {
    let mut ids = tok.encode(prompt).map_err(crate::ModelError::from)?;
    if ids.is_empty() {
        return Err(Error::Inputs("the prompt encodes to no tokens".into()));
    }
    let start = ids.len();
    for k in 0..max_tokens {
        let outs = exec.run(module, &entry(module)?, &sequence_inputs(module, &ids)?)?;
        let logits = output(module, &outs, "logits")?;
        let v = *logits.shape().last().unwrap_or(&0);
        let last = &logits.data()[logits.numel() - v..];
        let next = last
            .iter()
            .enumerate()
            .fold((0usize, f64::NEG_INFINITY), |b, (i, &x)| {
                if x > b.1 {
                    (i, x)
                } else {
                    b
                }
            })
            .0;
        ids.push(next as i64);
        on_token(k + 1);
    }
    tok.decode(&ids[start..])
        .map_err(|e| crate::ModelError::from(e).into())
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
