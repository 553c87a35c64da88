//! SmolLM2-135M (GGUF Q4_1) against the golden float64 reference, on the reference interpreter:
//! tokenizer ids, first logits and perplexity (see shared/models/smollm2-135m/README.md).

use fuselage_frontends::gguf::{self, GgufFile};
use fuselage_ir::{DType, Executor, Module, Reference, Tensor};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

const MODEL: &str = "smollm2-135m";
const GGUF: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Minimal `.npy` reader for the golden files: little-endian f4 / i4, C order.
fn read_npy(path: &Path) -> (Vec<usize>, Vec<f64>) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&b[..6], b"\x93NUMPY", "{}: not an npy file", path.display());
    let (hlen, start) = if b[6] == 1 {
        (u16::from_le_bytes([b[8], b[9]]) as usize, 10)
    } else {
        (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12)
    };
    let header = std::str::from_utf8(&b[start..start + hlen]).unwrap();
    assert!(header.contains("'fortran_order': False"), "{header}");
    let descr = header
        .split("'descr': '")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap();
    let shape_s = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape: Vec<usize> = shape_s
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let data = &b[start + hlen..];
    let vals: Vec<f64> = match descr {
        "<f4" => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect(),
        "<i4" => data
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect(),
        d => panic!("{}: unsupported dtype {d}", path.display()),
    };
    assert_eq!(vals.len(), shape.iter().product::<usize>());
    (shape, vals)
}

fn dir() -> PathBuf {
    // A missing model fails the test, saying where it looked.
    fuselage_frontends::assets::find_model(MODEL).unwrap_or_else(|e| panic!("{e}"))
}

fn golden_ids() -> Vec<i64> {
    let (shape, ids) = read_npy(&dir().join("golden/token_ids.npy"));
    assert_eq!(shape, vec![512]);
    ids.into_iter().map(|x| x as i64).collect()
}

fn module() -> &'static Module {
    static M: OnceLock<Module> = OnceLock::new();
    M.get_or_init(|| {
        let t = Instant::now();
        let m = gguf::load_gguf(dir().join(GGUF)).expect("load the GGUF model");
        eprintln!("loaded {GGUF} in {:.1?}", t.elapsed());
        m
    })
}

fn run(ids: &[i64]) -> Tensor {
    let x = Tensor::new(
        DType::I64,
        vec![1, ids.len()],
        ids.iter().map(|&i| i as f64).collect(),
    )
    .unwrap();
    let t = Instant::now();
    let out = Reference
        .run(module(), "main", &[x])
        .expect("reference run")
        .remove(0);
    eprintln!(
        "reference forward over {} tokens: {:.1?}",
        ids.len(),
        t.elapsed()
    );
    out
}

#[test]
fn metadata_and_config() {
    let g = GgufFile::open(dir().join(GGUF)).unwrap();
    assert_eq!(g.version, 3);
    assert_eq!(g.tensors.len(), 272);
    let p = gguf::llama_params(&g).unwrap();
    let c = &p.config;
    assert_eq!(
        (c.layers, c.hidden, c.ffn, c.heads, c.kv_heads),
        (30, 576, 1536, 9, 3)
    );
    assert_eq!((c.vocab, p.head_dim, p.context_length), (49152, 64, 8192));
    assert_eq!(c.rope_theta, 100000.0);
    assert_eq!(c.eps, 1e-5f32 as f64); // stored as f32 9.9999997e-06
    assert!(g.tensor_info("output.weight").is_none(), "tied embeddings");
    let params: u64 = g.tensors.iter().map(|t| t.numel()).sum();
    assert_eq!(params, 134_515_008);
}

#[test]
fn tokenizer_matches_golden_ids() {
    let g = GgufFile::open(dir().join(GGUF)).unwrap();
    let tok = gguf::tokenizer(&g).unwrap();
    let text = std::fs::read_to_string(dir().join("golden/text.txt")).unwrap();
    let enc = tok.encode(text.as_str(), false).unwrap();
    let ids: Vec<i64> = enc.get_ids().iter().map(|&i| i as i64).collect();
    assert_eq!(ids, golden_ids());
    let back = tok.decode(enc.get_ids(), false).unwrap();
    assert_eq!(back, text);
    // Digits are split one by one (the `smollm` pre-tokenizer); control tokens are matched.
    let e = tok.encode("<|im_start|>1234", false).unwrap();
    assert_eq!(e.get_ids()[0], 1);
    assert_eq!(e.get_ids().len(), 5);
}

#[test]
fn first_logits_match_golden() {
    let (shape, gold) = read_npy(&dir().join("golden/logits_first16.npy"));
    assert_eq!(shape, vec![16, 49152]);
    let ids = golden_ids();
    let out = run(&ids[..16]);
    assert_eq!(out.shape(), &[1, 16, 49152]);
    let d = out
        .data()
        .iter()
        .zip(&gold)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    eprintln!("max |logit - golden| over 16 × 49152: {d:.3e}");
    assert!(d <= 2e-3, "max abs logit diff {d} > 2e-3");
}

#[test]
fn perplexity_matches_golden() {
    let ids = golden_ids();
    let out = run(&ids);
    let v = 49152;
    let l = out.data();
    let (shape, gold_nll) = read_npy(&dir().join("golden/nll.npy"));
    assert_eq!(shape, vec![511]);
    let mut nll = 0.0;
    let mut worst = 0.0f64;
    for t in 1..ids.len() {
        let row = &l[(t - 1) * v..t * v];
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = row.iter().map(|x| (x - m).exp()).sum();
        let nll_t = -(row[ids[t] as usize] - m - z.ln());
        worst = worst.max((nll_t - gold_nll[t - 1]).abs());
        nll += nll_t;
    }
    let ppl = (nll / (ids.len() - 1) as f64).exp();
    eprintln!("max |nll - golden nll| over 511 predictions: {worst:.3e}");
    assert!(
        worst <= 2e-3,
        "per-token NLL differs from golden by {worst}"
    );
    let golden = 16.141252215317138;
    let rel = (ppl - golden).abs() / golden;
    eprintln!("perplexity {ppl:.6} vs golden {golden:.6} (rel {rel:.2e})");
    // The README suggests 1e-4 for an fp32 implementation (issue #3 asks for 0.5 %).
    assert!(rel <= 1e-4, "perplexity {ppl} vs {golden}: rel {rel}");
}
