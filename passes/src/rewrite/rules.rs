//! Rewrite rules as data: the `rules/*.rules` files, their parser, named conditions and
//! attribute functions, and the applier that keeps every rewrite type-preserving.
//!
//! # Rule files
//!
//! ```text
//! ;; x·1 → x when the ones do not broadcast x to a larger shape (exact).
//! (rule mul-one (mul ?x ?c) => ?x if (is-one ?c) (same-shape ?x ?result))
//! ```
//!
//! Each entry is `(rule NAME LHS => RHS [if CONDITION...])`, directly below a one-line `;;`
//! comment that says what it does. Patterns are s-expressions over IR op names: `(op ARGS...)`
//! has the op's default attributes, `(op :{JSON} ARGS...)` literal attributes (canonicalized by
//! the op itself, so defaults may be left out), `(op :?a ARGS...)` binds or reuses an attribute
//! variable, and on the right-hand side `(op :(FUNCTION ?v...) ARGS...)` computes attributes
//! (see [`AttrFn`]). `?name` is a pattern variable; `?result` in a condition is the matched
//! value. Rules are directional: there is no general commutativity or associativity.
//!
//! Whatever its conditions, a rewrite only applies when the new expression's type (inferred by
//! the ops' own `infer`) equals the matched value's type, so no rule can change a value's type.

use super::lang::{TensorAnalysis, TensorLang};
use super::RewriteError;
use egg::{
    Applier, EGraph, ENodeOrVar, Id, Pattern, PatternAst, RecExpr, Rewrite, Subst, Symbol, Var,
};
use fuselage_ir::{Op, TensorType};
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

/// The built-in rule files, compiled into the binary.
pub const RULE_FILES: &[(&str, &str)] = &[
    ("algebra.rules", include_str!("rules/algebra.rules")),
    ("layout.rules", include_str!("rules/layout.rules")),
    ("fusion.rules", include_str!("rules/fusion.rules")),
];

/// An s-expression of a rule file, with the line it starts on.
#[derive(Debug, Clone)]
enum Sexp {
    Atom(String, usize),
    List(Vec<Sexp>, usize),
    /// `:X` — an attribute argument.
    Attr(Box<Sexp>, usize),
}

impl Sexp {
    fn line(&self) -> usize {
        match self {
            Sexp::Atom(_, l) | Sexp::List(_, l) | Sexp::Attr(_, l) => *l,
        }
    }
}

struct Reader<'a> {
    chars: Vec<char>,
    pos: usize,
    line: usize,
    file: &'a str,
}

