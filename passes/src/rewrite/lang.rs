//! `TensorLang`: the e-graph language of the canonicalizer, and its type analysis.
//!
//! An e-node is one of three things:
//! - [`TensorLang::Op`]: an IR op by name. Child 0 is always the class of its attributes (an
//!   [`TensorLang::Attr`] leaf), children 1.. are its operands in order. Keeping attributes as
//!   a child lets a rule bind them to a variable (`(transpose :?p ?x)`) and lets egg's pattern
//!   machine match literal attributes like any other ground term.
//! - [`TensorLang::Attr`]: an op's attributes as canonical compact JSON (the op's own serde
//!   form, defaults filled in), so equal attributes are one e-class.
//! - [`TensorLang::Leaf`]: an opaque value the language does not look into: a graph input, a
//!   result of a multi-result node, of `call`/`for`, or of any node that cannot be re-inferred.
//!
//! [`TensorAnalysis`] carries per e-class the [`TensorType`] computed by the op's own
//! [`Op::infer`], the attribute JSON of attribute classes, and for constants whose elements are
//! all equal (small dense constants, `full` seeded ones) that value, so rules can test `is-one`.

use egg::{Analysis, DidMerge, EGraph, Id, Language, Symbol};
use fuselage_ir::constant::{Init, Storage};
use fuselage_ir::ops::InferCx;
use fuselage_ir::{Module, Op, TensorType};
use std::collections::HashMap;
use std::fmt;

/// Dense constants up to this many elements are inspected for a uniform value.
const SMALL_CONSTANT: u64 = 256;

/// A node of the canonicalizer's e-graph.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TensorLang {
    /// An IR op by name; child 0 is the attribute class, children 1.. the operands.
    Op(Symbol, Vec<Id>),
    /// Canonical compact JSON of an op's attributes.
    Attr(Symbol),
    /// An opaque value, named after the IR value it stands for (`%12#0`).
    Leaf(Symbol),
}

/// What [`Language::matches`] compares: the kind, the op name or leaf text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Discriminant {
    /// An op with this name.
    Op(Symbol),
    /// An attribute leaf with this text.
    Attr(Symbol),
    /// An opaque leaf with this name.
    Leaf(Symbol),
}

impl Language for TensorLang {
    type Discriminant = Discriminant;

    fn discriminant(&self) -> Discriminant {
        match self {
            TensorLang::Op(s, _) => Discriminant::Op(*s),
            TensorLang::Attr(s) => Discriminant::Attr(*s),
            TensorLang::Leaf(s) => Discriminant::Leaf(*s),
        }
    }

    fn matches(&self, other: &Self) -> bool {
        match (self, other) {
            (TensorLang::Op(a, x), TensorLang::Op(b, y)) => a == b && x.len() == y.len(),
            (TensorLang::Attr(a), TensorLang::Attr(b)) => a == b,
            (TensorLang::Leaf(a), TensorLang::Leaf(b)) => a == b,
            _ => false,
        }
    }

    fn children(&self) -> &[Id] {
        match self {
            TensorLang::Op(_, c) => c,
            _ => &[],
        }
    }

    fn children_mut(&mut self) -> &mut [Id] {
        match self {
            TensorLang::Op(_, c) => c,
            _ => &mut [],
        }
    }
}

impl fmt::Display for TensorLang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TensorLang::Op(s, _) | TensorLang::Leaf(s) => write!(f, "{s}"),
            TensorLang::Attr(s) => write!(f, ":{s}"),
        }
    }
}

/// Per e-class facts.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassData {
    /// The value's type (`None` for attribute classes, or where inference failed).
    pub ty: Option<TensorType>,
    /// For attribute classes: the canonical JSON.
    pub attrs: Option<Symbol>,
    /// Whether the class is a constant from the module's pool.
    pub is_const: bool,
    /// For constants whose elements are all equal: that value.
    pub uniform: Option<f64>,
}

/// The analysis: types by the ops' own inference, constant facts, and a cache of parsed ops.
#[derive(Debug, Default)]
pub struct TensorAnalysis {
    /// The module's constants (functions are not needed for the modelled ops).
    pub module: Module,
    /// Types of opaque leaves.
    pub leaf_types: HashMap<Symbol, TensorType>,
    ops: HashMap<(Symbol, Symbol), Option<Op>>,
}

