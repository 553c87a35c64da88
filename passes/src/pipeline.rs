//! Pipelines: the one-line spec (`dce,fixpoint(cse,fold-constants),canonicalize{node-limit=50000}`)
//! and TOML files, both parsed into a [`Pipeline`] whose `Display` prints the one-line spec back.
//!
//! Grammar of the one-line form (whitespace allowed between tokens):
//!
//! ```text
//! pipeline := item (',' item)*
//! item     := 'fixpoint' options? '(' pipeline ')' | NAME options?
//! options  := '{' (KEY '=' value (',' KEY '=' value)*)? '}'
//! value    := '"' chars with \" and \\ escapes '"' | bare word
//!           | '[' (value (',' value)*)? ']'                   (a list)
//!           | '{' (key '=' value (',' key '=' value)*)? '}'   (a table)
//! key      := NAME | '"' string '"'
//! ```
//!
//! A bare word is `true`/`false` (bool), an integer, a float (starting with a digit, sign or
//! dot), or else a string; bare words consist of letters, digits and `-_.+/:`. A `fixpoint`
//! group takes one option, `max-iters`.
//!
//! TOML form (`pipelines/*.toml`): an array of `[[pass]]` tables, each either `name = "…"` with
//! an optional `options = { key = value }`, or `fixpoint = [ … ]` (items are one-line specs or
//! tables of the same shape) or `fixpoint = { passes = [ … ], max-iters = N }`.

use crate::error::PassError;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// An option value in a pipeline.
#[derive(Clone, Debug, PartialEq)]
pub enum OptValue {
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A string.
    Str(String),
    /// A list of values (`[a, b]`; a TOML array).
    List(Vec<OptValue>),
    /// A table of values by key, in the order written (`{"blk.0.*" = f32}`; a TOML table).
    Table(Vec<(String, OptValue)>),
}

impl OptValue {
    /// As JSON (for decoding into a pass's options struct).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            OptValue::Int(i) => serde_json::json!(i),
            OptValue::Float(f) => serde_json::json!(f),
            OptValue::Bool(b) => serde_json::json!(b),
            OptValue::Str(s) => serde_json::json!(s),
            OptValue::List(l) => serde_json::Value::Array(l.iter().map(|v| v.to_json()).collect()),
            OptValue::Table(t) => {
                serde_json::Value::Object(t.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
        }
    }

    /// Classify a bare word.
    fn from_bare(w: &str) -> OptValue {
        match w {
            "true" => return OptValue::Bool(true),
            "false" => return OptValue::Bool(false),
            _ => {}
        }
        if let Ok(i) = w.parse::<i64>() {
            return OptValue::Int(i);
        }
        let numeric_start = w
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | '.'));
        if numeric_start {
            if let Ok(f) = w.parse::<f64>() {
                return OptValue::Float(f);
            }
        }
        OptValue::Str(w.to_string())
    }
}

fn is_bare_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+' | '/' | ':')
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_')
}

impl fmt::Display for OptValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptValue::Int(i) => write!(f, "{i}"),
            OptValue::Bool(b) => write!(f, "{b}"),
            OptValue::Float(x) => {
                if x.is_finite() {
                    write!(f, "{x:?}")
                } else if x.is_nan() {
                    write!(f, "+NaN")
                } else if *x > 0.0 {
                    write!(f, "+inf")
                } else {
                    write!(f, "-inf")
                }
            }
            OptValue::List(l) => {
                f.write_str("[")?;
                for (i, v) in l.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
            OptValue::Table(t) => write_table(f, t),
            OptValue::Str(s) => {
                let bare_ok = !s.is_empty()
                    && s.chars().all(is_bare_char)
                    && OptValue::from_bare(s) == OptValue::Str(s.clone());
                if bare_ok {
                    f.write_str(s)
                } else {
                    write_quoted(f, s)
                }
            }
        }
    }
}

/// `s` as a string literal with `\"` and `\\` escaped.
fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

