//! Dimensions as integer expressions over named symbols.
//!
//! A [`Dim`] is a size known at compile time (`384`), a symbol bound at run time (`B`), or an
//! expression over symbols and integers: `+`, `−`, `×` (by an integer or by another dim),
//! division by an integer (exact `S/4`, `floor(S/4)`, `ceil(S/4)`) and `min`/`max`. It is kept in
//! one canonical form — a sum of products with integer coefficients, like tract's `TDim` — so
//! that equal expressions compare equal (`2*B == B + B`, `(S + 2*S)/3 == S`).
//!
//! The canonical form:
//! - a [`Dim`] is a list of terms `coef · atom₁ · atom₂ · …`, sorted by their atoms, with no two
//!   terms over the same atoms and no zero coefficient (the constant term has no atoms);
//! - an atom is a symbol, a division `num / den` (den ≥ 2, the numerator's coefficients in
//!   `[0, den)` and without a common factor with den; floor and ceil of nested divisions merged),
//!   or a `min`/`max` of at least two dims that no rule could decide between;
//! - an exact division whose coefficient is a multiple of its denominator is multiplied out
//!   (`4·(S/4) = S`).
//!
//! Arithmetic is checked: a result that overflows `i64` is a [`DimError`], never a wrapped value
//! or a panic. Facts about symbols (`S % 4 == 0`, `B >= 1`; see [`SymbolFacts`]) are applied by
//! [`Dim::simplify`]; the constructors use only the fact that every dim is a size (≥ 0).
//!
//! Text form (printed by `Display`, read by [`Dim::parse`]): `2*B`, `B*S`, `S/4`, `floor(S/4)`,
//! `ceil((S+1)/2)`, `min(S,128)`, `S-1`; a symbol is an identifier or a quoted string
//! (`"batch size"`).

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

/// Why an expression could not be built or resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DimError {
    /// An intermediate or final value does not fit in `i64`.
    #[error("dim arithmetic overflows: {0}")]
    Overflow(String),
    /// Division by zero.
    #[error("division of {0} by zero")]
    DivisionByZero(String),
    /// An exact division of constants that leaves a remainder.
    #[error("{num} is not divisible by {den}")]
    NotDivisible {
        /// The numerator as text.
        num: String,
        /// The denominator.
        den: u64,
    },
    /// A symbol without a binding.
    #[error("symbol {0} is not bound")]
    Unbound(String),
    /// An exact division that is not exact for the bound sizes.
    #[error("{expr} is not an exact division for {bindings}: {num} is not a multiple of {den}")]
    Inexact {
        /// The division as text.
        expr: String,
        /// The bindings it was resolved with.
        bindings: String,
        /// The numerator's value.
        num: i128,
        /// The denominator.
        den: u64,
    },
    /// A size that resolved to a negative number.
    #[error("{expr} = {value} for {bindings}, but a size cannot be negative")]
    Negative {
        /// The expression.
        expr: String,
        /// Its value.
        value: i64,
        /// The bindings.
        bindings: String,
    },
    /// Text that is not a dim expression.
    #[error("cannot parse dim `{text}`: {message}")]
    Parse {
        /// The text.
        text: String,
        /// What was expected.
        message: String,
    },
}

/// How a division by an integer rounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rounding {
    /// The division must be exact; an inexact value is a run-time error.
    Exact,
    /// Rounds toward −∞.
    Floor,
    /// Rounds toward +∞.
    Ceil,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Atom {
    Sym(Arc<str>),
    Div(Box<Dim>, u64, Rounding),
    Min(Vec<Dim>),
    Max(Vec<Dim>),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Term {
    /// Sorted (with repetition for powers); empty for the constant term.
    atoms: Vec<Atom>,
    coef: i64,
}

/// One dimension: a canonical integer expression over symbols (see the module docs).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Dim {
    terms: Vec<Term>,
}

/// A structural view of a dim, for code that needs to look inside (printers, solvers).
#[derive(Clone, Debug, PartialEq)]
pub enum DimView<'a> {
    /// An integer.
    Const(i64),
    /// A single symbol.
    Sym(&'a str),
    /// Anything else.
    Expr,
}

type R<T> = Result<T, DimError>;

