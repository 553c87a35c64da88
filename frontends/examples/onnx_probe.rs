//! Import an ONNX file and print a summary (or the importer's error).
fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: onnx_probe FILE.onnx");
    match fuselage_frontends::onnx::load_onnx(&path) {
        Ok(m) => {
            let g = m.entry().expect("main");
            println!("ok: {} nodes, inputs {:?}", g.len(), g.input_types());
            println!("outputs {:?}", g.output_types());
            println!("{:?}", m.op_histogram());
        }
        Err(e) => println!("error: {e}"),
    }
}
