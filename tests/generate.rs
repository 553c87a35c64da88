//! KV-cache decoding: the `kv-cache` pass's decode function run in a session whose cache stays
//! on the device gives the same logits and the same greedy tokens as re-running the whole
//! sequence, on the built-in llama and on SmolLM2-135M.

use fuselage::ir::{DType, Executor, Reference, Session, Tensor};
use fuselage::tasks::{generate_with, with_kv_cache, KvCachePlan, DECODE_FUNCTION};

fn ids(v: &[i64]) -> Tensor {
    Tensor::new(
        DType::I64,
        vec![1, v.len()],
        v.iter().map(|&i| i as f64).collect(),
    )
    .unwrap()
}

/// Runs `pieces` of a token sequence through the decode function in one session; returns the
/// logits rows of every token, in order.
fn decode_in_pieces(
    session: &mut dyn Session,
    m: &fuselage::ir::Module,
    pieces: &[&[i64]],
) -> Vec<f64> {
    let plan = KvCachePlan::of(m).unwrap();
    plan.reset(session).unwrap();
    let keep = plan.keep();
    let mut rows = vec![];
    let mut seen = 0;
    for p in pieces {
        let out = session
            .run(DECODE_FUNCTION, &[("input_ids", ids(p))], &keep)
            .unwrap();
        assert_eq!(out.len(), 1, "only the logits come back");
        rows.extend_from_slice(out[0].1.data());
        seen += p.len();
        let k = session.state("past_key.0").unwrap().unwrap();
        assert_eq!(k.shape()[2], seen, "the cache holds every position so far");
    }
    rows
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn llama_tiny_decode_in_pieces_matches_the_whole_sequence() {
    let m = fuselage::load("builtin:llama-tiny").unwrap();
    let m = with_kv_cache(&m).unwrap();
    let tokens: Vec<i64> = vec![5, 17, 3, 3, 42, 8, 1, 29, 11];
    let whole = Reference
        .run(&m, "main", &[ids(&tokens)])
        .unwrap()
        .remove(0);
    let pieces: [&[i64]; 4] = [&tokens[..5], &tokens[5..6], &tokens[6..8], &tokens[8..]];
    // The reference interpreter (host session) and the lowered CPU program (device session).
    let reference = decode_in_pieces(Reference.session(&m).as_mut(), &m, &pieces);
    assert!(
        max_diff(&reference, whole.data()) < 1e-9,
        "reference decode vs whole sequence"
    );
    let exec = fuselage::executor_for(
        &m,
        DECODE_FUNCTION,
        fuselage::Backend::Cpu,
        &Default::default(),
    )
    .unwrap();
    let lowered = decode_in_pieces(exec.session(&m).as_mut(), &m, &pieces);
    let scale = whole.data().iter().fold(1e-3f64, |a, b| a.max(b.abs()));
    let d = max_diff(&lowered, whole.data());
    assert!(
        d <= 1e-4 * scale,
        "lowered decode vs whole sequence: {d} (scale {scale})"
    );
}

fn smollm2() -> (
    fuselage::ir::Module,
    fuselage::frontends::Tokenizer,
    std::path::PathBuf,
) {
    let dir =
        fuselage::frontends::assets::find_model("smollm2-135m").unwrap_or_else(|e| panic!("{e}"));
    let gguf = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let m = fuselage::load(gguf.to_str().unwrap()).unwrap();
    let tok = fuselage::tasks::tokenizer_for(gguf.to_str().unwrap())
        .unwrap()
        .unwrap();
    (m, tok, dir)
}

/// SmolLM2's 16 golden tokens decoded through `m`'s KV-cache function on the lowered CPU
/// program (8 prefilled, then 8 one at a time): the tokens, the logits rows and the golden
/// logits.
fn golden_16_through_the_cache(
    m: &fuselage::ir::Module,
    dir: &std::path::Path,
) -> (Vec<i64>, Vec<f64>, Tensor) {
    let golden_ids = fuselage::npy::read_npy(&dir.join("golden/token_ids.npy")).unwrap();
    let toks: Vec<i64> = golden_ids.data()[..16].iter().map(|&x| x as i64).collect();
    let gold = fuselage::npy::read_npy(&dir.join("golden/logits_first16.npy")).unwrap();
    let exec = fuselage::executor_for(
        m,
        DECODE_FUNCTION,
        fuselage::Backend::Cpu,
        &Default::default(),
    )
    .unwrap();
    let mut pieces: Vec<&[i64]> = vec![&toks[..8]];
    pieces.extend(toks[8..].chunks(1));
    let rows = decode_in_pieces(exec.session(m).as_mut(), m, &pieces);
    (toks, rows, gold)
}

/// SmolLM2's golden logits of positions 0..15 (f64 PyTorch-equivalent reference), computed
/// by prefilling 8 tokens and then decoding the next 8 one at a time on the lowered program.
#[test]
fn smollm2_kv_cache_decode_matches_golden_logits() {
    let (m, _, dir) = smollm2();
    let m = with_kv_cache(&m).unwrap();
    let (_, rows, gold) = golden_16_through_the_cache(&m, &dir);
    let d = max_diff(&rows, gold.data());
    eprintln!("max |logit - golden| over 16 x 49152 with the KV cache: {d:.3e}");
    assert!(d <= 2e-3, "max abs logit diff {d} > 2e-3");
}

/// Greedy generation with the KV cache gives the same tokens as re-running the sequence.
#[test]
fn smollm2_greedy_tokens_with_and_without_the_cache_agree() {
    let (m, tok, _) = smollm2();
    let m = with_kv_cache(&m).unwrap();
    let exec = fuselage::executor_for(
        &m,
        DECODE_FUNCTION,
        fuselage::Backend::Cpu,
        &Default::default(),
    )
    .unwrap();
    let prompt = "It is a truth universally acknowledged, that a single man";
    let mut streamed = String::new();
    let cached = generate_with(&m, &tok, prompt, 12, exec.as_ref(), true, &mut |t| {
        streamed.push_str(&t.text)
    })
    .unwrap();
    let full = fuselage::executor(&m, fuselage::Backend::Cpu).unwrap();
    let rerun = generate_with(&m, &tok, prompt, 12, full.as_ref(), false, &mut |_| {}).unwrap();
    assert_eq!(cached.tokens.len(), 12);
    assert_eq!(
        cached.tokens, rerun.tokens,
        "{:?} vs {:?}",
        cached.text, rerun.text
    );
    assert_eq!(
        streamed, cached.text,
        "the streamed pieces make up the text"
    );
    assert_eq!(cached.decode_seconds.len(), 11);
    assert!(cached.kv_cache && !rerun.kv_cache);
}

#[test]
fn encoders_get_no_kv_cache() {
    let m = fuselage::load("builtin:bert-tiny").unwrap();
    let e = with_kv_cache(&m).unwrap_err().to_string();
    assert!(e.contains("no KV cache") && e.contains("causal"), "{e}");
}

/// SmolLM2 as a bf16 program (`precision{dtype=bf16}`, then the KV-cache function derived from
/// it): the cache holds bf16 keys and values, and the golden tokens' logits decoded through it
/// (8 prefilled, 8 one at a time) differ from the bf16 program's whole-sequence logits by no
/// more than bf16 itself moves them off the f32 golden (the two orders of computation round
/// differently; a wrong position or cache entry would be far off).
#[test]
fn smollm2_bf16_program_decodes_with_its_kv_cache() {
    let (m, _, dir) = smollm2();
    let pipeline = fuselage::Pipeline::parse("precision{dtype=bf16}").unwrap();
    let opts = fuselage::CompileOptions {
        numeric_check: false,
        ..Default::default()
    };
    let m = fuselage::compile(&m, &pipeline, &opts).unwrap().module;
    let m = with_kv_cache(&m).unwrap();
    let decode = &m.functions[DECODE_FUNCTION];
    let past = decode
        .input_names()
        .iter()
        .position(|n| n == "past_key.0")
        .unwrap();
    assert_eq!(decode.input_types()[past].dtype, DType::BF16);
    let (toks, cached, gold) = golden_16_through_the_cache(&m, &dir);
    let full = fuselage::executor(&m, fuselage::Backend::Cpu).unwrap();
    let entry = m.entry_name().unwrap();
    let whole = full.run(&m, entry, &[ids(&toks)]).unwrap();
    let whole = whole[0].data();
    let (d_cache, d_bf16) = (max_diff(&cached, whole), max_diff(whole, gold.data()));
    eprintln!("bf16: max |cached - whole| {d_cache:.3e}; max |whole - f32 golden| {d_bf16:.3e}");
    assert!(d_bf16 > 1e-2, "the program computes in bf16");
    assert!(d_cache <= d_bf16, "{d_cache} > {d_bf16}");
}
