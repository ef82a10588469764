//! Generates the herald.v1 gRPC code from `proto/` with protox (a pure-Rust protobuf compiler),
//! so building needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let file = root.join("herald/v1/herald.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let descriptors = protox::compile([&file], [&root])?;
    tonic_prost_build::configure().bytes(".herald.v1.Event.data").compile_fds(descriptors)?;
    Ok(())
}
