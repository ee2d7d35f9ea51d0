//! Compiles `strata/admin/v1/admin.proto` and `strata/cluster/v1/{raft,forward}.proto` with protox (a pure-Rust protobuf compiler, so no
//! system `protoc` is needed) and generates the prost messages and the tonic client and server.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["strata/admin/v1/admin.proto", "strata/cluster/v1/raft.proto", "strata/cluster/v1/forward.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["."])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Record bytes stay `Bytes` from the socket to the log: no copy per field.
        .bytes(".strata.cluster.v1")
        .compile_fds(descriptors)?;
    Ok(())
}