impl TensorAnalysis {
    /// An analysis over the constants of `module`.
    pub fn new(module: &Module) -> Self {
        TensorAnalysis {
            module: Module {
                functions: Default::default(),
                constants: module.constants.clone(),
                facts: module.facts.clone(),
            },
            leaf_types: HashMap::new(),
            ops: HashMap::new(),
        }
    }

    /// The op with this name and canonical attributes (parsed once, then cached).
    pub fn op(&mut self, name: Symbol, attrs: Symbol) -> Option<Op> {
        self.ops
            .entry((name, attrs))
            .or_insert_with(|| {
                let json = serde_json::from_str(attrs.as_str()).ok()?;
                Op::from_attrs(name.as_str(), json).ok()
            })
            .clone()
    }

    /// Infer the single result type of an op on operands of given types.
    pub fn infer(
        &mut self,
        name: Symbol,
        attrs: Symbol,
        inputs: &[TensorType],
    ) -> Option<TensorType> {
        let op = self.op(name, attrs)?;
        let mut tys = op
            .infer(
                &InferCx {
                    module: &self.module,
                },
                inputs,
            )
            .ok()?;
        if tys.len() == 1 {
            tys.pop()
        } else {
            None
        }
    }

    /// The uniform value of a named constant, if its elements are all equal and cheap to see.
    fn uniform_constant(&self, name: &str) -> Option<f64> {
        let c = self.module.constants.get(name)?;
        match &c.storage {
            Storage::Seeded {
                init: Init::Full { value },
                ..
            } => Some(c.ty.dtype.round(*value)),
            Storage::Dense { .. } if c.ty.num_elements()? <= SMALL_CONSTANT => {
                let t = c.value(name).ok()?;
                let first = *t.data().first()?;
                t.data()
                    .iter()
                    .all(|&v| v == first || (v.is_nan() && first.is_nan()))
                    .then_some(first)
            }
            _ => None,
        }
    }
}

/// Canonical compact JSON of an op's attributes (its own serde form, defaults filled in).
pub fn canonical_attrs(op: &Op) -> Symbol {
    Symbol::from(op.attrs().to_string())
}

impl Analysis<TensorLang> for TensorAnalysis {
    type Data = ClassData;

    fn make(egraph: &mut EGraph<TensorLang, Self>, enode: &TensorLang, _id: Id) -> ClassData {
        let mut d = ClassData {
            ty: None,
            attrs: None,
            is_const: false,
            uniform: None,
        };
        match enode {
            TensorLang::Attr(s) => d.attrs = Some(*s),
            TensorLang::Leaf(s) => d.ty = egraph.analysis.leaf_types.get(s).cloned(),
            TensorLang::Op(name, ch) => {
                let Some(attrs) = ch.first().and_then(|a| egraph[*a].data.attrs) else {
                    return d;
                };
                let tys: Option<Vec<TensorType>> =
                    ch[1..].iter().map(|c| egraph[*c].data.ty.clone()).collect();
                let Some(tys) = tys else { return d };
                d.ty = egraph.analysis.infer(*name, attrs, &tys);
                if name.as_str() == "constant" {
                    d.is_const = true;
                    if let Some(Op::Constant(c)) = egraph.analysis.op(*name, attrs) {
                        d.uniform = egraph.analysis.uniform_constant(&c.name);
                    }
                }
            }
        }
        d
    }

    fn merge(&mut self, a: &mut ClassData, b: ClassData) -> DidMerge {
        let is_const = DidMerge(!a.is_const && b.is_const, a.is_const && !b.is_const);
        a.is_const |= b.is_const;
        take(&mut a.ty, b.ty)
            | take(&mut a.attrs, b.attrs)
            | take(&mut a.uniform, b.uniform)
            | is_const
    }
}

/// Merge two optional facts: keep what is known (equal classes have equal facts).
fn take<T>(x: &mut Option<T>, y: Option<T>) -> DidMerge {
    match (x.is_some(), y.is_some()) {
        (false, true) => {
            *x = y;
            DidMerge(true, false)
        }
        (true, false) => DidMerge(false, true),
        _ => DidMerge(false, false),
    }
}
