//! Generates the request/reply types of `proto/network_ctl.proto` with prost-build (needs `protoc`;
//! `scripts/test` installs Debian's `protobuf-compiler`).

fn main() -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=proto/network_ctl.proto");
    prost_build::Config::new().compile_protos(&["proto/network_ctl.proto"], &["proto"])
}
