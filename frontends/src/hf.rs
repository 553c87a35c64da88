//! Importing Hugging Face model folders (`config.json` + `model.safetensors`).
//!
//! [`load_dir`] reads the config, maps the weights zero-copy (every weight is a constant with
//! file storage over `model.safetensors`, see [`crate::safetensors_io`]) and builds the same IR
//! the [builder](crate::builder) produces, with one fused op per layer norm, linear map,
//! attention and GELU. Two families are understood, chosen by `architectures` / `model_type`:
//!
//! - **BERT** (`BertModel` and friends; tensor names with or without a `bert.` prefix):
//!   inputs `input_ids: i64[B,S]` and `attention_mask: i64[B,S]`; word + position + token-type-0
//!   embeddings, LayerNorm, post-LN encoder layers with exact erf GELU (`hidden_act: "gelu"`;
//!   `gelu_new`/`gelu_pytorch_tanh` give the tanh form), the padding mask as an additive bias
//!   `(1 - mask) · f32::MIN` like transformers. Outputs `last_hidden_state: f32[B,S,H]` and
//!   `sentence_embedding: f32[B,H]`: the sentence-transformers pooling of the folder
//!   (`1_Pooling/config.json`: mean over the mask, the default, or the CLS token), followed by
//!   L2 normalization `e / max(‖e‖, 1e-12)` when `modules.json` lists a `Normalize` module —
//!   so for all-MiniLM-L6-v2 the output is exactly what `SentenceTransformer.encode` returns.
//! - **Llama** (`LlamaForCausalLM`, `model_type: "llama"`): input `input_ids: i64[B,S]`, output
//!   `logits: f32[B,S,vocab]`; RMSNorm, rotate-half rope with `rope_theta` at positions `0..S`,
//!   causal GQA attention (`num_key_value_heads`), SwiGLU with `silu`, and the LM head from
//!   `lm_head.weight`, or the token embeddings when it is absent or `tie_word_embeddings` is set.
//!
//! **Weight layout.** HF linear weights are `[out, in]`, and the IR's `linear` takes `w[in, out]`.
//! The importer keeps the weight constant as stored (file storage, zero-copy) and puts a
//! `transpose {perm: [1, 0]}` node between it and the `linear`. This keeps the module exactly
//! what the file says (a printed `.fir` refers to the file's bytes), the constant shareable
//! (tied embeddings are one constant used by the gather and, transposed, by the head), and
//! leaves the choice of materializing the transposed weight to passes and lowering:
//! `fold-constants` would turn it into a dense copy, while a backend may fuse it into a
//! transposed-B matmul.
//!
//! **Checks.** Config fields are required to agree with the weights: every tensor the
//! architecture needs must be present with exactly the shape the config implies, otherwise an
//! error names the file, the tensor, the expected shape (and the config fields it comes from)
//! and the shape found. Unsupported settings (`hidden_act`, `rope_scaling`, pooling modes) are
//! errors, never ignored.

use crate::builder::{Mask, ModelBuilder};
use crate::error::FrontendError;
use crate::safetensors_io::SafetensorsFile;
use fuselage_ir::ops::gelu::GeluApproximate;
use fuselage_ir::ops::reduce::ReduceKind;
use fuselage_ir::ops::rope::RopeStyle;
use fuselage_ir::{DType, Dim, Module, ValueId};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The architectures [`load_dir`] understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// BERT-style encoders.
    Bert,
    /// Llama-style decoders.
    Llama,
}

/// Import the Hugging Face model folder `dir` (see the [module docs](self)).
pub fn load_dir(dir: &Path) -> Result<Module, FrontendError> {
    let cfg_path = dir.join("config.json");
    let cfg = read_json(&cfg_path)?;
    let family = family(&cfg, &cfg_path)?;
    let st_path = dir.join("model.safetensors");
    if !st_path.is_file() {
        return Err(FrontendError::file(
            &st_path,
            "missing: the folder has no model.safetensors (sharded checkpoints are not supported)",
        ));
    }
    let st = SafetensorsFile::open(&st_path)?;
    let c = Cfg {
        v: &cfg,
        path: &cfg_path,
    };
    match family {
        Family::Bert => bert(dir, &c, &st),
        Family::Llama => llama(&c, &st),
    }
}

