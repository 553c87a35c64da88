//! `docs/onnx.md`'s op coverage table is the importer's op table: one row per family file, the
//! op types each converts, in table order.

#[test]
fn coverage_table_lists_exactly_the_supported_ops() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/onnx.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let section = text
        .split("## Op coverage")
        .nth(1)
        .expect("an `## Op coverage` section");
    let rows: Vec<(String, Vec<String>)> = section
        .lines()
        .skip_while(|l| !l.starts_with("| `"))
        .take_while(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            let family = cells[0].trim_matches('`').to_string();
            let ops = cells[1].split_whitespace().map(str::to_string).collect();
            (family, ops)
        })
        .collect();
    let want: Vec<(String, Vec<String>)> = fuselage_frontends::onnx::supported_ops_by_family()
        .into_iter()
        .map(|(f, ops)| (f.to_string(), ops.into_iter().map(str::to_string).collect()))
        .collect();
    assert_eq!(rows, want, "docs/onnx.md's coverage table differs from the op tables");
}
