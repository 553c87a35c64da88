//! The llama architecture: hyper-parameters from `llama.*` metadata, the file's weights as
//! dense `f32` constants (rope rows un-permuted), and the decoder built through the builder.

use super::file::GgufFile;
use crate::builder::{LlamaLayerWeights, ModelBuilder};
use crate::builtin::LlamaConfig;
use crate::error::FrontendError;
use fuselage_ir::ops::rope::RopeStyle;
use fuselage_ir::{Constant, DType, Module, Storage, TensorType, ValueId};

/// Dense `f32` constant from row-major values (little-endian `f32` bytes, no `f64` detour).
fn dense_f32(shape: &[usize], values: &[f32]) -> Constant {
    let mut bytes = Vec::with_capacity(values.len() * 4);
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    Constant::new(
        TensorType::fixed(DType::F32, shape),
        Storage::Dense {
            bytes: bytes.into(),
        },
    )
}

/// Transpose a row-major `[rows, cols]` matrix.
fn transpose2(rows: usize, cols: usize, v: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0f32; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = v[r * cols + c];
        }
    }
    out
}

/// Undo llama.cpp's rope permutation of `attn_q` / `attn_k` rows.
///
/// The HF→GGUF converter reorders the rows of each head of `[heads·dh, in]` so that HF's
/// "rotate half" pairs `(i, i + dh/2)` become adjacent pairs `(2i, 2i + 1)` (llama.cpp's normal
/// rope): `w.reshape(heads, 2, dh/2, in).swapaxes(1, 2)`. The inverse is
/// `w.reshape(heads, dh/2, 2, in).swapaxes(1, 2)`: new row `a·dh/2 + i` of a head is stored row
/// `2i + a`.
pub fn unpermute_rope_rows(w: &[f32], heads: usize, dh: usize, cols: usize) -> Vec<f32> {
    let half = dh / 2;
    let mut out = vec![0.0f32; w.len()];
    for h in 0..heads {
        for a in 0..2 {
            for i in 0..half {
                let dst = (h * dh + a * half + i) * cols;
                let src = (h * dh + 2 * i + a) * cols;
                out[dst..dst + cols].copy_from_slice(&w[src..src + cols]);
            }
        }
    }
    out
}

/// The llama hyper-parameters read from `llama.*` metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaParams {
    /// The decoder shape in the builder's terms.
    pub config: LlamaConfig,
    /// `llama.context_length`.
    pub context_length: u64,
    /// Head dimension (`embedding_length / head_count`).
    pub head_dim: usize,
}

/// Read and check the llama hyper-parameters of a GGUF file.
pub fn llama_params(g: &GgufFile) -> Result<LlamaParams, FrontendError> {
    let arch = g.get_str("general.architecture")?;
    if arch != "llama" {
        return Err(g.err(format!(
            "architecture `{arch}` is not supported (only `llama`)"
        )));
    }
    let u = |k: &str| -> Result<usize, FrontendError> {
        let v = g.get_u64(&format!("llama.{k}"))?;
        usize::try_from(v).map_err(|_| g.err(format!("llama.{k} = {v} is too large")))
    };
    let hidden = u("embedding_length")?;
    let heads = u("attention.head_count")?;
    let kv_heads = match g.get("llama.attention.head_count_kv") {
        Some(_) => u("attention.head_count_kv")?,
        None => heads,
    };
    if heads == 0
        || kv_heads == 0
        || !hidden.is_multiple_of(heads)
        || !heads.is_multiple_of(kv_heads)
    {
        return Err(g.err(format!(
            "llama: embedding_length {hidden}, head_count {heads}, head_count_kv {kv_heads} do not divide"
        )));
    }
    let head_dim = hidden / heads;
    if !head_dim.is_multiple_of(2) {
        return Err(g.err(format!("llama: head dim {head_dim} is odd")));
    }
    if let Some(v) = g.get("llama.rope.dimension_count") {
        let r = v.as_u64();
        if r != Some(head_dim as u64) {
            return Err(g.err(format!(
                "llama.rope.dimension_count = {v:?}, but only full rotary (= head dim {head_dim}) is supported"
            )));
        }
    }
    let vocab = match g.get("llama.vocab_size") {
        Some(_) => u("vocab_size")?,
        None => g.get_array("tokenizer.ggml.tokens")?.len(),
    };
    let rope_theta = match g.get("llama.rope.freq_base") {
        Some(_) => g.get_f64("llama.rope.freq_base")?,
        None => 10000.0,
    };
    Ok(LlamaParams {
        config: LlamaConfig {
            vocab,
            hidden,
            heads,
            kv_heads,
            ffn: u("feed_forward_length")?,
            layers: u("block_count")?,
            rope_theta,
            eps: g.get_f64("llama.attention.layer_norm_rms_epsilon")?,
        },
        context_length: g.get_u64("llama.context_length")?,
        head_dim,
    })
}

/// Build the llama module from a parsed GGUF file (see [`load_gguf`](super::load_gguf)).
pub fn llama_module(g: &GgufFile) -> Result<Module, FrontendError> {
    llama_module_with(g, true)
}