fn overflow(what: impl fmt::Display) -> DimError {
    DimError::Overflow(what.to_string())
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl Dim {
    /// The integer `n`.
    pub fn from_i64(n: i64) -> Dim {
        if n == 0 {
            Dim::default()
        } else {
            Dim {
                terms: vec![Term {
                    atoms: vec![],
                    coef: n,
                }],
            }
        }
    }

    /// The size `n` (an error past `i64::MAX`).
    pub fn try_from_u64(n: u64) -> R<Dim> {
        i64::try_from(n)
            .map(Dim::from_i64)
            .map_err(|_| overflow(format!("size {n} is past i64::MAX")))
    }

    /// The symbol `name`.
    pub fn sym(name: &str) -> Dim {
        Dim {
            terms: vec![Term {
                atoms: vec![Atom::Sym(name.into())],
                coef: 1,
            }],
        }
    }

    /// The integer value, if the dim is a constant.
    pub fn as_const(&self) -> Option<i64> {
        match self.terms.as_slice() {
            [] => Some(0),
            [t] if t.atoms.is_empty() => Some(t.coef),
            _ => None,
        }
    }

    /// The size, if the dim is a non-negative constant.
    pub fn fixed(&self) -> Option<u64> {
        self.as_const().and_then(|n| u64::try_from(n).ok())
    }

    /// The symbol name, if the dim is exactly one symbol.
    pub fn as_sym(&self) -> Option<&str> {
        match self.terms.as_slice() {
            [Term { atoms, coef: 1 }] => match atoms.as_slice() {
                [Atom::Sym(s)] => Some(s),
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether the dim is a constant.
    pub fn is_const(&self) -> bool {
        self.as_const().is_some()
    }

    /// A structural view: constant, single symbol, or expression.
    pub fn view(&self) -> DimView<'_> {
        if let Some(n) = self.as_const() {
            DimView::Const(n)
        } else if let Some(s) = self.as_sym() {
            DimView::Sym(s)
        } else {
            DimView::Expr
        }
    }

    /// Every symbol the expression mentions, sorted.
    pub fn symbols(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        self.collect_symbols(&mut out);
        out
    }

    fn collect_symbols(&self, out: &mut BTreeSet<String>) {
        for t in &self.terms {
            for a in &t.atoms {
                match a {
                    Atom::Sym(s) => {
                        out.insert(s.to_string());
                    }
                    Atom::Div(n, _, _) => n.collect_symbols(out),
                    Atom::Min(v) | Atom::Max(v) => v.iter().for_each(|d| d.collect_symbols(out)),
                }
            }
        }
    }

    // ----- construction of the canonical form -----

    /// Sum of terms, merged and sorted.
    fn from_terms(mut terms: Vec<Term>) -> R<Dim> {
        for t in &mut terms {
            t.atoms.sort();
        }
        terms.sort_by(|a, b| a.atoms.cmp(&b.atoms));
        let mut out: Vec<Term> = Vec::with_capacity(terms.len());
        for t in terms {
            match out.last_mut() {
                Some(last) if last.atoms == t.atoms => {
                    last.coef = last
                        .coef
                        .checked_add(t.coef)
                        .ok_or_else(|| overflow("adding coefficients"))?;
                }
                _ => out.push(t),
            }
        }
        out.retain(|t| t.coef != 0);
        let d = Dim { terms: out };
        d.expand_exact_divisions()
    }

    /// `k·(X/d)` with `d | k` becomes `(k/d)·X` (valid because the division is exact).
    fn expand_exact_divisions(self) -> R<Dim> {
        let pos = self.terms.iter().position(|t| {
            t.atoms.iter().any(|a| match a {
                Atom::Div(_, den, Rounding::Exact) => t.coef % (*den as i64) == 0,
                _ => false,
            })
        });
        let Some(i) = pos else {
            return Ok(self);
        };
        let mut terms = self.terms;
        let t = terms.remove(i);
        let j = t
            .atoms
            .iter()
            .position(|a| match a {
                Atom::Div(_, den, Rounding::Exact) => t.coef % (*den as i64) == 0,
                _ => false,
            })
            .ok_or_else(|| overflow("internal: division atom vanished"))?;
        let mut atoms = t.atoms;
        let Atom::Div(num, den, _) = atoms.remove(j) else {
            return Err(overflow("internal: not a division atom"));
        };
        let rest = Dim {
            terms: vec![Term {
                atoms,
                coef: t.coef / den as i64,
            }],
        };
        let expanded = rest.mul(&num)?;
        let others = Dim { terms };
        others.add(&expanded)
    }

    /// A single-atom dim with coefficient 1.
    fn atom(a: Atom) -> Dim {
        Dim {
            terms: vec![Term {
                atoms: vec![a],
                coef: 1,
            }],
        }
    }

    // ----- arithmetic -----

    /// `self + other`.
    pub fn add(&self, other: &Dim) -> R<Dim> {
        let mut t = self.terms.clone();
        t.extend(other.terms.iter().cloned());
        Dim::from_terms(t)
    }

    /// `-self`.
    pub fn neg(&self) -> R<Dim> {
        self.mul_int(-1)
    }

    /// `self - other`.
    pub fn sub(&self, other: &Dim) -> R<Dim> {
        self.add(&other.neg()?)
    }

    /// `self · k`.
    pub fn mul_int(&self, k: i64) -> R<Dim> {
        let mut t = self.terms.clone();
        for term in &mut t {
            term.coef = term
                .coef
                .checked_mul(k)
                .ok_or_else(|| overflow(format!("({self})·{k}")))?;
        }
        Dim::from_terms(t)
    }

    /// `self · other`.
    pub fn mul(&self, other: &Dim) -> R<Dim> {
        let mut out = Vec::with_capacity(self.terms.len() * other.terms.len());
        for a in &self.terms {
            for b in &other.terms {
                let coef = a
                    .coef
                    .checked_mul(b.coef)
                    .ok_or_else(|| overflow(format!("({self})·({other})")))?;
                let mut atoms = a.atoms.clone();
                atoms.extend(b.atoms.iter().cloned());
                out.push(Term { atoms, coef });
            }
        }
        Dim::from_terms(out)
    }

    /// Product of several dims (1 for none).
    pub fn product<'a>(dims: impl IntoIterator<Item = &'a Dim>) -> R<Dim> {
        let mut p = Dim::from_i64(1);
        for d in dims {
            p = p.mul(d)?;
        }
        Ok(p)
    }

    /// Sum of several dims (0 for none).
    pub fn sum<'a>(dims: impl IntoIterator<Item = &'a Dim>) -> R<Dim> {
        let mut s = Dim::default();
        for d in dims {
            s = s.add(d)?;
        }
        Ok(s)
    }

    /// `self / k`, which must be exact (checked when the dim is resolved).
    pub fn div_exact(&self, k: u64) -> R<Dim> {
        self.div_int(k, Rounding::Exact)
    }

    /// `⌊self / k⌋`.
    pub fn div_floor(&self, k: u64) -> R<Dim> {
        self.div_int(k, Rounding::Floor)
    }

    /// `⌈self / k⌉`.
    pub fn div_ceil(&self, k: u64) -> R<Dim> {
        self.div_int(k, Rounding::Ceil)
    }

    /// Division by a positive integer with the given rounding.
    pub fn div_int(&self, k: u64, round: Rounding) -> R<Dim> {
        if k == 0 {
            return Err(DimError::DivisionByZero(self.to_string()));
        }
        let k64 = i64::try_from(k).map_err(|_| overflow(format!("divisor {k}")))?;
        if k == 1 || self.terms.is_empty() {
            return Ok(self.clone());
        }
        // Cancel the common factor of every coefficient and k.
        let g = self
            .terms
            .iter()
            .fold(k, |g, t| gcd(g, t.coef.unsigned_abs()));
        let den = k / g;
        let den64 = k64 / g as i64;
        let num: Vec<Term> = self
            .terms
            .iter()
            .map(|t| Term {
                atoms: t.atoms.clone(),
                coef: t.coef / g as i64,
            })
            .collect();
        if den == 1 {
            return Dim::from_terms(num);
        }
        // Split every coefficient c = den·q + r with 0 <= r < den: (den·Q + R)/den = Q + R/den,
        // exactly for every rounding because Q is an integer.
        let mut q = Vec::with_capacity(num.len());
        let mut r = Vec::with_capacity(num.len());
        for t in num {
            let (qc, rc) = (t.coef.div_euclid(den64), t.coef.rem_euclid(den64));
            if qc != 0 {
                q.push(Term {
                    atoms: t.atoms.clone(),
                    coef: qc,
                });
            }
            if rc != 0 {
                r.push(Term {
                    atoms: t.atoms,
                    coef: rc,
                });
            }
        }
        let q = Dim::from_terms(q)?;
        let r = Dim::from_terms(r)?;
        let rest = match r.as_const() {
            Some(rc) => {
                // 0 <= rc < den.
                let v = match round {
                    Rounding::Floor => 0,
                    Rounding::Ceil => i64::from(rc > 0),
                    Rounding::Exact if rc == 0 => 0,
                    Rounding::Exact => {
                        return Err(DimError::NotDivisible {
                            num: self.to_string(),
                            den: k,
                        })
                    }
                };
                Dim::from_i64(v)
            }
            None => {
                // ⌊⌊X/a⌋/b⌋ = ⌊X/(ab)⌋ (same for ⌈⌉ and exact divisions).
                let nested = match r.terms.as_slice() {
                    [Term { atoms, coef: 1 }] => match atoms.as_slice() {
                        [Atom::Div(n, a, ra)] if *ra == round => Some((n.clone(), *a)),
                        _ => None,
                    },
                    _ => None,
                };
                match nested {
                    Some((n, a)) => {
                        let ab = a
                            .checked_mul(den)
                            .ok_or_else(|| overflow(format!("divisor {a}·{den}")))?;
                        n.div_int(ab, round)?
                    }
                    None => Dim::atom(Atom::Div(Box::new(r), den, round)),
                }
            }
        };
        q.add(&rest)
    }

    /// The exact quotient `self / d` as a dim, when `d` divides `self` as a polynomial (with an
    /// exact integer division left for a constant factor of `d` that does not divide evenly).
    /// `None` when `d` does not divide `self` (e.g. `B·S / T`), or `d` is zero.
    pub fn div_dim(&self, d: &Dim) -> Option<Dim> {
        if let Some(k) = d.as_const() {
            if k <= 0 {
                return None;
            }
            return self.div_exact(k as u64).ok();
        }
        // Split d = c · p with c the gcd of its coefficients (sign of the leading term).
        let g = d
            .terms
            .iter()
            .fold(0u64, |g, t| gcd(g, t.coef.unsigned_abs()));
        if g == 0 {
            return None;
        }
        let p = Dim {
            terms: d
                .terms
                .iter()
                .map(|t| Term {
                    atoms: t.atoms.clone(),
                    coef: t.coef / g as i64,
                })
                .collect(),
        };
        let q = self.div_poly(&p)?;
        q.div_exact(g).ok()
    }

    /// Exact polynomial division by a primitive polynomial (graded order on atom multisets).
    fn div_poly(&self, d: &Dim) -> Option<Dim> {
        fn key(t: &Term) -> (usize, &Vec<Atom>) {
            (t.atoms.len(), &t.atoms)
        }
        let lead = d.terms.iter().max_by(|a, b| key(a).cmp(&key(b)))?;
        let mut rem = self.clone();
        let mut quot: Vec<Term> = vec![];
        for _ in 0..1024 {
            let Some(rl) = rem.terms.iter().max_by(|a, b| key(a).cmp(&key(b))) else {
                return Dim::from_terms(quot).ok();
            };
            if rl.coef % lead.coef != 0 {
                return None;
            }
            // Atoms of rl minus atoms of lead (multiset difference), or fail.
            let mut atoms = rl.atoms.clone();
            for a in &lead.atoms {
                let i = atoms.iter().position(|x| x == a)?;
                atoms.remove(i);
            }
            let t = Term {
                atoms,
                coef: rl.coef / lead.coef,
            };
            let step = Dim {
                terms: vec![t.clone()],
            };
            rem = rem.sub(&step.mul(d).ok()?).ok()?;
            quot.push(t);
        }
        None
    }

    /// `min(self, other)`.
    pub fn minimum(&self, other: &Dim) -> R<Dim> {
        Dim::min_of(vec![self.clone(), other.clone()])
    }

    /// `max(self, other)`.
    pub fn maximum(&self, other: &Dim) -> R<Dim> {
        Dim::max_of(vec![self.clone(), other.clone()])
    }

    /// Minimum of dims (at least one).
    pub fn min_of(dims: Vec<Dim>) -> R<Dim> {
        Dim::extremum(dims, true, &Facts::default(), 0)
    }

    /// Maximum of dims (at least one).
    pub fn max_of(dims: Vec<Dim>) -> R<Dim> {
        Dim::extremum(dims, false, &Facts::default(), 0)
    }

    /// `min`/`max` of `dims`, deciding between operands whose difference has a known sign
    /// (symbols without facts are at least `default_min`).
    fn extremum(dims: Vec<Dim>, is_min: bool, facts: &Facts, default_min: u64) -> R<Dim> {
        // Flatten nested extrema of the same kind.
        let mut flat: Vec<Dim> = vec![];
        for d in dims {
            let inner = match d.terms.as_slice() {
                [Term { atoms, coef: 1 }] => match atoms.as_slice() {
                    [Atom::Min(v)] if is_min => Some(v.clone()),
                    [Atom::Max(v)] if !is_min => Some(v.clone()),
                    _ => None,
                },
                _ => None,
            };
            match inner {
                Some(v) => flat.extend(v),
                None => flat.push(d),
            }
        }
        flat.sort();
        flat.dedup();
        // Drop every operand that another one decides: a - b has a known sign.
        let mut keep: Vec<Dim> = vec![];
        'outer: for d in flat {
            let mut i = 0;
            while i < keep.len() {
                let diff = d.sub(&keep[i])?;
                let (lo, hi) = facts.bounds_with(&diff, default_min);
                // d <= keep[i]
                let d_le = hi.is_some_and(|h| h <= 0);
                let d_ge = lo.is_some_and(|l| l >= 0);
                if (is_min && d_ge) || (!is_min && d_le) {
                    continue 'outer; // d never wins
                }
                if (is_min && d_le) || (!is_min && d_ge) {
                    keep.remove(i); // keep[i] never wins
                    continue;
                }
                i += 1;
            }
            keep.push(d);
        }
        match keep.len() {
            0 => Err(overflow("min/max of no dims")),
            1 => Ok(keep.pop().unwrap_or_default()),
            _ => Ok(Dim::atom(if is_min {
                Atom::Min(keep)
            } else {
                Atom::Max(keep)
            })),
        }
    }

    // ----- evaluation -----

    /// The value under `bindings` (every symbol must be bound); exact divisions are checked.
    pub fn eval(&self, bindings: &HashMap<String, u64>) -> R<i64> {
        let v = self.eval_i128(bindings)?;
        i64::try_from(v).map_err(|_| overflow(format!("{self} = {v}")))
    }

    /// The size under `bindings`: like [`Dim::eval`], and non-negative.
    pub fn resolve(&self, bindings: &HashMap<String, u64>) -> R<u64> {
        let v = self.eval(bindings)?;
        u64::try_from(v).map_err(|_| DimError::Negative {
            expr: self.to_string(),
            value: v,
            bindings: show_bindings(bindings),
        })
    }

    fn eval_i128(&self, b: &HashMap<String, u64>) -> R<i128> {
        let mut total: i128 = 0;
        for t in &self.terms {
            let mut v = t.coef as i128;
            for a in &t.atoms {
                let x = a.eval(b)?;
                v = v
                    .checked_mul(x)
                    .ok_or_else(|| overflow(format!("{self}")))?;
            }
            total = total
                .checked_add(v)
                .ok_or_else(|| overflow(format!("{self}")))?;
        }
        Ok(total)
    }

    /// An estimate in `f64` with symbol sizes from `size` (divisions are real divisions, no
    /// check): for cost models and reports, never for shapes.
    pub fn estimate(&self, size: &dyn Fn(&str) -> u64) -> f64 {
        self.terms
            .iter()
            .map(|t| {
                t.coef as f64
                    * t.atoms
                        .iter()
                        .map(|a| match a {
                            Atom::Sym(s) => size(s) as f64,
                            Atom::Div(n, d, _) => n.estimate(size) / *d as f64,
                            Atom::Min(v) => v
                                .iter()
                                .map(|d| d.estimate(size))
                                .fold(f64::INFINITY, f64::min),
                            Atom::Max(v) => v
                                .iter()
                                .map(|d| d.estimate(size))
                                .fold(f64::NEG_INFINITY, f64::max),
                        })
                        .product::<f64>()
            })
            .sum()
    }

    /// Replace symbols by dims (symbols not in `map` stay).
    pub fn substitute(&self, map: &HashMap<String, Dim>) -> R<Dim> {
        let mut out = Dim::default();
        for t in &self.terms {
            let mut p = Dim::from_i64(t.coef);
            for a in &t.atoms {
                let v = match a {
                    Atom::Sym(s) => match map.get(s.as_ref()) {
                        Some(d) => d.clone(),
                        None => Dim::atom(a.clone()),
                    },
                    Atom::Div(n, den, r) => n.substitute(map)?.div_int(*den, *r)?,
                    Atom::Min(v) => {
                        Dim::min_of(v.iter().map(|d| d.substitute(map)).collect::<R<Vec<_>>>()?)?
                    }
                    Atom::Max(v) => {
                        Dim::max_of(v.iter().map(|d| d.substitute(map)).collect::<R<Vec<_>>>()?)?
                    }
                };
                p = p.mul(&v)?;
            }
            out = out.add(&p)?;
        }
        Ok(out)
    }

    /// Substitute known sizes for bound symbols (others stay symbolic).
    pub fn partial_eval(&self, bindings: &HashMap<String, u64>) -> R<Dim> {
        let mut map = HashMap::new();
        for s in self.symbols() {
            if let Some(&v) = bindings.get(&s) {
                map.insert(s, Dim::try_from_u64(v)?);
            }
        }
        self.substitute(&map)
    }

    /// If the dim is `c·X + k` for one symbol `X` (c ≠ 0), return `(X, c, k)`.
    pub fn as_linear(&self) -> Option<(&str, i64, i64)> {
        let mut sym = None;
        let mut k = 0;
        for t in &self.terms {
            match t.atoms.as_slice() {
                [] => k = t.coef,
                [Atom::Sym(s)] if sym.is_none() => sym = Some((s.as_ref(), t.coef)),
                _ => return None,
            }
        }
        sym.map(|(s, c)| (s, c, k))
    }

    /// Simplify with facts about symbols: decides `min`/`max` by bounds, turns floor/ceil
    /// divisions of multiples into exact ones, and uses divisors of symbols inside divisions
    /// (`2*floor((H+1)/2)` is `H` where `H % 2 == 0`).
    pub fn simplify(&self, facts: &Facts) -> R<Dim> {
        let d = self.simplify_divisors(facts)?;
        d.simplify_atoms(facts)
    }

    /// Division atoms, nested ones included: (rounding ones, all).
    fn divisions(&self) -> (usize, usize) {
        let mut out = (0, 0);
        for a in self.terms.iter().flat_map(|t| t.atoms.iter()) {
            let (r, n) = match a {
                Atom::Sym(_) => (0, 0),
                Atom::Div(n, _, round) => {
                    let (r, t) = n.divisions();
                    (r + usize::from(*round != Rounding::Exact), t + 1)
                }
                Atom::Min(v) | Atom::Max(v) => v
                    .iter()
                    .map(|d| d.divisions())
                    .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1)),
            };
            out = (out.0 + r, out.1 + n);
        }
        out
    }

    /// Write each symbol `S` with a divisor `k` as `k·S'` and back as `S'` = `S/k`.
    fn simplify_divisors(&self, facts: &Facts) -> R<Dim> {
        if self.divisions().1 == 0 {
            return Ok(self.clone());
        }
        let mut there = HashMap::new();
        let mut back = HashMap::new();
        for s in self.symbols() {
            if let Some(k) = facts.get(&s).multiple_of.filter(|&k| k > 1) {
                let k64 = i64::try_from(k).map_err(|_| overflow(format!("divisor {k}")))?;
                // A name no parser produces (it contains a NUL).
                let fresh = format!("{s}\u{0}");
                there.insert(s.clone(), Dim::sym(&fresh).mul_int(k64)?);
                back.insert(fresh, Dim::sym(&s).div_exact(k)?);
            }
        }
        if there.is_empty() {
            return Ok(self.clone());
        }
        // The round trip is a normal form for expressions equal under the divisors
        // (`(H*W)/4` and `(H/2)*(W/2)` meet); keep it unless it adds rounding divisions.
        let d = self.substitute(&there)?.substitute(&back)?;
        Ok(if d.divisions().0 <= self.divisions().0 {
            d
        } else {
            self.clone()
        })
    }

    fn simplify_atoms(&self, facts: &Facts) -> R<Dim> {
        let mut out = Dim::default();
        for t in &self.terms {
            let mut p = Dim::from_i64(t.coef);
            for a in &t.atoms {
                let v = match a {
                    Atom::Sym(_) => Dim::atom(a.clone()),
                    Atom::Div(n, den, r) => {
                        let n = n.simplify(facts)?;
                        let r = if *r != Rounding::Exact && facts.divides(&n, *den) {
                            Rounding::Exact
                        } else {
                            *r
                        };
                        n.div_int(*den, r)?
                    }
                    Atom::Min(v) => Dim::extremum(
                        v.iter().map(|d| d.simplify(facts)).collect::<R<Vec<_>>>()?,
                        true,
                        facts,
                        DEFAULT_SYMBOL_MIN,
                    )?,
                    Atom::Max(v) => Dim::extremum(
                        v.iter().map(|d| d.simplify(facts)).collect::<R<Vec<_>>>()?,
                        false,
                        facts,
                        DEFAULT_SYMBOL_MIN,
                    )?,
                };
                p = p.mul(&v)?;
            }
            out = out.add(&p)?;
        }
        Ok(out)
    }

    /// Parse the text form (`2*B`, `S/4`, `min(S,8)`, `"batch size"`).
    pub fn parse(text: &str) -> R<Dim> {
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
            text,
        };
        let d = p.expr()?;
        p.ws();
        if p.i != p.s.len() {
            return Err(p.err("unexpected text after the expression"));
        }
        Ok(d)
    }
}