/// `{k=v,...}`, a key quoted unless it is a plain name.
fn write_table(f: &mut fmt::Formatter<'_>, t: &[(String, OptValue)]) -> fmt::Result {
    f.write_str("{")?;
    for (i, (k, v)) in t.iter().enumerate() {
        if i > 0 {
            f.write_str(",")?;
        }
        if !k.is_empty() && k.chars().all(is_name_char) {
            f.write_str(k)?;
        } else {
            write_quoted(f, k)?;
        }
        write!(f, "={v}")?;
    }
    f.write_str("}")
}

/// One pass with its options, in the order written.
#[derive(Clone, Debug, PartialEq)]
pub struct PassSpec {
    /// Registered pass name.
    pub name: String,
    /// Options (kebab-case keys) in the order written.
    pub options: Vec<(String, OptValue)>,
}

impl PassSpec {
    /// A pass without options.
    pub fn new(name: impl Into<String>) -> Self {
        PassSpec {
            name: name.into(),
            options: vec![],
        }
    }

    /// Add an option.
    pub fn with(mut self, key: impl Into<String>, value: OptValue) -> Self {
        self.options.push((key.into(), value));
        self
    }

    /// The options as a JSON object.
    pub fn options_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.options
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect(),
        )
    }
}

/// A group of steps rerun until no pass in it reports a change (bounded).
#[derive(Clone, Debug, PartialEq)]
pub struct Fixpoint {
    /// The steps of one iteration.
    pub steps: Vec<Step>,
    /// Iteration bound; `None` uses the pass manager's default.
    pub max_iters: Option<usize>,
}

/// One pipeline step.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Run one pass.
    Pass(PassSpec),
    /// Run a group to a fixed point.
    Fixpoint(Fixpoint),
}

/// A pass pipeline.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pipeline {
    /// Steps in order.
    pub steps: Vec<Step>,
}

impl Pipeline {
    /// Parse the one-line form. Errors give the column and what was expected.
    pub fn parse(spec: &str) -> Result<Pipeline, PassError> {
        let mut p = SpecParser {
            chars: spec.chars().collect(),
            pos: 0,
        };
        p.skip_ws();
        if p.peek().is_none() {
            return Ok(Pipeline::default());
        }
        let steps = p.seq(None)?;
        Ok(Pipeline { steps })
    }

    /// Parse a TOML pipeline.
    pub fn from_toml_str(src: &str) -> Result<Pipeline, PassError> {
        Self::from_toml_named(src, "<toml>")
    }

    /// Parse a TOML pipeline, naming `file` in errors.
    pub fn from_toml_named(src: &str, file: &str) -> Result<Pipeline, PassError> {
        let err = |message: String| PassError::Toml {
            file: file.to_string(),
            message,
        };
        let table: toml::Table = toml::from_str(src).map_err(|e| err(e.to_string()))?;
        let mut steps = vec![];
        for (k, v) in &table {
            if k != "pass" {
                return Err(err(format!("unknown top-level key `{k}` (allowed: pass)")));
            }
            let arr = v
                .as_array()
                .ok_or_else(|| err("`pass` must be an array of tables (`[[pass]]`)".into()))?;
            for (i, item) in arr.iter().enumerate() {
                steps.extend(toml_step(item, &format!("pass[{i}]")).map_err(err)?);
            }
        }
        Ok(Pipeline { steps })
    }

    /// Read a TOML pipeline file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Pipeline, PassError> {
        let path = path.as_ref();
        let src = std::fs::read_to_string(path).map_err(|e| PassError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::from_toml_named(&src, &path.display().to_string())
    }

    /// A command-line argument: a path ending in `.toml` is read as a file, anything else is
    /// parsed as a one-line spec.
    pub fn load(arg: &str) -> Result<Pipeline, PassError> {
        if arg.trim_end().ends_with(".toml") {
            Self::from_file(arg.trim())
        } else {
            Self::parse(arg)
        }
    }

