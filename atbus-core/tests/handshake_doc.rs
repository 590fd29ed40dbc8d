//! The worked example of the handshake in `docs/protocol.md` section 8.6 is right three ways:
//!
//! - every transcript and proof written there is rebuilt here by hand, from the layouts of section
//!   8.4 (labels, 4-byte big-endian lengths, fixed-width big-endian integers), and signed with
//!   `ring::hmac`, without the crate's own transcript functions;
//! - every frame written there decodes as section 8.2 says, carries the documented fields and
//!   proofs, and is what the protobuf encoder writes for them;
//! - the engine itself accepts the documented hello, answers it with an accept whose proof checks
//!   by hand (with and without a ticket, with a confirm when its replay cache is full), refuses it
//!   with the documented refusal when the token is not accepted, and signs its own hellos the same
//!   way.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use atbus_core::engine::{ConnectionId, ConnectionParams, Endpoint, EngineConfig, Event, Token};
use atbus_proto::handshake::handshake_message::Body as HandshakeBody;
use atbus_proto::handshake::{HandshakeAccept, HandshakeConfirm, HandshakeHello, HandshakeMessage};
use atbus_proto::protocol::frame_message::Body;
use atbus_proto::protocol::packet_content::FragmentType;
use atbus_proto::protocol::{FrameMessage, MessageHead, PacketContent, PacketData};
use atbus_proto::{Decoded, FrameCodec};
use bytes::{Bytes, BytesMut};
use prost::Message;
use ring::hmac;

/// The inputs of the example, as the table of section 8.6 gives them.
const TOKEN: &[u8] = b"atbus example token, 32 bytes!!!";
const CLIENT: &str = "client-1";
const RELAY: &str = "relay-1";
const TIMESTAMP_MS: i64 = 1_767_225_600_000;
const MTU: i64 = 65_536;

fn client_nonce() -> Vec<u8> {
    (0x00..0x10).collect()
}

fn server_nonce() -> Vec<u8> {
    (0x10..0x20).collect()
}

/// The `NAME (N bytes):` hex blocks of section 8.6, by name.
fn documented_values() -> BTreeMap<String, Vec<u8>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/protocol.md");
    let doc = std::fs::read_to_string(&path).expect("docs/protocol.md");
    let mut values = BTreeMap::new();
    let mut section = String::new();
    let mut in_block = false;
    let mut current: Option<(String, usize, Vec<u8>)> = None;
    let mut finish = |current: &mut Option<(String, usize, Vec<u8>)>| {
        if let Some((name, declared, bytes)) = current.take() {
            assert_eq!(
                bytes.len(),
                declared,
                "{name}: the block does not hold {declared} bytes"
            );
            assert!(
                values.insert(name.clone(), bytes).is_none(),
                "{name} is given twice"
            );
        }
    };
    for line in doc.lines() {
        if line.starts_with("```") {
            finish(&mut current);
            in_block = !in_block;
            continue;
        }
        if !in_block {
            if line.starts_with('#') {
                section = line.trim_start_matches('#').trim().to_string();
            }
            continue;
        }
        if !section.starts_with("8.6 ") {
            continue;
        }
        if let Some(label) = line.strip_suffix(" bytes):") {
            finish(&mut current);
            let (name, count) = label.rsplit_once(" (").expect("NAME (N bytes):");
            let count = count.parse().expect("a byte count");
            current = Some((name.to_string(), count, Vec::new()));
        } else if line.trim().is_empty() {
            finish(&mut current);
        } else if let Some((name, _, bytes)) = current.as_mut() {
            for token in line.split_whitespace() {
                assert_eq!(token.len(), 2, "{name}: {token:?} is not a hex byte");
                bytes.push(u8::from_str_radix(token, 16).expect("a hex byte"));
            }
        }
    }
    values
}

fn value<'a>(values: &'a BTreeMap<String, Vec<u8>>, name: &str) -> &'a [u8] {
    values
        .get(name)
        .unwrap_or_else(|| panic!("section 8.6 has no block `{name} (N bytes):`"))
}

