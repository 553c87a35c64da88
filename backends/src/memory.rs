//! Liveness-based memory planning.
//!
//! Every intermediate value of a function gets an offset in one arena. Two values may share
//! bytes only if their lifetimes (from the step that defines a value to the last step that reads
//! it) do not overlap. Placement is greedy by size (largest first, lowest offset that fits among
//! the already placed values that are alive at the same time), the strategy TFLite's arena
//! planner uses; it is simple, deterministic and usually within a few percent of optimal for
//! transformer-shaped graphs. Constants are not planned (they live in constant storage); graph
//! inputs live from the start and outputs until the end.

use fuselage_ir::sample::SymbolSizes;
use fuselage_ir::{Graph, NodeId, Op, ValueId};
use std::collections::HashMap;

/// One planned buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Buffer {
    /// The value stored.
    pub value: ValueId,
    /// Byte offset in the arena.
    pub offset: u64,
    /// Size in bytes.
    pub bytes: u64,
    /// First step (topological position) at which the value exists.
    pub first: usize,
    /// Last step at which it is read (inclusive).
    pub last: usize,
}

/// A memory plan for one function at given symbol sizes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Buffers, one per planned value.
    pub buffers: Vec<Buffer>,
    /// Arena size: the bytes the plan needs.
    pub planned_bytes: u64,
    /// Sum of every value's size: what allocating each value separately would need.
    pub naive_bytes: u64,
}

/// Errors of planning.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The graph has a cycle.
    #[error("graph has a cycle at {0}")]
    Cycle(NodeId),
    /// A value's size overflows u64.
    #[error("size of {0} overflows")]
    Overflow(ValueId),
}

/// Plan the intermediate buffers of `graph` with symbolic dims sized by `sizes`.
pub fn plan(graph: &Graph, sizes: &SymbolSizes) -> Result<MemoryPlan, PlanError> {
    let order = graph.topo_order().map_err(PlanError::Cycle)?;
    let pos: HashMap<NodeId, usize> = order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let end = order.len();
    let mut last: HashMap<ValueId, usize> = HashMap::new();
    for (id, n) in graph.nodes() {
        for o in &n.operands {
            let p = pos[&id];
            let e = last.entry(*o).or_insert(p);
            *e = (*e).max(p);
        }
    }
    for o in &graph.outputs {
        last.insert(o.value, end);
    }
    let mut bufs = vec![];
    let mut naive: u64 = 0;
    let all_types: Vec<&fuselage_ir::TensorType> =
        graph.nodes().flat_map(|(_, n)| n.results.iter()).collect();
    let bindings = sizes.bindings_for(all_types, &fuselage_ir::Facts::default());
    for &id in &order {
        let n = graph.node(id).expect("live node in topo order");
        if matches!(n.op, Op::Constant(_)) {
            continue;
        }
        let first = if matches!(n.op, Op::Input(_)) {
            0
        } else {
            pos[&id]
        };
        for (slot, ty) in n.results.iter().enumerate() {
            let v = ValueId::new(id, slot as u32);
            let elems = ty
                .resolve(&bindings)
                .ok()
                .and_then(|s| s.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64)));
            let bytes = elems
                .and_then(|e| e.checked_mul(ty.dtype.bits() as u64))
                .map(|b| b.div_ceil(8))
                .ok_or(PlanError::Overflow(v))?;
            naive = naive.checked_add(bytes).ok_or(PlanError::Overflow(v))?;
            bufs.push(Buffer {
                value: v,
                offset: 0,
                bytes,
                first,
                last: last.get(&v).copied().unwrap_or(first),
            });
        }
    }
    // Greedy by size: largest first; ties by definition order for determinism.
    let mut idx: Vec<usize> = (0..bufs.len()).collect();
    idx.sort_by(|&a, &b| {
        bufs[b]
            .bytes
            .cmp(&bufs[a].bytes)
            .then(bufs[a].first.cmp(&bufs[b].first))
    });
    let mut placed: Vec<usize> = vec![];
    let mut arena = 0u64;
    for i in idx {
        let (f, l, sz) = (bufs[i].first, bufs[i].last, bufs[i].bytes);
        let mut live: Vec<(u64, u64)> = placed
            .iter()
            .filter(|&&j| bufs[j].first <= l && f <= bufs[j].last)
            .map(|&j| (bufs[j].offset, bufs[j].offset + bufs[j].bytes))
            .collect();
        live.sort_unstable();
        let mut off = 0u64;
        for (s, e) in live {
            if off + sz <= s {
                break;
            }
            off = off.max(e);
        }
        bufs[i].offset = off;
        arena = arena.max(off + sz);
        placed.push(i);
    }
    Ok(MemoryPlan {
        buffers: bufs,
        planned_bytes: arena,
        naive_bytes: naive,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fuselage_ir::ops::add::Add;
    use fuselage_ir::{DType, Dim, Module, TensorType};

    fn chain(n: usize, width: u64) -> Graph {
        let m = Module::new();
        let mut g = Graph::new();
        let x = g.add_input(
            "x",
            TensorType::new(DType::F32, ["B".into(), Dim::from(width)]),
        );
        let mut v: ValueId = x.into();
        for _ in 0..n {
            v = g
                .add_inferred(&m, Op::Add(Add {}), vec![v, v], None)
                .unwrap()
                .into();
        }
        g.add_output("y", v);
        g
    }

    fn check_no_overlap(p: &MemoryPlan) {
        for a in &p.buffers {
            for b in &p.buffers {
                if a.value == b.value {
                    continue;
                }
                let time = a.first <= b.last && b.first <= a.last;
                let space = a.offset < b.offset + b.bytes && b.offset < a.offset + a.bytes;
                assert!(!(time && space), "{a:?} overlaps {b:?}");
            }
            assert!(a.offset + a.bytes <= p.planned_bytes);
        }
    }

    #[test]
    fn a_chain_needs_two_buffers() {
        let g = chain(10, 16);
        let p = plan(&g, &SymbolSizes::parse("B=2").unwrap()).unwrap();
        let one = 2 * 16 * 4;
        assert_eq!(p.naive_bytes, 11 * one);
        assert_eq!(p.planned_bytes, 2 * one);
        check_no_overlap(&p);
    }

    #[test]
    fn a_value_used_late_keeps_its_bytes() {
        let m = Module::new();
        let mut g = chain(0, 8);
        let x: ValueId = g.inputs[0].into();
        let mut v = x;
        for _ in 0..5 {
            v = g
                .add_inferred(&m, Op::Add(Add {}), vec![v, v], None)
                .unwrap()
                .into();
        }
        let y = g
            .add_inferred(&m, Op::Add(Add {}), vec![v, x], None)
            .unwrap();
        g.outputs.clear();
        g.add_output("y", y.into());
        let p = plan(&g, &SymbolSizes::parse("B=1").unwrap()).unwrap();
        check_no_overlap(&p);
        assert_eq!(p.planned_bytes, 3 * 8 * 4);
    }
}