impl Atom {
    fn eval(&self, b: &HashMap<String, u64>) -> R<i128> {
        match self {
            Atom::Sym(s) => b
                .get(s.as_ref())
                .map(|&v| v as i128)
                .ok_or_else(|| DimError::Unbound(s.to_string())),
            Atom::Div(n, den, r) => {
                let v = n.eval_i128(b)?;
                let d = *den as i128;
                Ok(match r {
                    Rounding::Floor => v.div_euclid(d),
                    Rounding::Ceil => -(-v).div_euclid(d),
                    Rounding::Exact => {
                        if v.rem_euclid(d) != 0 {
                            return Err(DimError::Inexact {
                                expr: format!("({n})/{den}"),
                                bindings: show_bindings(b),
                                num: v,
                                den: *den,
                            });
                        }
                        v / d
                    }
                })
            }
            Atom::Min(v) => {
                let mut m: Option<i128> = None;
                for d in v {
                    let x = d.eval_i128(b)?;
                    m = Some(m.map_or(x, |m| m.min(x)));
                }
                Ok(m.unwrap_or(0))
            }
            Atom::Max(v) => {
                let mut m: Option<i128> = None;
                for d in v {
                    let x = d.eval_i128(b)?;
                    m = Some(m.map_or(x, |m| m.max(x)));
                }
                Ok(m.unwrap_or(0))
            }
        }
    }
}

