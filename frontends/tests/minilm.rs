//! MiniLM-L6 (all-MiniLM-L6-v2) imported from its Hugging Face folder and run on the reference
//! interpreter against the golden outputs of PyTorch (see shared/models/minilm-l6/README.md).

use fuselage_frontends::{assets::find_model, hf, Tokenizer};
use fuselage_ir::npy::read_npy;
use fuselage_ir::{DType, Executor, Reference, Tensor};

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn minilm_matches_golden_tokens_hidden_states_and_embeddings() {
    let dir = find_model("minilm-l6").unwrap_or_else(|e| panic!("{e}"));
    let golden = dir.join("golden");
    let tok = Tokenizer::from_model_dir(&dir).unwrap();
    let sentences = std::fs::read_to_string(golden.join("sentences.txt")).unwrap();
    let sentences: Vec<&str> = sentences.lines().collect();
    let ids = read_npy(&golden.join("token_ids.npy")).unwrap();
    let offsets = read_npy(&golden.join("offsets.npy")).unwrap();
    let hidden = read_npy(&golden.join("last_hidden_state.npy")).unwrap();
    let emb = read_npy(&golden.join("embeddings.npy")).unwrap();
    assert_eq!(sentences.len(), 32);
    assert_eq!(offsets.shape(), &[33]);
    let h = 384;
    assert_eq!(emb.shape(), &[32, h]);

    let module = hf::load_dir(&dir).unwrap();
    // Weights stay in the file: no constant is materialized by importing.
    assert!(module
        .constants
        .values()
        .all(|c| !c.is_materialized() || c.storage_bytes() < 64));

    let (mut min_cos, mut max_diff) = (f64::INFINITY, 0f64);
    for (i, s) in sentences.iter().enumerate() {
        let (a, b) = (offsets.data()[i] as usize, offsets.data()[i + 1] as usize);
        let want: Vec<i64> = ids.data()[a..b].iter().map(|&x| x as i64).collect();
        let got = tok.encode(s).unwrap();
        assert_eq!(got, want, "token ids of sentence {i}: {s:?}");
        let n = got.len();
        let x = Tensor::new(
            DType::I64,
            vec![1, n],
            got.iter().map(|&v| v as f64).collect(),
        )
        .unwrap();
        let m = Tensor::new(DType::I64, vec![1, n], vec![1.0; n]).unwrap();
        let out = Reference.run(&module, "main", &[x, m]).unwrap();
        assert_eq!(out[0].shape(), &[1, n, h]);
        let gh = &hidden.data()[a * h..b * h];
        let d = out[0]
            .data()
            .iter()
            .zip(gh)
            .map(|(p, q)| (p - q).abs())
            .fold(0f64, f64::max);
        max_diff = max_diff.max(d);
        assert!(
            d <= 1e-3,
            "sentence {i}: last_hidden_state max abs diff {d:e}"
        );
        let c = cosine(out[1].data(), &emb.data()[i * h..(i + 1) * h]);
        let norm: f64 = out[1].data().iter().map(|v| v * v).sum::<f64>().sqrt();
        assert!(
            (norm - 1.0).abs() < 1e-5,
            "sentence {i}: embedding norm {norm}"
        );
        min_cos = min_cos.min(c);
        assert!(c >= 0.99999, "sentence {i}: cosine {c} < 0.99999");
    }
    eprintln!("MiniLM: min cosine {min_cos:.12} (1 - cos = {:.2e}), max abs diff of hidden {max_diff:.3e}", 1.0 - min_cos);
}

#[test]
fn minilm_module_prints_with_file_references_and_parses_back() {
    let dir = find_model("minilm-l6").unwrap_or_else(|e| panic!("{e}"));
    let module = hf::load_dir(&dir).unwrap();
    let text = fuselage_ir::print_module(&module);
    // 90 MB of weights are referred to, not embedded.
    assert!(
        text.len() < 200_000,
        "printed module is {} bytes",
        text.len()
    );
    assert!(
        text.contains(r#"{"kind":"file","path":"#),
        "no file storage in the text"
    );
    let back = fuselage_ir::parse_module(&text, "minilm.fir").unwrap();
    assert_eq!(back, module);
}
