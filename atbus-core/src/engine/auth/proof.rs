//! The proofs of the handshake: HMAC-SHA256 over transcripts laid out byte for byte as
//! `docs/protocol.md` section 8.4 says, so that another implementation computes the same bytes.
//!
//! A transcript is a fixed ASCII label followed by fields: integers big-endian at a fixed width,
//! byte strings and names as a 4-byte big-endian length and the bytes (`lp`).

use atbus_proto::handshake::HandshakeHello;
use ring::hmac;

/// Length of every proof and secret: one SHA-256 output.
pub const PROOF_LEN: usize = 32;

/// Label of the hello transcript.
const HELLO_LABEL: &[u8] = b"atbus-hello/1";
/// Label of the accept transcript.
const ACCEPT_LABEL: &[u8] = b"atbus-accept/1";
/// Label of the confirm transcript.
const CONFIRM_LABEL: &[u8] = b"atbus-confirm/1";
/// Label of the resumption secret.
const RESUME_LABEL: &[u8] = b"atbus-resume/1";

/// Appends a byte string with its 4-byte big-endian length.
fn put_lp(out: &mut Vec<u8>, bytes: &[u8]) {
    // Handshake fields are bounded by max_handshake_size, far below 4 GiB.
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The bytes the hello's proof covers: every field of the hello except `padding` and `proof`.
pub fn hello_transcript(hello: &HandshakeHello) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + hello.ticket.len());
    out.extend_from_slice(HELLO_LABEL);
    out.extend_from_slice(&hello.protocol_version.to_be_bytes());
    out.push(hello.mode as u8);
    out.push(hello.role as u8);
    put_lp(&mut out, hello.source.as_bytes());
    put_lp(&mut out, hello.destination.as_bytes());
    put_lp(&mut out, &hello.nonce);
    out.extend_from_slice(&hello.timestamp_milliseconds.to_be_bytes());
    out.extend_from_slice(&hello.stream_id.to_be_bytes());
    let parameters = hello.parameters.unwrap_or_default();
    out.push(parameters.kind as u8);
    out.extend_from_slice(&parameters.mtu.to_be_bytes());
    out.push(u8::from(hello.early_data));
    put_lp(&mut out, &hello.ticket);
    put_lp(&mut out, &hello.instance);
    put_lp(&mut out, &hello.peer_instance);
    out
}

/// What the accept's proof covers besides the hello's proof and nonce.
#[derive(Debug, Clone, Copy)]
pub struct AcceptFields<'a> {
    /// The accepting node's name.
    pub source: &'a str,
    /// The connecting node's name.
    pub destination: &'a str,
    /// The accepting side's nonce.
    pub nonce: &'a [u8],
    /// Whether the early data was delivered.
    pub early_data_accepted: bool,
    /// Whether a confirm is required.
    pub confirm_required: bool,
    /// The accepting side's role.
    pub role: i32,
    /// The sealed ticket, or empty.
    pub ticket: &'a [u8],
    /// The ticket's lifetime in seconds.
    pub ticket_lifetime_seconds: i64,
    /// The accepting side's instance.
    pub instance: &'a [u8],
}

/// The bytes the accept's proof covers: the hello's proof (which binds the whole hello), its
/// nonce again, and the accept's fields.
pub fn accept_transcript(hello_proof: &[u8], hello_nonce: &[u8], accept: AcceptFields) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + accept.ticket.len());
    out.extend_from_slice(ACCEPT_LABEL);
    put_lp(&mut out, hello_proof);
    put_lp(&mut out, hello_nonce);
    put_lp(&mut out, accept.source.as_bytes());
    put_lp(&mut out, accept.destination.as_bytes());
    put_lp(&mut out, accept.nonce);
    out.push(u8::from(accept.early_data_accepted));
    out.push(u8::from(accept.confirm_required));
    out.push(accept.role as u8);
    put_lp(&mut out, accept.ticket);
    out.extend_from_slice(&accept.ticket_lifetime_seconds.to_be_bytes());
    put_lp(&mut out, accept.instance);
    out
}