/// Which family `config.json` describes.
pub fn family(cfg: &Value, path: &Path) -> Result<Family, FrontendError> {
    let archs: Vec<&str> = cfg["architectures"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mt = cfg["model_type"].as_str().unwrap_or("");
    if mt == "bert" || archs.iter().any(|a| a.starts_with("Bert")) {
        Ok(Family::Bert)
    } else if mt == "llama" || archs.iter().any(|a| a.starts_with("Llama")) {
        Ok(Family::Llama)
    } else {
        Err(FrontendError::file(
            path,
            format!(
                "unsupported architecture (model_type `{mt}`, architectures {archs:?}); \
                 supported: BERT (BertModel) and Llama (LlamaForCausalLM)"
            ),
        ))
    }
}

fn read_json(path: &Path) -> Result<Value, FrontendError> {
    let s = std::fs::read_to_string(path)
        .map_err(|e| FrontendError::file(path, format!("cannot read: {e}")))?;
    serde_json::from_str(&s).map_err(|e| FrontendError::file(path, format!("invalid JSON: {e}")))
}

/// Typed access to config fields with errors naming the file and field.
struct Cfg<'a> {
    v: &'a Value,
    path: &'a Path,
}

impl Cfg<'_> {
    fn err(&self, m: String) -> FrontendError {
        FrontendError::file(self.path, m)
    }

    fn usize(&self, key: &str) -> Result<usize, FrontendError> {
        match &self.v[key] {
            Value::Null => Err(self.err(format!("missing field `{key}`"))),
            v => v
                .as_u64()
                .filter(|&n| n > 0 && n <= u32::MAX as u64)
                .map(|n| n as usize)
                .ok_or_else(|| self.err(format!("`{key}` must be a positive integer, found {v}"))),
        }
    }

    fn usize_or(&self, key: &str, default: usize) -> Result<usize, FrontendError> {
        if self.v[key].is_null() {
            Ok(default)
        } else {
            self.usize(key)
        }
    }

    fn f64_or(&self, key: &str, default: f64) -> Result<f64, FrontendError> {
        match &self.v[key] {
            Value::Null => Ok(default),
            v => v
                .as_f64()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| {
                    self.err(format!("`{key}` must be a non-negative number, found {v}"))
                }),
        }
    }

    fn str_or<'b>(&'b self, key: &str, default: &'b str) -> Result<&'b str, FrontendError> {
        match &self.v[key] {
            Value::Null => Ok(default),
            v => v
                .as_str()
                .ok_or_else(|| self.err(format!("`{key}` must be a string, found {v}"))),
        }
    }
}

/// Adds weights from the file as constants, checking shapes against the config.
struct Weights<'a> {
    st: &'a SafetensorsFile,
    prefix: String,
}

