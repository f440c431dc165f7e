//! Compiles proto/cosigner/v1 with protox (pure Rust: no protoc on the machine) and emits a
//! file descriptor set for the gRPC reflection service.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "cosigner/v1/types.proto",
        "cosigner/v1/cosigner.proto",
        "cosigner/v1/relay.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", proto_root.join(f).display());
    }
    let fds = protox::compile(files, [&proto_root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("cosigner_v1_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    // Stubs only with the `grpc` feature; the messages are the same either way.
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    tonic_prost_build::configure()
        .build_client(grpc)
        .build_server(grpc)
        .compile_fds(fds)?;
    Ok(())
}
