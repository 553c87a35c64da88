//! Golden tests: every `tests/golden/**/*.fir` file of the workspace starts with
//! `// RUN: <pipeline>`; the pipeline runs through the pass manager with verification and the
//! numeric check on, and the printed result (with the per-pass statistics as a comment header)
//! is compared with a reviewed insta snapshot in `tests/snapshots/`.

use fuselage_ir::text::{parse_module, print_module};
use fuselage_passes::{PassManager, PassManagerOptions, Pipeline};
use std::path::{Path, PathBuf};

fn golden_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden")
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|e| e == "fir") {
            out.push(p);
        }
    }
}

fn golden_files() -> Vec<(String, String)> {
    let root = golden_root();
    let mut files = vec![];
    collect(&root, &mut files);
    assert!(
        !files.is_empty(),
        "no golden files under {}",
        root.display()
    );
    files
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            (rel, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

fn run_spec(rel: &str, src: &str) -> Option<String> {
    let first = src.lines().next().unwrap_or("");
    let spec = first.strip_prefix("// RUN:").map(str::trim);
    spec.map(str::to_string)
        .or_else(|| panic!("{rel}: the first line must be `// RUN: <pipeline>`, found `{first}`"))
}

#[test]
fn golden_pipelines_match_snapshots() {
    for (rel, src) in golden_files() {
        let spec = run_spec(&rel, &src).unwrap();
        let mut m = parse_module(&src, &rel).unwrap_or_else(|e| panic!("{e}"));
        let pipeline = Pipeline::parse(&spec).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let mut pm = PassManager::new(PassManagerOptions::default());
        pm.set_ir_sink(|_| {});
        let report = pm
            .run(&pipeline, &mut m)
            .unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert!(
            report.passes.iter().any(|p| p.changed),
            "{rel}: the pipeline changed nothing, so the file tests nothing"
        );
        for p in &report.passes {
            if p.changed {
                let n = p
                    .numeric
                    .as_ref()
                    .unwrap_or_else(|| panic!("{rel}: {} not checked", p.name));
                assert!(n.passed, "{rel}: {}", n.summary());
            }
        }
        let mut out = format!("// RUN: {spec}\n");
        for p in &report.passes {
            let stats: Vec<String> = p.stats.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!(
                "// {}: changed={} nodes {} -> {} {}\n",
                p.name,
                p.changed,
                p.nodes_before,
                p.nodes_after,
                stats.join(" ")
            ));
        }
        out.push_str(&print_module(&m));
        let name = rel.trim_end_matches(".fir").replace('/', "__");
        insta::with_settings!({
            snapshot_path => "snapshots",
            prepend_module_to_snapshot => false,
            description => format!("tests/golden/{rel}"),
            omit_expression => true,
        }, {
            insta::assert_snapshot!(name, out);
        });
    }
}

#[test]
fn every_golden_file_round_trips() {
    for (rel, src) in golden_files() {
        let m = parse_module(&src, &rel).unwrap_or_else(|e| panic!("{e}"));
        let printed = print_module(&m);
        let back = parse_module(&printed, &rel).unwrap_or_else(|e| panic!("{rel} reprinted: {e}"));
        assert_eq!(back, m, "{rel}: print → parse changed the module");
        assert_eq!(
            print_module(&back),
            printed,
            "{rel}: printing is not stable"
        );
    }
}
