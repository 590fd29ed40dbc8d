//! The worked examples of `docs/protocol.md` are real frames: every hex dump in its section 6
//! decodes with our codec (so its header and CRC-32 are right), and its body is what the text
//! format shown before it in the same section says, as protoc prints it.

mod support;

use std::path::Path;

use support::{body_of, protoc};

use atbus_proto::protocol::frame_message::Body;
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
    let mut contents = 0;
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

        // A packet's `packet_content` is shown in the block right before the frame's text.
        let Some(Body::Packet(packet)) = &decoded.message.body else {
            continue;
        };
        let text_index = blocks[..index]
            .iter()
            .rposition(|earlier| {
                earlier.section == block.section && hex_dump(&earlier.text).is_none()
            })
            .expect("a packet's text");
        let content_text = text_index
            .checked_sub(1)
            .map(|at| &blocks[at])
            .filter(|earlier| {
                earlier.section == block.section && hex_dump(&earlier.text).is_none()
            });
        if let Some(content_text) = content_text {
            let printed = String::from_utf8(protoc(
                &["--decode=atbus.protocol.packet_content"],
                &packet.content,
            ))
            .expect("protoc prints UTF-8");
            assert_eq!(printed, content_text.text, "{}: content", block.section);
            contents += 1;
        }
    }
    assert!(checked >= 7, "only {checked} worked examples found");
    assert!(contents >= 4, "only {contents} packet contents shown");
}

/// The lines of the section whose heading starts with `number` and a space (e.g. `1.4`), up to
/// the next heading.
fn section<'a>(doc: &'a str, number: &str) -> Vec<&'a str> {
    let heading = format!("{number} ");
    doc.lines()
        .skip_while(|line| {
            !(line.starts_with('#')
                && line
                    .trim_start_matches('#')
                    .trim_start()
                    .starts_with(&heading))
        })
        .skip(1)
        .take_while(|line| !line.starts_with('#'))
        .collect()
}

fn protocol_doc() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/protocol.md");
    std::fs::read_to_string(&path).expect("docs/protocol.md")
}

/// One field of a `.proto` file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ProtoField {
    file: String,
    /// The innermost message that declares it.
    message: String,
    number: u32,
    name: String,
    /// As written: `int32`, `fixed32`, a message or enum name, or `map<K,V>`.
    ty: String,
}

/// The fields of `.proto` text, and the names of its enums (the subset of proto3 our files use: messages,
/// nested messages and enums, oneofs, maps, repeated fields, comments with `//`).
fn parse_proto(file: &str, text: &str) -> (Vec<ProtoField>, Vec<String>) {
    let mut tokens = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        let spaced: String = code
            .chars()
            .flat_map(|c| match c {
                '{' | '}' | ';' | '=' | '<' | '>' | ',' => vec![' ', c, ' '],
                c => vec![c],
            })
            .collect();
        tokens.extend(spaced.split_whitespace().map(str::to_string));
    }
    // What each open brace belongs to: ("message", name), ("enum", name) or ("oneof", name).
    let mut scopes: Vec<(String, String)> = Vec::new();
    let mut fields = Vec::new();
    let mut enums = Vec::new();
    let mut at = 0;
    while at < tokens.len() {
        let token = tokens[at].as_str();
        match token {
            "syntax" | "package" | "option" | "import" => {
                while tokens[at] != ";" {
                    at += 1;
                }
                at += 1;
            }
            "message" | "enum" | "oneof" => {
                assert_eq!(tokens[at + 2], "{", "{file}: {token} {}", tokens[at + 1]);
                if token == "enum" {
                    enums.push(tokens[at + 1].clone());
                }
                scopes.push((token.to_string(), tokens[at + 1].clone()));
                at += 3;
            }
            "}" => {
                scopes.pop().expect("balanced braces");
                at += 1;
            }
            _ if scopes.last().is_some_and(|(kind, _)| kind == "enum") => {
                // NAME = VALUE ;
                assert_eq!(tokens[at + 1], "=", "{file}: enum value {token}");
                at += 4;
            }
            _ => {
                let mut ty = token.to_string();
                at += 1;
                if ty == "repeated" || ty == "optional" {
                    ty = tokens[at].clone();
                    at += 1;
                }
                if ty == "map" {
                    // map < K , V >
                    ty = format!("map<{},{}>", tokens[at + 1], tokens[at + 3]);
                    at += 5;
                }
                let name = tokens[at].clone();
                assert_eq!(tokens[at + 1], "=", "{file}: field {name}");
                let number = tokens[at + 2].parse().expect("field number");
                assert_eq!(tokens[at + 3], ";", "{file}: field {name}");
                at += 4;
                let message = scopes
                    .iter()
                    .rev()
                    .find(|(kind, _)| kind == "message")
                    .map(|(_, name)| name.clone())
                    .expect("a field inside a message");
                fields.push(ProtoField {
                    file: file.to_string(),
                    message,
                    number,
                    name,
                    ty,
                });
            }
        }
    }
    assert!(scopes.is_empty(), "{file}: unbalanced braces");
    (fields, enums)
}