/// The bytes the confirm's proof covers: the accept's proof, which binds both nonces.
pub fn confirm_transcript(accept_proof: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CONFIRM_LABEL.len() + 4 + accept_proof.len());
    out.extend_from_slice(CONFIRM_LABEL);
    put_lp(&mut out, accept_proof);
    out
}

/// The bytes the resumption secret is derived from.
pub fn resume_transcript(hello_proof: &[u8], accept_nonce: &[u8]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(RESUME_LABEL.len() + 8 + hello_proof.len() + accept_nonce.len());
    out.extend_from_slice(RESUME_LABEL);
    put_lp(&mut out, hello_proof);
    put_lp(&mut out, accept_nonce);
    out
}

/// HMAC-SHA256 of `message` keyed by `key`.
pub fn sign(key: &[u8], message: &[u8]) -> [u8; PROOF_LEN] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let tag = hmac::sign(&key, message);
    let mut out = [0; PROOF_LEN];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Whether `proof` is the HMAC-SHA256 of `message` keyed by `key`, compared in constant time.
pub fn verify(key: &[u8], message: &[u8], proof: &[u8]) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::verify(&key, message, proof).is_ok()
}

#[cfg(test)]
mod tests {
    use atbus_proto::handshake::{
        AtbusAuthMode, AtbusHandshakeRole, ConnectionParameters, HandshakeHello,
    };

    use super::*;

    /// The worked example of docs/protocol.md 8.6: fixed inputs, exact outputs.
    pub(crate) fn example_hello() -> HandshakeHello {
        HandshakeHello {
            protocol_version: 1,
            mode: AtbusAuthMode::Token as i32,
            role: AtbusHandshakeRole::Node as i32,
            source: "client-1".into(),
            destination: "relay-1".into(),
            nonce: (0u8..16).collect::<Vec<_>>().into(),
            timestamp_milliseconds: 1_767_225_600_000,
            stream_id: 0,
            parameters: Some(ConnectionParameters {
                kind: 0,
                mtu: 65536,
            }),
            early_data: true,
            ticket: Default::default(),
            padding: Default::default(),
            instance: (0xa0u8..0xa8).collect::<Vec<_>>().into(),
            peer_instance: Default::default(),
            proof: Default::default(),
        }
    }

