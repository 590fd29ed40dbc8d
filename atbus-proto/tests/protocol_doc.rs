//! The worked examples of `docs/protocol.md` are real frames: every hex dump in its section 6
//! decodes with our codec (so its header and CRC-32 are right), and its body is what the text
//! format shown before it in the same section says, as protoc prints it.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use atbus_proto::{Decoded, FrameCodec};
use bytes::BytesMut;

/// A fenced code block of the document, with the heading of the section it is in.
struct Block {
    section: String,
    text: String,
}

fn blocks(doc: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut section = String::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        if line.starts_with("```") {
            match current.take() {
                Some(text) => blocks.push(Block {
                    section: section.clone(),
                    text,
                }),
                None => current = Some(String::new()),
            }
        } else if let Some(text) = current.as_mut() {
            text.push_str(line);
            text.push('\n');
        } else if line.starts_with('#') {
            section = line.trim_start_matches('#').trim().to_string();
        }
    }
    blocks
}

/// The bytes of a hex dump block, or `None` if the block is something else.
fn hex_dump(text: &str) -> Option<Vec<u8>> {
    let tokens: Vec<&str> = text.split_whitespace().collect();
    if tokens.is_empty() {
        return None;
    }
    tokens
        .iter()
        .map(|token| {
            (token.len() == 2)
                .then(|| u8::from_str_radix(token, 16).ok())
                .flatten()
        })
        .collect()
}

/// The `frame_message` bytes of a whole frame: after the two header varints, before the CRC.
fn body_of(frame: &[u8]) -> &[u8] {
    let mut rest = frame;
    prost::encoding::decode_varint(&mut rest).expect("version varint");
    let length = prost::encoding::decode_varint(&mut rest).expect("length varint");
    &rest[..usize::try_from(length).expect("length")]
}

fn protoc_decode_frame_message(body: &[u8]) -> String {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let program = std::env::var_os("PROTOC").unwrap_or_else(|| "protoc".into());
    let mut child = Command::new(&program)
        .arg("--decode=atbus.protocol.frame_message")
        .arg("-I")
        .arg(manifest.join("proto"))
        .arg(manifest.join("proto/libatbus_protocol.proto"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot run {program:?}: {err}; install protobuf-compiler"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body)
        .expect("write");
    let output = child.wait_with_output().expect("protoc");
    assert!(
        output.status.success(),
        "protoc: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("protoc prints UTF-8")
}

#[test]
fn every_worked_example_decodes_and_matches_its_text_format() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/protocol.md");
    let doc = std::fs::read_to_string(&path).expect("docs/protocol.md");
    let blocks: Vec<Block> = blocks(&doc)
        .into_iter()
        .filter(|block| block.section.starts_with("6."))
        .collect();
    let codec = FrameCodec::default();
    let mut checked = 0;
    for (index, block) in blocks.iter().enumerate() {
        let Some(frame) = hex_dump(&block.text) else {
            continue;
        };
        let mut buf = BytesMut::from(&frame[..]);
        let decoded = match codec.decode(&mut buf) {
            Ok(Decoded::Frame(decoded)) => decoded,
            other => panic!("{}: hex dump does not decode: {other:?}", block.section),
        };
        assert!(buf.is_empty(), "{}: bytes after the frame", block.section);
        assert_eq!(decoded.wire_len, frame.len());

        // The text shown before the dump, in the same section; none means an empty message.
        let expected = blocks[..index]
            .iter()
            .rev()
            .take_while(|earlier| earlier.section == block.section)
            .find(|earlier| hex_dump(&earlier.text).is_none())
            .map(|earlier| earlier.text.as_str())
            .unwrap_or("");
        let printed = protoc_decode_frame_message(body_of(&frame));
        assert_eq!(printed, expected, "{}", block.section);
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} worked examples found");
}
