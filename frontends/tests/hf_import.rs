//! The Hugging Face importer on folders the test writes itself: tiny BERT and Llama models whose
//! weights come from the built-in models (so the imported module must compute what the builder's
//! model computes), and every kind of bad file.

use fuselage_frontends::builtin::{bert, llama, BertConfig, LlamaConfig};
use fuselage_frontends::hf::load_dir;
use fuselage_frontends::safetensors_io::write_safetensors;
use fuselage_ir::{DType, Executor, Module, Reference, Tensor};
use serde_json::json;
use std::path::Path;

type Entry = (String, DType, Vec<usize>, Vec<u8>);

fn f32_bytes(t: &Tensor, transpose: bool) -> (Vec<usize>, Vec<u8>) {
    let mut shape = t.shape().to_vec();
    let data: Vec<f64> = if transpose {
        let (r, c) = (shape[0], shape[1]);
        shape = vec![c, r];
        (0..c)
            .flat_map(|j| (0..r).map(move |i| (i, j)))
            .map(|(i, j)| t.data()[i * c + j])
            .collect()
    } else {
        t.data().to_vec()
    };
    let bytes = data
        .iter()
        .flat_map(|&v| (v as f32).to_le_bytes())
        .collect();
    (shape, bytes)
}

/// The builtin's weights renamed to HF names (linear weights transposed to `[out, in]`).
fn hf_tensors(m: &Module, rename: impl Fn(&str) -> Option<(String, bool)>) -> Vec<Entry> {
    let mut out = vec![];
    for (name, c) in &m.constants {
        if let Some((hf, tr)) = rename(name) {
            let (shape, bytes) = f32_bytes(&c.value(name).unwrap(), tr);
            out.push((hf, DType::F32, shape, bytes));
        }
    }
    out
}

fn bert_cfg() -> BertConfig {
    BertConfig {
        vocab: 50,
        hidden: 32,
        heads: 4,
        ffn: 64,
        layers: 2,
        max_positions: 16,
        eps: 1e-12,
    }
}

fn bert_config_json(c: &BertConfig) -> serde_json::Value {
    json!({"architectures": ["BertModel"], "model_type": "bert", "hidden_size": c.hidden,
        "num_attention_heads": c.heads, "num_hidden_layers": c.layers,
        "intermediate_size": c.ffn, "vocab_size": c.vocab,
        "max_position_embeddings": c.max_positions, "type_vocab_size": 2,
        "layer_norm_eps": c.eps, "hidden_act": "gelu"})
}

fn bert_rename(n: &str) -> Option<(String, bool)> {
    if let Some(t) = n.strip_prefix("embeddings.") {
        return Some(match t {
            "word_embeddings" | "position_embeddings" | "token_type_embeddings" => {
                (format!("embeddings.{t}.weight"), false)
            }
            _ => (
                format!("embeddings.LayerNorm.{}", t.strip_prefix("norm.")?),
                false,
            ),
        });
    }
    let rest = n.strip_prefix("encoder.layer.")?;
    let (l, rest) = rest.split_once('.')?;
    let (module, kind) = rest.rsplit_once('.')?;
    let hf = match module {
        "attention.q" => "attention.self.query",
        "attention.k" => "attention.self.key",
        "attention.v" => "attention.self.value",
        "attention.o" => "attention.output.dense",
        "attention_norm" => "attention.output.LayerNorm",
        "mlp.fc1" => "intermediate.dense",
        "mlp.fc2" => "output.dense",
        "output_norm" => "output.LayerNorm",
        _ => return None,
    };
    let tr = kind == "weight" && !hf.ends_with("LayerNorm");
    Some((format!("encoder.layer.{l}.{hf}.{kind}"), tr))
}

fn write_dir(dir: &Path, config: &serde_json::Value, tensors: &[Entry]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    write_safetensors(&dir.join("model.safetensors"), tensors).unwrap();
}