// ---- Section 8.4, by hand ----

fn lp(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap().to_be_bytes());
    out.extend_from_slice(bytes);
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), message)
        .as_ref()
        .to_vec()
}

fn hello_transcript(hello: &HandshakeHello) -> Vec<u8> {
    let parameters = hello.parameters.unwrap_or_default();
    let mut out = b"atbus-hello/1".to_vec();
    out.extend_from_slice(&hello.protocol_version.to_be_bytes());
    out.push(hello.mode.to_be_bytes()[3]);
    out.push(hello.role.to_be_bytes()[3]);
    lp(&mut out, hello.source.as_bytes());
    lp(&mut out, hello.destination.as_bytes());
    lp(&mut out, &hello.nonce);
    out.extend_from_slice(&hello.timestamp_milliseconds.to_be_bytes());
    out.extend_from_slice(&hello.stream_id.to_be_bytes());
    out.push(parameters.kind.to_be_bytes()[3]);
    out.extend_from_slice(&parameters.mtu.to_be_bytes());
    out.push(u8::from(hello.early_data));
    lp(&mut out, &hello.ticket);
    out
}

fn accept_transcript(hello_proof: &[u8], hello_nonce: &[u8], accept: &HandshakeAccept) -> Vec<u8> {
    let mut out = b"atbus-accept/1".to_vec();
    lp(&mut out, hello_proof);
    lp(&mut out, hello_nonce);
    lp(&mut out, accept.source.as_bytes());
    lp(&mut out, accept.destination.as_bytes());
    lp(&mut out, &accept.nonce);
    out.push(u8::from(accept.early_data_accepted));
    out.push(u8::from(accept.confirm_required));
    out.push(accept.role.to_be_bytes()[3]);
    lp(&mut out, &accept.ticket);
    out.extend_from_slice(&accept.ticket_lifetime_seconds.to_be_bytes());
    out
}

fn confirm_transcript(accept_proof: &[u8]) -> Vec<u8> {
    let mut out = b"atbus-confirm/1".to_vec();
    lp(&mut out, accept_proof);
    out
}

fn resume_transcript(hello_proof: &[u8], accept_nonce: &[u8]) -> Vec<u8> {
    let mut out = b"atbus-resume/1".to_vec();
    lp(&mut out, hello_proof);
    lp(&mut out, accept_nonce);
    out
}

/// The hello of the example (padding aside).
fn example_hello() -> HandshakeHello {
    HandshakeHello {
        protocol_version: 1,
        mode: 0,
        role: 0,
        source: CLIENT.into(),
        destination: RELAY.into(),
        nonce: client_nonce().into(),
        timestamp_milliseconds: TIMESTAMP_MS,
        stream_id: 0,
        parameters: Some(atbus_proto::handshake::ConnectionParameters { kind: 0, mtu: MTU }),
        early_data: true,
        ..Default::default()
    }
}

/// The accept of the example, without its proof.
fn example_accept(confirm_required: bool) -> HandshakeAccept {
    HandshakeAccept {
        source: RELAY.into(),
        destination: CLIENT.into(),
        nonce: server_nonce().into(),
        early_data_accepted: !confirm_required,
        confirm_required,
        ticket: Bytes::new(),
        ticket_lifetime_seconds: 0,
        role: 0,
        proof: Bytes::new(),
    }
}

