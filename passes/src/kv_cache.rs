//! `kv-cache`: derive an incremental-decoding function from a causal decoder.
//!
//! The source function (the entry by default) runs a whole sequence: `input_ids[B,S]` →
//! `logits[B,S,V]`, with self-attention ops whose mask is causal and positions computed as an
//! `iota` along the sequence. The derived function (`decode` by default) takes, besides the
//! source's parameters, the keys and values of `P` earlier positions for each attention op,
//! `past_key.{i}` / `past_value.{i}` of type `[B,Hk,P,D]`, and returns, besides the source's
//! outputs, `present_key.{i}` / `present_value.{i}` = `concat([past, new], axis 2)` of type
//! `[B,Hk,P+S,D]`:
//! - each causal self-attention reads the concatenated keys and values (its causal mask is
//!   aligned to the end, so query `j` of the new tokens sees past and new keys up to `P + j`);
//! - each `iota` along the sequence (the positions rope and learned embeddings read) is shifted
//!   by `P`.
//!
//! With `P = 0` the function is a prefill that also returns the cache; with `S = 1` it is one
//! decode step. A graph this rewrite cannot make exact is refused with the reason: attention
//! with additive biases over the sequence (a mask input would have to cover `P + S`), a
//! non-causal attention over the sequence (an encoder), other parameters whose shape mentions
//! the sequence, or ops that mix positions along the sequence other than attention (a
//! reduction, cumulative sum or pooling over it).
//!
//! The source function is left as it is. The pass is checked by differential tests: the
//! decode function run over a prompt in pieces gives the source's logits.

use crate::error::PassError;
use crate::pass::{Changed, Pass, PassCx, PassKind};
use fuselage_ir::ops::add::Add;
use fuselage_ir::ops::attention::AttnMask;
use fuselage_ir::ops::concat::Concat;
use fuselage_ir::ops::dims::Dims;
use fuselage_ir::{Dim, Graph, Module, NodeId, Op, TensorType, ValueId};
use std::collections::HashSet;

crate::pass_options! {
    /// Options of `kv-cache`.
    pub struct KvCacheOptions {
        /// The function to derive from (empty: the module's entry function).
        function: String = String::new(),
        /// The name of the derived function.
        name: String = "decode".into(),
        /// The symbol of the number of cached positions.
        past_symbol: String = "P".into(),
    }
}

/// The `kv-cache` pass.
#[derive(Debug, Clone)]
pub struct KvCache {
    options: KvCacheOptions,
}

impl KvCache {
    /// Create the pass.
    pub fn new(options: KvCacheOptions) -> Result<Self, PassError> {
        if options.name.is_empty() || options.past_symbol.is_empty() {
            return Err(PassError::Options {
                pass: "kv-cache".into(),
                message: "`name` and `past-symbol` must not be empty".into(),
            });
        }
        Ok(KvCache { options })
    }
}

/// Names of the state a derived function reads and writes, for layer `i`.
pub fn cache_names(i: usize) -> [String; 4] {
    [
        format!("past_key.{i}"),
        format!("past_value.{i}"),
        format!("present_key.{i}"),
        format!("present_value.{i}"),
    ]
}

/// What [`derive()`] made.
#[derive(Clone, Debug, PartialEq)]
pub struct KvCacheInfo {
    /// Attention ops given a cache (one pair of state tensors each).
    pub layers: usize,
    /// Position `iota`s shifted by the past length.
    pub positions: usize,
    /// The sequence dim of the source (`S`).
    pub sequence: Dim,
    /// Per layer, the type of `past_key.{i}` (the value's is alike, with its own head dim).
    pub past_types: Vec<[TensorType; 2]>,
}

