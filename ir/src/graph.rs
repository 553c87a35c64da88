//! The dataflow graph: an arena of nodes with stable ids and ordered operands.
//!
//! Nodes live in `Vec<Option<Node>>`; removing a node leaves a hole, so a held [`NodeId`] never
//! silently changes meaning (petgraph's plain `Graph::remove_node` would move the last node into
//! the hole). Operands are stored in the node, in order — the one source of truth for operand
//! order. Algorithms that want a graph library get a petgraph view built on demand
//! ([`Graph::petgraph_view`]).

use crate::error::IrError;
use crate::module::Module;
use crate::ops::{InferCx, Op};
use crate::types::TensorType;
use petgraph::graph::{DiGraph, NodeIndex};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;

/// Stable id of a node within its graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub u32);

impl NodeId {
    /// Arena index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

/// One result of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ValueId {
    /// The defining node.
    pub node: NodeId,
    /// Which of its results.
    pub slot: u32,
}

impl ValueId {
    /// Result `slot` of `node`.
    pub fn new(node: NodeId, slot: u32) -> Self {
        ValueId { node, slot }
    }
}

impl From<NodeId> for ValueId {
    fn from(n: NodeId) -> Self {
        ValueId { node: n, slot: 0 }
    }
}

impl fmt::Display for ValueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}#{}", self.node.0, self.slot)
    }
}

/// A node: an op applied to ordered operands, producing typed results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// The op and its attributes.
    pub op: Op,
    /// Operands, in order.
    pub operands: Vec<ValueId>,
    /// Result types.
    pub results: Vec<TensorType>,
    /// Optional name from the source model (kept by importers, shown in errors and dumps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A named output of a graph.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GraphOutput {
    /// Output name.
    pub name: String,
    /// The value returned.
    pub value: ValueId,
}

