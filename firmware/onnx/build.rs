//! Generates the ONNX message types from the vendored official
//! `proto/onnx.proto` (ONNX 1.23.0, IR version 14), with protox, a
//! protobuf compiler in Rust, so no `protoc` binary is needed.

fn main() {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let descriptors =
        protox::compile(["onnx.proto"], ["proto"]).expect("proto/onnx.proto compiles");
    prost_build::Config::new()
        .compile_fds(descriptors)
        .expect("prost generates the ONNX types");
}