/// Every field of every `.proto` file of the crate, and every enum name.
fn all_proto_fields() -> (Vec<ProtoField>, Vec<String>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
    let mut fields = Vec::new();
    let mut enums = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("proto/")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "proto"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 4, "{files:?}");
    for path in files {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).expect("read .proto");
        let (f, e) = parse_proto(&file, &text);
        fields.extend(f);
        enums.extend(e);
    }
    (fields, enums)
}

/// The protobuf wire type of a field type, given the enum names (other names are messages).
fn wire_type(ty: &str, enums: &[String]) -> u32 {
    match ty {
        "int32" | "int64" | "uint32" | "uint64" | "sint32" | "sint64" | "bool" => 0,
        "fixed64" | "sfixed64" | "double" => 1,
        "string" | "bytes" => 2,
        "fixed32" | "sfixed32" | "float" => 5,
        _ if ty.starts_with("map<") => 2,
        // A nested name may be written qualified (`packet_content.fragment_type`).
        _ if enums
            .iter()
            .any(|name| name == ty.rsplit('.').next().unwrap_or(ty)) =>
        {
            0
        }
        _ => 2,
    }
}

#[test]
fn section_1_4_lists_every_unsigned_and_fixed_width_field_of_the_proto_files() {
    let (fields, enums) = all_proto_fields();
    assert!(fields.len() > 50, "only {} fields parsed", fields.len());
    let mut expected: Vec<(String, String, u32, String, String, String)> = fields
        .iter()
        .filter(|field| {
            matches!(
                field.ty.as_str(),
                "uint32"
                    | "uint64"
                    | "sint32"
                    | "sint64"
                    | "fixed32"
                    | "fixed64"
                    | "sfixed32"
                    | "sfixed64"
                    | "float"
                    | "double"
            )
        })
        .map(|field| {
            let wire = match wire_type(&field.ty, &enums) {
                0 => "0 VARINT",
                1 => "1 I64",
                5 => "5 I32",
                other => panic!("wire type {other}"),
            };
            (
                format!("`{}`", field.file),
                format!("`{}`", field.message),
                field.number,
                format!("`{}`", field.name),
                format!("`{}`", field.ty),
                wire.to_string(),
            )
        })
        .collect();
    let doc = protocol_doc();
    let mut documented: Vec<(String, String, u32, String, String, String)> = section(&doc, "1.4")
        .into_iter()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            assert_eq!(cells.len(), 7, "{line}");
            (
                cells[0].to_string(),
                cells[1].to_string(),
                cells[2].parse().expect("field number"),
                cells[3].to_string(),
                cells[4].to_string(),
                cells[5].to_string(),
            )
        })
        .collect();
    documented.sort();
    expected.sort();
    assert_eq!(
        documented, expected,
        "the table of section 1.4 and the .proto files"
    );
    // hop_count and the instance tags are among them.
    assert!(expected.len() >= 3);
}

#[test]
fn the_proto_files_use_the_wire_types_and_one_byte_tags_section_1_5_says() {
    let (fields, enums) = all_proto_fields();
    let mut wire_types: Vec<u32> = fields
        .iter()
        .map(|field| wire_type(&field.ty, &enums))
        .collect();
    wire_types.sort();
    wire_types.dedup();
    assert_eq!(
        wire_types,
        [0, 2, 5],
        "section 1.5: wire types 0, 2 and 5 only"
    );
    for field in &fields {
        assert!(
            (1..16).contains(&field.number),
            "section 1.5: one-byte tags, but {field:?}"
        );
        assert!(
            ![
                "sint32", "sint64", "sfixed32", "sfixed64", "fixed64", "float", "double"
            ]
            .contains(&field.ty.as_str()),
            "section 1.4 says no field is {}: {field:?}",
            field.ty
        );
    }
    let doc = protocol_doc();
    let tags = section(&doc, "1.5").join("\n");
    assert!(
        tags.contains("exactly three wire types"),
        "section 1.5 names the wire types"
    );
}

#[test]
fn a_fixed32_instance_tag_is_four_little_endian_bytes_as_section_1_4_shows() {
    use atbus_proto::protocol::MessageHead;
    use prost::Message;

    let doc = protocol_doc().replace("\n  ", " ");
    // The bytes and values section 1.4 gives.
    assert!(doc.contains("`source_instance` with it is `35 a0 a1 a2 a3`"));
    assert!(doc.contains("is 0xA3A2A1A0 (2 745 344 416)"));
    let head =
        MessageHead::decode(&[0x35, 0xa0, 0xa1, 0xa2, 0xa3, 0x3d, 0xb0, 0xb1, 0xb2, 0xb3][..])
            .expect("decodes");
    assert_eq!(head.source_instance, 0xA3A2_A1A0);
    assert_eq!(head.source_instance, 2_745_344_416);
    assert_eq!(head.destination_instance, 0xB3B2_B1B0);
    // The tag of an instance is its first 4 bytes read little-endian: on the wire, those bytes.
    let instance = [0xa0u8, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7];
    let tag = u32::from_le_bytes(instance[..4].try_into().unwrap());
    let encoded = MessageHead {
        source_instance: tag,
        ..Default::default()
    }
    .encode_to_vec();
    assert_eq!(encoded, [&[0x35][..], &instance[..4]].concat());
    // A uint32 is a plain varint: hop_count 1 is `28 01`, the largest value 5 bytes, never 10.
    let hops = |hop_count| {
        MessageHead {
            hop_count,
            ..Default::default()
        }
        .encode_to_vec()
    };
    assert_eq!(hops(1), [0x28, 0x01]);
    assert_eq!(hops(u32::MAX), [0x28, 0xff, 0xff, 0xff, 0xff, 0x0f]);
}

