//! The keys and proofs: the shared tokens, and HMAC-SHA256 over the transcripts of
//! docs/protocol.md 8.4 (hello, confirm, resumption), so that the harness can sign hellos and
//! confirms of its own and derive the secrets of the tickets the server hands out.

use atbus_core::engine::Token;
use atbus_proto::handshake::HandshakeHello;
use bytes::Bytes;

use crate::TOKENS;

pub(crate) fn token(index: usize) -> Token {
    Token::new(TOKENS[index]).expect("tokens are long enough")
}

// The proofs, as docs/protocol.md 8.4 lays out their transcripts (written again here, so that
// the harness can sign hellos and confirms of its own).

pub(crate) fn sign(key: &[u8], message: &[u8]) -> Bytes {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    Bytes::copy_from_slice(ring::hmac::sign(&key, message).as_ref())
}

pub(crate) fn put_lp(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

pub(crate) fn hello_transcript(hello: &HandshakeHello) -> Vec<u8> {
    let mut out = b"atbus-hello/1".to_vec();
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

pub(crate) fn confirm_transcript(accept_proof: &[u8]) -> Vec<u8> {
    let mut out = b"atbus-confirm/1".to_vec();
    put_lp(&mut out, accept_proof);
    out
}

pub(crate) fn resume_transcript(hello_proof: &[u8], accept_nonce: &[u8]) -> Vec<u8> {
    let mut out = b"atbus-resume/1".to_vec();
    put_lp(&mut out, hello_proof);
    put_lp(&mut out, accept_nonce);
    out
}