/// Build the module, undoing the Q/K permutation (`unpermute`, rope "half") or keeping the
/// stored rows (rope "interleaved").
pub fn llama_module_with(g: &GgufFile, unpermute: bool) -> Result<Module, FrontendError> {
    let p = llama_params(g)?;
    let cfg = &p.config;
    let (h, dh) = (cfg.hidden, p.head_dim);
    let mut b = ModelBuilder::new(0);
    // A weight, checked against its expected row-major shape.
    let load = |name: &str, want: &[usize]| -> Result<Vec<f32>, FrontendError> {
        let (shape, v) = g.tensor_f32(name)?;
        if shape != want {
            return Err(g.err(format!(
                "tensor `{name}` has shape {shape:?} (row-major), the config implies {want:?}"
            )));
        }
        Ok(v)
    };
    // A projection stored [out, in] by GGUF becomes a constant [in, out] (matmul layout).
    let proj = |b: &mut ModelBuilder,
                name: &str,
                out: usize,
                inp: usize,
                rope_heads: Option<usize>|
     -> Result<ValueId, FrontendError> {
        let mut w = load(name, &[out, inp])?;
        if let (Some(heads), true) = (rope_heads, unpermute) {
            w = unpermute_rope_rows(&w, heads, dh, inp);
        }
        let t = transpose2(out, inp, &w);
        b.add_constant_scoped(name, dense_f32(&[inp, out], &t))
    };
    let vec_w = |b: &mut ModelBuilder, name: &str, n: usize| -> Result<ValueId, FrontendError> {
        let v = load(name, &[n])?;
        b.add_constant_scoped(name, dense_f32(&[n], &v))
    };
    let ids = b.input("input_ids", DType::I64, &["B".into(), "S".into()]);
    let emb_v = load("token_embd.weight", &[cfg.vocab, h])?;
    let embed = b.add_constant_scoped("token_embd.weight", dense_f32(&[cfg.vocab, h], &emb_v))?;
    drop(emb_v);
    let mut x = b.gather(embed, ids, 0)?;
    let pos = b.iota(&["S".into()], 0, DType::I64)?;
    let style = if unpermute {
        RopeStyle::Half
    } else {
        RopeStyle::Interleaved
    };
    for l in 0..cfg.layers {
        let n = |s: &str| format!("blk.{l}.{s}.weight");
        let w = LlamaLayerWeights {
            attn_norm: vec_w(&mut b, &n("attn_norm"), h)?,
            q: proj(&mut b, &n("attn_q"), cfg.heads * dh, h, Some(cfg.heads))?,
            k: proj(
                &mut b,
                &n("attn_k"),
                cfg.kv_heads * dh,
                h,
                Some(cfg.kv_heads),
            )?,
            v: proj(&mut b, &n("attn_v"), cfg.kv_heads * dh, h, None)?,
            o: proj(&mut b, &n("attn_output"), h, cfg.heads * dh, None)?,
            ffn_norm: vec_w(&mut b, &n("ffn_norm"), h)?,
            gate: proj(&mut b, &n("ffn_gate"), cfg.ffn, h, None)?,
            up: proj(&mut b, &n("ffn_up"), cfg.ffn, h, None)?,
            down: proj(&mut b, &n("ffn_down"), h, cfg.ffn, None)?,
            rope_style: style,
        };
        x = b.llama_block_with(&format!("layers.{l}"), x, cfg, pos, &w)?;
    }
    let norm = vec_w(&mut b, "output_norm.weight", h)?;
    let x = b.rms_norm_with("norm", x, norm, cfg.eps)?;
    let head = if g.tensor_info("output.weight").is_some() {
        proj(&mut b, "output.weight", cfg.vocab, h, None)?
    } else {
        // Tied embeddings: logits = x · embedᵀ.
        b.transpose(embed, &[1, 0])?
    };
    let logits = b.matmul(x, head)?;
    b.output("logits", logits);
    b.finish()
}

#[cfg(test)]
mod tests {
    use super::super::file::tests::{small_file, Writer};
    use super::*;
    use fuselage_ir::{Executor, Reference, Tensor};

    #[test]
    fn unpermute_inverts_the_converter_permutation() {
        // The converter: w.reshape(heads, 2, dh/2, in).swapaxes(1, 2).
        let (heads, dh, cols) = (3, 8, 2);
        let w: Vec<f32> = (0..heads * dh * cols).map(|i| i as f32).collect();
        let mut permuted = vec![0.0; w.len()];
        for hh in 0..heads {
            for a in 0..2 {
                for i in 0..dh / 2 {
                    // permuted[hh][i][a] = w[hh][a][i]
                    let dst = (hh * dh + i * 2 + a) * cols;
                    let src = (hh * dh + a * dh / 2 + i) * cols;
                    permuted[dst..dst + cols].copy_from_slice(&w[src..src + cols]);
                }
            }
        }
        assert_ne!(permuted, w);
        assert_eq!(unpermute_rope_rows(&permuted, heads, dh, cols), w);
    }

