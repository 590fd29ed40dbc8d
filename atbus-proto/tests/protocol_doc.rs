//! The worked examples of `docs/protocol.md` are real frames: every hex dump in its section 6
//! decodes with our codec (so its header and CRC-32 are right), and its body is what the text
//! format shown before it in the same section says, as protoc prints it.

mod support;

use std::path::Path;

use support::{body_of, protoc};

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
        let printed = String::from_utf8(protoc(
            &["--decode=atbus.protocol.frame_message"],
            body_of(&frame),
        ))
        .expect("protoc prints UTF-8");
        assert_eq!(printed, expected, "{}", block.section);
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} worked examples found");
}
