//! The worked example of the handshake in `docs/protocol.md` section 8.6 is right three ways:
//!
//! - every transcript and proof written there is rebuilt here by hand, from the layouts of section
//!   8.4 (labels, 4-byte big-endian lengths, fixed-width big-endian integers), and signed with
//!   `ring::hmac`, without the crate's own transcript functions;
//! - every frame written there decodes as section 8.2 says, carries the documented fields and
//!   proofs, and is what the protobuf encoder writes for them;
//! - every frame written there is what a frame built by hand from the example's fields gives (the
//!   hello padded as section 8.2 says);
//! - the engine itself accepts the documented hello, answers it with an accept whose proof checks
//!   by hand (with and without a ticket, with a confirm when its replay cache is full or when a
//!   hello names an instance of it that is gone), refuses it with the documented refusal when the
//!   token is not accepted, starts the streams over when the documented client comes back with
//!   another instance (only once that connection is authenticated), and signs its own hellos the
//!   same way.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use atbus_core::engine::{
    ConnectionId, ConnectionParams, Endpoint, EngineConfig, Event, Token, Transmit,
};
use atbus_outside::handshake::{handshake_frame, padded_hello_frame};
use atbus_outside::transcript::{
    accept_transcript, confirm_transcript, hello_transcript, hmac_sha256, resume_transcript,
};
use atbus_proto::handshake::handshake_message::Body as HandshakeBody;
use atbus_proto::handshake::{HandshakeAccept, HandshakeConfirm, HandshakeHello, HandshakeMessage};
use atbus_proto::protocol::frame_message::Body;
use atbus_proto::protocol::{FrameMessage, MessageHead, PacketContent};
use atbus_proto::{Decoded, FrameCodec};
use bytes::{Bytes, BytesMut};
use prost::Message;

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

/// client-1's instance in the example.
fn client_instance() -> Vec<u8> {
    (0xa0..0xa8).collect()
}

