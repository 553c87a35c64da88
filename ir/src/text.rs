//! The `.fir` text form and JSON form of modules.
//!
//! ```text
//! // any comment line
//! module {
//!   const @"emb.weight" : f32[100,16] = {"kind":"seeded","seed":1,"dist":"normal","mean":0.0,"std":0.02}
//!   func @main(%0 "ids": i64[B,S], %1 "mask": f32[B,S]) {
//!     %2 = constant {"name":"emb.weight"} : f32[100,16]
//!     %3 "embeddings" = gather(%2, %0) {"axis":0} : f32[B,S,16]
//!     %4:2 = split(%3) {"axis":2,"sizes":[8,8]} : f32[B,S,8], f32[B,S,8]
//!     %5 = add(%4#0, %4#1) : f32[B,S,8]
//!     return %5 "out", %3 "emb"
//!   }
//! }
//! ```
//!
//! Grammar (whitespace and `//` comments allowed between any two tokens):
//! - `module { (const | func)* }`
//! - `const @SYM : TYPE = STORAGE` where STORAGE is the constant's storage as JSON
//!   (`{"kind":"dense","bytes":"<hex>"}` or `{"kind":"seeded","seed":…,"dist":…}`);
//! - `func @SYM ( PARAM, … ) [arena N] { NODE* return [VALUE STRING, …] }`, where a parameter is
//!   `%N STRING [STRING] : TYPE` (the id of the `input` node, its input name, optionally the
//!   node's own name) and parameters are listed in `inputs` order; `arena N` is printed when the
//!   arena extends past the largest live id (trailing holes left by removed nodes);
//! - a node is `%N[:K] [STRING] = OP [(VALUE, …)] [ATTRS] : TYPE, …` — `:K` is the number of
//!   results when it is not 1 (zero results are written `: ()`), STRING the node's name, ATTRS
//!   the op's attributes as compact JSON (omitted when `{}`), the types the declared results;
//! - a value is `%N` (result 0) or `%N#K`; a type is `DTYPE[DIM, …]` (`f32[]` is a scalar), a
//!   dim a number, a symbol `B`, or a quoted symbol `"3d"`; `@SYM` is `@name` or `@"any text"`.
//!
//! Strings are JSON strings. Node ids are the arena ids (holes allowed, at most
//! [`MAX_NODE_ID`]); nodes are printed in topological order and must be defined before use.
//! [`parse_module`] re-infers the types of every node (except `input`s, whose type is
//! declared) and reports any disagreement with its position; every error is an
//! [`IrError::Parse`] with file, line and column, saying what was expected and what was found.

use crate::constant::{Constant, Storage};
use crate::dtype::DType;
use crate::error::IrError;
use crate::graph::{Graph, GraphOutput, Node, NodeId, ValueId};
use crate::module::Module;
use crate::ops::{input::Input, Op, OP_NAMES};
use crate::types::{Dim, TensorType};
use crate::verify::{infer_node, types_list, verify};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::fmt::Write;
use std::sync::Arc;

/// The largest node id the parser accepts (the arena is allocated up to the largest id).
pub const MAX_NODE_ID: u32 = 1 << 20;

// ------------------------------------------------------------------------------------------
// Printing
// ------------------------------------------------------------------------------------------

/// Print a module in the `.fir` text form. [`parse_module`] reads it back to an equal module.
///
/// Printing never fails: a module that does not verify is printed as faithfully as possible
/// (nodes of a cyclic graph in arena order, a bad `inputs` entry as a bare `%N`), and the parser
/// then reports what is wrong with it.
pub fn print_module(module: &Module) -> String {
    let mut s = String::from("module {\n");
    for fact in module.facts.statements() {
        let _ = writeln!(s, "  assume {fact}");
    }
    for (name, c) in &module.constants {
        let storage = serde_json::to_string(&c.storage)
            .unwrap_or_else(|e| format!("<unprintable storage: {e}>"));
        // Writing into a String cannot fail.
        let _ = writeln!(
            s,
            "  const @{} : {} = {storage}",
            symbol(name),
            type_str(&c.ty)
        );
    }
    for (name, g) in &module.functions {
        print_function(&mut s, name, g);
    }
    s.push_str("}\n");
    s
}

/// Print one type in text form (`f32[B,S,384]`, `f32[2*B,S/4]`; symbols that are not
/// identifiers are quoted).
pub fn type_str(t: &TensorType) -> String {
    let mut s = format!("{}[", t.dtype);
    for (i, d) in t.shape.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{d}");
    }
    s.push(']');
    s
}