/// Derive the KV-cache function `name` from `function` of `m` (see the module docs) and add it
/// to `m`. Errors name the node that makes the rewrite inexact.
pub fn derive(
    m: &mut Module,
    function: &str,
    name: &str,
    past: &str,
) -> Result<KvCacheInfo, String> {
    let src = m
        .functions
        .get(function)
        .ok_or_else(|| format!("no function `{function}`"))?;
    if m.functions.contains_key(name) {
        return Err(format!("the module already has a function `{name}`"));
    }
    let mut g: Graph = src.clone();
    let order = g
        .topo_order()
        .map_err(|id| format!("cycle or dangling operand at {}", g.describe(id)))?;
    // The symbol of the past length must be new to the function.
    let used: HashSet<String> = g
        .nodes()
        .flat_map(|(_, n)| n.results.iter().flat_map(|t| t.shape.iter()))
        .flat_map(|d| d.symbols())
        .collect();
    if used.contains(past) {
        return Err(format!(
            "the symbol `{past}` is already used by the function; choose another `past-symbol`"
        ));
    }
    // The attention ops and the sequence dim.
    let mut attns = vec![];
    let mut seq: Option<Dim> = None;
    for &id in &order {
        let n = g.node(id).ok_or("dangling node")?;
        let Op::Attention(a) = &n.op else { continue };
        let ty = |v: ValueId| {
            g.value_type(v)
                .cloned()
                .ok_or_else(|| format!("{}: operand without a type", g.describe(id)))
        };
        let (q, k) = (ty(n.operands[0])?, ty(n.operands[1])?);
        let (sq, sk) = (q.shape[2].clone(), k.shape[2].clone());
        if sq != sk {
            // Cross-attention over another sequence: nothing to cache along ours.
            continue;
        }
        if a.mask != AttnMask::Causal {
            return Err(format!(
                "{} attends over the sequence without a causal mask (an encoder): a KV cache \
                 would change its result",
                g.describe(id)
            ));
        }
        if n.operands.len() > 3 {
            return Err(format!(
                "{} has additive biases over the sequence; a cache would need them over `{past} + \
                 {sq}` positions",
                g.describe(id)
            ));
        }
        match &seq {
            None => seq = Some(sq),
            Some(s) if *s == sq => {}
            Some(s) => {
                return Err(format!(
                    "{} attends over `{sq}`, another attention over `{s}`",
                    g.describe(id)
                ))
            }
        }
        attns.push(id);
    }
    let seq = seq.ok_or_else(|| {
        format!("function `{function}` has no causal self-attention: not a decoder")
    })?;
    let mentions_seq = |t: &TensorType| {
        t.shape
            .iter()
            .any(|d| d.symbols().iter().any(|s| seq.symbols().contains(s)))
    };
    // Parameters over the sequence may only be token ids, read as the indices of gathers (an
    // attention mask input would have to grow with the cache).
    let users = g.users();
    for &inp in &g.inputs {
        let n = g.node(inp).ok_or("dangling input")?;
        let t = &n.results[0];
        if !mentions_seq(t) {
            continue;
        }
        let value = ValueId::new(inp, 0);
        let only_indices = users.get(&inp).into_iter().flatten().all(|&u| {
            g.node(u).is_some_and(|un| {
                matches!(un.op, Op::Gather(_)) && un.operands.first() != Some(&value)
            })
        });
        if !only_indices || g.outputs.iter().any(|o| o.value == value) {
            return Err(format!(
                "parameter {} ({t}) runs over the sequence and is not only token ids read by \
                 gathers (an attention mask would have to cover the cached positions too)",
                g.describe(inp)
            ));
        }
    }
    // Ops that mix positions along the sequence, other than attention, make the cache inexact.
    for &id in &order {
        let n = g.node(id).ok_or("dangling node")?;
        let mixes = match &n.op {
            Op::Reduce(r) => n
                .operands
                .first()
                .and_then(|&v| g.value_type(v))
                .is_some_and(|t| {
                    r.axes.iter().any(|&ax| {
                        let rank = t.rank() as i64;
                        let a = if ax < 0 { ax + rank } else { ax };
                        t.shape.get(a as usize).is_some_and(|d| *d == seq)
                    })
                }),
            Op::Cumulative(c) => n
                .operands
                .first()
                .and_then(|&v| g.value_type(v))
                .is_some_and(|t| {
                    let rank = t.rank() as i64;
                    let a = if c.axis < 0 { c.axis + rank } else { c.axis };
                    t.shape.get(a as usize).is_some_and(|d| *d == seq)
                }),
            _ => false,
        };
        if mixes {
            return Err(format!(
                "{} reduces over the sequence dim `{seq}`: a KV cache would change its result",
                g.describe(id)
            ));
        }
    }
    // The past length as an i64 [1] value (for positions).
    let p = Dim::sym(past);
    let mut past_len: Option<ValueId> = None;
    let mut info = KvCacheInfo {
        layers: 0,
        positions: 0,
        sequence: seq.clone(),
        past_types: vec![],
    };
    // Shift every iota along the sequence.
    for &id in &order {
        let n = g.node(id).ok_or("dangling node")?.clone();
        let Op::Iota(io) = &n.op else { continue };
        let rank = io.shape.len() as i64;
        let axis = if io.axis < 0 { io.axis + rank } else { io.axis };
        if io.shape.get(axis as usize) != Some(&seq) {
            continue;
        }
        if !io.dtype.is_int() {
            return Err(format!(
                "{} counts positions in {}; the cache shifts integer positions only",
                g.describe(id),
                io.dtype
            ));
        }
        let dims = match past_len {
            Some(v) => v,
            None => {
                let op = Op::Dims(Dims::vector(vec![p.clone()], io.dtype));
                let v: ValueId = g
                    .add_inferred(m, op, vec![], Some("kv_cache.past_length".into()))
                    .map_err(|e| e.to_string())?
                    .into();
                past_len = Some(v);
                v
            }
        };
        let old = ValueId::new(id, 0);
        let shifted = g
            .add_inferred(m, Op::Add(Add {}), vec![old, dims], None)
            .map_err(|e| e.to_string())?;
        replace_uses_except(&mut g, old, shifted.into(), shifted);
        info.positions += 1;
    }
    // Give each attention its cache.
    for (i, &id) in attns.iter().enumerate() {
        let n = g.node(id).ok_or("dangling node")?.clone();
        let [past_k, past_v, present_k, present_v] = cache_names(i);
        let mut types = vec![];
        let mut full = vec![];
        for (slot, pname) in [(1usize, &past_k), (2usize, &past_v)] {
            let new = n.operands[slot];
            let t = g.value_type(new).cloned().ok_or("untyped operand")?;
            let mut pt = t.clone();
            pt.shape[2] = p.clone();
            let inp = g.add_input(pname, pt.clone());
            let cat = g
                .add_inferred(
                    m,
                    Op::Concat(Concat { axis: 2 }),
                    vec![inp.into(), new],
                    Some(format!("kv_cache.{pname}.concat")),
                )
                .map_err(|e| format!("{}: {e}", g.describe(id)))?;
            types.push(pt);
            full.push(ValueId::from(cat));
        }
        if let Some(node) = g.node_mut(id) {
            node.operands[1] = full[0];
            node.operands[2] = full[1];
        }
        g.add_output(&present_k, full[0]);
        g.add_output(&present_v, full[1]);
        info.past_types.push([types[0].clone(), types[1].clone()]);
        info.layers += 1;
    }
    m.functions.insert(name.to_string(), g);
    fuselage_ir::verify::verify_function(m, name).map_err(|e| {
        m.functions.shift_remove(name);
        format!("the derived function does not verify: {e}")
    })?;
    Ok(info)
}