/// relay-1's instance in the example (an engine draws its own at random).
fn relay_instance() -> Vec<u8> {
    (0xb0..0xb8).collect()
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

// ---- Section 8.4 and the frames of 8.2, by hand: `atbus-outside`, which knows nothing of the
// engine ----

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
        instance: client_instance().into(),
        // First contact: client-1 knows no instance of relay-1.
        peer_instance: Bytes::new(),
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
        instance: relay_instance().into(),
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
    assert_eq!(transcript.len(), 108);
    // The two instances close the hello transcript (section 8.4 rows 14 and 15).
    assert_eq!(
        &transcript[92..],
        b"\0\0\0\x08\xa0\xa1\xa2\xa3\xa4\xa5\xa6\xa7\0\0\0\0"
    );
    assert_eq!(value(&values, "hello transcript"), &transcript[..]);
    let hello_proof = hmac_sha256(TOKEN, &transcript);
    assert_eq!(value(&values, "hello proof"), &hello_proof[..]);

    let transcript = accept_transcript(&hello_proof, &client_nonce(), &example_accept(false));
    assert_eq!(transcript.len(), 140);
    // The accepting side's instance closes the accept transcript (section 8.4 row 12).
    assert_eq!(
        &transcript[128..],
        b"\0\0\0\x08\xb0\xb1\xb2\xb3\xb4\xb5\xb6\xb7"
    );
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
    assert_eq!(transcript.len(), 140);
    assert_eq!(
        value(&values, "accept transcript, confirm required"),
        &transcript[..]
    );
    // "differs from the one above in bytes 113 and 114 only"
    let plain = value(&values, "accept transcript");
    let differing: Vec<usize> = (0..plain.len())
        .filter(|&i| plain[i] != transcript[i])
        .collect();
    assert_eq!(differing, [113, 114]);
    assert_eq!(&transcript[113..115], [0, 1]);
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

    // The proofs cover the instances: another one on either side gives another proof.
    let changes: [fn(&mut HandshakeHello); 3] = [
        |h| h.instance = relay_instance().into(),
        |h| h.instance = Bytes::new(),
        |h| h.peer_instance = relay_instance().into(),
    ];
    for change in changes {
        let mut hello = example_hello();
        change(&mut hello);
        assert_ne!(hmac_sha256(TOKEN, &hello_transcript(&hello)), hello_proof);
    }
    for instance in [client_instance(), Vec::new()] {
        let accept = HandshakeAccept {
            instance: instance.into(),
            ..example_accept(false)
        };
        let transcript = accept_transcript(&hello_proof, &client_nonce(), &accept);
        assert_ne!(
            hmac_sha256(TOKEN, &transcript),
            value(&values, "accept proof")
        );
    }

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

/// The hello signed by hand with the example's token.
fn signed(hello: &HandshakeHello) -> HandshakeHello {
    HandshakeHello {
        proof: hmac_sha256(TOKEN, &hello_transcript(hello)).into(),
        ..hello.clone()
    }
}

/// client-1's confirm of an accept whose proof is `accept_proof`, built by hand.
fn confirm_frame(accept_proof: &[u8]) -> Bytes {
    handshake_frame(
        CLIENT,
        RELAY,
        HandshakeBody::Confirm(HandshakeConfirm {
            proof: hmac_sha256(TOKEN, &confirm_transcript(accept_proof)).into(),
        }),
    )
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
    assert_eq!(hello.padding.len(), 233);
    assert_eq!(&hello.proof[..], &hello_proof[..]);
    assert_eq!(&hello.instance[..], &client_instance()[..]);
    assert!(hello.peer_instance.is_empty());
    let mut unpadded = hello.clone();
    unpadded.padding = Bytes::new();
    unpadded.proof = Bytes::new();
    assert_eq!(unpadded, example_hello());
    assert_eq!(hmac_sha256(TOKEN, &hello_transcript(&hello)), hello_proof);
    // The frame is the example's hello, signed, framed and padded by hand.
    let by_hand = signed(&example_hello());
    assert_eq!(
        handshake_frame(CLIENT, RELAY, HandshakeBody::Hello(by_hand.clone())).len(),
        151,
        "the unpadded frame"
    );
    assert_eq!(&padded_hello_frame(&by_hand)[..], hello_wire);

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
    assert_eq!(&accept.instance[..], &relay_instance()[..]);
    let mut bare = accept.clone();
    bare.proof = Bytes::new();
    assert_eq!(bare, example_accept(false));
    let by_hand = HandshakeAccept {
        proof: Bytes::copy_from_slice(value(&values, "accept proof")),
        ..example_accept(false)
    };
    assert_eq!(
        &handshake_frame(RELAY, CLIENT, HandshakeBody::Accept(by_hand))[..],
        accept_wire
    );
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
    assert_eq!(
        &confirm_frame(value(&values, "accept proof, confirm required"))[..],
        confirm_wire
    );

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

/// Everything `endpoint` has to send now.
fn drain(endpoint: &mut Endpoint, now: Instant) -> Vec<Transmit> {
    std::iter::from_fn(|| endpoint.poll_transmit(now)).collect()
}

/// The first frame sent on `id` (a ping may follow an accept in the same transmit), with its
/// length on the wire.
fn first_frame_on(transmits: &[Transmit], id: ConnectionId) -> (usize, FrameMessage) {
    let transmit = transmits
        .iter()
        .find(|transmit| transmit.connection == id)
        .expect("an answer on the connection");
    frames_of(&transmit.data).remove(0)
}

/// Feeds a hello frame to `relay` on a new stream connection; returns the connection and
/// everything the relay sends then.
fn answer_to_hello(
    relay: &mut Endpoint,
    now: Instant,
    hello_frame: &[u8],
) -> (ConnectionId, Vec<Transmit>) {
    let id = relay
        .accept(now, ConnectionParams::stream())
        .expect("a new connection");
    relay.handle_input(now, id, Bytes::copy_from_slice(hello_frame));
    (id, drain(relay, now))
}

/// Feeds the documented hello to `relay` on a new stream connection; returns the connection, and
/// the first frame of its answer with that frame's length.
fn answer_to_documented_hello(
    relay: &mut Endpoint,
    now: Instant,
) -> (ConnectionId, (usize, FrameMessage)) {
    let values = documented_values();
    let (id, transmits) = answer_to_hello(relay, now, value(&values, "hello frame"));
    (id, first_frame_on(&transmits, id))
}

/// The accept a handshake frame holds.
fn accept_of(frame: &FrameMessage) -> HandshakeAccept {
    let (_, body) = handshake_of("the engine's answer", frame);
    let HandshakeBody::Accept(accept) = body else {
        panic!("the engine did not accept the hello: {body:?}");
    };
    accept
}

/// Signs `hello` by hand, pads and frames it, feeds it to `relay` on a new connection, and returns
/// the connection, and the accept, whose proof is checked by hand, with everything the relay sent.
fn accept_of_hello(
    relay: &mut Endpoint,
    now: Instant,
    hello: &HandshakeHello,
) -> (ConnectionId, (HandshakeAccept, Vec<Transmit>)) {
    let hello = signed(hello);
    let (id, transmits) = answer_to_hello(relay, now, &padded_hello_frame(&hello));
    let accept = accept_of(&first_frame_on(&transmits, id).1);
    assert_eq!(
        hmac_sha256(
            TOKEN,
            &accept_transcript(&hello.proof, &hello.nonce, &accept)
        ),
        &accept.proof[..]
    );
    (id, (accept, transmits))
}

/// The close reasons (code, message) of the FINISH_CONNECTION packets sent, by connection.
fn close_reasons(transmits: &[Transmit]) -> Vec<(ConnectionId, i32, String)> {
    let mut reasons = Vec::new();
    for transmit in transmits {
        for (_, frame) in frames_of(&transmit.data) {
            let Some(Body::Packet(packet)) = &frame.body else {
                continue;
            };
            if packet.flags & 2 == 0 {
                continue;
            }
            let content = PacketContent::decode(packet.content.clone()).expect("content");
            for fragment in content.fragment {
                if let Some(reason) = fragment.close_reason {
                    reasons.push((transmit.connection, reason.code, reason.message));
                }
            }
        }
    }
    reasons
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
    let (_, (len, frame)) = answer_to_documented_hello(&mut relay, now);
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
    // The engine draws its own instance: 8 bytes, where the example has b0 … b7.
    assert_eq!(accept.instance.len(), 8);
    assert_eq!(
        hmac_sha256(
            TOKEN,
            &accept_transcript(&hello_proof, &client_nonce(), &accept)
        ),
        &accept.proof[..]
    );
    assert_eq!(authenticated(&mut relay), Some((CLIENT.to_string(), true)));

    // The same hello on another connection is a replay.
    let (_, (_, refusal)) = answer_to_documented_hello(&mut relay, now);
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
    let (_, (len, frame)) = answer_to_documented_hello(&mut relay, now);
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
    assert_eq!(accept.instance.len(), 8);
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
    let (id, (_, frame)) = answer_to_documented_hello(&mut relay, now);
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

    relay.handle_input(now, id, confirm_frame(&accept.proof));
    assert_eq!(authenticated(&mut relay), Some((CLIENT.to_string(), false)));
}

#[test]
fn the_engine_asks_for_a_confirm_when_a_hello_names_an_instance_of_it_that_is_gone() {
    let now = Instant::now();
    let mut relay = relay(now, TOKEN, |_| {});
    // The documented hello: first contact, no peer_instance; the accept tells the relay's.
    let (_, (_, frame)) = answer_to_documented_hello(&mut relay, now);
    let first = accept_of(&frame);
    assert!(first.early_data_accepted && !first.confirm_required);
    assert_ne!(
        &first.instance[..],
        &relay_instance()[..],
        "drawn at random"
    );
    assert_eq!(authenticated(&mut relay), Some((CLIENT.to_string(), true)));

    // A hello naming the relay's instance: its early data is numbered for this relay.
    let mut hello = example_hello();
    hello.nonce = (0x20..0x30).collect::<Vec<u8>>().into();
    hello.peer_instance = first.instance.clone();
    let (_, (accept, _)) = accept_of_hello(&mut relay, now, &hello);
    assert!(accept.early_data_accepted && !accept.confirm_required);
    assert_eq!(accept.instance, first.instance);
    assert_eq!(authenticated(&mut relay), Some((CLIENT.to_string(), true)));

    // A hello naming another instance (the example's b0 … b7): section 8.3 rule 11.
    hello.nonce = (0x30..0x40).collect::<Vec<u8>>().into();
    hello.peer_instance = relay_instance().into();
    let (id, (accept, _)) = accept_of_hello(&mut relay, now, &hello);
    assert!(!accept.early_data_accepted && accept.confirm_required);
    assert_eq!(accept.instance, first.instance);
    assert_eq!(authenticated(&mut relay), None, "not before the confirm");
    relay.handle_input(now, id, confirm_frame(&accept.proof));
    assert_eq!(authenticated(&mut relay), Some((CLIENT.to_string(), false)));
}

#[test]
fn the_engine_starts_over_when_the_documented_client_comes_back_with_another_instance() {
    for replay_cache_size in [65_536, 0] {
        // With an empty replay cache every hello needs a confirm: the new instance counts only
        // once it has come.
        let confirm = replay_cache_size == 0;
        let now = Instant::now();
        let mut relay = relay(now, TOKEN, |config| {
            config.auth.replay_cache_size = replay_cache_size;
        });
        let (old, (_, frame)) = answer_to_documented_hello(&mut relay, now);
        let accept = accept_of(&frame);
        assert_eq!(accept.confirm_required, confirm);
        if confirm {
            relay.handle_input(now, old, confirm_frame(&accept.proof));
        }
        assert_eq!(
            authenticated(&mut relay),
            Some((CLIENT.to_string(), !confirm))
        );
        assert!(close_reasons(&drain(&mut relay, now)).is_empty());

        // client-1 restarted: the same name and token, another instance, no peer_instance. The
        // old connection has been silent for 8 s (over 1.5 keep-alive intervals): the old
        // instance is gone, so this is a restart and not a second node taking the name.
        let now = now + Duration::from_secs(8);
        let mut hello = example_hello();
        hello.nonce = (0x40..0x50).collect::<Vec<u8>>().into();
        hello.instance = (0xc0..0xc8).collect::<Vec<u8>>().into();
        let (new, (accept, mut sent)) = accept_of_hello(&mut relay, now, &hello);
        assert_eq!(accept.confirm_required, confirm);
        let mut events: Vec<Event> = std::iter::from_fn(|| relay.poll_event()).collect();
        if confirm {
            assert!(
                !events
                    .iter()
                    .any(|event| matches!(event, Event::PeerRestarted { .. })),
                "not before the confirm"
            );
            assert!(close_reasons(&sent).is_empty(), "not before the confirm");
            relay.handle_input(now, new, confirm_frame(&accept.proof));
            events.extend(std::iter::from_fn(|| relay.poll_event()));
            sent.extend(drain(&mut relay, now));
        }
        assert!(events.contains(&Event::PeerRestarted {
            peer: CLIENT.to_string()
        }));
        assert!(events.iter().any(|event| matches!(
            event,
            Event::Authenticated { connection, peer, .. } if *connection == new && peer == CLIENT
        )));
        // The connection to the old instance is closed: PEER_RESET (2).
        assert_eq!(
            close_reasons(&sent),
            [(old, 2, "the peer restarted".to_string())]
        );
    }
}

#[test]
fn the_engine_refuses_the_documented_hello_with_the_documented_refusal() {
    let values = documented_values();
    let now = Instant::now();
    let mut relay = relay(now, b"another token of thirty-two byte", |_| {});
    let values_refusal = value(&values, "refusal frame");
    let (_, (len, frame)) = answer_to_documented_hello(&mut relay, now);
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
    let first = client
        .connect(now, ConnectionParams::stream(), options.clone())
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
    // Its own random instance, and no peer_instance: it knows none of relay-1's.
    assert_eq!(hello.instance.len(), 8);
    assert!(hello.peer_instance.is_empty());
    // The same sizes as the example's hello, so the same padding.
    assert_eq!(
        frames[0].0,
        value(&documented_values(), "hello frame").len()
    );
    assert_eq!(hello.padding.len(), 233);
    assert_eq!(
        hmac_sha256(TOKEN, &hello_transcript(&hello)),
        &hello.proof[..]
    );

    // relay-1 answers with the example's instance, in an accept built and signed by hand.
    let mut accept = HandshakeAccept {
        early_data_accepted: hello.early_data,
        ..example_accept(false)
    };
    accept.proof = hmac_sha256(
        TOKEN,
        &accept_transcript(&hello.proof, &hello.nonce, &accept),
    )
    .into();
    client.handle_input(
        now,
        first,
        handshake_frame(RELAY, CLIENT, HandshakeBody::Accept(accept)),
    );
    assert_eq!(
        authenticated(&mut client).map(|(peer, _)| peer),
        Some(RELAY.to_string())
    );
    drain(&mut client, now);

    // Its next hello to relay-1 names that instance as peer_instance, under the proof.
    let second = client
        .connect(now, ConnectionParams::stream(), options)
        .expect("connect");
    let transmits = drain(&mut client, now);
    let (_, frame) = first_frame_on(&transmits, second);
    let (_, body) = handshake_of("the engine's second hello", &frame);
    let HandshakeBody::Hello(second) = body else {
        panic!("the first frame is not a hello");
    };
    assert_eq!(&second.peer_instance[..], &relay_instance()[..]);
    assert_eq!(
        second.instance, hello.instance,
        "one instance for the node's life"
    );
    assert_ne!(second.nonce, hello.nonce);
    assert_eq!(
        hmac_sha256(TOKEN, &hello_transcript(&second)),
        &second.proof[..]
    );
}

/// Section 8.1: a token written in hexadecimal (as the relay prints its development token) is
/// keyed by its ASCII digits, as configured; a proof made with the decoded bytes is refused.
#[test]
fn a_hex_token_is_keyed_by_its_ascii_digits_as_section_8_1_says() {
    const PRINTED: &str = "5f0e9a61c2d8b3477e10c4a9f2d35b6880a1e7c94b3d2f6051a8e9c7d4b2f3a1";
    // The proof of the 8.6 hello under that key, as section 8.1 gives it.
    const PROOF: &str = "cc4c4eea151228f8781c8efecb232cb62f30e0af2123d4481aabc6e07b0e3b76";
    assert_eq!(Token::new(PRINTED).unwrap().expose(), PRINTED.as_bytes());
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let now = Instant::now();
    let mut relay = relay(now, PRINTED.as_bytes(), |_| {});
    let mut hello = example_hello();
    hello.proof = hmac_sha256(PRINTED.as_bytes(), &hello_transcript(&hello)).into();
    assert_eq!(hex(&hello.proof), PROOF);
    let (id, sent) = answer_to_hello(&mut relay, now, &padded_hello_frame(&hello));
    accept_of(&first_frame_on(&sent, id).1);

    let decoded = Token::from_hex(PRINTED).unwrap();
    let mut wrong = example_hello();
    wrong.nonce = (0x40..0x50).collect::<Vec<u8>>().into();
    wrong.proof = hmac_sha256(decoded.expose(), &hello_transcript(&wrong)).into();
    let (id, sent) = answer_to_hello(&mut relay, now, &padded_hello_frame(&wrong));
    check_refusal(&first_frame_on(&sent, id).1, "unauthorized: bad_proof");
}