impl Reader<'_> {
    fn err(&self, line: usize, message: impl Into<String>) -> RewriteError {
        RewriteError::Syntax {
            file: self.file.to_string(),
            line,
            message: message.into(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn skip_space(&mut self) {
        while let Some(c) = self.peek() {
            if c == ';' {
                while let Some(c) = self.peek() {
                    if c == '\n' {
                        break;
                    }
                    self.bump();
                }
            } else if c.is_whitespace() {
                self.bump();
            } else {
                break;
            }
        }
    }

    fn sexp(&mut self) -> Result<Sexp, RewriteError> {
        self.skip_space();
        let line = self.line;
        match self.peek() {
            None => Err(self.err(line, "unexpected end of file")),
            Some('(') => {
                self.bump();
                let mut items = vec![];
                loop {
                    self.skip_space();
                    match self.peek() {
                        None => return Err(self.err(line, "unclosed `(`")),
                        Some(')') => {
                            self.bump();
                            return Ok(Sexp::List(items, line));
                        }
                        _ => items.push(self.sexp()?),
                    }
                }
            }
            Some(')') => Err(self.err(line, "unexpected `)`")),
            Some(':') => {
                self.bump();
                match self.peek() {
                    Some(c) if !c.is_whitespace() && c != ')' => {
                        Ok(Sexp::Attr(Box::new(self.sexp()?), line))
                    }
                    _ => Err(self.err(line, "`:` must be followed by attributes")),
                }
            }
            Some('{') => {
                let mut text = String::new();
                let (mut depth, mut in_str, mut escape) = (0usize, false, false);
                while let Some(c) = self.bump() {
                    text.push(c);
                    if in_str {
                        match c {
                            _ if escape => escape = false,
                            '\\' => escape = true,
                            '"' => in_str = false,
                            _ => {}
                        }
                        continue;
                    }
                    match c {
                        '"' => in_str = true,
                        '{' | '[' => depth += 1,
                        '}' | ']' => {
                            depth -= 1;
                            if depth == 0 {
                                return Ok(Sexp::Atom(text, line));
                            }
                        }
                        _ => {}
                    }
                }
                Err(self.err(line, "unclosed `{` in attributes"))
            }
            Some(_) => {
                let mut text = String::new();
                while let Some(c) = self.peek() {
                    if c.is_whitespace() || c == '(' || c == ')' || c == ';' {
                        break;
                    }
                    text.push(c);
                    self.bump();
                }
                Ok(Sexp::Atom(text, line))
            }
        }
    }
}

/// Functions that compute a right-hand side's attributes from matched ones.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AttrFn {
    /// `(compose-perm ?inner ?outer)`: the permutation of `transpose(transpose(x, inner),
    /// outer)` as one transpose: `perm[i] = inner[outer[i]]`.
    ComposePerm,
    /// `(norm-attrs ?eps)`: `{"axis": -1, "eps": ε}` with ε the uniform value of constant `?eps`.
    NormAttrs,
}

impl AttrFn {
    fn parse(name: &str) -> Option<(AttrFn, usize)> {
        match name {
            "compose-perm" => Some((AttrFn::ComposePerm, 2)),
            "norm-attrs" => Some((AttrFn::NormAttrs, 1)),
            _ => None,
        }
    }

    fn eval(
        self,
        egraph: &EGraph<TensorLang, TensorAnalysis>,
        args: &[Id],
    ) -> Option<serde_json::Value> {
        match self {
            AttrFn::ComposePerm => {
                let perm = |id: Id| -> Option<Vec<u64>> {
                    let j: serde_json::Value =
                        serde_json::from_str(egraph[id].data.attrs?.as_str()).ok()?;
                    j.get("perm")?
                        .as_array()?
                        .iter()
                        .map(|v| v.as_u64())
                        .collect()
                };
                let (inner, outer) = (perm(args[0])?, perm(args[1])?);
                if inner.len() != outer.len() {
                    return None;
                }
                let composed: Option<Vec<u64>> = outer
                    .iter()
                    .map(|&o| inner.get(o as usize).copied())
                    .collect();
                Some(serde_json::json!({ "perm": composed? }))
            }
            AttrFn::NormAttrs => {
                let eps = egraph[args[0]].data.uniform?;
                Some(serde_json::json!({ "axis": -1, "eps": eps }))
            }
        }
    }
}

/// A variable of a condition: a pattern variable or the matched value itself (`?result`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Slot {
    /// A pattern variable.
    Var(Var),
    /// `?result`: the matched value.
    Result,
}

/// Named conditions a rule may require (all must hold).
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// `(is-one ?c)`: a constant whose elements are all 1.
    IsOne(Var),
    /// `(is-zero ?c)`: a constant whose elements are all 0.
    IsZero(Var),
    /// `(is-value ?c V)`: a constant whose elements all equal V rounded to its dtype.
    IsValue(Var, f64),
    /// `(is-uniform ?c)`: a constant whose elements are all equal.
    IsUniform(Var),
    /// `(is-const ?c)`: a constant from the module's pool.
    IsConst(Var),
    /// `(not-const ?x)`: not a constant.
    NotConst(Var),
    /// `(same-shape ?a ?b)`: equal types (dtype and shape); `?result` is the matched value.
    SameShape(Slot, Slot),
    /// `(rank ?v N)`: rank N.
    Rank(Var, usize),
    /// `(last-dims-match ?p ?x)`: `?p`'s shape equals the trailing dims of `?x`'s shape.
    LastDimsMatch(Var, Var),
    /// `(identity-perm ?a)`: transpose attributes whose perm is 0, 1, …, n-1.
    IdentityPerm(Var),
}