/// The `NAME (N bytes):` hex blocks and `NAME (N characters):` text lines inside the code blocks of
/// a section, by name, their sizes checked.
fn named_values(doc: &str, number: &str) -> Vec<(String, Vec<u8>)> {
    let mut values: Vec<(String, Vec<u8>)> = Vec::new();
    let mut in_code = false;
    // The value being read: its name, its size, and whether it is text.
    let mut current: Option<(String, usize, bool)> = None;
    for line in section(doc, number) {
        if line.starts_with("```") {
            in_code = !in_code;
            current = None;
            continue;
        }
        if !in_code {
            continue;
        }
        if let Some((name, size)) = line
            .strip_suffix(" bytes):")
            .and_then(|head| head.rsplit_once(" ("))
        {
            let size = size.parse().expect("a size");
            current = Some((name.to_string(), size, false));
            values.push((name.to_string(), Vec::new()));
        } else if let Some((name, size)) = line
            .strip_suffix(" characters):")
            .and_then(|head| head.rsplit_once(" ("))
        {
            let size = size.parse().expect("a size");
            current = Some((name.to_string(), size, true));
            values.push((name.to_string(), Vec::new()));
        } else if line.trim().is_empty() {
            current = None;
        } else if let Some((name, _, text)) = &current {
            let value = &mut values.last_mut().expect("a value").1;
            if *text {
                value.extend_from_slice(line.as_bytes());
            } else {
                for token in line.split_whitespace() {
                    value.push(u8::from_str_radix(token, 16).unwrap_or_else(|_| {
                        panic!("section {number}, {name}: {token:?} is not a hex byte")
                    }));
                }
            }
        }
        if let Some((name, size, _)) = &current {
            let value = &values.last().expect("a value").1;
            assert!(
                value.len() <= *size,
                "section {number}, {name}: more than {size} bytes"
            );
        }
    }
    values
}

fn value<'a>(values: &'a [(String, Vec<u8>)], prefix: &str) -> &'a [u8] {
    values
        .iter()
        .find(|(name, _)| name.starts_with(prefix))
        .map(|(_, value)| value.as_slice())
        .unwrap_or_else(|| panic!("no value named {prefix}…"))
}

/// HMAC-SHA256 by Python's `hmac` (an implementation independent of ours).
fn python_hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let output = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import hashlib, hmac, sys\n\
             key, message = bytes.fromhex(sys.argv[1]), bytes.fromhex(sys.argv[2])\n\
             print(hmac.new(key, message, hashlib.sha256).hexdigest())",
        )
        .arg(hex(key))
        .arg(hex(message))
        .output()
        .unwrap_or_else(|err| {
            panic!("cannot run python3: {err}; install python3 (scripts/test does)")
        });
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("hex");
    let text = text.trim();
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn a_hex_token_is_keyed_by_its_ascii_digits_as_section_8_1_says() {
    let doc = protocol_doc();
    let values = named_values(&doc, "8.1");
    let token = value(&values, "development token as printed");
    let key = value(&values, "key");
    let proof = value(&values, "hello proof");
    let not_the_proof = value(&values, "not the proof");
    assert_eq!(token.len(), 64);
    assert!(token.iter().all(u8::is_ascii_hexdigit));
    // The key is the 64 characters as configured, not the 32 bytes they spell.
    assert_eq!(key, token, "the key is the token's ASCII bytes");
    let spelled: Vec<u8> = token
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect();
    assert_eq!(spelled.len(), 32);

    let example_values = named_values(&doc, "8.6");
    let transcript = value(&example_values, "hello transcript");
    assert_eq!(transcript.len(), 108);
    assert_eq!(python_hmac_sha256(key, transcript), proof);
    assert_eq!(python_hmac_sha256(&spelled, transcript), not_the_proof);
    assert_ne!(proof, not_the_proof);
    // The same transcript under the 8.6 example's token gives 8.6's hello proof: the transcript
    // read here is the one the worked example signs.
    let example = value(&example_values, "token");
    assert_eq!(example, b"atbus example token, 32 bytes!!!");
    assert_eq!(
        python_hmac_sha256(example, transcript),
        value(&example_values, "hello proof")
    );
}