    /// Every pass spec, depth first, in order.
    pub fn pass_specs(&self) -> Vec<&PassSpec> {
        fn walk<'a>(steps: &'a [Step], out: &mut Vec<&'a PassSpec>) {
            for s in steps {
                match s {
                    Step::Pass(p) => out.push(p),
                    Step::Fixpoint(f) => walk(&f.steps, out),
                }
            }
        }
        let mut out = vec![];
        walk(&self.steps, &mut out);
        out
    }

    /// Check that every pass exists and its options decode (creates each pass once).
    pub fn validate(&self) -> Result<(), PassError> {
        crate::manager::Scheduled::from_pipeline(self, 1).map(|_| ())
    }
}

impl FromStr for Pipeline {
    type Err = PassError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Pipeline::parse(s)
    }
}

fn write_steps(f: &mut fmt::Formatter<'_>, steps: &[Step]) -> fmt::Result {
    for (i, s) in steps.iter().enumerate() {
        if i > 0 {
            f.write_str(",")?;
        }
        write!(f, "{s}")?;
    }
    Ok(())
}

impl fmt::Display for PassSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if !self.options.is_empty() {
            write_table(f, &self.options)?;
        }
        Ok(())
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Pass(p) => write!(f, "{p}"),
            Step::Fixpoint(g) => {
                f.write_str("fixpoint")?;
                if let Some(n) = g.max_iters {
                    write!(f, "{{max-iters={n}}}")?;
                }
                f.write_str("(")?;
                write_steps(f, &g.steps)?;
                f.write_str(")")
            }
        }
    }
}

impl fmt::Display for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_steps(f, &self.steps)
    }
}

struct SpecParser {
    chars: Vec<char>,
    pos: usize,
}

impl SpecParser {
    fn err_at(&self, pos: usize, message: String) -> PassError {
        PassError::Spec {
            column: pos + 1,
            message,
        }
    }

    fn found(&self) -> String {
        match self.peek() {
            Some(c) => format!("`{c}`"),
            None => "end of input".into(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, c: char, what: &str) -> Result<(), PassError> {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err_at(
                self.pos,
                format!("expected `{c}` {what}, found {}", self.found()),
            ))
        }
    }