fn print_function(s: &mut String, name: &str, g: &Graph) {
    let _ = write!(s, "  func @{}(", symbol(name));
    let mut declared = HashSet::new();
    for (k, &id) in g.inputs.iter().enumerate() {
        if k > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{id}");
        match g.node(id) {
            Some(Node {
                op: Op::Input(Input { name }),
                operands,
                results,
                name: node_name,
            }) if operands.is_empty() && results.len() == 1 && declared.insert(id) => {
                let _ = write!(s, " {}", quote(name));
                if let Some(n) = node_name {
                    let _ = write!(s, " {}", quote(n));
                }
                let _ = write!(s, ": {}", type_str(&results[0]));
            }
            _ => {}
        }
    }
    s.push(')');
    let used = g.node_ids().last().map_or(0, |id| id.index() + 1);
    if g.arena_len() > used {
        let _ = write!(s, " arena {}", g.arena_len());
    }
    s.push_str(" {\n");
    let order = g
        .topo_order()
        .unwrap_or_else(|_| g.node_ids().collect::<Vec<_>>());
    for id in order {
        if declared.contains(&id) {
            continue;
        }
        let Some(n) = g.node(id) else { continue };
        let _ = write!(s, "    {id}");
        if n.results.len() != 1 {
            let _ = write!(s, ":{}", n.results.len());
        }
        if let Some(name) = &n.name {
            let _ = write!(s, " {}", quote(name));
        }
        let _ = write!(s, " = {}", n.op.name());
        if !n.operands.is_empty() {
            let ops: Vec<String> = n.operands.iter().map(|v| value_str(*v)).collect();
            let _ = write!(s, "({})", ops.join(", "));
        }
        let attrs = n.op.attrs();
        if !attrs.as_object().is_some_and(|o| o.is_empty()) {
            let _ = write!(s, " {attrs}");
        }
        if n.results.is_empty() {
            s.push_str(" : ()\n");
        } else {
            let tys: Vec<String> = n.results.iter().map(type_str).collect();
            let _ = writeln!(s, " : {}", tys.join(", "));
        }
    }
    s.push_str("    return");
    for (k, o) in g.outputs.iter().enumerate() {
        let sep = if k == 0 { " " } else { ", " };
        let _ = write!(s, "{sep}{} {}", value_str(o.value), quote(&o.name));
    }
    s.push_str("\n  }\n");
}

fn value_str(v: ValueId) -> String {
    if v.slot == 0 {
        format!("{}", v.node)
    } else {
        format!("{v}")
    }
}

fn quote(s: &str) -> String {
    // Serializing a str to JSON cannot fail.
    serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\""))
}

fn is_bare_ident(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn symbol(s: &str) -> String {
    if is_bare_ident(s) {
        s.to_string()
    } else {
        quote(s)
    }
}

// ------------------------------------------------------------------------------------------
// JSON
// ------------------------------------------------------------------------------------------

/// Serialize a module to (pretty-printed) JSON. [`from_json`] reads it back to an equal module.
pub fn to_json(module: &Module) -> String {
    // All map keys of a module are strings and every value is plain data, so serde_json cannot
    // fail here.
    serde_json::to_string_pretty(module).expect("a Module always serializes to JSON")
}

/// Deserialize a module from JSON and [`verify`] it (constants, references, types), so that a
/// malformed or ill-typed file is an error rather than a module that fails later.
pub fn from_json(src: &str) -> Result<Module, IrError> {
    let m: Module = serde_json::from_str(src).map_err(|e| IrError::Json(e.to_string()))?;
    verify(&m)?;
    Ok(m)
}

// ------------------------------------------------------------------------------------------
// Parsing
// ------------------------------------------------------------------------------------------

/// Parse a module in the `.fir` text form. `file` names the source in errors.
///
/// Besides the syntax, the parser checks that every value is defined before it is used, that
/// ids are unique within a function, that constants fit their types, and that the written result
/// types of every node equal the re-inferred ones; the result passes [`verify`]. Every error is
/// an [`IrError::Parse`] with the position of the offending token.
pub fn parse_module(src: &str, file: &str) -> Result<Module, IrError> {
    let (m, funcs, p) = parse_unchecked(src, file)?;
    for f in &funcs {
        let Some(g) = m.functions.get(&f.name) else {
            continue;
        };
        for &(id, op_pos, ty_pos) in &f.nodes {
            let Some(n) = g.node(id) else { continue };
            let inferred = infer_node(&m, g, id).map_err(|e| {
                p.err_at(op_pos, format!("type error in {id} ({}): {e}", n.op.name()))
            })?;
            if inferred != n.results {
                return Err(p.err_at(
                    ty_pos,
                    format!(
                        "type mismatch in {id} ({}): written {}, inferred {}",
                        n.op.name(),
                        types_list(&n.results),
                        types_list(&inferred)
                    ),
                ));
            }
        }
    }
    verify(&m)?;
    Ok(m)
}

/// Where the nodes of one parsed function were written: (id, op position, type position).
pub(crate) struct FuncInfo {
    name: String,
    nodes: Vec<(NodeId, usize, usize)>,
}

/// Parse the syntax and the structure (definitions before uses, unique ids, constants that fit
/// their types) but not the node types.
pub(crate) fn parse_unchecked<'a>(
    src: &'a str,
    file: &'a str,
) -> Result<(Module, Vec<FuncInfo>, Parser<'a>), IrError> {
    let mut p = Parser {
        src,
        b: src.as_bytes(),
        pos: 0,
        file,
    };
    let (m, funcs) = p.module()?;
    Ok((m, funcs, p))
}

