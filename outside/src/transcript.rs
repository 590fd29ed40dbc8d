//! Section 8.4 by hand: labels, 4-byte big-endian lengths, fixed-width big-endian integers,
//! signed with HMAC-SHA256.

use atbus_proto::handshake::{HandshakeAccept, HandshakeHello};
use ring::hmac;

/// Appends `bytes` with its 4-byte big-endian length.
pub fn lp(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("a transcript field under 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// HMAC-SHA256 of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), message)
        .as_ref()
        .to_vec()
}

/// The hello's transcript: what its proof signs.
pub fn hello_transcript(hello: &HandshakeHello) -> Vec<u8> {
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
    lp(&mut out, &hello.instance);
    lp(&mut out, &hello.peer_instance);
    out
}

/// The accept's transcript, bound to the hello it answers.
pub fn accept_transcript(
    hello_proof: &[u8],
    hello_nonce: &[u8],
    accept: &HandshakeAccept,
) -> Vec<u8> {
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
    lp(&mut out, &accept.instance);
    out
}

/// The confirm's transcript, bound to the accept it answers.
pub fn confirm_transcript(accept_proof: &[u8]) -> Vec<u8> {
    let mut out = b"atbus-confirm/1".to_vec();
    lp(&mut out, accept_proof);
    out
}

/// The transcript of the resumption secret a ticket carries.
pub fn resume_transcript(hello_proof: &[u8], accept_nonce: &[u8]) -> Vec<u8> {
    let mut out = b"atbus-resume/1".to_vec();
    lp(&mut out, hello_proof);
    lp(&mut out, accept_nonce);
    out
}