    fn word(&mut self, ok: fn(char) -> bool) -> String {
        let start = self.pos;
        while self.peek().is_some_and(ok) {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    /// Items separated by commas, up to `closing` (not consumed) or the end.
    fn seq(&mut self, closing: Option<(char, usize)>) -> Result<Vec<Step>, PassError> {
        let mut steps = vec![];
        loop {
            self.skip_ws();
            steps.push(self.item()?);
            self.skip_ws();
            match (self.peek(), closing) {
                (Some(','), _) => self.pos += 1,
                (None, None) => return Ok(steps),
                (Some(c), Some((close, _))) if c == close => return Ok(steps),
                (None, Some((close, open))) => {
                    return Err(self.err_at(
                        self.pos,
                        format!(
                            "expected `,` or `{close}` closing the group opened at column {}, \
                             found end of input",
                            open + 1
                        ),
                    ))
                }
                (Some(_), Some((close, _))) => {
                    return Err(self.err_at(
                        self.pos,
                        format!("expected `,` or `{close}`, found {}", self.found()),
                    ))
                }
                (Some(_), None) => {
                    return Err(self.err_at(
                        self.pos,
                        format!(
                            "expected `,` or end of input after a pass, found {}",
                            self.found()
                        ),
                    ))
                }
            }
        }
    }

    fn item(&mut self) -> Result<Step, PassError> {
        let start = self.pos;
        let name = self.word(is_name_char);
        if name.is_empty() {
            return Err(self.err_at(
                start,
                format!(
                    "expected a pass name or `fixpoint(`, found {}",
                    self.found()
                ),
            ));
        }
        self.skip_ws();
        let opts_pos = self.pos;
        let options = if self.peek() == Some('{') {
            self.options()?
        } else {
            vec![]
        };
        if name != "fixpoint" {
            return Ok(Step::Pass(PassSpec { name, options }));
        }
        let mut max_iters = None;
        for (k, v) in options {
            match (k.as_str(), v) {
                ("max-iters", OptValue::Int(n)) if n >= 1 => max_iters = Some(n as usize),
                ("max-iters", v) => {
                    return Err(self.err_at(
                        opts_pos,
                        format!(
                            "`max-iters` of a fixpoint group must be an integer ≥ 1, found `{v}`"
                        ),
                    ))
                }
                (k, _) => {
                    return Err(self.err_at(
                        opts_pos,
                        format!("unknown fixpoint option `{k}` (allowed: max-iters)"),
                    ))
                }
            }
        }
        self.skip_ws();
        let open = self.pos;
        self.expect('(', "after `fixpoint`")?;
        self.skip_ws();
        if self.peek() == Some(')') {
            return Err(self.err_at(self.pos, "a fixpoint group needs at least one pass".into()));
        }
        let steps = self.seq(Some((')', open)))?;
        self.expect(')', "closing the fixpoint group")?;
        Ok(Step::Fixpoint(Fixpoint { steps, max_iters }))
    }

    fn options(&mut self) -> Result<Vec<(String, OptValue)>, PassError> {
        let open = self.pos;
        self.pos += 1; // '{'
        let mut out: Vec<(String, OptValue)> = vec![];
        self.skip_ws();
        if self.peek() == Some('}') {
            self.pos += 1;
            return Ok(out);
        }
        loop {
            self.skip_ws();
            let kpos = self.pos;
            let key = if self.peek() == Some('"') {
                self.string()?
            } else {
                self.word(is_name_char)
            };
            if key.is_empty() {
                return Err(self.err_at(
                    kpos,
                    format!("expected an option key, found {}", self.found()),
                ));
            }
            if out.iter().any(|(k, _)| *k == key) {
                return Err(self.err_at(kpos, format!("option `{key}` is given twice")));
            }
            self.expect('=', &format!("after option key `{key}`"))?;
            self.skip_ws();
            let value = self.value()?;
            out.push((key, value));
            self.skip_ws();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some('}') => {
                    self.pos += 1;
                    return Ok(out);
                }
                None => {
                    return Err(self.err_at(
                        self.pos,
                        format!(
                            "expected `,` or `}}` closing the options opened at column {}, found \
                             end of input",
                            open + 1
                        ),
                    ))
                }
                Some(_) => {
                    return Err(self.err_at(
                        self.pos,
                        format!(
                            "expected `,` or `}}` after an option value, found {}",
                            self.found()
                        ),
                    ))
                }
            }
        }
    }

    fn value(&mut self) -> Result<OptValue, PassError> {
        let start = self.pos;
        match self.peek() {
            Some('"') => return Ok(OptValue::Str(self.string()?)),
            Some('{') => return Ok(OptValue::Table(self.options()?)),
            Some('[') => return self.list(),
            _ => {}
        }
        let w = self.word(is_bare_char);
        if w.is_empty() {
            return Err(self.err_at(
                start,
                format!(
                    "expected a value (number, bool, word, \"string\", [list] or {{table}}), found {}",
                    self.found()
                ),
            ));
        }
        Ok(OptValue::from_bare(&w))
    }

    /// `[v, ...]` from the `[`.
    fn list(&mut self) -> Result<OptValue, PassError> {
        let open = self.pos;
        self.pos += 1; // '['
        let mut out = vec![];
        self.skip_ws();
        if self.peek() == Some(']') {
            self.pos += 1;
            return Ok(OptValue::List(out));
        }
        loop {
            self.skip_ws();
            out.push(self.value()?);
            self.skip_ws();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some(']') => {
                    self.pos += 1;
                    return Ok(OptValue::List(out));
                }
                _ => {
                    return Err(self.err_at(
                        self.pos,
                        format!(
                            "expected `,` or `]` in the list opened at column {}, found {}",
                            open + 1,
                            self.found()
                        ),
                    ))
                }
            }
        }
    }