fn tiny_bert(dir: &Path) -> (Module, Vec<Entry>) {
    let c = bert_cfg();
    let m = bert(&c, 42, false).unwrap();
    let t = hf_tensors(&m, bert_rename);
    write_dir(dir, &bert_config_json(&c), &t);
    (m, t)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.data()
        .iter()
        .zip(b.data())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn ids(b: usize, data: &[i64]) -> Tensor {
    let s = data.len() / b;
    Tensor::new(
        DType::I64,
        vec![b, s],
        data.iter().map(|&v| v as f64).collect(),
    )
    .unwrap()
}

#[test]
fn bert_import_computes_what_the_builder_model_computes() {
    let tmp = tempfile::tempdir().unwrap();
    let (reference, tensors) = tiny_bert(tmp.path());
    assert_eq!(tensors.len(), 5 + 16 * 2);
    let m = load_dir(tmp.path()).unwrap();
    let x = ids(2, &[1, 7, 3, 49, 0, 0, 5, 9, 11, 2, 8, 4]);
    let mask = ids(2, &[1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1]);
    let want = Reference
        .run(&reference, "main", &[x.clone(), mask.clone()])
        .unwrap();
    let got = Reference
        .run(&m, "main", &[x.clone(), mask.clone()])
        .unwrap();
    // Hidden states of unmasked rows and the pooled embedding agree.
    assert!(
        max_diff(&got[1], &want[1]) < 1e-5,
        "{}",
        max_diff(&got[1], &want[1])
    );
    let h = &got[0].data()[6 * 32..];
    let w = &want[0].data()[6 * 32..];
    let d = h
        .iter()
        .zip(w)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(d < 1e-5, "{d}");
    // With a Normalize module the embedding is the unit vector of the same direction.
    std::fs::write(
        tmp.path().join("modules.json"),
        r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
            {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
            {"idx":2,"name":"2","path":"2_Normalize","type":"sentence_transformers.models.Normalize"}]"#,
    )
    .unwrap();
    let m = load_dir(tmp.path()).unwrap();
    let got = Reference.run(&m, "main", &[x, mask]).unwrap();
    for r in 0..2 {
        let e = &got[1].data()[r * 32..(r + 1) * 32];
        let w = &want[1].data()[r * 32..(r + 1) * 32];
        let n: f64 = w.iter().map(|v| v * v).sum::<f64>().sqrt();
        for (a, b) in e.iter().zip(w) {
            assert!((a - b / n).abs() < 1e-6, "{a} vs {}", b / n);
        }
    }
}

#[test]
fn bert_cls_pooling_takes_the_first_tokens_hidden_state() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_bert(tmp.path());
    std::fs::create_dir_all(tmp.path().join("1_Pooling")).unwrap();
    std::fs::write(
        tmp.path().join("1_Pooling/config.json"),
        r#"{"word_embedding_dimension": 32, "pooling_mode_cls_token": true,
            "pooling_mode_mean_tokens": false}"#,
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("modules.json"),
        r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
            {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"}]"#,
    )
    .unwrap();
    let m = load_dir(tmp.path()).unwrap();
    assert_eq!(
        m.functions["main"].output_types()[1]
            .as_ref()
            .unwrap()
            .to_string(),
        "f32[B,32]"
    );
    let x = ids(2, &[1, 7, 3, 49, 0, 0, 5, 9, 11, 2, 8, 4]);
    let mask = ids(2, &[1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1]);
    let got = Reference.run(&m, "main", &[x, mask]).unwrap();
    for r in 0..2 {
        let cls = &got[0].data()[r * 6 * 32..r * 6 * 32 + 32];
        assert_eq!(&got[1].data()[r * 32..(r + 1) * 32], cls);
    }
}

fn llama_cfg() -> LlamaConfig {
    LlamaConfig {
        vocab: 64,
        hidden: 32,
        heads: 4,
        kv_heads: 2,
        ffn: 48,
        layers: 2,
        rope_theta: 500.0,
        eps: 1e-5,
    }
}

fn llama_rename(n: &str) -> Option<(String, bool)> {
    match n {
        "embed_tokens" => return Some(("model.embed_tokens.weight".into(), false)),
        "norm.weight" => return Some(("model.norm.weight".into(), false)),
        _ => {}
    }
    let rest = n.strip_prefix("layers.")?;
    let (l, rest) = rest.split_once('.')?;
    let (hf, tr) = match rest {
        "input_norm.weight" => ("input_layernorm.weight", false),
        "post_attention_norm.weight" => ("post_attention_layernorm.weight", false),
        "attention.q.weight" => ("self_attn.q_proj.weight", true),
        "attention.k.weight" => ("self_attn.k_proj.weight", true),
        "attention.v.weight" => ("self_attn.v_proj.weight", true),
        "attention.o.weight" => ("self_attn.o_proj.weight", true),
        "mlp.gate.weight" => ("mlp.gate_proj.weight", true),
        "mlp.up.weight" => ("mlp.up_proj.weight", true),
        "mlp.down.weight" => ("mlp.down_proj.weight", true),
        _ => return None,
    };
    Some((format!("model.layers.{l}.{hf}"), tr))
}

