//! Graphviz DOT output of one function: one box per node labelled with its id, op, name and
//! result types; operand edges (labelled with the operand index when a node has several
//! operands, and with the result slot when it is not 0); inputs, constants and outputs drawn in
//! their own styles.

use crate::error::IrError;
use crate::module::Module;
use crate::ops::Op;
use crate::verify::types_list;
use std::fmt::Write;

/// Escape text for use inside a double-quoted DOT string (quotes, backslashes, newlines).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// Render `function` of `module` as a Graphviz digraph. Fails when the function does not exist
/// (the error lists the functions there are).
pub fn to_dot(module: &Module, function: &str) -> Result<String, IrError> {
    let g = module
        .functions
        .get(function)
        .ok_or_else(|| IrError::Verify {
            function: function.to_string(),
            node: "-".into(),
            message: format!(
                "no such function (functions: {})",
                module
                    .functions
                    .keys()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })?;
    let mut s = String::new();
    // `write!` into a String cannot fail; the results are ignored on purpose.
    let _ = writeln!(s, "digraph \"{}\" {{", escape(function));
    s.push_str("  rankdir=TB;\n");
    s.push_str("  node [shape=box, fontname=\"monospace\"];\n");
    for (id, n) in g.nodes() {
        let mut label = format!("{id} {}", n.op.name());
        let style = match &n.op {
            Op::Input(i) => {
                let _ = write!(label, " \"{}\"", i.name);
                "shape=invhouse, style=filled, fillcolor=\"#cfe2ff\""
            }
            Op::Constant(c) => {
                let _ = write!(label, " @\"{}\"", c.name);
                "shape=note, style=filled, fillcolor=\"#e9ecef\""
            }
            _ => "style=rounded",
        };
        if let Some(name) = &n.name {
            let _ = write!(label, "\n\"{name}\"");
        }
        let _ = write!(label, "\n{}", types_list(&n.results));
        let _ = writeln!(s, "  n{} [label=\"{}\", {style}];", id.0, escape(&label));
    }
    for (id, n) in g.nodes() {
        for (k, v) in n.operands.iter().enumerate() {
            let mut attrs = Vec::new();
            let mut label = String::new();
            if n.operands.len() > 1 {
                label.push_str(&k.to_string());
            }
            if v.slot != 0 {
                let _ = write!(label, " (#{})", v.slot);
            }
            if !label.is_empty() {
                attrs.push(format!("label=\"{}\"", escape(label.trim())));
            }
            if g.node(v.node).is_none() {
                attrs.push("color=red, style=dashed".into());
            }
            let attrs = if attrs.is_empty() {
                String::new()
            } else {
                format!(" [{}]", attrs.join(", "))
            };
            let _ = writeln!(s, "  n{} -> n{}{attrs};", v.node.0, id.0);
        }
    }
    for (k, o) in g.outputs.iter().enumerate() {
        let _ = writeln!(
            s,
            "  out{k} [label=\"{}\", shape=house, style=filled, fillcolor=\"#d1e7dd\"];",
            escape(&format!("return {k} \"{}\"", o.name))
        );
        let label = if o.value.slot != 0 {
            format!(" [label=\"#{}\"]", o.value.slot)
        } else {
            String::new()
        };
        let _ = writeln!(s, "  n{} -> out{k}{label};", o.value.node.0);
    }
    s.push_str("}\n");
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::constant::{Constant, Init};
    use crate::dtype::DType;
    use crate::graph::Graph;
    use crate::ops::{add::Add, constant::Constant as ConstOp, matmul::MatMul};
    use crate::types::TensorType;

    #[test]
    fn dot_has_styles_edges_and_escapes() {
        let mut m = Module::new();
        let wt = TensorType::fixed(DType::F32, &[3, 3]);
        m.add_constant("w\"q", Constant::seeded(wt, 1, Init::Full { value: 1.0 }));
        let mut g = Graph::new();
        let x = g.add_input("x\"in", TensorType::fixed(DType::F32, &[2, 3]));
        let w = g
            .add_inferred(
                &m,
                Op::Constant(ConstOp {
                    name: "w\"q".into(),
                }),
                vec![],
                None,
            )
            .unwrap();
        let y = g
            .add_inferred(&m, Op::MatMul(MatMul {}), vec![x.into(), w.into()], None)
            .unwrap();
        let z = g
            .add_inferred(
                &m,
                Op::Add(Add {}),
                vec![y.into(), y.into()],
                Some("a \\ \"b\"".into()),
            )
            .unwrap();
        g.add_output("o\"ut", z.into());
        m.functions.insert("main".into(), g);
        let d = to_dot(&m, "main").unwrap();
        assert!(d.starts_with("digraph \"main\" {\n"), "{d}");
        assert!(
            d.contains("n0 [label=\"%0 input \\\"x\\\"in\\\"\\nf32[2,3]\", shape=invhouse"),
            "{d}"
        );
        assert!(
            d.contains("@\\\"w\\\"q\\\"\\nf32[3,3]\", shape=note"),
            "{d}"
        );
        assert!(
            d.contains("%3 add\\n\\\"a \\\\ \\\"b\\\"\\\"\\nf32[2,3]"),
            "{d}"
        );
        assert!(d.contains("n0 -> n2 [label=\"0\"];"), "{d}");
        assert!(d.contains("n1 -> n2 [label=\"1\"];"), "{d}");
        assert!(d.contains("n2 -> n3 [label=\"1\"];"), "{d}");
        assert!(
            d.contains("out0 [label=\"return 0 \\\"o\\\"ut\\\"\", shape=house"),
            "{d}"
        );
        assert!(d.contains("n3 -> out0;"), "{d}");
        assert!(d.trim_end().ends_with('}'));
        // Every quote inside a label is escaped: per line, the quotes preceded by an even number
        // of backslashes (the delimiters) come in pairs.
        for line in d.lines() {
            let b = line.as_bytes();
            let delimiters = (0..b.len())
                .filter(|&i| {
                    b[i] == b'"'
                        && b[..i].iter().rev().take_while(|&&c| c == b'\\').count() % 2 == 0
                })
                .count();
            assert_eq!(delimiters % 2, 0, "{line}");
        }
    }

    #[test]
    fn unknown_function_lists_functions() {
        let mut m = Module::new();
        m.functions.insert("main".into(), Graph::new());
        let e = to_dot(&m, "f").unwrap_err().to_string();
        assert!(e.contains("no such function (functions: main)"), "{e}");
    }
}