impl Weights<'_> {
    fn has(&self, name: &str) -> bool {
        self.st.get(&format!("{}{name}", self.prefix)).is_some()
    }

    /// The tensor `prefix + name` as a constant node; its shape must be `shape` (`why` says
    /// which config fields imply it).
    fn load(
        &self,
        b: &mut ModelBuilder,
        name: &str,
        shape: &[usize],
        why: &str,
    ) -> Result<ValueId, FrontendError> {
        let full = format!("{}{name}", self.prefix);
        let e = self.st.get(&full).ok_or_else(|| {
            FrontendError::file(
                self.st.path(),
                format!("missing tensor `{full}` (expected shape {shape:?} from {why})"),
            )
        })?;
        if e.shape != shape {
            return Err(FrontendError::file(
                self.st.path(),
                format!(
                    "tensor `{full}` has shape {:?}, but the config ({why}) implies {shape:?}",
                    e.shape
                ),
            ));
        }
        if !e.dtype.is_float() {
            return Err(FrontendError::file(
                self.st.path(),
                format!("tensor `{full}` has dtype {}, expected a float", e.dtype),
            ));
        }
        let c = self.st.constant(&full)?;
        let v = b.add_constant(&full, c)?;
        // Weights are computed in f32 (the IR needs equal dtypes in binary ops).
        if e.dtype != DType::F32 {
            b.cast(v, DType::F32)
        } else {
            Ok(v)
        }
    }

    /// A HF linear layer `name.weight [out, in]` (+ `name.bias [out]` when `bias`) applied to x.
    #[allow(clippy::too_many_arguments)]
    fn linear(
        &self,
        b: &mut ModelBuilder,
        name: &str,
        x: ValueId,
        d_in: usize,
        d_out: usize,
        bias: bool,
        why: &str,
    ) -> Result<ValueId, FrontendError> {
        let w = self.load(b, &format!("{name}.weight"), &[d_out, d_in], why)?;
        let wt = b.transpose(w, &[1, 0])?;
        let bv = if bias {
            Some(self.load(b, &format!("{name}.bias"), &[d_out], why)?)
        } else {
            None
        };
        b.linear_with(name, x, wt, bv)
    }
}

fn gelu_kind(c: &Cfg, act: &str) -> Result<GeluApproximate, FrontendError> {
    match act {
        "gelu" => Ok(GeluApproximate::None),
        "gelu_new" | "gelu_pytorch_tanh" => Ok(GeluApproximate::Tanh),
        other => Err(c.err(format!(
            "hidden_act `{other}` is not supported for BERT (expected gelu)"
        ))),
    }
}

/// Split `[B,S,h·d]` into heads `[B,h,S,d]`.
fn heads(b: &mut ModelBuilder, x: ValueId, h: usize, d: usize) -> Result<ValueId, FrontendError> {
    let x = b.reshape(x, &["B".into(), "S".into(), Dim::from(h), Dim::from(d)])?;
    b.transpose(x, &[0, 2, 1, 3])
}

/// Merge heads `[B,h,S,d]` into `[B,S,h·d]`.
fn merge(b: &mut ModelBuilder, x: ValueId, hd: usize) -> Result<ValueId, FrontendError> {
    let x = b.transpose(x, &[0, 2, 1, 3])?;
    b.reshape(x, &["B".into(), "S".into(), Dim::from(hd)])
}