fn llama_config_json(c: &LlamaConfig, tie: bool) -> serde_json::Value {
    json!({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": c.hidden, "num_attention_heads": c.heads,
        "num_key_value_heads": c.kv_heads, "num_hidden_layers": c.layers,
        "intermediate_size": c.ffn, "vocab_size": c.vocab, "rms_norm_eps": c.eps,
        "rope_theta": c.rope_theta, "hidden_act": "silu", "tie_word_embeddings": tie,
        "max_position_embeddings": 128, "rope_scaling": null})
}

#[test]
fn llama_import_computes_what_the_builder_model_computes_tied_and_untied() {
    let c = llama_cfg();
    let reference = llama(&c, 7).unwrap();
    let mut tensors = hf_tensors(&reference, llama_rename);
    assert_eq!(tensors.len(), 2 + 9 * 2);
    let tmp = tempfile::tempdir().unwrap();
    let tied = tmp.path().join("tied");
    write_dir(&tied, &llama_config_json(&c, true), &tensors);
    let x = ids(2, &[1, 5, 63, 2, 7, 0, 9, 9, 31, 4]);
    let want = Reference
        .run(&reference, "main", std::slice::from_ref(&x))
        .unwrap();
    let m = load_dir(&tied).unwrap();
    let got = Reference.run(&m, "main", std::slice::from_ref(&x)).unwrap();
    assert_eq!(got[0].shape(), &[2, 5, 64]);
    assert!(
        max_diff(&got[0], &want[0]) < 1e-4,
        "{}",
        max_diff(&got[0], &want[0])
    );

    // An explicit lm_head (here equal to the embeddings) when not tied.
    let emb = tensors
        .iter()
        .find(|t| t.0 == "model.embed_tokens.weight")
        .unwrap()
        .clone();
    tensors.push(("lm_head.weight".into(), emb.1, emb.2, emb.3));
    let untied = tmp.path().join("untied");
    write_dir(&untied, &llama_config_json(&c, false), &tensors);
    let m = load_dir(&untied).unwrap();
    assert!(m.constants.contains_key("lm_head.weight"));
    let got = Reference.run(&m, "main", &[x]).unwrap();
    assert!(max_diff(&got[0], &want[0]) < 1e-4);
    // Shapes the config implies are checked: a GQA config with the wrong kv heads fails.
    let mut bad = llama_config_json(&c, false);
    bad["num_key_value_heads"] = json!(4);
    std::fs::write(untied.join("config.json"), bad.to_string()).unwrap();
    let e = load_dir(&untied).unwrap_err().to_string();
    assert!(
        e.contains("model.layers.0.self_attn.k_proj.weight")
            && e.contains("[16, 32]")
            && e.contains("[32, 32]"),
        "{e}"
    );
    bad["num_key_value_heads"] = json!(2);
    bad["hidden_act"] = json!("gelu");
    std::fs::write(untied.join("config.json"), bad.to_string()).unwrap();
    let e = load_dir(&untied).unwrap_err().to_string();
    assert!(e.contains("hidden_act `gelu`"), "{e}");
}

/// A file with a hand-written header and `data_len` zero bytes of data.
fn raw(path: &Path, header: serde_json::Value, data_len: usize) {
    let h = header.to_string().into_bytes();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend(std::iter::repeat_n(0u8, data_len));
    std::fs::write(path, out).unwrap();
}

fn err_of(dir: &Path) -> String {
    load_dir(dir).unwrap_err().to_string()
}

