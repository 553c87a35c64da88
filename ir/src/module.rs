//! Modules: named functions plus a shared constant pool.

use crate::constant::Constant;
use crate::graph::Graph;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The name of the function that is run by default.
pub const ENTRY: &str = "main";

/// A compilation unit: functions (graphs) by name and constants by name.
///
/// Cloning a module is cheap in weight bytes: constants are shared through `Arc`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Module {
    /// Functions by name; `main` is the entry.
    pub functions: IndexMap<String, Graph>,
    /// Constants by name, shared by reference.
    pub constants: IndexMap<String, Arc<Constant>>,
    /// Facts about the symbols of dims (`S % 4 == 0`, `B >= 1`); symbols not listed are only `>= 0`.
    #[serde(default, skip_serializing_if = "crate::dim::Facts::is_empty")]
    pub facts: crate::dim::Facts,
}

impl Module {
    /// An empty module.
    pub fn new() -> Self {
        Self::default()
    }

    /// The entry function name: `main` if present, else the first function.
    pub fn entry_name(&self) -> Option<&str> {
        if self.functions.contains_key(ENTRY) {
            Some(ENTRY)
        } else {
            self.functions.keys().next().map(|s| s.as_str())
        }
    }

    /// The entry function.
    pub fn entry(&self) -> Option<&Graph> {
        self.entry_name().and_then(|n| self.functions.get(n))
    }

    /// Add (or replace) a constant; returns its name.
    pub fn add_constant(&mut self, name: impl Into<String>, c: Constant) -> String {
        let name = name.into();
        self.constants.insert(name.clone(), Arc::new(c));
        name
    }

    /// A constant name not used yet, starting from `base`.
    pub fn fresh_constant_name(&self, base: &str) -> String {
        if !self.constants.contains_key(base) {
            return base.to_string();
        }
        (1..)
            .map(|i| format!("{base}.{i}"))
            .find(|n| !self.constants.contains_key(n))
            .expect("an unused name")
    }

    /// Total live node count over all functions.
    pub fn node_count(&self) -> usize {
        self.functions.values().map(|g| g.len()).sum()
    }

    /// Node counts per op name over all functions, sorted by name.
    pub fn op_histogram(&self) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for g in self.functions.values() {
            for (_, n) in g.nodes() {
                *m.entry(n.op.name()).or_insert(0) += 1;
            }
        }
        m
    }

    /// Number of constant parameters (elements) and their storage bytes.
    pub fn parameter_stats(&self) -> (u64, u64) {
        let mut elems = 0;
        let mut bytes = 0;
        for c in self.constants.values() {
            elems += c.ty.num_elements().unwrap_or(0);
            bytes += c.storage_bytes();
        }
        (elems, bytes)
    }

    /// Drop constants no `constant` node refers to.
    pub fn remove_unused_constants(&mut self) -> usize {
        let mut used = std::collections::HashSet::new();
        for g in self.functions.values() {
            for (_, n) in g.nodes() {
                if let crate::ops::Op::Constant(c) = &n.op {
                    used.insert(c.name.clone());
                }
            }
        }
        let before = self.constants.len();
        self.constants.retain(|k, _| used.contains(k));
        before - self.constants.len()
    }
}
