//! Compiles the gRPC contracts with `protox`, a protobuf compiler written in Rust, so that
//! building Sluice needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/sluice/v1/publisher.proto",
        "proto/sluice/v1/consumer.proto",
        "proto/sluice/v1/query.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        // Deterministic encoding of maps: the same batch always encodes to the same bytes.
        .btree_map(".")
        .compile_fds(descriptors)?;
    Ok(())
}