    /// The accepting side's instance in the worked example.
    fn example_server_instance() -> Vec<u8> {
        (0xb0u8..0xb8).collect()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn hello_transcript_lays_out_every_field_in_order() {
        let transcript = hello_transcript(&example_hello());
        let mut expected = b"atbus-hello/1".to_vec();
        expected.extend_from_slice(&[0, 0, 0, 1, 0, 0]);
        expected.extend_from_slice(&[0, 0, 0, 8]);
        expected.extend_from_slice(b"client-1");
        expected.extend_from_slice(&[0, 0, 0, 7]);
        expected.extend_from_slice(b"relay-1");
        expected.extend_from_slice(&[0, 0, 0, 16]);
        expected.extend(0u8..16);
        expected.extend_from_slice(&1_767_225_600_000i64.to_be_bytes());
        expected.extend_from_slice(&0i64.to_be_bytes());
        expected.push(0);
        expected.extend_from_slice(&65536i64.to_be_bytes());
        expected.push(1);
        expected.extend_from_slice(&[0, 0, 0, 0]);
        expected.extend_from_slice(&[0, 0, 0, 8]);
        expected.extend(0xa0u8..0xa8);
        expected.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(hex(&transcript), hex(&expected));

        // A known peer instance comes last.
        let mut hello = example_hello();
        hello.peer_instance = example_server_instance().into();
        let transcript = hello_transcript(&hello);
        expected.truncate(expected.len() - 4);
        expected.extend_from_slice(&[0, 0, 0, 8]);
        expected.extend(0xb0u8..0xb8);
        assert_eq!(hex(&transcript), hex(&expected));
    }

    #[test]
    fn accept_transcript_lays_out_every_field_in_order() {
        let hello_proof = [0x55; PROOF_LEN];
        let server_nonce: Vec<u8> = (0x10u8..0x20).collect();
        let instance = example_server_instance();
        let accept = AcceptFields {
            source: "relay-1",
            destination: "client-1",
            nonce: &server_nonce,
            early_data_accepted: true,
            confirm_required: false,
            role: AtbusHandshakeRole::Relay as i32,
            ticket: &[7, 7, 7],
            ticket_lifetime_seconds: 86_400,
            instance: &instance,
        };
        let transcript = accept_transcript(&hello_proof, &example_hello().nonce, accept);
        let mut expected = b"atbus-accept/1".to_vec();
        expected.extend_from_slice(&[0, 0, 0, 32]);
        expected.extend_from_slice(&hello_proof);
        expected.extend_from_slice(&[0, 0, 0, 16]);
        expected.extend(0u8..16);
        expected.extend_from_slice(&[0, 0, 0, 7]);
        expected.extend_from_slice(b"relay-1");
        expected.extend_from_slice(&[0, 0, 0, 8]);
        expected.extend_from_slice(b"client-1");
        expected.extend_from_slice(&[0, 0, 0, 16]);
        expected.extend(0x10u8..0x20);
        expected.extend_from_slice(&[1, 0, 1]);
        expected.extend_from_slice(&[0, 0, 0, 3, 7, 7, 7]);
        expected.extend_from_slice(&86_400i64.to_be_bytes());
        expected.extend_from_slice(&[0, 0, 0, 8]);
        expected.extend(0xb0u8..0xb8);
        assert_eq!(hex(&transcript), hex(&expected));
    }

    #[test]
    fn hmac_matches_rfc_4231_test_case_2() {
        let proof = sign(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex(&proof),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(verify(b"Jefe", b"what do ya want for nothing?", &proof));
        assert!(!verify(b"Jefe", b"what do ya want for nothing!", &proof));
        assert!(!verify(b"jefe", b"what do ya want for nothing?", &proof));
    }

    /// A change to one field of a hello.
    type Change = Box<dyn Fn(&mut HandshakeHello)>;

    #[test]
    fn every_field_of_the_hello_changes_the_proof() {
        let token = b"example-token";
        let base = sign(token, &hello_transcript(&example_hello()));
        let variants: Vec<Change> = vec![
            Box::new(|h| h.protocol_version = 2),
            Box::new(|h| h.mode = AtbusAuthMode::Issued as i32),
            Box::new(|h| h.role = AtbusHandshakeRole::Relay as i32),
            Box::new(|h| h.source = "client-2".into()),
            Box::new(|h| h.destination = "relay-2".into()),
            Box::new(|h| h.nonce = vec![1; 16].into()),
            Box::new(|h| h.timestamp_milliseconds += 1),
            Box::new(|h| h.stream_id = 7),
            Box::new(|h| {
                h.parameters = Some(ConnectionParameters {
                    kind: 1,
                    mtu: 65536,
                })
            }),
            Box::new(|h| h.parameters = Some(ConnectionParameters { kind: 0, mtu: 1232 })),
            Box::new(|h| h.early_data = false),
            Box::new(|h| h.ticket = vec![9].into()),
            Box::new(|h| h.instance = vec![0xa0; 8].into()),
            Box::new(|h| h.instance = Default::default()),
            Box::new(|h| h.peer_instance = example_server_instance().into()),
        ];
        for (index, change) in variants.iter().enumerate() {
            let mut hello = example_hello();
            change(&mut hello);
            assert_ne!(
                sign(token, &hello_transcript(&hello)),
                base,
                "change {index} left the proof unchanged"
            );
        }
        // Padding is not covered: it only pads.
        let mut padded = example_hello();
        padded.padding = vec![0; 100].into();
        assert_eq!(sign(token, &hello_transcript(&padded)), base);
    }

    #[test]
    fn worked_example_of_the_protocol_doc_gives_the_documented_bytes() {
        // docs/protocol.md 8.6: the same inputs, and the hex written there.
        let token = b"atbus example token, 32 bytes!!!";
        assert_eq!(token.len(), 32);
        let hello = example_hello();
        let hello_bytes = hello_transcript(&hello);
        assert_eq!(
            hex(&hello_bytes),
            "61746275732d68656c6c6f2f3100000001000000000008636c69656e742d310000000772656c61792d31\
             00000010000102030405060708090a0b0c0d0e0f0000019b76daa8000000000000000000000000000000\
             010000010000000000000008a0a1a2a3a4a5a6a700000000"
        );
        let hello_proof = sign(token, &hello_bytes);
        assert_eq!(
            hex(&hello_proof),
            "1959ca7c4f4f68dc1e3c409306eb2ea3b138a3ebd45bc14f0d65f5b079d1f6ce"
        );
        let server_nonce: Vec<u8> = (0x10u8..0x20).collect();
        let server_instance = example_server_instance();
        let accept = AcceptFields {
            source: "relay-1",
            destination: "client-1",
            nonce: &server_nonce,
            early_data_accepted: true,
            confirm_required: false,
            role: AtbusHandshakeRole::Node as i32,
            ticket: &[],
            ticket_lifetime_seconds: 0,
            instance: &server_instance,
        };
        let accept_bytes = accept_transcript(&hello_proof, &hello.nonce, accept);
        assert_eq!(
            hex(&accept_bytes),
            "61746275732d6163636570742f31000000201959ca7c4f4f68dc1e3c409306eb2ea3b138a3ebd45bc14f\
             0d65f5b079d1f6ce00000010000102030405060708090a0b0c0d0e0f0000000772656c61792d31000000\
             08636c69656e742d3100000010101112131415161718191a1b1c1d1e1f01000000000000000000000000\
             000000000008b0b1b2b3b4b5b6b7"
        );
        let accept_proof = sign(token, &accept_bytes);
        assert_eq!(
            hex(&accept_proof),
            "70cd13e639027309aaaed9fa453d1d85145a4637e4cda27eb1356eeb0a1912b2"
        );
        // Had a confirm been required, the accept would differ in two flags, and the confirm
        // would cover that accept's proof.
        let confirming = AcceptFields {
            early_data_accepted: false,
            confirm_required: true,
            ..accept
        };
        let confirming_bytes = accept_transcript(&hello_proof, &hello.nonce, confirming);
        assert_eq!(
            hex(&confirming_bytes),
            "61746275732d6163636570742f31000000201959ca7c4f4f68dc1e3c409306eb2ea3b138a3ebd45bc14f\
             0d65f5b079d1f6ce00000010000102030405060708090a0b0c0d0e0f0000000772656c61792d31000000\
             08636c69656e742d3100000010101112131415161718191a1b1c1d1e1f00010000000000000000000000\
             000000000008b0b1b2b3b4b5b6b7"
        );
        let confirming_proof = sign(token, &confirming_bytes);
        assert_eq!(
            hex(&confirming_proof),
            "ee09ba252ca61bba64b4af6531b7ee68c5d264afb79f9cf03d10a222eb0d0e9e"
        );
        let confirm_bytes = confirm_transcript(&confirming_proof);
        assert_eq!(
            hex(&confirm_bytes),
            "61746275732d636f6e6669726d2f3100000020ee09ba252ca61bba64b4af6531b7ee68c5d264afb79f9c\
             f03d10a222eb0d0e9e"
        );
        assert_eq!(
            hex(&sign(token, &confirm_bytes)),
            "1316fe8c2bd70bf7d7f2ee99150669bb5d33342405379d85036e89e25d156c01"
        );
        let resume_bytes = resume_transcript(&hello_proof, &server_nonce);
        assert_eq!(
            hex(&resume_bytes),
            "61746275732d726573756d652f31000000201959ca7c4f4f68dc1e3c409306eb2ea3b138a3ebd45bc14f\
             0d65f5b079d1f6ce00000010101112131415161718191a1b1c1d1e1f"
        );
        assert_eq!(
            hex(&sign(token, &resume_bytes)),
            "b8a829d2ad6f7fa4feb7ea9a5587c0c7c28240306403783301288a7854a33a20"
        );
        assert!(verify(token, &accept_bytes, &accept_proof));
        // The accept's instance is covered: another one (or none) does not verify.
        for instance in [&[0xb0; 8][..], &[][..]] {
            let other = AcceptFields { instance, ..accept };
            let other_bytes = accept_transcript(&hello_proof, &hello.nonce, other);
            assert!(!verify(token, &other_bytes, &accept_proof));
        }
    }
}