/// Replace the uses of `old` by `new` everywhere but in node `keep` (which computes `new` from
/// `old`).
fn replace_uses_except(g: &mut Graph, old: ValueId, new: ValueId, keep: NodeId) {
    let ids: Vec<NodeId> = g.node_ids().filter(|&i| i != keep).collect();
    for i in ids {
        if let Some(n) = g.node_mut(i) {
            for o in n.operands.iter_mut() {
                if *o == old {
                    *o = new;
                }
            }
        }
    }
    for out in g.outputs.iter_mut() {
        if out.value == old {
            out.value = new;
        }
    }
}

impl Pass for KvCache {
    fn name(&self) -> &'static str {
        "kv-cache"
    }

    fn kind(&self) -> PassKind {
        PassKind::Exact
    }

    fn run(&mut self, m: &mut Module, cx: &mut PassCx) -> Result<Changed, PassError> {
        let o = &self.options;
        if m.functions.contains_key(&o.name) {
            // Already derived (a pipeline run twice, or a fixpoint).
            return Ok(false.into());
        }
        let function = if o.function.is_empty() {
            m.entry_name()
                .map(str::to_string)
                .ok_or_else(|| PassError::Failed {
                    pass: "kv-cache".into(),
                    message: "the module has no functions".into(),
                })?
        } else {
            o.function.clone()
        };
        let info =
            derive(m, &function, &o.name, &o.past_symbol).map_err(|message| PassError::Failed {
                pass: "kv-cache".into(),
                message,
            })?;
        cx.bump("cached-attentions", info.layers as u64);
        cx.bump("shifted-positions", info.positions as u64);
        Ok(true.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fuselage_ir::{DType, Executor, Reference, Tensor};

    /// A two-layer causal decoder over `ids[B,S]`: embedding gather, rope at iota positions,
    /// causal attention with GQA (2 query heads, 1 key/value head), tied logits.
    fn decoder_with(mask: AttnMask) -> Module {
        use fuselage_ir::ops::{
            attention::Attention,
            gather::Gather,
            iota::Iota,
            matmul::MatMul,
            reshape::Reshape,
            rope::{Rope, RopeStyle},
            transpose::Transpose,
        };
        use fuselage_ir::{Constant, Init};
        let mut m = Module::new();
        for (name, shape, seed) in [
            ("emb", vec![11usize, 8], 1u64),
            ("wq", vec![8, 8], 2),
            ("wk", vec![8, 4], 3),
            ("wv", vec![8, 4], 4),
        ] {
            m.add_constant(
                name,
                Constant::seeded(
                    TensorType::fixed(DType::F32, &shape),
                    seed,
                    Init::Normal {
                        mean: 0.0,
                        std: 0.5,
                    },
                ),
            );
        }
        let mut g = Graph::new();
        let (b, s) = (Dim::sym("B"), Dim::sym("S"));
        let ids: ValueId = g
            .add_input("ids", TensorType::new(DType::I64, [b.clone(), s.clone()]))
            .into();
        let op = |g: &mut Graph, op: Op, xs: Vec<ValueId>| -> ValueId {
            g.add_inferred(&m, op, xs, None).unwrap().into()
        };
        let c = |g: &mut Graph, name: &str| -> ValueId {
            let op = Op::Constant(fuselage_ir::ops::constant::Constant { name: name.into() });
            g.add_inferred(&m, op, vec![], None).unwrap().into()
        };
        let (emb, wq, wk, wv) = (
            c(&mut g, "emb"),
            c(&mut g, "wq"),
            c(&mut g, "wk"),
            c(&mut g, "wv"),
        );
        let x = op(&mut g, Op::Gather(Gather { axis: 0 }), vec![emb, ids]);
        let pos = op(
            &mut g,
            Op::Iota(Iota {
                shape: vec![s.clone()],
                axis: 0,
                dtype: DType::I64,
            }),
            vec![],
        );
        let heads = |g: &mut Graph, t: ValueId, h: u64, rope: bool| -> ValueId {
            let shape = vec![b.clone(), s.clone(), Dim::from(h), Dim::from(4u64)];
            let t = g
                .add_inferred(&m, Op::Reshape(Reshape { shape }), vec![t], None)
                .unwrap();
            let t = g
                .add_inferred(
                    &m,
                    Op::Transpose(Transpose {
                        perm: vec![0, 2, 1, 3],
                    }),
                    vec![t.into()],
                    None,
                )
                .unwrap();
            if !rope {
                return t.into();
            }
            let r = Rope {
                style: RopeStyle::Half,
                theta: 10000.0,
                rotary_dim: None,
            };
            g.add_inferred(&m, Op::Rope(r), vec![t.into(), pos], None)
                .unwrap()
                .into()
        };
        let merge = |g: &mut Graph, a: ValueId| -> ValueId {
            let t = g
                .add_inferred(
                    &m,
                    Op::Transpose(Transpose {
                        perm: vec![0, 2, 1, 3],
                    }),
                    vec![a],
                    None,
                )
                .unwrap();
            let shape = vec![b.clone(), s.clone(), Dim::from(8u64)];
            g.add_inferred(&m, Op::Reshape(Reshape { shape }), vec![t.into()], None)
                .unwrap()
                .into()
        };
        let attn = Op::Attention(Attention { mask, scale: None });
        let mut h = x;
        for _ in 0..2 {
            let q = op(&mut g, Op::MatMul(MatMul {}), vec![h, wq]);
            let k = op(&mut g, Op::MatMul(MatMul {}), vec![h, wk]);
            let v = op(&mut g, Op::MatMul(MatMul {}), vec![h, wv]);
            let (q, k, v) = (
                heads(&mut g, q, 2, true),
                heads(&mut g, k, 1, true),
                heads(&mut g, v, 1, false),
            );
            let a = op(&mut g, attn.clone(), vec![q, k, v]);
            let a = merge(&mut g, a);
            h = op(&mut g, Op::Add(Add {}), vec![h, a]);
        }
        let et = op(
            &mut g,
            Op::Transpose(Transpose { perm: vec![1, 0] }),
            vec![emb],
        );
        let logits = op(&mut g, Op::MatMul(MatMul {}), vec![h, et]);
        g.add_output("logits", logits);
        m.functions.insert("main".into(), g);
        fuselage_ir::verify::verify(&m).unwrap();
        m
    }

    fn decoder() -> Module {
        decoder_with(AttnMask::Causal)
    }

    fn ids(v: &[i64]) -> Tensor {
        Tensor::new(
            DType::I64,
            vec![1, v.len()],
            v.iter().map(|&i| i as f64).collect(),
        )
        .unwrap()
    }

    #[test]
    fn decode_in_pieces_matches_the_whole_sequence() {
        let mut m = decoder();
        let info = derive(&mut m, "main", "decode", "P").unwrap();
        assert_eq!((info.layers, info.positions), (2, 1));
        let tokens = [3i64, 1, 4, 1, 5, 9, 2];
        let whole = Reference
            .run(&m, "main", &[ids(&tokens)])
            .unwrap()
            .remove(0);
        // Prefill 4 tokens with an empty cache, then one token at a time.
        let mut s = Reference.session(&m);
        for i in 0..info.layers {
            let [pk, pv, _, _] = cache_names(i);
            s.set_state(&pk, &Tensor::zeros(DType::F32, vec![1, 1, 0, 4]))
                .unwrap();
            s.set_state(&pv, &Tensor::zeros(DType::F32, vec![1, 1, 0, 4]))
                .unwrap();
        }
        let keep: Vec<(String, String)> = (0..info.layers)
            .flat_map(|i| {
                let [pk, pv, k, v] = cache_names(i);
                [(k, pk), (v, pv)]
            })
            .collect();
        let keep: Vec<(&str, &str)> = keep.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let mut rows: Vec<f64> = vec![];
        for piece in [&tokens[..4], &tokens[4..5], &tokens[5..6], &tokens[6..]] {
            let out = s.run("decode", &[("ids", ids(piece))], &keep).unwrap();
            assert_eq!(out[0].0, "logits");
            rows.extend_from_slice(out[0].1.data());
        }
        assert_eq!(rows.len(), whole.numel());
        for (i, (a, b)) in rows.iter().zip(whole.data()).enumerate() {
            assert!((a - b).abs() < 1e-9, "logit {i}: {a} vs {b}");
        }
        assert_eq!(
            s.state("past_key.0").unwrap().unwrap().shape(),
            &[1, 1, 7, 4]
        );
        // Without the shifted positions the pieces would disagree: check that the test can fail.
        let mut wrong = decoder();
        derive(&mut wrong, "main", "decode", "P").unwrap();
        let g = wrong.functions.get_mut("decode").unwrap();
        let dims: Vec<NodeId> = g
            .nodes()
            .filter(|(_, n)| matches!(n.op, Op::Add(_)) && n.results[0].rank() == 1)
            .map(|(id, _)| id)
            .collect();
        for id in dims {
            let iota = g.node(id).unwrap().operands[0];
            g.replace_all_uses(ValueId::new(id, 0), iota);
        }
        let mut s = Reference.session(&wrong);
        for i in 0..2 {
            let [pk, pv, _, _] = cache_names(i);
            s.set_state(&pk, &Tensor::zeros(DType::F32, vec![1, 1, 0, 4]))
                .unwrap();
            s.set_state(&pv, &Tensor::zeros(DType::F32, vec![1, 1, 0, 4]))
                .unwrap();
        }
        s.run("decode", &[("ids", ids(&tokens[..4]))], &keep)
            .unwrap();
        let out = s
            .run("decode", &[("ids", ids(&tokens[4..5]))], &keep)
            .unwrap();
        let v = 11;
        let d = out[0].1.data()[..v]
            .iter()
            .zip(&whole.data()[4 * v..5 * v])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(d > 1e-6, "unshifted positions should change the logits");
    }

    #[test]
    fn encoders_and_taken_names_are_refused() {
        let mut m = decoder();
        let mut enc = decoder_with(AttnMask::None);
        let e = derive(&mut enc, "main", "decode", "P").unwrap_err();
        assert!(e.contains("without a causal mask"), "{e}");
        let e = derive(&mut m, "main", "decode", "S").unwrap_err();
        assert!(e.contains("already used"), "{e}");
        let e = derive(&mut m, "main", "main", "P").unwrap_err();
        assert!(e.contains("already has"), "{e}");
        let e = derive(&mut m, "nope", "decode", "P").unwrap_err();
        assert!(e.contains("no function"), "{e}");
    }

    #[test]
    fn the_pass_adds_the_function_once() {
        let mut m = decoder();
        let mut p = KvCache::new(KvCacheOptions::default()).unwrap();
        let mut cx = PassCx::new(&Reference);
        assert!(bool::from(p.run(&mut m, &mut cx).unwrap()));
        assert_eq!(cx.stats()["cached-attentions"], 2);
        assert!(m.functions.contains_key("decode"));
        assert!(!bool::from(p.run(&mut m, &mut cx).unwrap()));
    }
}