/// A function body: a DAG of nodes with inputs (nodes whose op is `input`) and named outputs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    nodes: Vec<Option<Node>>,
    /// Input nodes, in parameter order.
    pub inputs: Vec<NodeId>,
    /// Named outputs, in order.
    pub outputs: Vec<GraphOutput>,
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a node with given result types; returns its id.
    pub fn add_node(&mut self, node: Node) -> NodeId {
        let id = NodeId(self.nodes.len() as u32);
        self.nodes.push(Some(node));
        id
    }

    /// Put a node at a given id (used by the parser to keep ids stable). Fails if taken.
    pub fn insert_node_at(&mut self, id: NodeId, node: Node) -> Result<(), String> {
        let i = id.index();
        if i >= self.nodes.len() {
            self.nodes.resize_with(i + 1, || None);
        }
        if self.nodes[i].is_some() {
            return Err(format!("{id} is defined twice"));
        }
        self.nodes[i] = Some(node);
        Ok(())
    }

    /// Add a graph input of a given type; returns its node id.
    pub fn add_input(&mut self, name: &str, ty: TensorType) -> NodeId {
        let id = self.add_node(Node {
            op: Op::Input(crate::ops::input::Input {
                name: name.to_string(),
            }),
            operands: vec![],
            results: vec![ty],
            name: None,
        });
        self.inputs.push(id);
        id
    }

    /// Add a node whose result types are inferred from its op and operands.
    pub fn add_inferred(
        &mut self,
        module: &Module,
        op: Op,
        operands: Vec<ValueId>,
        name: Option<String>,
    ) -> Result<NodeId, IrError> {
        let mut tys = Vec::with_capacity(operands.len());
        for v in &operands {
            tys.push(self.value_type(*v).cloned().ok_or_else(|| IrError::Type {
                function: "?".into(),
                node: format!("new {} node", op.name()),
                op: op.name().into(),
                message: format!("operand {v} does not exist"),
            })?);
        }
        let results = op
            .infer(&InferCx { module }, &tys)
            .map_err(|e| IrError::Type {
                function: "?".into(),
                node: name
                    .clone()
                    .unwrap_or_else(|| format!("new {} node", op.name())),
                op: op.name().into(),
                message: e.0,
            })?;
        Ok(self.add_node(Node {
            op,
            operands,
            results,
            name,
        }))
    }

    /// Add an output.
    pub fn add_output(&mut self, name: &str, value: ValueId) {
        self.outputs.push(GraphOutput {
            name: name.to_string(),
            value,
        });
    }

    /// The node with this id, if live.
    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(id.index()).and_then(|n| n.as_ref())
    }

    /// Mutable access to a live node.
    pub fn node_mut(&mut self, id: NodeId) -> Option<&mut Node> {
        self.nodes.get_mut(id.index()).and_then(|n| n.as_mut())
    }

    /// Remove a node (its id becomes a hole). Returns it.
    pub fn remove_node(&mut self, id: NodeId) -> Option<Node> {
        self.nodes.get_mut(id.index()).and_then(|n| n.take())
    }

    /// Type of a value, if it exists.
    pub fn value_type(&self, v: ValueId) -> Option<&TensorType> {
        self.node(v.node)
            .and_then(|n| n.results.get(v.slot as usize))
    }

    /// Ids of live nodes in arena order.
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.is_some())
            .map(|(i, _)| NodeId(i as u32))
    }

    /// Live nodes with ids in arena order.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, &Node)> + '_ {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().map(|n| (NodeId(i as u32), n)))
    }

    /// Number of live nodes.
    pub fn len(&self) -> usize {
        self.nodes.iter().filter(|n| n.is_some()).count()
    }

    /// Whether there are no live nodes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Size of the arena (one past the largest id ever used).
    pub fn arena_len(&self) -> usize {
        self.nodes.len()
    }

    /// Replace every use of `old` (operands and outputs) by `new`. Returns the number replaced.
    pub fn replace_all_uses(&mut self, old: ValueId, new: ValueId) -> usize {
        let mut n = 0;
        for node in self.nodes.iter_mut().flatten() {
            for o in node.operands.iter_mut() {
                if *o == old {
                    *o = new;
                    n += 1;
                }
            }
        }
        for out in self.outputs.iter_mut() {
            if out.value == old {
                out.value = new;
                n += 1;
            }
        }
        n
    }

    /// For every live node, the nodes that use any of its results (with repetition per use).
    pub fn users(&self) -> HashMap<NodeId, Vec<NodeId>> {
        let mut m: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
        for (id, n) in self.nodes() {
            for o in &n.operands {
                m.entry(o.node).or_default().push(id);
            }
        }
        m
    }

    /// Number of uses of each value (operands and outputs).
    pub fn use_counts(&self) -> HashMap<ValueId, usize> {
        let mut m: HashMap<ValueId, usize> = HashMap::new();
        for (_, n) in self.nodes() {
            for o in &n.operands {
                *m.entry(*o).or_default() += 1;
            }
        }
        for o in &self.outputs {
            *m.entry(o.value).or_default() += 1;
        }
        m
    }

    /// Live nodes in a topological order; among ready nodes the smallest id goes first, so the
    /// order is deterministic and equals arena order whenever arena order is topological.
    /// Fails with a node on a cycle (or using a missing operand).
    pub fn topo_order(&self) -> Result<Vec<NodeId>, NodeId> {
        let mut indeg: HashMap<NodeId, usize> = HashMap::new();
        let mut users: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
        for (id, n) in self.nodes() {
            let mut d = 0;
            for o in &n.operands {
                if self.node(o.node).is_none() {
                    return Err(id);
                }
                users.entry(o.node).or_default().push(id);
                d += 1;
            }
            indeg.insert(id, d);
        }
        let mut heap: BinaryHeap<Reverse<NodeId>> = indeg
            .iter()
            .filter(|(_, &d)| d == 0)
            .map(|(&id, _)| Reverse(id))
            .collect();
        let mut order = Vec::with_capacity(indeg.len());
        while let Some(Reverse(id)) = heap.pop() {
            order.push(id);
            if let Some(us) = users.get(&id) {
                for u in us {
                    let d = indeg.get_mut(u).expect("user is live");
                    *d -= 1;
                    if *d == 0 {
                        heap.push(Reverse(*u));
                    }
                }
            }
        }
        if order.len() != indeg.len() {
            let stuck = indeg
                .iter()
                .filter(|(_, &d)| d > 0)
                .map(|(&id, _)| id)
                .min()
                .expect("a stuck node");
            return Err(stuck);
        }
        Ok(order)
    }

    /// A petgraph view (one petgraph node per live node, one edge per operand, weighted by the
    /// operand index) for graph algorithms: dominators, SCCs, reachability.
    pub fn petgraph_view(&self) -> (DiGraph<NodeId, u32>, HashMap<NodeId, NodeIndex>) {
        let mut g = DiGraph::new();
        let mut idx = HashMap::new();
        for id in self.node_ids() {
            idx.insert(id, g.add_node(id));
        }
        for (id, n) in self.nodes() {
            for (k, o) in n.operands.iter().enumerate() {
                if let Some(&src) = idx.get(&o.node) {
                    g.add_edge(src, idx[&id], k as u32);
                }
            }
        }
        (g, idx)
    }

    /// A short description of a node for error messages: `%12 "name" (op)`.
    pub fn describe(&self, id: NodeId) -> String {
        match self.node(id) {
            Some(n) => match &n.name {
                Some(name) => format!("{id} \"{name}\""),
                None => format!("{id}"),
            },
            None => format!("{id} (removed)"),
        }
    }

    /// Renumber live nodes densely in topological order (drops holes). Returns the new graph.
    pub fn compacted(&self) -> Result<Graph, NodeId> {
        let order = self.topo_order()?;
        let map: HashMap<NodeId, NodeId> = order
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, NodeId(i as u32)))
            .collect();
        let mv = |v: ValueId| ValueId::new(map[&v.node], v.slot);
        let mut g = Graph::new();
        for id in &order {
            let mut n = self.node(*id).expect("live").clone();
            n.operands = n.operands.into_iter().map(mv).collect();
            g.add_node(n);
        }
        g.inputs = self.inputs.iter().map(|i| map[i]).collect();
        g.outputs = self
            .outputs
            .iter()
            .map(|o| GraphOutput {
                name: o.name.clone(),
                value: mv(o.value),
            })
            .collect();
        Ok(g)
    }

    /// Input types in parameter order.
    pub fn input_types(&self) -> Vec<TensorType> {
        self.inputs
            .iter()
            .filter_map(|i| self.node(*i).and_then(|n| n.results.first().cloned()))
            .collect()
    }

    /// Input names in parameter order.
    pub fn input_names(&self) -> Vec<String> {
        self.inputs
            .iter()
            .filter_map(|i| match self.node(*i).map(|n| &n.op) {
                Some(Op::Input(inp)) => Some(inp.name.clone()),
                _ => None,
            })
            .collect()
    }

    /// Output types in order (None for a dangling output).
    pub fn output_types(&self) -> Vec<Option<TensorType>> {
        self.outputs
            .iter()
            .map(|o| self.value_type(o.value).cloned())
            .collect()
    }
}
