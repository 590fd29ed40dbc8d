//! Generates the Rust types of `proto/*.proto` with prost-build (needs `protoc` on the PATH or in
//! `PROTOC`; Debian's `protobuf-compiler` package provides it, and `scripts/test` installs it).

use std::io::Result;

fn main() -> Result<()> {
    let protos = [
        "proto/libatbus_protocol.proto",
        "proto/atbus_handshake.proto",
        "proto/atbus_routing.proto",
        "proto/atbus_discovery.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    prost_build::Config::new()
        // Byte fields share the buffer they were decoded from instead of copying.
        .bytes(["."])
        // Sorted maps, so that encoding is deterministic (golden vectors, signatures).
        .btree_map(["."])
        .compile_protos(&protos, &["proto"])
}
