//! Seeded sample inputs for a function: what `fuselage run` uses when no inputs are given and
//! what the pass manager's numeric check feeds before and after each pass.
//!
//! Float inputs are uniform in [-1, 1). Integer inputs are drawn in `[0, bound)`, where `bound`
//! is the smallest table size of any `gather` that uses the input as indices (so embedding
//! lookups stay in range), and 2 otherwise (0/1 masks and flags). Bool inputs are 0/1.

use crate::dtype::DType;
use crate::error::IrError;
use crate::module::Module;
use crate::ops::Op;
use crate::tensor::Tensor;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

/// Sizes for symbolic dims: explicit bindings, then a default for any other symbol.
#[derive(Clone, Debug)]
pub struct SymbolSizes {
    /// Explicit sizes by symbol name.
    pub bindings: HashMap<String, u64>,
    /// Size of any symbol not in `bindings`.
    pub default: u64,
}

impl Default for SymbolSizes {
    fn default() -> Self {
        SymbolSizes {
            bindings: HashMap::new(),
            default: 4,
        }
    }
}

impl SymbolSizes {
    /// Parse `B=1,S=128` into bindings (default size 4 for other symbols).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut s = SymbolSizes::default();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("expected SYMBOL=SIZE, found `{part}`"))?;
            let v: u64 = v.trim().parse().map_err(|_| {
                format!(
                    "size of `{}` must be a non-negative integer, found `{v}`",
                    k.trim()
                )
            })?;
            s.bindings.insert(k.trim().to_string(), v);
        }
        Ok(s)
    }

    /// The size of a symbol.
    pub fn size(&self, sym: &str) -> u64 {
        self.bindings.get(sym).copied().unwrap_or(self.default)
    }

    /// Bindings of every symbol of the given types: the explicit size, or the default raised to
    /// the symbol's facts (at least its minimum, a multiple of its divisor).
    pub fn bindings_for<'a>(
        &self,
        types: impl IntoIterator<Item = &'a crate::TensorType>,
        facts: &crate::Facts,
    ) -> HashMap<String, u64> {
        let mut b = HashMap::new();
        for ty in types {
            for sym in ty.symbols() {
                let v = match self.bindings.get(&sym) {
                    Some(&v) => v,
                    None => {
                        let f = facts.get(&sym);
                        let mut v = self.default.max(f.lower());
                        if let Some(k) = f.multiple_of.filter(|&k| k > 0) {
                            v = v.div_ceil(k) * k;
                        }
                        v
                    }
                };
                b.insert(sym, v);
            }
        }
        b
    }
}

/// Index bound of each integer input: the smallest fixed table size among `gather`s that read it.
fn index_bounds(module: &Module, function: &str) -> HashMap<usize, u64> {
    let mut out = HashMap::new();
    let Some(g) = module.functions.get(function) else {
        return out;
    };
    for (pos, &inp) in g.inputs.iter().enumerate() {
        for (_, n) in g.nodes() {
            let Op::Gather(ga) = &n.op else { continue };
            if n.operands.len() != 2 || n.operands[1].node != inp {
                continue;
            }
            let Some(t) = g.value_type(n.operands[0]) else {
                continue;
            };
            let r = t.rank() as i64;
            let ax = if ga.axis < 0 { ga.axis + r } else { ga.axis };
            if let Some(sz) = t.shape.get(ax.max(0) as usize).and_then(|d| d.fixed()) {
                let e = out.entry(pos).or_insert(sz);
                *e = (*e).min(sz);
            }
        }
    }
    out
}

/// Seeded inputs for `function`, in parameter order.
pub fn sample_inputs(
    module: &Module,
    function: &str,
    sizes: &SymbolSizes,
    seed: u64,
) -> Result<Vec<Tensor>, IrError> {
    let g = module
        .functions
        .get(function)
        .ok_or_else(|| IrError::Inputs {
            function: function.to_string(),
            message: "no such function".into(),
        })?;
    let bounds = index_bounds(module, function);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = vec![];
    let types = g.input_types();
    let bindings = sizes.bindings_for(&types, &module.facts);
    for (pos, ty) in types.iter().enumerate() {
        let shape: Vec<usize> = ty.resolve(&bindings).map_err(|e| IrError::Inputs {
            function: function.to_string(),
            message: format!("sample input {pos} of type {ty}: {e}"),
        })?;
        let n = crate::tensor::checked_numel(&shape).ok_or_else(|| IrError::Inputs {
            function: function.to_string(),
            message: format!("sample input {pos} of shape {shape:?} overflows"),
        })?;
        let data: Vec<f64> = match ty.dtype {
            DType::Bool => (0..n).map(|_| rng.gen_range(0..2) as f64).collect(),
            d if d.is_int() => {
                let hi = bounds.get(&pos).copied().unwrap_or(2).max(1);
                let (_, dmax) = d.int_range().unwrap_or((0.0, 1.0));
                let hi = (hi as f64).min(dmax + 1.0) as u64;
                (0..n).map(|_| rng.gen_range(0..hi) as f64).collect()
            }
            _ => (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect(),
        };
        out.push(Tensor::new(ty.dtype, shape, data)?);
    }
    Ok(out)
}