pub(crate) struct Parser<'a> {
    src: &'a str,
    b: &'a [u8],
    pos: usize,
    file: &'a str,
}

type PResult<T> = Result<T, IrError>;

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn is_ident_continue(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'.'
}

impl<'a> Parser<'a> {
    fn line_col(&self, pos: usize) -> (usize, usize) {
        let before = &self.b[..pos.min(self.b.len())];
        let line = 1 + before.iter().filter(|&&c| c == b'\n').count();
        let start = before
            .iter()
            .rposition(|&c| c == b'\n')
            .map_or(0, |i| i + 1);
        let col = 1 + before[start..]
            .iter()
            .filter(|&&c| (c & 0xC0) != 0x80)
            .count();
        (line, col)
    }

    fn err_at(&self, pos: usize, message: impl Into<String>) -> IrError {
        let (line, column) = self.line_col(pos);
        IrError::Parse {
            file: self.file.to_string(),
            line,
            column,
            message: message.into(),
        }
    }

    /// "expected X, found Y" at the current position.
    fn expected(&self, what: &str) -> IrError {
        self.err_at(self.pos, format!("expected {what}, found {}", self.found()))
    }

    /// A description of the token at the current position.
    fn found(&self) -> String {
        match self.b.get(self.pos) {
            None => "end of file".into(),
            Some(b'"') => "a string".into(),
            Some(&c) if is_ident_continue(c) => {
                let end = self.b[self.pos..]
                    .iter()
                    .position(|&c| !is_ident_continue(c))
                    .map_or(self.b.len(), |k| self.pos + k);
                let word = self.src.get(self.pos..end).unwrap_or("");
                if word.len() > 40 {
                    format!("`{}…`", word.get(..40).unwrap_or(""))
                } else {
                    format!("`{word}`")
                }
            }
            Some(_) => match self.src.get(self.pos..).and_then(|s| s.chars().next()) {
                Some(c) if c.is_control() => format!("{c:?}"),
                Some(c) => format!("`{c}`"),
                None => "an invalid character".into(),
            },
        }
    }

