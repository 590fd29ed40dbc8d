//! Helpers shared by the tests that check our bytes against protoc, an independent protobuf
//! implementation.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// Runs protoc with our .proto files, `args`, and `input` on its standard input; returns what
/// it printed.
pub fn protoc(args: &[&str], input: &[u8]) -> Vec<u8> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let program = std::env::var_os("PROTOC").unwrap_or_else(|| "protoc".into());
    let mut child = Command::new(&program)
        .args(args)
        .arg("-I")
        .arg(manifest.join("proto"))
        .arg(manifest.join("proto/libatbus_protocol.proto"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| {
            panic!("cannot run {program:?}: {err}; install protobuf-compiler (scripts/test does)")
        });
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write to protoc");
    let output = child.wait_with_output().expect("protoc output");
    assert!(
        output.status.success(),
        "protoc {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// The `frame_message` bytes of a whole frame: after the version and length varints, before the
/// CRC. Checks that the length field says as much.
pub fn body_of(frame: &[u8]) -> &[u8] {
    let mut rest = frame;
    prost::encoding::decode_varint(&mut rest).expect("version varint");
    let length = prost::encoding::decode_varint(&mut rest).expect("length varint");
    let length = usize::try_from(length).expect("length");
    assert_eq!(
        rest.len(),
        length + atbus_proto::CHECKSUM_LEN,
        "length field"
    );
    &rest[..length]
}
