//! Built-in models with seeded weights, so every command runs on a fresh machine without
//! downloads. They are written the way framework exports are (LayerNorm, GELU and affine maps in
//! primitives), which is what the canonicalization pipeline is for.

use crate::builder::{BuildResult, ModelBuilder};
use crate::error::FrontendError;
use fuselage_ir::ops::reduce::ReduceKind;
use fuselage_ir::{DType, Dim, Init, Module};

/// Shape of a BERT-family encoder.
#[derive(Clone, Debug, PartialEq)]
pub struct BertConfig {
    /// Vocabulary size.
    pub vocab: usize,
    /// Hidden size.
    pub hidden: usize,
    /// Attention heads.
    pub heads: usize,
    /// Feed-forward size.
    pub ffn: usize,
    /// Layers.
    pub layers: usize,
    /// Maximum positions.
    pub max_positions: usize,
    /// LayerNorm epsilon.
    pub eps: f64,
}

impl BertConfig {
    /// The shape of google/bert_uncased_L-2_H-128_A-2 ("bert-tiny").
    pub fn tiny() -> Self {
        BertConfig {
            vocab: 30522,
            hidden: 128,
            heads: 2,
            ffn: 512,
            layers: 2,
            max_positions: 512,
            eps: 1e-12,
        }
    }
}

/// Shape of a Llama-family decoder.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    /// Vocabulary size.
    pub vocab: usize,
    /// Hidden size.
    pub hidden: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (GQA when fewer than `heads`).
    pub kv_heads: usize,
    /// Feed-forward size.
    pub ffn: usize,
    /// Layers.
    pub layers: usize,
    /// Rope base.
    pub rope_theta: f64,
    /// RMSNorm epsilon.
    pub eps: f64,
}

impl LlamaConfig {
    /// A small Llama: 2 layers, hidden 64, 4 query heads sharing 2 KV heads, tied embeddings.
    pub fn tiny() -> Self {
        LlamaConfig {
            vocab: 256,
            hidden: 64,
            heads: 4,
            kv_heads: 2,
            ffn: 176,
            layers: 2,
            rope_theta: 10000.0,
            eps: 1e-5,
        }
    }
}

/// Names and one-line descriptions of the built-in models.
pub const BUILTINS: &[(&str, &str)] = &[
    (
        "bert-tiny",
        "BERT encoder, 2 layers, hidden 128, 2 heads, vocab 30522 (bert-tiny shape), written in primitives",
    ),
    (
        "llama-tiny",
        "Llama decoder, 2 layers, hidden 64, 4 heads / 2 KV heads (GQA), rope, SwiGLU, tied embeddings",
    ),
    ("mlp", "two-layer GELU MLP on f32[B,64], written in primitives"),
];

/// Build a built-in model by name.
pub fn builtin(name: &str) -> Result<Module, FrontendError> {
    match name {
        "bert-tiny" => bert(&BertConfig::tiny(), 0xB127, true),
        "llama-tiny" => llama(&LlamaConfig::tiny(), 0x11A3A),
        "mlp" => mlp(),
        _ => Err(FrontendError::UnknownBuiltin {
            name: name.to_string(),
            available: BUILTINS
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

fn mlp() -> BuildResult<Module> {
    let mut b = ModelBuilder::new(0x3A9);
    let x = b.input("x", DType::F32, &["B".into(), Dim::from(64u64)]);
    let y = b.mlp("mlp", x, 64, 256, true)?;
    b.output("y", y);
    b.finish()
}

/// A BERT encoder with inputs `input_ids: i64[B,S]`, `attention_mask: i64[B,S]` and outputs
/// `last_hidden_state: f32[B,S,H]` and the mask-weighted mean `sentence_embedding: f32[B,H]`.
pub fn bert(cfg: &BertConfig, seed: u64, primitives: bool) -> BuildResult<Module> {
    let mut b = ModelBuilder::new(seed);
    let (bd, sd): (Dim, Dim) = ("B".into(), "S".into());
    let ids = b.input("input_ids", DType::I64, &[bd.clone(), sd.clone()]);
    let mask = b.input("attention_mask", DType::I64, &[bd.clone(), sd.clone()]);
    let h = cfg.hidden;
    let std = Init::Normal {
        mean: 0.0,
        std: 0.02,
    };
    b.push_scope("embeddings");
    let word = b.param("word_embeddings", DType::F32, &[cfg.vocab, h], std.clone())?;
    let pos_table = b.param(
        "position_embeddings",
        DType::F32,
        &[cfg.max_positions, h],
        std.clone(),
    )?;
    let types = b.param("token_type_embeddings", DType::F32, &[2, h], std)?;
    b.pop_scope();
    let x = b.gather(word, ids, 0)?;
    let pos = b.iota(&["S".into()], 0, DType::I64)?;
    let p = b.gather(pos_table, pos, 0)?;
    let t = b.slice(types, 0, 0, 1)?;
    let x = b.add(x, p)?;
    let x = b.add(x, t)?;
    let mut x = if primitives {
        b.layer_norm_primitives("embeddings.norm", x, h, cfg.eps)?
    } else {
        b.layer_norm("embeddings.norm", x, h, cfg.eps)?
    };
    // Additive attention bias from the padding mask: (1 - mask) · -10000, shaped [B,1,1,S].
    let m = b.cast(mask, DType::F32)?;
    let one = b.scalar("one", DType::F32, 1.0)?;
    let big = b.scalar("mask_value", DType::F32, -10000.0)?;
    let inv = b.sub(one, m)?;
    let bias = b.mul(inv, big)?;
    let bias = b.reshape(
        bias,
        &[bd.clone(), Dim::from(1u64), Dim::from(1u64), sd.clone()],
    )?;
    for l in 0..cfg.layers {
        x = b.bert_layer(
            &format!("encoder.layer.{l}"),
            x,
            cfg,
            Some(bias),
            primitives,
        )?;
    }
    b.output("last_hidden_state", x);
    // Mean pooling over unmasked tokens.
    let m3 = b.reshape(m, &[bd, sd, Dim::from(1u64)])?;
    let xm = b.mul(x, m3)?;
    let s = b.reduce(xm, ReduceKind::Sum, &[1], false)?;
    let c = b.reduce(m3, ReduceKind::Sum, &[1], false)?;
    let tiny = b.scalar("count_floor", DType::F32, 1e-9)?;
    let c = b.maximum(c, tiny)?;
    let e = b.div(s, c)?;
    b.output("sentence_embedding", e);
    b.finish()
}

/// A Llama decoder with input `input_ids: i64[B,S]` and output `logits: f32[B,S,vocab]`.
pub fn llama(cfg: &LlamaConfig, seed: u64) -> BuildResult<Module> {
    let mut b = ModelBuilder::new(seed);
    let ids = b.input("input_ids", DType::I64, &["B".into(), "S".into()]);
    let embed = b.param(
        "embed_tokens",
        DType::F32,
        &[cfg.vocab, cfg.hidden],
        Init::Normal {
            mean: 0.0,
            std: 0.02,
        },
    )?;
    let mut x = b.gather(embed, ids, 0)?;
    let pos = b.iota(&["S".into()], 0, DType::I64)?;
    for l in 0..cfg.layers {
        x = b.llama_block(&format!("layers.{l}"), x, cfg, pos)?;
    }
    let x = b.rms_norm_primitives("norm", x, cfg.hidden, cfg.eps)?;
    // Tied embeddings: logits = x · embedᵀ.
    let head = b.transpose(embed, &[1, 0])?;
    let logits = b.matmul(x, head)?;
    b.output("logits", logits);
    b.finish()
}
