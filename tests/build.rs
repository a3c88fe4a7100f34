//! Generates the CRI client (runtime.v1) the CRI end-to-end tests speak to
//! containerd's CRI plugin with, from `proto/runtime/v1/api.proto`
//! (Kubernetes' cri-api), compiled by protox: no `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/runtime/v1/api.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