impl Cond {
    fn holds(&self, eg: &EGraph<TensorLang, TensorAnalysis>, root: Id, s: &Subst) -> bool {
        let data = |v: &Var| &eg[s[*v]].data;
        let ty = |v: &Var| eg[s[*v]].data.ty.as_ref();
        let uniform_is = |v: &Var, want: f64| match (data(v).uniform, ty(v)) {
            (Some(u), Some(t)) => data(v).is_const && u == t.dtype.round(want),
            _ => false,
        };
        match self {
            Cond::IsOne(v) => uniform_is(v, 1.0),
            Cond::IsZero(v) => uniform_is(v, 0.0),
            Cond::IsValue(v, x) => uniform_is(v, *x),
            Cond::IsUniform(v) => data(v).is_const && data(v).uniform.is_some(),
            Cond::IsConst(v) => data(v).is_const,
            Cond::NotConst(v) => !data(v).is_const,
            Cond::SameShape(a, b) => {
                let get = |sl: &Slot| match sl {
                    Slot::Var(v) => eg[s[*v]].data.ty.as_ref(),
                    Slot::Result => eg[root].data.ty.as_ref(),
                };
                matches!((get(a), get(b)), (Some(x), Some(y)) if x == y)
            }
            Cond::Rank(v, n) => ty(v).is_some_and(|t| t.rank() == *n),
            Cond::LastDimsMatch(p, x) => match (ty(p), ty(x)) {
                (Some(p), Some(x)) => {
                    p.rank() <= x.rank() && p.shape[..] == x.shape[x.rank() - p.rank()..]
                }
                _ => false,
            },
            Cond::IdentityPerm(v) => data(v)
                .attrs
                .and_then(|a| serde_json::from_str::<serde_json::Value>(a.as_str()).ok())
                .and_then(|j| j.get("perm")?.as_array().cloned())
                .is_some_and(|p| {
                    p.iter()
                        .enumerate()
                        .all(|(i, x)| x.as_u64() == Some(i as u64))
                }),
        }
    }
}

/// Attributes of a right-hand-side op.
#[derive(Debug, Clone)]
enum AttrTemplate {
    Lit(Symbol),
    Var(Var),
    Fn(AttrFn, Vec<Var>),
}

/// A right-hand side.
#[derive(Debug, Clone)]
enum Template {
    Var(Var),
    Op {
        name: Symbol,
        attrs: AttrTemplate,
        args: Vec<Template>,
    },
}

/// A right-hand side resolved against one match, types checked.
enum Plan {
    Class(Id),
    Node(Symbol, Symbol, Vec<Plan>),
}

/// The applier of a rule: checks conditions, checks types, then adds and unions.
#[derive(Debug, Clone)]
pub struct RuleApplier {
    rhs: Template,
    conds: Vec<Cond>,
}

impl RuleApplier {
    fn attrs(
        &self,
        name: Symbol,
        t: &AttrTemplate,
        eg: &mut EGraph<TensorLang, TensorAnalysis>,
        s: &Subst,
    ) -> Option<Symbol> {
        match t {
            AttrTemplate::Lit(a) => Some(*a),
            AttrTemplate::Var(v) => eg[s[*v]].data.attrs,
            AttrTemplate::Fn(f, vars) => {
                let ids: Vec<Id> = vars.iter().map(|v| s[*v]).collect();
                let json = f.eval(eg, &ids)?;
                let op = Op::from_attrs(name.as_str(), json).ok()?;
                Some(super::lang::canonical_attrs(&op))
            }
        }
    }

