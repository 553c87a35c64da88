//! ONNX import checked against ONNX Runtime and the ONNX node conformance suite (one test
//! binary).

mod exports;
mod node_suite;
