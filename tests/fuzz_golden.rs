//! Randomly mutated golden files fed to the parser and the verifier: every case must end in
//! `Ok` or `Err` — a panic fails the property test. Mutations that still parse must verify and
//! print back to text that parses to the same module.

use proptest::prelude::*;
use std::path::PathBuf;

fn golden_files() -> Vec<(String, String)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut out = vec![];
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "fir") {
                out.push((
                    p.display().to_string(),
                    std::fs::read_to_string(&p).unwrap(),
                ));
            }
        }
    }
    out.sort();
    assert!(
        out.len() >= 5,
        "expected golden files under {}",
        root.display()
    );
    out
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize, usize),
    Insert(usize, String),
    ReplaceByte(usize, u8),
    SwapLines(usize, usize),
    Truncate(usize),
    DuplicateLine(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1usize..12).prop_map(|(a, n)| Mutation::Delete(a, n)),
        (
            any::<usize>(),
            prop::sample::select(vec![
                "%", "#", "(", ")", "{", "}", "\"", ":", ",", "[", "]", "=", "%99", "-1", "f4e2m1",
                "B", "\u{00e9}", "\n", "1e400", "%0#7", "@", "0x", "{}", "null",
            ])
            .prop_map(str::to_string)
        )
            .prop_map(|(a, s)| Mutation::Insert(a, s)),
        (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::ReplaceByte(a, b)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        any::<usize>().prop_map(Mutation::DuplicateLine),
    ]
}

fn apply(src: &str, m: &Mutation) -> String {
    let mut b = src.as_bytes().to_vec();
    let n = b.len().max(1);
    match m {
        Mutation::Delete(a, k) => {
            let s = a % n;
            let e = (s + k).min(b.len());
            b.drain(s.min(b.len())..e);
        }
        Mutation::Insert(a, s) => {
            let at = a % n;
            b.splice(at.min(b.len())..at.min(b.len()), s.bytes());
        }
        Mutation::ReplaceByte(a, x) => {
            if !b.is_empty() {
                let i = a % b.len();
                b[i] = *x;
            }
        }
        Mutation::SwapLines(x, y) => {
            let mut lines: Vec<&str> = src.lines().collect();
            if !lines.is_empty() {
                let (i, j) = (x % lines.len(), y % lines.len());
                lines.swap(i, j);
            }
            return lines.join("\n");
        }
        Mutation::Truncate(a) => b.truncate(a % n),
        Mutation::DuplicateLine(x) => {
            let mut lines: Vec<&str> = src.lines().collect();
            if !lines.is_empty() {
                let i = x % lines.len();
                lines.insert(i, lines[i]);
            }
            return lines.join("\n");
        }
    }
    String::from_utf8_lossy(&b).to_string()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]
    #[test]
    fn mutated_golden_files_never_panic(
        which in any::<usize>(),
        muts in prop::collection::vec(mutation(), 1..4),
    ) {
        let files = golden_files();
        let (name, src) = &files[which % files.len()];
        let mut text = src.clone();
        for m in &muts {
            text = apply(&text, m);
        }
        if let Ok(m) = fuselage::ir::text::parse_module(&text, name) {
            fuselage::ir::verify::verify(&m).unwrap();
            let again = fuselage::ir::text::print_module(&m);
            let back = fuselage::ir::text::parse_module(&again, name).unwrap();
            prop_assert!(back == m);
        }
    }
}