    /// A `"…"` string from the opening quote.
    fn string(&mut self) -> Result<String, PassError> {
        let start = self.pos;
        {
            self.pos += 1;
            let mut s = String::new();
            loop {
                match self.peek() {
                    None => {
                        return Err(self.err_at(
                            start,
                            "unterminated string (expected a closing `\"`)".into(),
                        ))
                    }
                    Some('"') => {
                        self.pos += 1;
                        return Ok(s);
                    }
                    Some('\\') => {
                        self.pos += 1;
                        match self.peek() {
                            Some(c @ ('"' | '\\')) => {
                                s.push(c);
                                self.pos += 1;
                            }
                            _ => {
                                return Err(self.err_at(
                                    self.pos,
                                    format!(
                                        "expected `\"` or `\\` after `\\` in a string, found {}",
                                        self.found()
                                    ),
                                ))
                            }
                        }
                    }
                    Some(c) => {
                        s.push(c);
                        self.pos += 1;
                    }
                }
            }
        }
    }
}

fn toml_value(v: &toml::Value, path: &str) -> Result<OptValue, String> {
    Ok(match v {
        toml::Value::Integer(i) => OptValue::Int(*i),
        toml::Value::Float(f) => OptValue::Float(*f),
        toml::Value::Boolean(b) => OptValue::Bool(*b),
        toml::Value::String(s) => OptValue::Str(s.clone()),
        toml::Value::Array(a) => OptValue::List(
            a.iter()
                .enumerate()
                .map(|(i, v)| toml_value(v, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        toml::Value::Table(t) => OptValue::Table(
            t.iter()
                .map(|(k, v)| Ok((k.clone(), toml_value(v, &format!("{path}.{k}"))?)))
                .collect::<Result<_, String>>()?,
        ),
        other => {
            return Err(format!(
                "{path}: option values must be integers, floats, booleans, strings, arrays or \
                 tables, found {}",
                other.type_str()
            ))
        }
    })
}

/// One `[[pass]]` entry (or one item of a fixpoint list): possibly several steps when a string
/// holds a one-line spec.
fn toml_step(v: &toml::Value, path: &str) -> Result<Vec<Step>, String> {
    match v {
        toml::Value::String(s) => Pipeline::parse(s)
            .map(|p| p.steps)
            .map_err(|e| format!("{path}: {e}")),
        toml::Value::Table(t) => {
            for k in t.keys() {
                if !matches!(k.as_str(), "name" | "options" | "fixpoint" | "check") {
                    return Err(format!(
                        "{path}: unknown key `{k}` (allowed: name, options, check, fixpoint)"
                    ));
                }
            }
            match (t.get("name"), t.get("fixpoint")) {
                (Some(_), Some(_)) => Err(format!(
                    "{path}: give either `name` or `fixpoint`, not both"
                )),
                (None, None) => Err(format!(
                    "{path}: expected `name = \"…\"` or `fixpoint = […]`"
                )),
                (Some(name), None) => {
                    let name = name
                        .as_str()
                        .ok_or_else(|| format!("{path}.name: expected a string"))?;
                    if name == "fixpoint" {
                        return Err(format!(
                            "{path}: write a group as `fixpoint = [ … ]`, not `name = \"fixpoint\"`"
                        ));
                    }
                    let mut options = vec![];
                    if let Some(o) = t.get("options") {
                        let o = o
                            .as_table()
                            .ok_or_else(|| format!("{path}.options: expected a table"))?;
                        for (k, v) in o {
                            options
                                .push((k.clone(), toml_value(v, &format!("{path}.options.{k}"))?));
                        }
                    }
                    if let Some(c) = t.get("check") {
                        if options.iter().any(|(k, _)| k == "check") {
                            return Err(format!(
                                "{path}: give `check` once, beside `options` or in it"
                            ));
                        }
                        options.push(("check".into(), toml_value(c, &format!("{path}.check"))?));
                    }
                    Ok(vec![Step::Pass(PassSpec {
                        name: name.to_string(),
                        options,
                    })])
                }
                (None, Some(fp)) => {
                    if t.contains_key("options") {
                        return Err(format!(
                            "{path}: a fixpoint group takes `max-iters` inside \
                             `fixpoint = {{ passes = [...], max-iters = N }}`, not `options`"
                        ));
                    }
                    let fpath = format!("{path}.fixpoint");
                    let (items, max_iters) = match fp {
                        toml::Value::Array(a) => (a.as_slice(), None),
                        toml::Value::Table(ft) => {
                            for k in ft.keys() {
                                if !matches!(k.as_str(), "passes" | "max-iters") {
                                    return Err(format!(
                                        "{fpath}: unknown key `{k}` (allowed: passes, max-iters)"
                                    ));
                                }
                            }
                            let items = ft
                                .get("passes")
                                .and_then(|p| p.as_array())
                                .ok_or_else(|| format!("{fpath}: expected `passes = [...]`"))?;
                            let mi = match ft.get("max-iters") {
                                None => None,
                                Some(toml::Value::Integer(n)) if *n >= 1 => Some(*n as usize),
                                Some(other) => {
                                    return Err(format!(
                                    "{fpath}.max-iters: expected an integer ≥ 1, found `{other}`"
                                ))
                                }
                            };
                            (items.as_slice(), mi)
                        }
                        _ => {
                            return Err(format!(
                                "{fpath}: expected an array of passes or a table with `passes`"
                            ))
                        }
                    };
                    let mut steps = vec![];
                    for (i, it) in items.iter().enumerate() {
                        steps.extend(toml_step(it, &format!("{fpath}[{i}]"))?);
                    }
                    if steps.is_empty() {
                        return Err(format!("{fpath}: a fixpoint group needs at least one pass"));
                    }
                    Ok(vec![Step::Fixpoint(Fixpoint { steps, max_iters })])
                }
            }
        }
        other => Err(format!(
            "{path}: expected a table or a one-line spec string, found {}",
            other.type_str()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_example_spec() {
        let p = Pipeline::parse("dce,fixpoint(cse,fold-constants),canonicalize{node-limit=50000}")
            .unwrap();
        assert_eq!(
            p.steps,
            vec![
                Step::Pass(PassSpec::new("dce")),
                Step::Fixpoint(Fixpoint {
                    steps: vec![
                        Step::Pass(PassSpec::new("cse")),
                        Step::Pass(PassSpec::new("fold-constants"))
                    ],
                    max_iters: None
                }),
                Step::Pass(PassSpec::new("canonicalize").with("node-limit", OptValue::Int(50000))),
            ]
        );
        assert_eq!(
            p.to_string(),
            "dce,fixpoint(cse,fold-constants),canonicalize{node-limit=50000}"
        );
    }

    #[test]
    fn values_whitespace_nesting() {
        let p = Pipeline::parse(
            " a { x = 1 , y=-2.5e-3, z=true, w=hello, q=\"B=1,S=8\", e=\"\" } , \
             fixpoint{max-iters=3}( b , fixpoint(c{k=1.0}) ) ",
        )
        .unwrap();
        let s = p.to_string();
        assert_eq!(
            s,
            "a{x=1,y=-0.0025,z=true,w=hello,q=\"B=1,S=8\",e=\"\"},fixpoint{max-iters=3}(b,fixpoint(c{k=1.0}))"
        );
        assert_eq!(Pipeline::parse(&s).unwrap(), p);
        let Step::Pass(a) = &p.steps[0] else { panic!() };
        assert_eq!(a.options[1].1, OptValue::Float(-2.5e-3));
        assert_eq!(
            a.options_json(),
            serde_json::json!({"x":1,"y":-0.0025,"z":true,"w":"hello","q":"B=1,S=8","e":""})
        );
    }

    #[test]
    fn empty_spec_is_an_empty_pipeline() {
        assert_eq!(Pipeline::parse("  ").unwrap(), Pipeline::default());
    }

    fn spec_err(s: &str) -> (usize, String) {
        match Pipeline::parse(s) {
            Err(PassError::Spec { column, message }) => (column, message),
            other => panic!("expected a spec error for {s:?}, got {other:?}"),
        }
    }

    #[test]
    fn errors_say_where_and_what() {
        let (c, m) = spec_err("dce,,cse");
        assert_eq!(c, 5);
        assert!(m.contains("expected a pass name"), "{m}");
        let (c, m) = spec_err("dce,fixpoint(cse");
        assert_eq!(c, 17);
        assert!(m.contains("closing the group opened at column 13"), "{m}");
        let (c, m) = spec_err("a{x}");
        assert_eq!(c, 4);
        assert!(
            m.contains("expected `=` after option key `x`, found `}`"),
            "{m}"
        );
        let (c, m) = spec_err("a{x=1");
        assert_eq!(c, 6);
        assert!(m.contains("closing the options opened at column 2"), "{m}");
        let (_, m) = spec_err("a{x=1,x=2}");
        assert!(m.contains("given twice"), "{m}");
        let (c, m) = spec_err("fixpoint{n=2}(a)");
        assert_eq!(c, 9);
        assert!(m.contains("allowed: max-iters"), "{m}");
        let (_, m) = spec_err("fixpoint{max-iters=0}(a)");
        assert!(m.contains("≥ 1"), "{m}");
        let (c, m) = spec_err("fixpoint()");
        assert_eq!(c, 10);
        assert!(m.contains("at least one pass"), "{m}");
        let (_, m) = spec_err("fixpoint cse");
        assert!(m.contains("expected `(` after `fixpoint`"), "{m}");
        let (c, m) = spec_err("a b");
        assert_eq!(c, 3);
        assert!(m.contains("expected `,` or end of input"), "{m}");
        let (_, m) = spec_err("a{s=\"x}");
        assert!(m.contains("unterminated string"), "{m}");
        let (_, m) = spec_err("a{s=}");
        assert!(m.contains("expected a value"), "{m}");
        let (c, _) = spec_err("fixpoint(a b)");
        assert_eq!(c, 12);
    }

    #[test]
    fn toml_form() {
        let src = r#"
# comment
[[pass]]
name = "dce"
[[pass]]
name = "canonicalize"
options = { node-limit = 50000, on = true, ratio = 0.5, s = "x y" }
[[pass]]
fixpoint = ["cse", "fold-constants"]   # or a table
[[pass]]
fixpoint = { passes = ["cse", { name = "dce" }, "a{k=2},b"], max-iters = 4 }
"#;
        let p = Pipeline::from_toml_str(src).unwrap();
        assert_eq!(
            p.to_string(),
            "dce,canonicalize{node-limit=50000,on=true,ratio=0.5,s=\"x y\"},\
             fixpoint(cse,fold-constants),fixpoint{max-iters=4}(cse,dce,a{k=2},b)"
        );
        assert_eq!(Pipeline::parse(&p.to_string()).unwrap(), p);
    }

    #[test]
    fn toml_errors() {
        let e = |s: &str| Pipeline::from_toml_str(s).unwrap_err().to_string();
        assert!(e("[[pass]]\nnam = \"dce\"").contains("unknown key `nam`"));
        assert!(e("[[pass]]\nname = \"dce\"\n[[pas]]\nname=\"x\"").contains("allowed: pass"));
        assert!(
            e("[[pass]]\nname = \"dce\"\noptions = { a = [1979-05-27] }")
                .contains("found datetime")
        );
        assert!(e("[[pass]]\nfixpoint = []").contains("at least one pass"));
        assert!(e("[[pass]]\nfixpoint = { passes = [\"a\"], max = 1 }").contains("max-iters"));
        assert!(e("[[pass]]\nfixpoint = [\"a,,b\"]").contains("column 3"));
        let syntax = e("[[pass]\nname = 1");
        assert!(syntax.contains("line 1"), "{syntax}");
    }

    #[test]
    fn from_file_and_load() {
        let dir = std::env::temp_dir().join(format!("fuselage-pipe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("p.toml");
        std::fs::write(&f, "[[pass]]\nname = \"dce\"\n").unwrap();
        let p = Pipeline::load(f.to_str().unwrap()).unwrap();
        assert_eq!(p.to_string(), "dce");
        assert_eq!(Pipeline::load("cse,dce").unwrap().to_string(), "cse,dce");
        let e = Pipeline::from_file(dir.join("missing.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.toml"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn validate_checks_names_and_options() {
        Pipeline::parse("dce,fixpoint(cse,fold-constants{max-bytes=10})")
            .unwrap()
            .validate()
            .unwrap();
        let e = Pipeline::parse("dce,fixpoint(csee)")
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("unknown pass `csee`"));
    }

    fn arb_value() -> impl Strategy<Value = OptValue> {
        prop_oneof![
            any::<i64>().prop_map(OptValue::Int),
            (-1e12f64..1e12).prop_map(OptValue::Float),
            any::<bool>().prop_map(OptValue::Bool),
            "[ -~]{0,8}".prop_map(OptValue::Str),
        ]
        .prop_recursive(2, 12, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(OptValue::List),
                proptest::collection::btree_map("[ -~]{1,6}", inner, 0..3)
                    .prop_map(|t| OptValue::Table(t.into_iter().collect())),
            ]
        })
    }

    fn arb_pass() -> impl Strategy<Value = PassSpec> {
        (
            "[a-z][a-z0-9-]{0,6}".prop_filter("reserved", |s| s != "fixpoint"),
            proptest::collection::btree_map("[a-z][a-z-]{0,5}", arb_value(), 0..3),
        )
            .prop_map(|(name, o)| PassSpec {
                name,
                options: o.into_iter().collect(),
            })
    }

    fn arb_steps() -> impl Strategy<Value = Vec<Step>> {
        let leaf = arb_pass().prop_map(Step::Pass);
        let step = leaf.prop_recursive(3, 12, 4, |inner| {
            (
                proptest::collection::vec(inner, 1..4),
                proptest::option::of(1usize..20),
            )
                .prop_map(|(steps, max_iters)| Step::Fixpoint(Fixpoint { steps, max_iters }))
        });
        proptest::collection::vec(step, 1..5)
    }

    #[test]
    fn lists_and_tables_as_option_values() {
        let p = Pipeline::parse(
            r#"hero-quantize{keep=["blk.0.*", lm_head], precision={"encoder.layer.0.*"=f32, x=[]}}"#,
        )
        .unwrap();
        let Step::Pass(spec) = &p.steps[0] else {
            panic!("{p:?}")
        };
        assert_eq!(
            spec.options_json(),
            serde_json::json!({"keep": ["blk.0.*", "lm_head"],
                               "precision": {"encoder.layer.0.*": "f32", "x": []}})
        );
        assert_eq!(
            p.to_string(),
            r#"hero-quantize{keep=["blk.0.*",lm_head],precision={"encoder.layer.0.*"=f32,x=[]}}"#
        );
        let t = Pipeline::from_toml_str(
            "[[pass]]\nname = \"q\"\noptions = { keep = [\"a.*\", 1], precision = { \"blk.0.*\" = \"f32\" } }\n",
        )
        .unwrap();
        let Step::Pass(spec) = &t.steps[0] else {
            panic!("{t:?}")
        };
        assert_eq!(
            spec.options_json(),
            serde_json::json!({"keep": ["a.*", 1], "precision": {"blk.0.*": "f32"}})
        );
        for (bad, want) in [
            (
                "q{keep=[a,b}",
                "expected `,` or `]` in the list opened at column 8",
            ),
            ("q{t={\"a\"=1", "closing the options opened at column 5"),
            ("q{t={=1}}", "expected an option key"),
        ] {
            let e = Pipeline::parse(bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(steps in arb_steps()) {
            let p = Pipeline { steps };
            let s = p.to_string();
            prop_assert_eq!(Pipeline::parse(&s).unwrap(), p, "{}", s);
        }

        #[test]
        fn parser_never_panics(s in "[a-z{}()=,\"\\\\ 0-9.-]{0,30}") {
            let _ = Pipeline::parse(&s);
        }
    }
}