#[test]
fn the_documented_transcripts_and_proofs_are_the_layouts_of_section_8_4() {
    let values = documented_values();
    assert_eq!(TOKEN.len(), 32);
    assert_eq!(value(&values, "token"), TOKEN);

    let hello = example_hello();
    let transcript = hello_transcript(&hello);
    assert_eq!(transcript.len(), 92);
    assert_eq!(value(&values, "hello transcript"), &transcript[..]);
    let hello_proof = hmac_sha256(TOKEN, &transcript);
    assert_eq!(value(&values, "hello proof"), &hello_proof[..]);

    let transcript = accept_transcript(&hello_proof, &client_nonce(), &example_accept(false));
    assert_eq!(transcript.len(), 128);
    assert_eq!(value(&values, "accept transcript"), &transcript[..]);
    let accept_proof = hmac_sha256(TOKEN, &transcript);
    assert_eq!(value(&values, "accept proof"), &accept_proof[..]);

    let transcript = resume_transcript(&hello_proof, &server_nonce());
    assert_eq!(value(&values, "resume transcript"), &transcript[..]);
    assert_eq!(
        value(&values, "resumption secret"),
        &hmac_sha256(TOKEN, &transcript)[..]
    );

    let transcript = accept_transcript(&hello_proof, &client_nonce(), &example_accept(true));
    assert_eq!(
        value(&values, "accept transcript, confirm required"),
        &transcript[..]
    );
    let confirming_proof = hmac_sha256(TOKEN, &transcript);
    assert_eq!(
        value(&values, "accept proof, confirm required"),
        &confirming_proof[..]
    );
    let transcript = confirm_transcript(&confirming_proof);
    assert_eq!(transcript.len(), 51);
    assert_eq!(value(&values, "confirm transcript"), &transcript[..]);
    assert_eq!(
        value(&values, "confirm proof"),
        &hmac_sha256(TOKEN, &transcript)[..]
    );

    // RFC 4231 test case 2, the check value of section 8.4.
    let check = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
    let check: String = check.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        check,
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

// ---- Section 8.2: the frames ----

/// Decodes one whole frame, and checks that encoding its message again gives the same bytes.
fn decode_frame(name: &str, wire: &[u8]) -> FrameMessage {
    let codec = FrameCodec::default();
    let mut buf = BytesMut::from(wire);
    let frame = match codec.decode(&mut buf) {
        Ok(Decoded::Frame(frame)) => frame,
        other => panic!("{name} does not decode: {other:?}"),
    };
    assert!(buf.is_empty(), "{name}: bytes after the frame");
    assert_eq!(frame.wire_len, wire.len());
    let mut again = BytesMut::new();
    codec.encode(&frame.message, &mut again).unwrap();
    assert_eq!(&again[..], wire, "{name} is not what the encoder writes");
    frame.message
}

/// The head, and the handshake message of a handshake frame, checked against section 8.2.
fn handshake_of(name: &str, frame: &FrameMessage) -> (MessageHead, HandshakeBody) {
    let head = frame.head.clone().unwrap_or_default();
    assert!(head.forward_for_source.is_empty() && head.forward_for_connection_id == 0);
    let Some(Body::Packet(packet)) = &frame.body else {
        panic!("{name} is not a packet");
    };
    assert_eq!(packet.stream_id, -2, "{name}: stream");
    assert_eq!(packet.flags, 8, "{name}: flags");
    assert_eq!(packet.stream_offset, 0);
    assert_eq!(packet.padding_size, 0);
    let content = PacketContent::decode(packet.content.clone()).expect("content");
    let [fragment] = content.fragment.as_slice() else {
        panic!("{name}: not one fragment");
    };
    assert_eq!(fragment.packet_type, 2, "{name}: packet type");
    assert_eq!(fragment.fragment_flag, 0);
    assert!(fragment.options.is_none() && fragment.labels.is_empty());
    assert!(fragment.forward_for.is_none() && fragment.close_reason.is_none());
    let message = HandshakeMessage::decode(fragment.data.clone()).expect("handshake_message");
    (head, message.body.expect("a member of the oneof"))
}

#[test]
fn the_documented_frames_carry_the_documented_messages() {
    let values = documented_values();
    let hello_proof = value(&values, "hello proof").to_vec();

    let hello_wire = value(&values, "hello frame");
    let (head, body) = handshake_of("hello frame", &decode_frame("hello frame", hello_wire));
    let HandshakeBody::Hello(hello) = body else {
        panic!("the hello frame holds no hello");
    };
    assert_eq!(
        (head.source.as_str(), head.destination.as_str()),
        (CLIENT, RELAY)
    );
    assert!(hello_wire.len() >= 384, "the hello is padded to 384 bytes");
    assert!(hello.padding.iter().all(|&b| b == 0));
    assert_eq!(hello.padding.len(), 243);
    assert_eq!(&hello.proof[..], &hello_proof[..]);
    let mut unpadded = hello.clone();
    unpadded.padding = Bytes::new();
    unpadded.proof = Bytes::new();
    assert_eq!(unpadded, example_hello());
    assert_eq!(hmac_sha256(TOKEN, &hello_transcript(&hello)), hello_proof);

    let accept_wire = value(&values, "accept frame");
    let (head, body) = handshake_of("accept frame", &decode_frame("accept frame", accept_wire));
    let HandshakeBody::Accept(accept) = body else {
        panic!("the accept frame holds no accept");
    };
    assert_eq!(
        (head.source.as_str(), head.destination.as_str()),
        (RELAY, CLIENT)
    );
    assert!(accept_wire.len() <= hello_wire.len(), "no amplification");
    assert_eq!(&accept.proof[..], value(&values, "accept proof"));
    let mut bare = accept.clone();
    bare.proof = Bytes::new();
    assert_eq!(bare, example_accept(false));
    assert_eq!(
        hmac_sha256(
            TOKEN,
            &accept_transcript(&hello_proof, &hello.nonce, &accept)
        ),
        &accept.proof[..]
    );

    let confirm_wire = value(&values, "confirm frame");
    let (head, body) = handshake_of(
        "confirm frame",
        &decode_frame("confirm frame", confirm_wire),
    );
    let HandshakeBody::Confirm(confirm) = body else {
        panic!("the confirm frame holds no confirm");
    };
    assert_eq!(
        (head.source.as_str(), head.destination.as_str()),
        (CLIENT, RELAY)
    );
    assert_eq!(&confirm.proof[..], value(&values, "confirm proof"));

    let refusal_wire = value(&values, "refusal frame");
    let refusal = decode_frame("refusal frame", refusal_wire);
    check_refusal(&refusal, "unauthorized: bad_proof");
    assert!(refusal_wire.len() <= hello_wire.len(), "no amplification");
}

/// A refusal as section 8.8 describes it, from relay-1 to a peer whose name it does not know.
fn check_refusal(frame: &FrameMessage, message: &str) {
    let head = frame.head.clone().unwrap_or_default();
    assert_eq!(
        (head.source.as_str(), head.destination.as_str()),
        (RELAY, "")
    );
    let Some(Body::Packet(packet)) = &frame.body else {
        panic!("a refusal is a packet");
    };
    assert_eq!((packet.stream_id, packet.flags), (-1, 2));
    let content = PacketContent::decode(packet.content.clone()).expect("content");
    let [fragment] = content.fragment.as_slice() else {
        panic!("a refusal has one fragment");
    };
    assert!(fragment.data.is_empty());
    let reason = fragment.close_reason.clone().expect("a close reason");
    assert_eq!(reason.code, 3, "UNAUTHORIZED");
    assert_eq!(reason.message, message);
}

// ---- The engine against the document ----

/// An endpoint named `relay-1` whose clock reads the example's timestamp.
fn relay(now: Instant, token: &[u8], configure: impl FnOnce(&mut EngineConfig)) -> Endpoint {
    let mut config = EngineConfig::default();
    config.auth.tokens = vec![Token::new(token).unwrap()];
    config.auth.ticket_lifetime = None;
    configure(&mut config);
    let mut relay = Endpoint::new(RELAY, config, now);
    relay.set_unix_time(now, Duration::from_millis(TIMESTAMP_MS as u64));
    relay
}

/// The frames of one transmit, decoded, with their lengths on the wire.
fn frames_of(data: &Bytes) -> Vec<(usize, FrameMessage)> {
    let codec = FrameCodec::default();
    let mut buf = BytesMut::from(&data[..]);
    let mut frames = Vec::new();
    while !buf.is_empty() {
        match codec.decode(&mut buf) {
            Ok(Decoded::Frame(frame)) => frames.push((frame.wire_len, frame.message)),
            other => panic!("the engine sent an undecodable frame: {other:?}"),
        }
    }
    frames
}

/// Feeds the documented hello to `relay` on a new stream connection; returns the first frame of
/// its answer (a ping may follow an accept in the same transmit) and that frame's length.
fn answer_to_documented_hello(
    relay: &mut Endpoint,
    now: Instant,
    id: ConnectionId,
) -> (usize, FrameMessage) {
    let values = documented_values();
    relay
        .accept(now, id, ConnectionParams::stream())
        .expect("a new connection");
    relay.handle_input(
        now,
        id,
        Bytes::copy_from_slice(value(&values, "hello frame")),
    );
    let transmit = relay.poll_transmit(now).expect("an answer to the hello");
    assert_eq!(transmit.connection, id);
    frames_of(&transmit.data).remove(0)
}

fn authenticated(endpoint: &mut Endpoint) -> Option<(String, bool)> {
    std::iter::from_fn(|| endpoint.poll_event()).find_map(|event| match event {
        Event::Authenticated {
            peer,
            early_data_accepted,
            ..
        } => Some((peer, early_data_accepted)),
        _ => None,
    })
}

#[test]
fn the_engine_accepts_the_documented_hello_with_a_proof_that_checks_by_hand() {
    let values = documented_values();
    let hello_proof = value(&values, "hello proof").to_vec();
    let now = Instant::now();
    let mut relay = relay(now, TOKEN, |_| {});
    let (len, frame) = answer_to_documented_hello(&mut relay, now, ConnectionId(1));
    assert_eq!(len, value(&values, "accept frame").len());
    let (_, body) = handshake_of("the engine's accept", &frame);
    let HandshakeBody::Accept(accept) = body else {
        panic!("the engine did not accept the documented hello");
    };
    assert_eq!(
        (accept.source.as_str(), accept.destination.as_str()),
        (RELAY, CLIENT)
    );
    assert_eq!(accept.nonce.len(), 16);
    assert!(accept.early_data_accepted && !accept.confirm_required);
    assert!(accept.ticket.is_empty() && accept.ticket_lifetime_seconds == 0);
    assert_eq!(accept.role, 0);
    assert_eq!(
        hmac_sha256(
            TOKEN,
            &accept_transcript(&hello_proof, &client_nonce(), &accept)
        ),
        &accept.proof[..]
    );
    assert_eq!(authenticated(&mut relay), Some((CLIENT.to_string(), true)));

    // The same hello on another connection is a replay.
    let (_, refusal) = answer_to_documented_hello(&mut relay, now, ConnectionId(2));
    check_refusal(&refusal, "unauthorized: replay");
}

#[test]
fn the_engine_hands_a_ticket_that_fits_in_the_padding() {
    let values = documented_values();
    let hello_proof = value(&values, "hello proof").to_vec();
    let now = Instant::now();
    let mut relay = relay(now, TOKEN, |config| {
        config.auth.ticket_lifetime = Some(Duration::from_secs(24 * 3600));
    });
    let (len, frame) = answer_to_documented_hello(&mut relay, now, ConnectionId(1));
    assert!(
        len <= value(&values, "hello frame").len(),
        "no amplification"
    );
    let (_, body) = handshake_of("the engine's accept", &frame);
    let HandshakeBody::Accept(accept) = body else {
        panic!("the engine did not accept the documented hello");
    };
    assert!(
        !accept.ticket.is_empty(),
        "the ticket fits in a padded hello's answer"
    );
    assert_eq!(accept.ticket_lifetime_seconds, 24 * 3600);
    assert_eq!(
        hmac_sha256(
            TOKEN,
            &accept_transcript(&hello_proof, &client_nonce(), &accept)
        ),
        &accept.proof[..]
    );
}

#[test]
fn the_engine_waits_for_a_confirm_built_by_hand_when_its_replay_cache_is_full() {
    let values = documented_values();
    let hello_proof = value(&values, "hello proof").to_vec();
    let now = Instant::now();
    let mut relay = relay(now, TOKEN, |config| config.auth.replay_cache_size = 0);
    let id = ConnectionId(1);
    let (_, frame) = answer_to_documented_hello(&mut relay, now, id);
    let (_, body) = handshake_of("the engine's accept", &frame);
    let HandshakeBody::Accept(accept) = body else {
        panic!("the engine did not accept the documented hello");
    };
    assert!(!accept.early_data_accepted && accept.confirm_required);
    assert_eq!(
        hmac_sha256(
            TOKEN,
            &accept_transcript(&hello_proof, &client_nonce(), &accept)
        ),
        &accept.proof[..]
    );
    assert_eq!(authenticated(&mut relay), None, "not before the confirm");

    let confirm = HandshakeMessage {
        body: Some(HandshakeBody::Confirm(HandshakeConfirm {
            proof: hmac_sha256(TOKEN, &confirm_transcript(&accept.proof)).into(),
        })),
    };
    let frame = FrameMessage {
        head: Some(MessageHead {
            source: CLIENT.into(),
            destination: RELAY.into(),
            ..Default::default()
        }),
        body: Some(Body::Packet(PacketData {
            stream_id: -2,
            content: PacketContent {
                fragment: vec![FragmentType {
                    packet_type: 2,
                    data: confirm.encode_to_vec().into(),
                    ..Default::default()
                }],
            }
            .encode_to_vec()
            .into(),
            flags: 8,
            ..Default::default()
        })),
    };
    let mut wire = BytesMut::new();
    FrameCodec::default().encode(&frame, &mut wire).unwrap();
    relay.handle_input(now, id, wire.freeze());
    assert_eq!(authenticated(&mut relay), Some((CLIENT.to_string(), false)));
}

#[test]
fn the_engine_refuses_the_documented_hello_with_the_documented_refusal() {
    let values = documented_values();
    let now = Instant::now();
    let mut relay = relay(now, b"another token of thirty-two byte", |_| {});
    let values_refusal = value(&values, "refusal frame");
    let (len, frame) = answer_to_documented_hello(&mut relay, now, ConnectionId(1));
    check_refusal(&frame, "unauthorized: bad_proof");
    let mut wire = BytesMut::new();
    FrameCodec::default().encode(&frame, &mut wire).unwrap();
    assert_eq!(len, values_refusal.len());
    assert_eq!(&wire[..], values_refusal);
}

#[test]
fn the_engine_signs_its_own_hello_as_section_8_4_says() {
    let now = Instant::now();
    let mut client = Endpoint::new(CLIENT, EngineConfig::default(), now);
    client.set_unix_time(now, Duration::from_millis(TIMESTAMP_MS as u64));
    let options = atbus_core::engine::ConnectOptions::new(
        RELAY,
        atbus_core::engine::Credential::Token(Token::new(TOKEN).unwrap()),
    );
    client
        .connect(now, ConnectionId(1), ConnectionParams::stream(), options)
        .expect("connect");
    let transmit = client.poll_transmit(now).expect("the hello");
    assert!(transmit.data.len() >= 384, "the hello is padded");
    let frames = frames_of(&transmit.data);
    let (head, body) = handshake_of("the engine's hello", &frames[0].1);
    let HandshakeBody::Hello(hello) = body else {
        panic!("the first frame is not a hello");
    };
    assert_eq!(
        (head.source.as_str(), head.destination.as_str()),
        (CLIENT, RELAY)
    );
    assert_eq!(hello.timestamp_milliseconds, TIMESTAMP_MS);
    assert_eq!(hello.nonce.len(), 16);
    assert_eq!(hello.parameters.map(|p| (p.kind, p.mtu)), Some((0, MTU)));
    assert!(hello.padding.iter().all(|&b| b == 0));
    assert_eq!(
        hmac_sha256(TOKEN, &hello_transcript(&hello)),
        &hello.proof[..]
    );
}