fn bert(dir: &Path, c: &Cfg, st: &SafetensorsFile) -> Result<Module, FrontendError> {
    let h = c.usize("hidden_size")?;
    let nh = c.usize("num_attention_heads")?;
    let layers = c.usize("num_hidden_layers")?;
    let ffn = c.usize("intermediate_size")?;
    let vocab = c.usize("vocab_size")?;
    let maxp = c.usize("max_position_embeddings")?;
    let types = c.usize_or("type_vocab_size", 2)?;
    let eps = c.f64_or("layer_norm_eps", 1e-12)?;
    let act = gelu_kind(c, c.str_or("hidden_act", "gelu")?)?;
    let pe = c.str_or("position_embedding_type", "absolute")?;
    if pe != "absolute" {
        return Err(c.err(format!(
            "position_embedding_type `{pe}` is not supported (expected absolute)"
        )));
    }
    if !h.is_multiple_of(nh) {
        return Err(c.err(format!(
            "hidden_size {h} is not a multiple of num_attention_heads {nh}"
        )));
    }
    let dh = h / nh;
    let prefix = if st.get("bert.embeddings.word_embeddings.weight").is_some() {
        "bert."
    } else {
        ""
    };
    let w = Weights {
        st,
        prefix: prefix.into(),
    };
    let pooling = pooling(dir)?;

    let mut b = ModelBuilder::new(0);
    let (bd, sd): (Dim, Dim) = ("B".into(), "S".into());
    let ids = b.input("input_ids", DType::I64, &[bd.clone(), sd.clone()]);
    let mask = b.input("attention_mask", DType::I64, &[bd.clone(), sd.clone()]);
    let wh = "vocab_size, hidden_size";
    let word = w.load(&mut b, "embeddings.word_embeddings.weight", &[vocab, h], wh)?;
    let pos_t = w.load(
        &mut b,
        "embeddings.position_embeddings.weight",
        &[maxp, h],
        "max_position_embeddings, hidden_size",
    )?;
    let type_t = w.load(
        &mut b,
        "embeddings.token_type_embeddings.weight",
        &[types, h],
        "type_vocab_size, hidden_size",
    )?;
    let x = b.gather(word, ids, 0)?;
    let pos = b.iota(&["S".into()], 0, DType::I64)?;
    let p = b.gather(pos_t, pos, 0)?;
    // token_type_ids are all 0: row 0 of the table.
    let t = b.slice(type_t, 0, 0, 1)?;
    let x = b.add(x, p)?;
    let x = b.add(x, t)?;
    let g = w.load(&mut b, "embeddings.LayerNorm.weight", &[h], "hidden_size")?;
    let be = w.load(&mut b, "embeddings.LayerNorm.bias", &[h], "hidden_size")?;
    let mut x = b.layer_norm_with("embeddings.LayerNorm", x, g, Some(be), eps)?;

    // Additive attention bias (1 - mask) · f32::MIN, shaped [B,1,1,S].
    let m = b.cast(mask, DType::F32)?;
    let one = b.scalar("one", DType::F32, 1.0)?;
    let min = b.scalar("mask_min", DType::F32, f32::MIN as f64)?;
    let inv = b.sub(one, m)?;
    let bias = b.mul(inv, min)?;
    let bias = b.reshape(bias, &[bd.clone(), 1u64.into(), 1u64.into(), sd.clone()])?;

    for l in 0..layers {
        let p = format!("encoder.layer.{l}");
        let hh = "hidden_size";
        let q = w.linear(
            &mut b,
            &format!("{p}.attention.self.query"),
            x,
            h,
            h,
            true,
            hh,
        )?;
        let k = w.linear(
            &mut b,
            &format!("{p}.attention.self.key"),
            x,
            h,
            h,
            true,
            hh,
        )?;
        let v = w.linear(
            &mut b,
            &format!("{p}.attention.self.value"),
            x,
            h,
            h,
            true,
            hh,
        )?;
        let (q, k, v) = (
            heads(&mut b, q, nh, dh)?,
            heads(&mut b, k, nh, dh)?,
            heads(&mut b, v, nh, dh)?,
        );
        let a = b.attention_op([q, k, v], Mask::None, &[bias])?;
        let a = merge(&mut b, a, h)?;
        let o = w.linear(
            &mut b,
            &format!("{p}.attention.output.dense"),
            a,
            h,
            h,
            true,
            hh,
        )?;
        let x1 = b.add(x, o)?;
        let n = format!("{p}.attention.output.LayerNorm");
        let g = w.load(&mut b, &format!("{n}.weight"), &[h], hh)?;
        let be = w.load(&mut b, &format!("{n}.bias"), &[h], hh)?;
        let x1 = b.layer_norm_with(&n, x1, g, Some(be), eps)?;
        let fw = "hidden_size, intermediate_size";
        let i = w.linear(
            &mut b,
            &format!("{p}.intermediate.dense"),
            x1,
            h,
            ffn,
            true,
            fw,
        )?;
        let i = b.gelu_with(i, act)?;
        let o = w.linear(&mut b, &format!("{p}.output.dense"), i, ffn, h, true, fw)?;
        let x2 = b.add(x1, o)?;
        let n = format!("{p}.output.LayerNorm");
        let g = w.load(&mut b, &format!("{n}.weight"), &[h], hh)?;
        let be = w.load(&mut b, &format!("{n}.bias"), &[h], hh)?;
        x = b.layer_norm_with(&n, x2, g, Some(be), eps)?;
    }
    b.output("last_hidden_state", x);

    let e = match pooling.mode {
        Pool::Mean => {
            // Sum over unmasked tokens / max(count, 1e-9), as sentence-transformers.
            let m3 = b.reshape(m, &[bd, sd, 1u64.into()])?;
            let xm = b.mul(x, m3)?;
            let s = b.reduce(xm, ReduceKind::Sum, &[1], false)?;
            let cnt = b.reduce(m3, ReduceKind::Sum, &[1], false)?;
            let floor = b.scalar("count_floor", DType::F32, 1e-9)?;
            let cnt = b.maximum(cnt, floor)?;
            b.div(s, cnt)?
        }
        Pool::Cls => {
            // The first token's hidden state: a gather of index 0 on the sequence axis (a
            // slice `[0:1]` would be typed `min(1,S)`, which needs the fact `S >= 1`).
            let first = b.scalar("cls_index", DType::I64, 0.0)?;
            b.gather(x, first, 1)?
        }
    };
    let e = if pooling.normalize {
        // e / max(‖e‖₂, 1e-12), as torch.nn.functional.normalize.
        let sq = b.mul(e, e)?;
        let ss = b.reduce(sq, ReduceKind::Sum, &[-1], true)?;
        let n = b.sqrt(ss)?;
        let floor = b.scalar("norm_floor", DType::F32, 1e-12)?;
        let n = b.maximum(n, floor)?;
        b.div(e, n)?
    } else {
        e
    };
    b.output("sentence_embedding", e);
    b.finish()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Pool {
    Mean,
    Cls,
}

struct Pooling {
    mode: Pool,
    normalize: bool,
}

/// The sentence-transformers pipeline of the folder: pooling mode from the Pooling module's
/// config (mean when there is none), normalization when `modules.json` lists `Normalize`.
fn pooling(dir: &Path) -> Result<Pooling, FrontendError> {
    let modules_path = dir.join("modules.json");
    let mut out = Pooling {
        mode: Pool::Mean,
        normalize: false,
    };
    if !modules_path.is_file() {
        return Ok(out);
    }
    let modules = read_json(&modules_path)?;
    let list = modules
        .as_array()
        .ok_or_else(|| FrontendError::file(&modules_path, "expected a JSON array of modules"))?;
    for m in list {
        let ty = m["type"].as_str().unwrap_or("");
        if ty.ends_with("Normalize") {
            out.normalize = true;
        } else if ty.ends_with("Pooling") {
            let p: PathBuf = dir
                .join(m["path"].as_str().unwrap_or(""))
                .join("config.json");
            if !p.is_file() {
                continue;
            }
            let pc = read_json(&p)?;
            let on = |k: &str| pc[k].as_bool().unwrap_or(false);
            out.mode = if on("pooling_mode_mean_tokens") {
                Pool::Mean
            } else if on("pooling_mode_cls_token") {
                Pool::Cls
            } else {
                return Err(FrontendError::file(
                    &p,
                    "unsupported pooling mode (supported: mean tokens, cls token)",
                ));
            };
        }
    }
    Ok(out)
}

fn llama(c: &Cfg, st: &SafetensorsFile) -> Result<Module, FrontendError> {
    let h = c.usize("hidden_size")?;
    let nh = c.usize("num_attention_heads")?;
    let nkv = c.usize_or("num_key_value_heads", nh)?;
    let layers = c.usize("num_hidden_layers")?;
    let ffn = c.usize("intermediate_size")?;
    let vocab = c.usize("vocab_size")?;
    let eps = c.f64_or("rms_norm_eps", 1e-6)?;
    let theta = c.f64_or("rope_theta", 10000.0)?;
    let act = c.str_or("hidden_act", "silu")?;
    if act != "silu" {
        return Err(c.err(format!(
            "hidden_act `{act}` is not supported for Llama (expected silu)"
        )));
    }
    if !c.v["rope_scaling"].is_null() {
        return Err(c.err(format!(
            "rope_scaling {} is not supported",
            c.v["rope_scaling"]
        )));
    }
    if !nh.is_multiple_of(nkv) {
        return Err(c.err(format!(
            "num_attention_heads {nh} is not a multiple of num_key_value_heads {nkv}"
        )));
    }
    let dh = match c.v["head_dim"] {
        Value::Null => {
            if !h.is_multiple_of(nh) {
                return Err(c.err(format!(
                    "hidden_size {h} is not a multiple of num_attention_heads {nh}"
                )));
            }
            h / nh
        }
        _ => c.usize("head_dim")?,
    };
    if !dh.is_multiple_of(2) {
        return Err(c.err(format!("head_dim {dh} must be even for rope")));
    }
    let tie = c.v["tie_word_embeddings"].as_bool().unwrap_or(false);
    let w = Weights {
        st,
        prefix: String::new(),
    };
    let attn_bias = c.v["attention_bias"].as_bool().unwrap_or(false);
    let mlp_bias = c.v["mlp_bias"].as_bool().unwrap_or(false);

    let mut b = ModelBuilder::new(0);
    let ids = b.input("input_ids", DType::I64, &["B".into(), "S".into()]);
    let embed = w.load(
        &mut b,
        "model.embed_tokens.weight",
        &[vocab, h],
        "vocab_size, hidden_size",
    )?;
    let mut x = b.gather(embed, ids, 0)?;
    let pos = b.iota(&["S".into()], 0, DType::I64)?;
    let hw = "hidden_size";
    let qw = "hidden_size, num_attention_heads, head_dim";
    let kw = "hidden_size, num_key_value_heads, head_dim";
    let fw = "hidden_size, intermediate_size";
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        let g = w.load(&mut b, &format!("{p}.input_layernorm.weight"), &[h], hw)?;
        let n = b.rms_norm_with(&format!("{p}.input_layernorm"), x, g, eps)?;
        let a = format!("{p}.self_attn");
        let q = w.linear(&mut b, &format!("{a}.q_proj"), n, h, nh * dh, attn_bias, qw)?;
        let k = w.linear(
            &mut b,
            &format!("{a}.k_proj"),
            n,
            h,
            nkv * dh,
            attn_bias,
            kw,
        )?;
        let v = w.linear(
            &mut b,
            &format!("{a}.v_proj"),
            n,
            h,
            nkv * dh,
            attn_bias,
            kw,
        )?;
        let q = heads(&mut b, q, nh, dh)?;
        let k = heads(&mut b, k, nkv, dh)?;
        let v = heads(&mut b, v, nkv, dh)?;
        let q = b.rope(q, pos, RopeStyle::Half, theta)?;
        let k = b.rope(k, pos, RopeStyle::Half, theta)?;
        let o = b.attention_op([q, k, v], Mask::Causal, &[])?;
        let o = merge(&mut b, o, nh * dh)?;
        let o = w.linear(&mut b, &format!("{a}.o_proj"), o, nh * dh, h, attn_bias, qw)?;
        let x1 = b.add(x, o)?;
        let g = w.load(
            &mut b,
            &format!("{p}.post_attention_layernorm.weight"),
            &[h],
            hw,
        )?;
        let n = b.rms_norm_with(&format!("{p}.post_attention_layernorm"), x1, g, eps)?;
        let m = format!("{p}.mlp");
        let gt = w.linear(&mut b, &format!("{m}.gate_proj"), n, h, ffn, mlp_bias, fw)?;
        let up = w.linear(&mut b, &format!("{m}.up_proj"), n, h, ffn, mlp_bias, fw)?;
        let gt = b.silu(gt)?;
        let hmid = b.mul(gt, up)?;
        let d = w.linear(
            &mut b,
            &format!("{m}.down_proj"),
            hmid,
            ffn,
            h,
            mlp_bias,
            fw,
        )?;
        x = b.add(x1, d)?;
    }
    let g = w.load(&mut b, "model.norm.weight", &[h], hw)?;
    let x = b.rms_norm_with("model.norm", x, g, eps)?;
    let logits = if !tie && w.has("lm_head.weight") {
        w.linear(
            &mut b,
            "lm_head",
            x,
            h,
            vocab,
            false,
            "vocab_size, hidden_size",
        )?
    } else {
        let et = b.transpose(embed, &[1, 0])?;
        b.linear_with("lm_head", x, et, None)?
    };
    b.output("logits", logits);
    b.finish()
}