fn show_bindings(b: &HashMap<String, u64>) -> String {
    let mut v: Vec<_> = b.iter().collect();
    v.sort();
    let s: Vec<String> = v.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("[{}]", s.join(", "))
}

// ------------------------------------------------------------------------------------------
// Facts about symbols
// ------------------------------------------------------------------------------------------

/// What is known about one symbol: bounds and a divisor. A symbol without declared facts is
/// only known to be a size (`>= 0`); importers declare `>= 1` for the batch and sequence
/// symbols they create, and bound inputs are checked against every fact.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SymbolFacts {
    /// `SYM >= min` (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u64>,
    /// `SYM <= max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
    /// `SYM % multiple_of == 0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiple_of: Option<u64>,
}

/// The lower bound of a symbol without a declared `min`.
pub const DEFAULT_SYMBOL_MIN: u64 = 0;

impl SymbolFacts {
    /// The lower bound (declared, or [`DEFAULT_SYMBOL_MIN`]).
    pub fn lower(&self) -> u64 {
        self.min.unwrap_or(DEFAULT_SYMBOL_MIN)
    }

    /// Check a bound size against the facts; the message names the violated fact.
    pub fn check(&self, name: &str, v: u64) -> Result<(), String> {
        if v < self.lower() {
            return Err(format!("{name} = {v} violates {name} >= {}", self.lower()));
        }
        if let Some(m) = self.max {
            if v > m {
                return Err(format!("{name} = {v} violates {name} <= {m}"));
            }
        }
        if let Some(k) = self.multiple_of {
            if k > 0 && !v.is_multiple_of(k) {
                return Err(format!("{name} = {v} violates {name} % {k} == 0"));
            }
        }
        Ok(())
    }
}