    /// Resolve a template: its plan and its type, or `None` where a type does not infer.
    fn plan(
        &self,
        t: &Template,
        eg: &mut EGraph<TensorLang, TensorAnalysis>,
        s: &Subst,
    ) -> Option<(Plan, TensorType)> {
        match t {
            Template::Var(v) => {
                let id = s[*v];
                Some((Plan::Class(id), eg[id].data.ty.clone()?))
            }
            Template::Op { name, attrs, args } => {
                let a = self.attrs(*name, attrs, eg, s)?;
                let mut plans = Vec::with_capacity(args.len());
                let mut tys = Vec::with_capacity(args.len());
                for arg in args {
                    let (p, ty) = self.plan(arg, eg, s)?;
                    plans.push(p);
                    tys.push(ty);
                }
                let ty = eg.analysis.infer(*name, a, &tys)?;
                Some((Plan::Node(*name, a, plans), ty))
            }
        }
    }

    fn build(plan: Plan, eg: &mut EGraph<TensorLang, TensorAnalysis>) -> Id {
        match plan {
            Plan::Class(id) => id,
            Plan::Node(name, attrs, args) => {
                let mut ch = Vec::with_capacity(args.len() + 1);
                ch.push(eg.add(TensorLang::Attr(attrs)));
                for a in args {
                    ch.push(Self::build(a, eg));
                }
                eg.add(TensorLang::Op(name, ch))
            }
        }
    }
}

impl Applier<TensorLang, TensorAnalysis> for RuleApplier {
    fn apply_one(
        &self,
        eg: &mut EGraph<TensorLang, TensorAnalysis>,
        eclass: Id,
        subst: &Subst,
        _ast: Option<&PatternAst<TensorLang>>,
        _rule: Symbol,
    ) -> Vec<Id> {
        if !self.conds.iter().all(|c| c.holds(eg, eclass, subst)) {
            return vec![];
        }
        let Some(want) = eg[eclass].data.ty.clone() else {
            return vec![];
        };
        match self.plan(&self.rhs, eg, subst) {
            Some((plan, ty)) if ty == want => {
                let id = Self::build(plan, eg);
                if eg.union(eclass, id) {
                    vec![eclass]
                } else {
                    vec![]
                }
            }
            _ => vec![],
        }
    }
}

/// One parsed rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Kebab-case name.
    pub name: String,
    /// The one-line comment above it.
    pub doc: String,
    /// File it comes from.
    pub file: String,
    /// Line of its `(rule`.
    pub line: usize,
    lhs: PatternAst<TensorLang>,
    applier: RuleApplier,
}

impl Rule {
    /// The egg rewrite.
    pub fn rewrite(&self) -> Result<Rewrite<TensorLang, TensorAnalysis>, RewriteError> {
        Rewrite::new(
            self.name.as_str(),
            Pattern::new(self.lhs.clone()),
            self.applier.clone(),
        )
        .map_err(|m| self.err(m))
    }

    fn err(&self, message: impl Into<String>) -> RewriteError {
        RewriteError::Rule {
            file: self.file.clone(),
            line: self.line,
            rule: self.name.clone(),
            message: message.into(),
        }
    }
}

/// Canonical attributes of `op` from JSON text, or an error naming the op.
fn canonical(op: &str, json: &str) -> Result<Symbol, String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("attributes `{json}` of `{op}`: {e}"))?;
    let op = Op::from_attrs(op, v).map_err(|e| e.to_string())?;
    Ok(super::lang::canonical_attrs(&op))
}

/// An attribute error, with a hint on how to write attributes when the op exists.
fn attrs_hint(op: &str, e: String, hint: &str) -> String {
    if fuselage_ir::ops::OP_NAMES.contains(&op) {
        format!("{e} {hint}")
    } else {
        e
    }
}