#[test]
fn bad_files_are_clear_errors_naming_file_and_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good");
    let (_, tensors) = tiny_bert(&good);
    let case = |name: &str| {
        let d = tmp.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(good.join("config.json"), d.join("config.json")).unwrap();
        d
    };
    let st = |d: &Path| d.join("model.safetensors");

    // Missing weights file.
    let d = case("missing");
    let e = err_of(&d);
    assert!(
        e.contains("model.safetensors") && e.contains("missing"),
        "{e}"
    );

    // Missing / invalid config.
    let d = tmp.path().join("noconfig");
    std::fs::create_dir_all(&d).unwrap();
    let e = err_of(&d);
    assert!(
        e.contains("config.json") && e.contains("cannot read"),
        "{e}"
    );
    std::fs::write(d.join("config.json"), "{ not json").unwrap();
    let e = err_of(&d);
    assert!(
        e.contains("config.json") && e.contains("invalid JSON"),
        "{e}"
    );

    // Truncated: the last tensor's bytes run past the end of the file.
    let d = case("truncated");
    let bytes = std::fs::read(st(&good)).unwrap();
    std::fs::write(st(&d), &bytes[..bytes.len() - 10]).unwrap();
    let e = err_of(&d);
    let last = &tensors.last().unwrap().0;
    assert!(
        e.contains("model.safetensors") && e.contains(last.as_str()),
        "{e}"
    );
    assert!(e.contains("truncated"), "{e}");

    // Truncated inside the header, and shorter than the length prefix.
    for cut in [0, 5, 100] {
        std::fs::write(st(&d), &bytes[..cut]).unwrap();
        let e = err_of(&d);
        assert!(
            e.contains("model.safetensors") && e.contains("truncated"),
            "{cut}: {e}"
        );
    }

    // Corrupt header.
    let d = case("corrupt");
    let mut b = bytes.clone();
    b[8..16].copy_from_slice(b"notjson!");
    std::fs::write(st(&d), &b).unwrap();
    let e = err_of(&d);
    assert!(
        e.contains("model.safetensors") && e.contains("invalid"),
        "{e}"
    );
    // Absurd header length.
    b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(st(&d), &b).unwrap();
    let e = err_of(&d);
    assert!(e.contains("model.safetensors"), "{e}");

    // A tensor whose declared size exceeds the file.
    let d = case("past_end");
    raw(
        &st(&d),
        json!({"embeddings.word_embeddings.weight":
            {"dtype": "F32", "shape": [50, 32], "data_offsets": [0, 6400]}}),
        64,
    );
    let e = err_of(&d);
    assert!(
        e.contains("embeddings.word_embeddings.weight") && e.contains("6400"),
        "{e}"
    );

    // A shape that overflows.
    let d = case("overflow");
    let big = 1u64 << 62;
    raw(
        &st(&d),
        json!({"embeddings.word_embeddings.weight":
            {"dtype": "F32", "shape": [big, big], "data_offsets": [0, 16]}}),
        16,
    );
    let e = err_of(&d);
    assert!(
        e.contains("embeddings.word_embeddings.weight") && e.contains("overflow"),
        "{e}"
    );

    // Shape × dtype disagreeing with the byte range.
    let d = case("size");
    raw(
        &st(&d),
        json!({"x.weight": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}),
        8,
    );
    let e = err_of(&d);
    assert!(
        e.contains("x.weight") && e.contains("needs 12 bytes"),
        "{e}"
    );

    // Config disagreeing with the weights.
    let d = case("hidden");
    std::fs::copy(st(&good), st(&d)).unwrap();
    let mut cfg = bert_config_json(&bert_cfg());
    cfg["hidden_size"] = json!(48);
    cfg["num_attention_heads"] = json!(4);
    std::fs::write(d.join("config.json"), cfg.to_string()).unwrap();
    let e = err_of(&d);
    assert!(
        e.contains("embeddings.word_embeddings.weight")
            && e.contains("[50, 32]")
            && e.contains("[50, 48]")
            && e.contains("hidden_size"),
        "{e}"
    );
    cfg["hidden_size"] = json!(32);
    cfg["hidden_act"] = json!("relu");
    std::fs::write(d.join("config.json"), cfg.to_string()).unwrap();
    let e = err_of(&d);
    assert!(
        e.contains("config.json") && e.contains("hidden_act `relu`"),
        "{e}"
    );
    cfg["hidden_act"] = json!("gelu");
    cfg["num_hidden_layers"] = json!("six");
    std::fs::write(d.join("config.json"), cfg.to_string()).unwrap();
    let e = err_of(&d);
    assert!(
        e.contains("num_hidden_layers") && e.contains("positive integer"),
        "{e}"
    );

    // A missing tensor.
    let d = case("missing_tensor");
    let gone = "encoder.layer.1.output.dense.bias";
    let fewer: Vec<Entry> = tensors.iter().filter(|t| t.0 != gone).cloned().collect();
    write_safetensors(&st(&d), &fewer).unwrap();
    let e = err_of(&d);
    assert!(e.contains("missing tensor") && e.contains(gone), "{e}");

    // A tensor of the wrong dtype for a weight.
    let d = case("int_weight");
    let mut odd = tensors.clone();
    odd[0].1 = DType::I32;
    let name = odd[0].0.clone();
    write_safetensors(&st(&d), &odd).unwrap();
    let e = err_of(&d);
    assert!(e.contains(name.as_str()), "{e}");

    // An unknown architecture.
    let d = case("arch");
    std::fs::copy(st(&good), st(&d)).unwrap();
    std::fs::write(d.join("config.json"), r#"{"model_type":"gpt2"}"#).unwrap();
    let e = err_of(&d);
    assert!(
        e.contains("unsupported architecture") && e.contains("gpt2"),
        "{e}"
    );
}