/// Facts about every symbol of a module (symbols not listed get the defaults).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Facts(pub BTreeMap<String, SymbolFacts>);

impl Facts {
    /// The facts of one symbol.
    pub fn get(&self, name: &str) -> SymbolFacts {
        self.0.get(name).cloned().unwrap_or_default()
    }

    /// Whether there are no declared facts.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Bounds `(lo, hi)` of a dim (None = unbounded on that side).
    pub fn bounds(&self, d: &Dim) -> (Option<i128>, Option<i128>) {
        self.bounds_with(d, DEFAULT_SYMBOL_MIN)
    }

    /// Bounds with `default_min` as the lower bound of symbols without a declared one.
    fn bounds_with(&self, d: &Dim, default_min: u64) -> (Option<i128>, Option<i128>) {
        let mut lo: Option<i128> = Some(0);
        let mut hi: Option<i128> = Some(0);
        for t in &d.terms {
            let (mut tl, mut th) = (Some(t.coef as i128), Some(t.coef as i128));
            for a in &t.atoms {
                let (al, ah) = self.atom_bounds(a, default_min);
                (tl, th) = mul_interval((tl, th), (al, ah));
            }
            lo = lo.zip(tl).and_then(|(a, b)| a.checked_add(b));
            hi = hi.zip(th).and_then(|(a, b)| a.checked_add(b));
        }
        (lo, hi)
    }