fn parse_var(t: &str) -> Result<Var, String> {
    if t == "?result" {
        return Err("`?result` names the matched value and may only be used in conditions".into());
    }
    t.parse::<Var>()
        .map_err(|_| format!("`{t}` is not a pattern variable (`?name`)"))
}

fn compile_lhs(
    s: &Sexp,
    ast: &mut RecExpr<ENodeOrVar<TensorLang>>,
    vars: &mut HashSet<Var>,
) -> Result<Id, String> {
    match s {
        Sexp::Atom(t, _) if t.starts_with('?') => {
            let v = parse_var(t)?;
            vars.insert(v);
            Ok(ast.add(ENodeOrVar::Var(v)))
        }
        Sexp::List(items, _) => {
            let Some(Sexp::Atom(op, _)) = items.first() else {
                return Err("a pattern list starts with an op name".into());
            };
            let mut rest = &items[1..];
            let attr = match rest.first() {
                Some(Sexp::Attr(inner, _)) => {
                    rest = &rest[1..];
                    match &**inner {
                        Sexp::Atom(t, _) if t.starts_with('?') => {
                            let v = parse_var(t)?;
                            vars.insert(v);
                            ast.add(ENodeOrVar::Var(v))
                        }
                        Sexp::Atom(t, _) if t.starts_with('{') => {
                            ast.add(ENodeOrVar::ENode(TensorLang::Attr(canonical(op, t)?)))
                        }
                        _ => {
                            return Err(format!(
                                "attributes of `{op}` on a left-hand side must be `:{{JSON}}` or `:?var`"
                            ))
                        }
                    }
                }
                _ => {
                    let a = canonical(op, "{}").map_err(|e| {
                        attrs_hint(op, e, "(write its attributes as `:{JSON}` or `:?var`)")
                    })?;
                    ast.add(ENodeOrVar::ENode(TensorLang::Attr(a)))
                }
            };
            let mut ch = vec![attr];
            for a in rest {
                if matches!(a, Sexp::Attr(..)) {
                    return Err(format!("attributes of `{op}` must be its first argument"));
                }
                ch.push(compile_lhs(a, ast, vars)?);
            }
            Ok(ast.add(ENodeOrVar::ENode(TensorLang::Op(
                Symbol::from(op.as_str()),
                ch,
            ))))
        }
        Sexp::Atom(t, _) => Err(format!("expected `?var` or `(op ...)`, found `{t}`")),
        Sexp::Attr(..) => Err("attributes `:...` may only follow an op name".into()),
    }
}

fn bound(t: &str, vars: &HashSet<Var>) -> Result<Var, String> {
    let v = parse_var(t)?;
    if vars.contains(&v) {
        Ok(v)
    } else {
        Err(format!("`{t}` is not bound by the left-hand side"))
    }
}

