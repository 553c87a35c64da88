//! The BPE tokenizer a GGUF file carries (`tokenizer.ggml.*`).

use super::file::GgufFile;
use crate::error::FrontendError;

/// Build the tokenizer a GGUF file carries (`tokenizer.ggml.*`) as a [`tokenizers::Tokenizer`].
///
/// Supported: `tokenizer.ggml.model = "gpt2"` (byte-level BPE from `tokens` + `merges`), with
/// pre-tokenizers `default`/`gpt2` (the GPT-2 regex) and `smollm` (every digit split off on its
/// own, then the GPT-2 regex). Tokens of type 3 (control) and 4 (user-defined) become special
/// added tokens, matched whole in the input. No BOS/EOS is added: callers prepend
/// `tokenizer.ggml.bos_token_id` themselves when `tokenizer.ggml.add_bos_token` is true.
pub fn tokenizer(g: &GgufFile) -> Result<tokenizers::Tokenizer, FrontendError> {
    use tokenizers::models::bpe::BPE;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::pre_tokenizers::digits::Digits;
    use tokenizers::pre_tokenizers::sequence::Sequence;
    use tokenizers::{AddedToken, PreTokenizerWrapper};

    let model = g.get_str("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(g.err(format!(
            "tokenizer.ggml.model `{model}` is not supported (only `gpt2` byte-level BPE)"
        )));
    }
    let tokens = g.get_array("tokenizer.ggml.tokens")?;
    let merges = g.get_array("tokenizer.ggml.merges")?;
    let types = match g.get("tokenizer.ggml.token_type") {
        Some(_) => Some(g.get_array("tokenizer.ggml.token_type")?),
        None => None,
    };
    if types.is_some_and(|t| t.len() != tokens.len()) {
        return Err(g.err(format!(
            "tokenizer.ggml.token_type has {} entries for {} tokens",
            types.map_or(0, |t| t.len()),
            tokens.len()
        )));
    }
    let mut vocab = tokenizers::models::bpe::Vocab::default();
    let mut special = vec![];
    for (i, t) in tokens.iter().enumerate() {
        let s = t
            .as_str()
            .ok_or_else(|| g.err(format!("tokenizer.ggml.tokens[{i}] is not a string")))?;
        if vocab.insert(s.to_string(), i as u32).is_some() {
            return Err(g.err(format!("tokenizer.ggml.tokens[{i}] `{s}` is a duplicate")));
        }
        if let Some(ty) = types.and_then(|t| t[i].as_u64()) {
            if ty == 3 || ty == 4 {
                special.push(AddedToken::from(s.to_string(), true));
            }
        }
    }
    let mut pairs = Vec::with_capacity(merges.len());
    for (i, m) in merges.iter().enumerate() {
        let s = m
            .as_str()
            .ok_or_else(|| g.err(format!("tokenizer.ggml.merges[{i}] is not a string")))?;
        let (a, b) = s.split_once(' ').ok_or_else(|| {
            g.err(format!(
                "tokenizer.ggml.merges[{i}] `{s}` is not two tokens separated by a space"
            ))
        })?;
        pairs.push((a.to_string(), b.to_string()));
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, pairs)
        .build()
        .map_err(|e| g.err(format!("building the BPE tokenizer: {e}")))?;
    let pre = g
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.as_str())
        .unwrap_or("default");
    let byte_level = ByteLevel::new(false, true, true);
    let pre_tok: PreTokenizerWrapper = match pre {
        "default" | "gpt2" => byte_level.into(),
        "smollm" => Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(),
        p => {
            return Err(g.err(format!(
                "tokenizer.ggml.pre `{p}` is not supported (default, gpt2, smollm are)"
            )))
        }
    };
    let mut tok = tokenizers::Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(pre_tok));
    tok.with_decoder(Some(ByteLevel::default()));
    tok.add_special_tokens(&special);
    Ok(tok)
}