    fn atom_bounds(&self, a: &Atom, default_min: u64) -> (Option<i128>, Option<i128>) {
        match a {
            Atom::Sym(s) => {
                let f = self.get(s);
                (
                    Some(f.min.unwrap_or(default_min) as i128),
                    f.max.map(|m| m as i128),
                )
            }
            Atom::Div(n, den, r) => {
                let (l, h) = self.bounds_with(n, default_min);
                let d = *den as i128;
                let f = |v: i128, up: bool| match r {
                    Rounding::Floor => v.div_euclid(d),
                    Rounding::Ceil => -(-v).div_euclid(d),
                    Rounding::Exact if up => v.div_euclid(d),
                    Rounding::Exact => -(-v).div_euclid(d),
                };
                (l.map(|v| f(v, false)), h.map(|v| f(v, true)))
            }
            Atom::Min(v) => {
                let bs: Vec<_> = v.iter().map(|d| self.bounds_with(d, default_min)).collect();
                let lo = bs
                    .iter()
                    .map(|b| b.0)
                    .try_fold(i128::MAX, |m, x| x.map(|x| m.min(x)));
                let hi = bs.iter().filter_map(|b| b.1).min();
                (lo, hi)
            }
            Atom::Max(v) => {
                let bs: Vec<_> = v.iter().map(|d| self.bounds_with(d, default_min)).collect();
                let lo = bs.iter().filter_map(|b| b.0).max();
                let hi = bs
                    .iter()
                    .map(|b| b.1)
                    .try_fold(i128::MIN, |m, x| x.map(|x| m.max(x)));
                (lo, hi)
            }
        }
    }

    /// Whether `k` divides `d` for every binding allowed by the facts.
    pub fn divides(&self, d: &Dim, k: u64) -> bool {
        if k == 0 {
            return false;
        }
        d.terms.iter().all(|t| {
            let mut m: u128 = t.coef.unsigned_abs() as u128;
            for a in &t.atoms {
                if let Atom::Sym(s) = a {
                    m = m.saturating_mul(self.get(s).multiple_of.unwrap_or(1).max(1) as u128);
                }
            }
            m.is_multiple_of(k as u128)
        })
    }
}