    /// A tiny llama GGUF with random F32 weights (q/k rows as the converter stores them).
    fn tiny_llama(tied: bool) -> Vec<u8> {
        let (vocab, hd, heads, kv, ffn, layers) = (11usize, 16usize, 4usize, 2usize, 24usize, 2);
        let dh = hd / heads;
        let mut w = Writer::new();
        w.str("general.architecture", "llama");
        w.u32("llama.context_length", 64);
        w.u32("llama.embedding_length", hd as u32);
        w.u32("llama.block_count", layers as u32);
        w.u32("llama.feed_forward_length", ffn as u32);
        w.u32("llama.attention.head_count", heads as u32);
        w.u32("llama.attention.head_count_kv", kv as u32);
        w.u32("llama.rope.dimension_count", dh as u32);
        w.f32("llama.rope.freq_base", 10000.0);
        w.f32("llama.attention.layer_norm_rms_epsilon", 1e-5);
        let toks: Vec<String> = (0..vocab).map(|i| format!("t{i}")).collect();
        let toks: Vec<&str> = toks.iter().map(|s| s.as_str()).collect();
        w.strs("tokenizer.ggml.tokens", &toks);
        let mut seed = 1u64;
        let mut rnd = |n: usize, scale: f32| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
                })
                .collect()
        };
        w.tensor_f32(
            "token_embd.weight",
            &[hd as u64, vocab as u64],
            &rnd(vocab * hd, 2.0),
        );
        for l in 0..layers {
            let n = |s: &str| format!("blk.{l}.{s}.weight");
            let ones: Vec<f32> = rnd(hd, 0.2).iter().map(|x| 1.0 + x).collect();
            w.tensor_f32(&n("attn_norm"), &[hd as u64], &ones);
            w.tensor_f32(&n("ffn_norm"), &[hd as u64], &ones);
            for (nm, out, inp) in [
                ("attn_q", heads * dh, hd),
                ("attn_k", kv * dh, hd),
                ("attn_v", kv * dh, hd),
                ("attn_output", hd, heads * dh),
                ("ffn_gate", ffn, hd),
                ("ffn_up", ffn, hd),
                ("ffn_down", hd, ffn),
            ] {
                w.tensor_f32(&n(nm), &[inp as u64, out as u64], &rnd(out * inp, 0.8));
            }
        }
        w.tensor_f32("output_norm.weight", &[hd as u64], &vec![1.0; hd]);
        if !tied {
            w.tensor_f32(
                "output.weight",
                &[hd as u64, vocab as u64],
                &rnd(vocab * hd, 1.0),
            );
        }
        w.bytes()
    }

    fn run_logits(m: &Module, ids: &[i64]) -> Tensor {
        let x = Tensor::new(
            DType::I64,
            vec![1, ids.len()],
            ids.iter().map(|&i| i as f64).collect(),
        )
        .unwrap();
        Reference.run(m, "main", &[x]).unwrap().remove(0)
    }

    #[test]
    fn llama_rope_routes_agree() {
        for tied in [true, false] {
            let g = GgufFile::from_bytes("tiny.gguf", tiny_llama(tied)).unwrap();
            let p = llama_params(&g).unwrap();
            assert_eq!(p.config.vocab, 11);
            assert_eq!((p.config.heads, p.config.kv_heads, p.head_dim), (4, 2, 4));
            let half = llama_module_with(&g, true).unwrap();
            let inter = llama_module_with(&g, false).unwrap();
            let ids = [3, 1, 4, 1, 5, 9, 2, 6];
            let (a, b) = (run_logits(&half, &ids), run_logits(&inter, &ids));
            assert_eq!(a.shape(), &[1, 8, 11]);
            let d = a
                .data()
                .iter()
                .zip(b.data())
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f64::max);
            assert!(d < 1e-4, "half vs interleaved rope differ by {d}");
            // Positions matter: a rotated sequence changes later logits.
            let c = run_logits(&half, &[1, 3, 4, 1, 5, 9, 2, 6]);
            assert_ne!(a.data()[11 * 7..], c.data()[11 * 7..]);
        }
    }

    #[test]
    fn llama_config_disagreeing_with_weights_is_an_error() {
        let mut b = tiny_llama(true);
        // Find "llama.feed_forward_length" and change its value 24 → 25.
        let key = b"llama.feed_forward_length";
        let i = b.windows(key.len()).position(|w| w == key).unwrap() + key.len() + 4;
        b[i..i + 4].copy_from_slice(&25u32.to_le_bytes());
        let g = GgufFile::from_bytes("cfg.gguf", b).unwrap();
        let e = llama_module(&g).unwrap_err().to_string();
        assert!(
            e.contains("cfg.gguf") && e.contains("blk.0.ffn_gate.weight"),
            "{e}"
        );
        let g = GgufFile::from_bytes("small.gguf", small_file()).unwrap();
        let e = llama_module(&g).unwrap_err().to_string();
        assert!(e.contains("architecture `test`"), "{e}");
    }
}