fn compile_rhs(s: &Sexp, vars: &HashSet<Var>) -> Result<Template, String> {
    match s {
        Sexp::Atom(t, _) if t.starts_with('?') => Ok(Template::Var(bound(t, vars)?)),
        Sexp::List(items, _) => {
            let Some(Sexp::Atom(op, _)) = items.first() else {
                return Err("a pattern list starts with an op name".into());
            };
            let mut rest = &items[1..];
            let attrs = match rest.first() {
                Some(Sexp::Attr(inner, _)) => {
                    rest = &rest[1..];
                    match &**inner {
                        Sexp::Atom(t, _) if t.starts_with('?') => {
                            AttrTemplate::Var(bound(t, vars)?)
                        }
                        Sexp::Atom(t, _) if t.starts_with('{') => {
                            AttrTemplate::Lit(canonical(op, t)?)
                        }
                        Sexp::List(f, _) => {
                            let Some(Sexp::Atom(fname, _)) = f.first() else {
                                return Err(
                                    "an attribute function call starts with its name".into()
                                );
                            };
                            let (func, arity) = AttrFn::parse(fname).ok_or_else(|| {
                                format!(
                                    "unknown attribute function `{fname}` (known: compose-perm, norm-attrs)"
                                )
                            })?;
                            if f.len() - 1 != arity {
                                return Err(format!(
                                    "`{fname}` takes {arity} arguments, found {}",
                                    f.len() - 1
                                ));
                            }
                            let args = f[1..]
                                .iter()
                                .map(|a| match a {
                                    Sexp::Atom(t, _) => bound(t, vars),
                                    _ => Err(format!("arguments of `{fname}` are variables")),
                                })
                                .collect::<Result<_, _>>()?;
                            AttrTemplate::Fn(func, args)
                        }
                        _ => return Err(format!("bad attributes of `{op}`")),
                    }
                }
                _ => AttrTemplate::Lit(canonical(op, "{}").map_err(|e| {
                    attrs_hint(
                        op,
                        e,
                        "(write its attributes as `:{JSON}`, `:?var` or `:(function ...)`)",
                    )
                })?),
            };
            let args = rest
                .iter()
                .map(|a| compile_rhs(a, vars))
                .collect::<Result<_, _>>()?;
            Ok(Template::Op {
                name: Symbol::from(op.as_str()),
                attrs,
                args,
            })
        }
        Sexp::Atom(t, _) => Err(format!("expected `?var` or `(op ...)`, found `{t}`")),
        Sexp::Attr(..) => Err("attributes `:...` may only follow an op name".into()),
    }
}

fn compile_cond(s: &Sexp, vars: &HashSet<Var>) -> Result<Cond, String> {
    let Sexp::List(items, _) = s else {
        return Err("a condition is a list `(name ?var ...)`".into());
    };
    let atoms: Vec<&str> = items
        .iter()
        .map(|i| match i {
            Sexp::Atom(t, _) => Ok(t.as_str()),
            _ => Err("condition arguments are variables or numbers".to_string()),
        })
        .collect::<Result<_, _>>()?;
    let (name, args) = atoms.split_first().ok_or("empty condition")?;
    let want = |n: usize| -> Result<(), String> {
        if args.len() == n {
            Ok(())
        } else {
            Err(format!(
                "condition `{name}` takes {n} arguments, found {}",
                args.len()
            ))
        }
    };
    let v = |i: usize| bound(args[i], vars);
    let slot = |i: usize| -> Result<Slot, String> {
        if args[i] == "?result" {
            Ok(Slot::Result)
        } else {
            Ok(Slot::Var(bound(args[i], vars)?))
        }
    };
    let num = |i: usize| -> Result<f64, String> {
        args[i]
            .parse::<f64>()
            .map_err(|_| format!("`{}` is not a number", args[i]))
    };
    Ok(match *name {
        "is-one" => {
            want(1)?;
            Cond::IsOne(v(0)?)
        }
        "is-zero" => {
            want(1)?;
            Cond::IsZero(v(0)?)
        }
        "is-value" => {
            want(2)?;
            Cond::IsValue(v(0)?, num(1)?)
        }
        "is-uniform" => {
            want(1)?;
            Cond::IsUniform(v(0)?)
        }
        "is-const" => {
            want(1)?;
            Cond::IsConst(v(0)?)
        }
        "not-const" => {
            want(1)?;
            Cond::NotConst(v(0)?)
        }
        "same-shape" => {
            want(2)?;
            Cond::SameShape(slot(0)?, slot(1)?)
        }
        "rank" => {
            want(2)?;
            let n = num(1)?;
            if n < 0.0 || n.fract() != 0.0 {
                return Err(format!("rank `{}` is not a whole number", args[1]));
            }
            Cond::Rank(v(0)?, n as usize)
        }
        "last-dims-match" => {
            want(2)?;
            Cond::LastDimsMatch(v(0)?, v(1)?)
        }
        "identity-perm" => {
            want(1)?;
            Cond::IdentityPerm(v(0)?)
        }
        _ => {
            return Err(format!(
                "unknown condition `{name}` (known: is-one, is-zero, is-value, is-uniform, \
                 is-const, not-const, same-shape, rank, last-dims-match, identity-perm)"
            ))
        }
    })
}