fn mul_interval(
    a: (Option<i128>, Option<i128>),
    b: (Option<i128>, Option<i128>),
) -> (Option<i128>, Option<i128>) {
    // Unbounded sides are treated as ±∞; the atoms here are non-negative, which keeps the
    // common cases exact (a coefficient times a symbol bounded below).
    let inf = i128::MAX / 4;
    let f = |x: Option<i128>, neg: bool| x.unwrap_or(if neg { -inf } else { inf });
    let (al, ah, bl, bh) = (f(a.0, true), f(a.1, false), f(b.0, true), f(b.1, false));
    let ps = [
        al.saturating_mul(bl),
        al.saturating_mul(bh),
        ah.saturating_mul(bl),
        ah.saturating_mul(bh),
    ];
    let lo = ps.iter().copied().min().unwrap_or(0);
    let hi = ps.iter().copied().max().unwrap_or(0);
    let clip = |v: i128| if v.abs() >= inf { None } else { Some(v) };
    (clip(lo), clip(hi))
}

// ------------------------------------------------------------------------------------------
// Printing
// ------------------------------------------------------------------------------------------

/// Whether a symbol name prints bare (an identifier that is not a function name).
pub fn is_bare_symbol(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
        && !matches!(s, "min" | "max" | "floor" | "ceil")
}

fn write_sym(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    if is_bare_symbol(s) {
        f.write_str(s)
    } else {
        write!(f, "{}", serde_json::Value::String(s.to_string()))
    }
}

impl Dim {
    /// Whether the printed form is one factor (needs no parentheses inside a product).
    fn is_single_factor(&self) -> bool {
        match self.terms.as_slice() {
            [] => true,
            [t] => t.atoms.is_empty() && t.coef >= 0 || (t.coef == 1 && t.atoms.len() == 1),
            _ => false,
        }
    }
}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Atom::Sym(s) => write_sym(f, s),
            Atom::Div(n, d, r) => {
                let inner = |f: &mut fmt::Formatter<'_>| -> fmt::Result {
                    if n.is_single_factor() {
                        write!(f, "{n}/{d}")
                    } else {
                        write!(f, "({n})/{d}")
                    }
                };
                match r {
                    Rounding::Exact => inner(f),
                    Rounding::Floor => {
                        f.write_str("floor(")?;
                        inner(f)?;
                        f.write_str(")")
                    }
                    Rounding::Ceil => {
                        f.write_str("ceil(")?;
                        inner(f)?;
                        f.write_str(")")
                    }
                }
            }
            Atom::Min(v) | Atom::Max(v) => {
                f.write_str(if matches!(self, Atom::Min(_)) {
                    "min("
                } else {
                    "max("
                })?;
                for (i, d) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{d}")?;
                }
                f.write_str(")")
            }
        }
    }
}

fn write_term(f: &mut fmt::Formatter<'_>, t: &Term, first: bool) -> fmt::Result {
    let c = t.coef;
    if !first {
        f.write_str(if c < 0 { "-" } else { "+" })?;
    } else if c < 0 {
        f.write_str("-")?;
    }
    let a = c.unsigned_abs();
    if t.atoms.is_empty() {
        return write!(f, "{a}");
    }
    let mut sep = false;
    if a != 1 {
        write!(f, "{a}")?;
        sep = true;
    }
    // An exact division prints as `X/d`, which would swallow what precedes it: parenthesize it
    // whenever it is not the whole term.
    let alone = a == 1 && t.atoms.len() == 1;
    for atom in &t.atoms {
        if sep {
            f.write_str("*")?;
        }
        match atom {
            Atom::Div(_, _, Rounding::Exact) if !alone => write!(f, "({atom})")?,
            _ => write!(f, "{atom}")?,
        }
        sep = true;
    }
    Ok(())
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.terms.is_empty() {
            return f.write_str("0");
        }
        // Positive non-constant terms first, then negative ones, the constant last.
        let mut order: Vec<&Term> = self
            .terms
            .iter()
            .filter(|t| !t.atoms.is_empty() && t.coef > 0)
            .collect();
        order.extend(
            self.terms
                .iter()
                .filter(|t| !t.atoms.is_empty() && t.coef < 0),
        );
        order.extend(self.terms.iter().filter(|t| t.atoms.is_empty()));
        for (i, t) in order.into_iter().enumerate() {
            write_term(f, t, i == 0)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dim({self})")
    }
}

// ------------------------------------------------------------------------------------------
// Parsing
// ------------------------------------------------------------------------------------------

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    text: &'a str,
}

/// Nesting limit of the parser (hostile input must not overflow the stack).
const MAX_DEPTH: usize = 64;