    /// Skip whitespace and `//` comments.
    fn skip_ws(&mut self) {
        while let Some(&c) = self.b.get(self.pos) {
            if c.is_ascii_whitespace() {
                self.pos += 1;
            } else if c == b'/' && self.b.get(self.pos + 1) == Some(&b'/') {
                while let Some(&c) = self.b.get(self.pos) {
                    if c == b'\n' {
                        break;
                    }
                    self.pos += 1;
                }
            } else {
                break;
            }
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.b.get(self.pos).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8, what: &str) -> PResult<()> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.expected(what))
        }
    }

    /// An identifier `[A-Za-z_][A-Za-z0-9_.]*` at the current position (after whitespace).
    fn ident(&mut self) -> Option<(usize, &'a str)> {
        self.skip_ws();
        let start = self.pos;
        if !self.b.get(start).is_some_and(|&c| is_ident_start(c)) {
            return None;
        }
        let mut end = start;
        while self.b.get(end).is_some_and(|&c| is_ident_continue(c)) {
            end += 1;
        }
        let word = self.src.get(start..end)?;
        self.pos = end;
        Some((start, word))
    }

    fn keyword(&mut self, kw: &str) -> bool {
        let save = self.pos;
        match self.ident() {
            Some((_, w)) if w == kw => true,
            _ => {
                self.pos = save;
                false
            }
        }
    }

    /// A JSON string starting at the current position (after whitespace).
    fn string(&mut self, what: &str) -> PResult<String> {
        if self.peek() != Some(b'"') {
            return Err(self.expected(what));
        }
        let start = self.pos;
        let mut i = start + 1;
        loop {
            match self.b.get(i) {
                None | Some(b'\n') => {
                    return Err(self.err_at(
                        start,
                        "unterminated string: a string must end with `\"` on the same line",
                    ))
                }
                Some(b'\\') => i += 2,
                Some(b'"') => break,
                Some(_) => i += 1,
            }
        }
        let text = self
            .src
            .get(start..=i)
            .ok_or_else(|| self.err_at(start, "invalid string"))?;
        let s: String = serde_json::from_str(text)
            .map_err(|e| self.err_at(start, format!("invalid string: {}", json_msg(&e))))?;
        self.pos = i + 1;
        Ok(s)
    }

    /// A JSON value (object) starting at the current position.
    fn json(&mut self) -> PResult<Value> {
        self.skip_ws();
        let start = self.pos;
        let rest = self
            .src
            .get(start..)
            .ok_or_else(|| self.err_at(start, "invalid position"))?;
        let mut it = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
        match it.next() {
            Some(Ok(v)) => {
                self.pos = start + it.byte_offset();
                Ok(v)
            }
            Some(Err(e)) => {
                // serde_json reports 1-based lines and the column after the offending byte.
                let rb = rest.as_bytes();
                let mut line_start = 0;
                for _ in 1..e.line() {
                    match rb[line_start..].iter().position(|&c| c == b'\n') {
                        Some(k) => line_start += k + 1,
                        None => break,
                    }
                }
                let off = (line_start + e.column().saturating_sub(1)).min(rb.len());
                Err(self.err_at(start + off, format!("invalid JSON: {}", json_msg(&e))))
            }
            None => Err(self.expected("a JSON object")),
        }
    }

    /// Decimal digits as a `u64`.
    /// A number after optional whitespace.
    fn num_ws(&mut self, what: &str) -> PResult<u64> {
        self.skip_ws();
        self.number(what)
    }

    fn number(&mut self, what: &str) -> PResult<u64> {
        let start = self.pos;
        let mut n: u64 = 0;
        let mut any = false;
        while let Some(&c) = self.b.get(self.pos) {
            if !c.is_ascii_digit() {
                break;
            }
            any = true;
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add((c - b'0') as u64))
                .ok_or_else(|| self.err_at(start, format!("{what} is too large")))?;
            self.pos += 1;
        }
        if !any {
            return Err(self.expected(what));
        }
        Ok(n)
    }

    /// `%N` (right after the `%`, without whitespace): a node id.
    fn node_id(&mut self) -> PResult<(usize, NodeId)> {
        self.expect(b'%', "`%` and a node id")?;
        let start = self.pos.saturating_sub(1);
        let n = self.number("a node id after `%`")?;
        if n > MAX_NODE_ID as u64 {
            return Err(self.err_at(
                start,
                format!("node id %{n} is too large (at most %{MAX_NODE_ID})"),
            ));
        }
        Ok((start, NodeId(n as u32)))
    }

    /// `%N` or `%N#K`, checked against the definitions seen so far.
    fn value(&mut self, defined: &HashMap<NodeId, (usize, usize)>) -> PResult<ValueId> {
        let (start, id) = self.node_id()?;
        let mut slot = 0u64;
        if self.b.get(self.pos) == Some(&b'#') {
            self.pos += 1;
            slot = self.number("a result index after `#`")?;
        }
        match defined.get(&id) {
            None => Err(self.err_at(
                start,
                format!("use of undefined value {id} (values must be defined before use)"),
            )),
            Some(&(count, _)) if slot >= count as u64 => Err(self.err_at(
                start,
                format!("{id} has {count} result(s); {id}#{slot} does not exist"),
            )),
            Some(_) => Ok(ValueId::new(id, slot as u32)),
        }
    }

    /// `@name` or `@"any text"`.
    fn symbol(&mut self, what: &str) -> PResult<String> {
        self.expect(b'@', what)?;
        if self.b.get(self.pos) == Some(&b'"') {
            return self.string(what);
        }
        if !self.b.get(self.pos).is_some_and(|&c| is_ident_start(c)) {
            return Err(self.expected(what));
        }
        match self.ident() {
            Some((_, w)) => Ok(w.to_string()),
            None => Err(self.expected(what)),
        }
    }

    /// `assume SYM >= N`, `assume SYM <= N` or `assume SYM % K == 0` (after the keyword).
    fn assume(&mut self, m: &mut Module) -> PResult<()> {
        const WHAT: &str = "a symbol after `assume`";
        self.skip_ws();
        let at = self.pos;
        let sym = if self.b.get(self.pos) == Some(&b'"') {
            self.string(WHAT)?
        } else {
            match self.ident() {
                Some((_, w)) => w.to_string(),
                None => return Err(self.expected(WHAT)),
            }
        };
        self.skip_ws();
        let facts = m.facts.0.entry(sym.clone()).or_default();
        let rest = &self.b[self.pos..];
        if rest.starts_with(b">=") {
            self.pos += 2;
            facts.min = Some(self.num_ws("the lower bound")?);
        } else if rest.starts_with(b"<=") {
            self.pos += 2;
            facts.max = Some(self.num_ws("the upper bound")?);
        } else if rest.starts_with(b"%") {
            self.pos += 1;
            let k = self.num_ws("the divisor")?;
            if k == 0 {
                return Err(self.err_at(at, format!("assume {sym} % 0: the divisor must be >= 1")));
            }
            self.skip_ws();
            if !self.b[self.pos..].starts_with(b"==") {
                return Err(self.expected("`== 0`"));
            }
            self.pos += 2;
            if self.num_ws("`0`")? != 0 {
                return Err(self.err_at(at, "only `SYM % K == 0` facts are supported"));
            }
            facts.multiple_of = Some(k);
        } else {
            return Err(self.expected("`>=`, `<=` or `%` after the symbol"));
        }
        if let (Some(lo), Some(hi)) = (facts.min, facts.max) {
            if lo > hi {
                return Err(self.err_at(
                    at,
                    format!("assume {sym}: the facts {sym} >= {lo} and {sym} <= {hi} contradict"),
                ));
            }
        }
        Ok(())
    }

    /// One dim expression of a shape, up to the next top-level `,` or `]`.
    fn dim(&mut self) -> PResult<Dim> {
        let start = self.pos;
        let mut depth = 0usize;
        let mut quoted = false;
        let mut j = start;
        while j < self.b.len() {
            let c = self.b[j];
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
                    b')' => depth = depth.saturating_sub(1),
                    b',' | b']' if depth == 0 => break,
                    b'\n' | b'{' | b'}' | b'=' | b':' => break,
                    _ => {}
                }
            }
            j += 1;
        }
        // A trailing `\` inside quotes steps past the end; the dim ends at the input's end.
        let j = j.min(self.b.len());
        let text = std::str::from_utf8(&self.b[start..j])
            .map_err(|_| self.err_at(start, "a dimension is not UTF-8"))?;
        if text.trim().is_empty() {
            return Err(self.expected(
                "a dimension (a number, a symbol like `B`, a quoted symbol, or an expression like `2*B`)",
            ));
        }
        let d = Dim::parse(text).map_err(|e| self.err_at(start, e.to_string()))?;
        if let Some(n) = d.as_const().filter(|&n| n < 0) {
            return Err(self.err_at(start, format!("a dimension cannot be negative, found {n}")));
        }
        self.pos = j;
        Ok(d)
    }

    /// `dtype[dim, ...]`.
    fn ty(&mut self) -> PResult<TensorType> {
        const WHAT: &str = "a type like `f32[B,16]`";
        self.skip_ws();
        let Some((at, word)) = self.ident() else {
            return Err(self.expected(WHAT));
        };
        let dtype: DType = word.parse().map_err(|e: String| self.err_at(at, e))?;
        self.expect(b'[', &format!("`[` after the dtype `{dtype}`"))?;
        let mut shape = Vec::new();
        if !self.eat(b']') {
            loop {
                self.skip_ws();
                shape.push(self.dim()?);
                if self.eat(b']') {
                    break;
                }
                self.expect(b',', "`,` or `]` in the shape")?;
            }
        }
        Ok(TensorType { dtype, shape })
    }

    fn module(&mut self) -> PResult<(Module, Vec<FuncInfo>)> {
        if !self.keyword("module") {
            return Err(self.expected("`module`"));
        }
        self.expect(b'{', "`{` after `module`")?;
        let mut m = Module::new();
        let mut funcs = Vec::new();
        let mut const_pos: HashMap<String, usize> = HashMap::new();
        let mut func_pos: HashMap<String, usize> = HashMap::new();
        loop {
            self.skip_ws();
            let at = self.pos;
            if self.eat(b'}') {
                break;
            } else if self.keyword("const") {
                let name = self.symbol("`@` and the constant's name")?;
                if let Some(&first) = const_pos.get(&name) {
                    let (l, c) = self.line_col(first);
                    return Err(self.err_at(
                        at,
                        format!("constant @{} is already defined at {l}:{c}", symbol(&name)),
                    ));
                }
                self.expect(b':', "`:` and the constant's type")?;
                let ty = self.ty()?;
                self.expect(b'=', "`=` and the constant's storage")?;
                self.skip_ws();
                let json_at = self.pos;
                if self.b.get(json_at) != Some(&b'{') {
                    return Err(self.expected("the constant's storage as a JSON object"));
                }
                let v = self.json()?;
                let storage: Storage = serde_json::from_value(v).map_err(|e| {
                    self.err_at(json_at, format!("bad constant storage: {}", json_msg(&e)))
                })?;
                let c = Constant::new(ty, storage);
                c.check(&name)
                    .map_err(|e| self.err_at(json_at, e.to_string()))?;
                const_pos.insert(name.clone(), at);
                m.constants.insert(name, Arc::new(c));
            } else if self.keyword("assume") {
                self.assume(&mut m)?;
            } else if self.keyword("func") {
                let name = self.symbol("`@` and the function's name")?;
                if let Some(&first) = func_pos.get(&name) {
                    let (l, c) = self.line_col(first);
                    return Err(self.err_at(
                        at,
                        format!("function @{} is already defined at {l}:{c}", symbol(&name)),
                    ));
                }
                let (g, nodes) = self.function()?;
                func_pos.insert(name.clone(), at);
                funcs.push(FuncInfo {
                    name: name.clone(),
                    nodes,
                });
                m.functions.insert(name, g);
            } else {
                return Err(self.expected("`assume`, `const`, `func` or `}`"));
            }
        }
        self.skip_ws();
        if self.pos < self.b.len() {
            return Err(self.expected("end of file after the module's `}`"));
        }
        Ok((m, funcs))
    }

    /// Define a node, checking for duplicate ids.
    fn define(
        &self,
        g: &mut Graph,
        defined: &mut HashMap<NodeId, (usize, usize)>,
        at: usize,
        id: NodeId,
        node: Node,
    ) -> PResult<()> {
        if let Some(&(_, first)) = defined.get(&id) {
            let (l, c) = self.line_col(first);
            return Err(self.err_at(at, format!("{id} is already defined at {l}:{c}")));
        }
        defined.insert(id, (node.results.len(), at));
        g.insert_node_at(id, node).map_err(|e| self.err_at(at, e))
    }

    #[allow(clippy::type_complexity)]
    fn function(&mut self) -> PResult<(Graph, Vec<(NodeId, usize, usize)>)> {
        let mut g = Graph::new();
        let mut defined: HashMap<NodeId, (usize, usize)> = HashMap::new();
        let mut nodes = Vec::new();
        self.expect(b'(', "`(` and the function's parameters")?;
        if !self.eat(b')') {
            loop {
                self.skip_ws();
                let (at, id) = self.node_id()?;
                let input_name = self.string("the input's name as a string")?;
                let node_name = if self.peek() == Some(b'"') {
                    Some(self.string("the node's name")?)
                } else {
                    None
                };
                self.expect(b':', "`:` and the input's type")?;
                let ty = self.ty()?;
                let node = Node {
                    op: Op::Input(Input { name: input_name }),
                    operands: vec![],
                    results: vec![ty],
                    name: node_name,
                };
                self.define(&mut g, &mut defined, at, id, node)?;
                g.inputs.push(id);
                if self.eat(b')') {
                    break;
                }
                self.expect(b',', "`,` or `)` after a parameter")?;
            }
        }
        let mut arena = None;
        if self.keyword("arena") {
            self.skip_ws();
            let at = self.pos;
            let n = self.number("the arena length after `arena`")?;
            if n > MAX_NODE_ID as u64 + 1 {
                return Err(self.err_at(
                    at,
                    format!(
                        "arena length {n} is too large (at most {})",
                        MAX_NODE_ID as u64 + 1
                    ),
                ));
            }
            arena = Some((at, n as usize));
        }
        self.expect(b'{', "`{` and the function's body")?;
        loop {
            self.skip_ws();
            if self.keyword("return") {
                break;
            }
            if self.b.get(self.pos) != Some(&b'%') {
                return Err(self.expected("a node definition `%N = ...` or `return`"));
            }
            let (at, id) = self.node_id()?;
            let mut count = 1u64;
            if self.b.get(self.pos) == Some(&b':') {
                self.pos += 1;
                count = self.number("the number of results after `:`")?;
            }
            let name = if self.peek() == Some(b'"') {
                Some(self.string("the node's name")?)
            } else {
                None
            };
            self.expect(b'=', "`=` after the node id")?;
            self.skip_ws();
            let Some((op_at, op_name)) = self.ident() else {
                return Err(self.expected("an op name"));
            };
            if !OP_NAMES.contains(&op_name) {
                return Err(self.err_at(
                    op_at,
                    format!(
                        "unknown op `{op_name}` (known ops: {})",
                        OP_NAMES.join(", ")
                    ),
                ));
            }
            if op_name == "input" {
                return Err(self.err_at(
                    op_at,
                    "`input` nodes are declared in the function's parameters, as `%N \"name\": type`",
                ));
            }
            let mut operands = Vec::new();
            if self.eat(b'(') && !self.eat(b')') {
                loop {
                    self.skip_ws();
                    operands.push(self.value(&defined)?);
                    if self.eat(b')') {
                        break;
                    }
                    self.expect(b',', "`,` or `)` after an operand")?;
                }
            }
            self.skip_ws();
            let attrs_at = self.pos;
            let attrs = if self.b.get(self.pos) == Some(&b'{') {
                self.json()?
            } else {
                Value::Object(Default::default())
            };
            let op =
                Op::from_attrs(op_name, attrs).map_err(|e| self.err_at(attrs_at, e.to_string()))?;
            self.expect(b':', "`:` and the result types")?;
            self.skip_ws();
            let ty_at = self.pos;
            let mut results = Vec::new();
            if self.eat(b'(') {
                self.expect(b')', "`)`: `()` means no results")?;
            } else {
                loop {
                    results.push(self.ty()?);
                    if !self.eat(b',') {
                        break;
                    }
                }
            }
            if results.len() as u64 != count {
                return Err(self.err_at(
                    ty_at,
                    format!(
                        "{id} declares {count} result(s) but {} type(s) are written",
                        results.len()
                    ),
                ));
            }
            let node = Node {
                op,
                operands,
                results,
                name,
            };
            self.define(&mut g, &mut defined, at, id, node)?;
            nodes.push((id, op_at, ty_at));
        }
        if self.peek() == Some(b'%') {
            loop {
                self.skip_ws();
                let value = self.value(&defined)?;
                let name = self.string("the output's name as a string")?;
                g.outputs.push(GraphOutput { name, value });
                if !self.eat(b',') {
                    break;
                }
            }
        }
        self.expect(b'}', "`}` after `return`")?;
        if let Some((at, n)) = arena {
            if n < g.arena_len() {
                return Err(self.err_at(
                    at,
                    format!(
                        "arena length {n} is smaller than the largest node id %{} + 1",
                        g.arena_len().saturating_sub(1)
                    ),
                ));
            }
            if n > g.arena_len() {
                // Extend the arena with trailing holes: place a node at the last id, remove it.
                let last = NodeId(n as u32 - 1);
                let filler = Node {
                    op: Op::Input(Input {
                        name: String::new(),
                    }),
                    operands: vec![],
                    results: vec![],
                    name: None,
                };
                g.insert_node_at(last, filler)
                    .map_err(|e| self.err_at(at, e))?;
                g.remove_node(last);
            }
        }
        Ok((g, nodes))
    }
}

/// A serde_json error message without its "at line L column C" suffix.
fn json_msg(e: &serde_json::Error) -> String {
    let s = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    s.strip_suffix(&suffix).unwrap_or(&s).to_string()
}

#[cfg(test)]
mod tests;