/// Parse one rule file. Errors name the file, the line and (once known) the rule.
pub fn parse_rules(file: &str, text: &str) -> Result<Vec<Rule>, RewriteError> {
    let comments: HashMap<usize, String> = text
        .lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let t = l.trim();
            t.starts_with(";;")
                .then(|| (i + 1, t.trim_start_matches(';').trim().to_string()))
        })
        .collect();
    let mut r = Reader {
        chars: text.chars().collect(),
        pos: 0,
        line: 1,
        file,
    };
    let mut rules: Vec<Rule> = vec![];
    let mut names: HashMap<String, usize> = HashMap::new();
    loop {
        r.skip_space();
        if r.peek().is_none() {
            break;
        }
        let entry = r.sexp()?;
        let line = entry.line();
        let syntax = |message: String| RewriteError::Syntax {
            file: file.to_string(),
            line,
            message,
        };
        let Sexp::List(items, _) = &entry else {
            return Err(syntax(
                "expected `(rule NAME LHS => RHS [if CONDITION...])`".into(),
            ));
        };
        let name = match (items.first(), items.get(1)) {
            (Some(Sexp::Atom(k, _)), Some(Sexp::Atom(n, _))) if k == "rule" => n.clone(),
            _ => {
                return Err(syntax(
                    "expected `(rule NAME LHS => RHS [if CONDITION...])`".into(),
                ))
            }
        };
        let err = |message: String| RewriteError::Rule {
            file: file.to_string(),
            line,
            rule: name.clone(),
            message,
        };
        if let Some(prev) = names.insert(name.clone(), line) {
            return Err(err(format!(
                "duplicate rule name (first defined on line {prev})"
            )));
        }
        let doc = comments
            .get(&(line - 1))
            .cloned()
            .filter(|d| !d.is_empty())
            .ok_or_else(|| err("needs a one-line `;;` comment directly above it".into()))?;
        if items.len() < 5 || !matches!(&items[3], Sexp::Atom(a, _) if a == "=>") {
            return Err(err(
                "expected `(rule NAME LHS => RHS [if CONDITION...])`".into()
            ));
        }
        let mut ast = RecExpr::default();
        let mut vars = HashSet::new();
        compile_lhs(&items[2], &mut ast, &mut vars)
            .map_err(|m| err(format!("left-hand side: {m}")))?;
        let rhs =
            compile_rhs(&items[4], &vars).map_err(|m| err(format!("right-hand side: {m}")))?;
        let conds = match items.get(5) {
            None => vec![],
            Some(Sexp::Atom(k, _)) if k == "if" => {
                if items.len() == 6 {
                    return Err(err("`if` without conditions".into()));
                }
                items[6..]
                    .iter()
                    .map(|c| compile_cond(c, &vars))
                    .collect::<Result<_, _>>()
                    .map_err(|m| err(format!("condition: {m}")))?
            }
            Some(_) => return Err(err("expected `if` after the right-hand side".into())),
        };
        let rule = Rule {
            name: name.clone(),
            doc,
            file: file.to_string(),
            line,
            lhs: ast,
            applier: RuleApplier { rhs, conds },
        };
        rule.rewrite()?;
        rules.push(rule);
    }
    Ok(rules)
}

/// All built-in rules, parsed once.
pub fn builtin_rules() -> Result<&'static [Rule], RewriteError> {
    static RULES: OnceLock<Result<Vec<Rule>, RewriteError>> = OnceLock::new();
    RULES
        .get_or_init(|| {
            let mut all = vec![];
            for (file, text) in RULE_FILES {
                all.extend(parse_rules(file, text)?);
            }
            Ok(all)
        })
        .as_ref()
        .map(|v| v.as_slice())
        .map_err(Clone::clone)
}