impl Parser<'_> {
    fn err(&self, message: &str) -> DimError {
        DimError::Parse {
            text: self.text.to_string(),
            message: format!("{message} (at byte {})", self.i),
        }
    }

    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> R<()> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.err(&format!("expected `{}`", c as char)))
        }
    }

    fn expr(&mut self) -> R<Dim> {
        self.expr_at(0)
    }

    fn expr_at(&mut self, depth: usize) -> R<Dim> {
        if depth > MAX_DEPTH {
            return Err(self.err("expression nested too deeply"));
        }
        let neg = self.eat(b'-');
        let mut acc = self.term(depth)?;
        if neg {
            acc = acc.neg()?;
        }
        loop {
            if self.eat(b'+') {
                let t = self.term(depth)?;
                acc = acc.add(&t)?;
            } else if self.eat(b'-') {
                let t = self.term(depth)?;
                acc = acc.sub(&t)?;
            } else {
                return Ok(acc);
            }
        }
    }

    fn term(&mut self, depth: usize) -> R<Dim> {
        let mut acc = self.factor(depth)?;
        loop {
            if self.eat(b'*') {
                let f = self.factor(depth)?;
                acc = acc.mul(&f)?;
            } else if self.eat(b'/') {
                let k = self.int()?;
                acc = acc.div_exact(k)?;
            } else {
                return Ok(acc);
            }
        }
    }

    fn int(&mut self) -> R<u64> {
        self.ws();
        let start = self.i;
        while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
            self.i += 1;
        }
        if start == self.i {
            return Err(self.err("expected an integer"));
        }
        self.text[start..self.i]
            .parse::<u64>()
            .map_err(|_| self.err("integer too large"))
    }

    /// From the current position (just inside `floor(`), the byte offsets of the last `/`
    /// outside nested parentheses and quotes, and of the closing `)`.
    fn division_extent(&self) -> R<(usize, usize)> {
        let mut depth = 0usize;
        let mut slash = None;
        let mut j = self.i;
        let mut quoted = false;
        while j < self.s.len() {
            let c = self.s[j];
            if quoted {
                if c == b'\\' {
                    j += 1;
                } else if c == b'"' {
                    quoted = false;
                }
            } else {
                match c {
                    b'"' => quoted = true,
                    b'(' => depth += 1,
                    b')' if depth == 0 => {
                        return slash
                            .map(|s| (s, j))
                            .ok_or_else(|| self.err("expected floor(EXPR/INT) or ceil(EXPR/INT)"))
                    }
                    b')' => depth -= 1,
                    b'/' if depth == 0 => slash = Some(j),
                    _ => {}
                }
            }
            j += 1;
        }
        Err(self.err("unclosed `(`"))
    }

    fn factor(&mut self, depth: usize) -> R<Dim> {
        match self.peek() {
            Some(c) if c.is_ascii_digit() => Dim::try_from_u64(self.int()?),
            Some(b'(') => {
                self.i += 1;
                let d = self.expr_at(depth + 1)?;
                self.expect(b')')?;
                Ok(d)
            }
            Some(b'"') => {
                // A JSON string.
                let rest = &self.text[self.i..];
                let mut de = serde_json::Deserializer::from_str(rest).into_iter::<String>();
                match de.next() {
                    Some(Ok(s)) => {
                        self.i += de.byte_offset();
                        if s.is_empty() {
                            return Err(self.err("empty symbol name"));
                        }
                        Ok(Dim::sym(&s))
                    }
                    _ => Err(self.err("bad quoted symbol")),
                }
            }
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => {
                let start = self.i;
                while self.i < self.s.len()
                    && (self.s[self.i].is_ascii_alphanumeric() || self.s[self.i] == b'_')
                {
                    self.i += 1;
                }
                let word = &self.text[start..self.i];
                let is_call = self.peek() == Some(b'(');
                match word {
                    "floor" | "ceil" if is_call => {
                        self.i += 1;
                        // `floor(EXPR/INT)`: split at the last `/` outside parentheses.
                        let (slash, close) = self.division_extent()?;
                        let inner = &self.text[self.i..slash];
                        let mut sub = Parser {
                            s: inner.as_bytes(),
                            i: 0,
                            text: inner,
                        };
                        let num = sub.expr_at(depth + 1)?;
                        sub.ws();
                        if sub.i != sub.s.len() {
                            return Err(sub.err("unexpected text in the numerator"));
                        }
                        self.i = slash + 1;
                        let k = self.int()?;
                        self.ws();
                        if self.i != close {
                            return Err(self.err("expected `)` after the divisor"));
                        }
                        self.i = close + 1;
                        let r = if word == "floor" {
                            Rounding::Floor
                        } else {
                            Rounding::Ceil
                        };
                        num.div_int(k, r)
                    }
                    "min" | "max" if is_call => {
                        self.i += 1;
                        let mut v = vec![self.expr_at(depth + 1)?];
                        while self.eat(b',') {
                            v.push(self.expr_at(depth + 1)?);
                        }
                        self.expect(b')')?;
                        if word == "min" {
                            Dim::min_of(v)
                        } else {
                            Dim::max_of(v)
                        }
                    }
                    _ => Ok(Dim::sym(word)),
                }
            }
            _ => Err(self.err("expected a number, a symbol, `(`, floor, ceil, min or max")),
        }
    }
}

// ------------------------------------------------------------------------------------------
// Conversions and serde
// ------------------------------------------------------------------------------------------

impl From<u64> for Dim {
    /// Sizes past `i64::MAX` saturate to `i64::MAX` (use [`Dim::try_from_u64`] to reject them).
    fn from(n: u64) -> Self {
        Dim::from_i64(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

impl From<usize> for Dim {
    fn from(n: usize) -> Self {
        Dim::from(n as u64)
    }
}

impl From<&str> for Dim {
    /// A symbol name (not parsed: `"2*B"` is a symbol with that name; use [`Dim::parse`]).
    fn from(s: &str) -> Self {
        Dim::sym(s)
    }
}

impl Serialize for Dim {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.as_const() {
            Some(n) => s.serialize_i64(n),
            None => s.serialize_str(&self.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Dim {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Int(i64),
            Text(String),
        }
        match Repr::deserialize(d)? {
            Repr::Int(n) => Ok(Dim::from_i64(n)),
            Repr::Text(t) => Dim::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests;
