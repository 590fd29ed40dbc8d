//! Amplification accounting: how strictly it is checked (`HANDSHAKE_AMPLIFICATION`), and the
//! check of every transmit of the server on a connection whose handshake has not completed, so
//! that a spoofed source never makes the server send more than it received.

use std::sync::OnceLock;

use atbus_core::engine::{ConnectionId, ConnectionKind};
use atbus_proto::handshake::HandshakeAccept;

use crate::world::ServerConn;

/// How strictly amplification is checked, from `HANDSHAKE_AMPLIFICATION`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Amplification {
    /// Unset or `transmit`: every transmit before `Authenticated` is no larger than all the bytes
    /// the connection received, and a datagram transmit no larger than the MTU (or the largest
    /// datagram received).
    Transmit,
    /// `handshake`: the same, but the frames that follow an accept completing the handshake in
    /// its transmit (the first ping, acknowledgements of early data) are not counted.
    Handshake,
    /// `cumulative`: as `transmit`, and all the bytes sent before `Authenticated` are no more
    /// than all received.
    Cumulative,
    /// `off`: not checked, to fuzz the other properties past a known amplification.
    Off,
}

pub(crate) fn amplification() -> Amplification {
    static MODE: OnceLock<Amplification> = OnceLock::new();
    *MODE.get_or_init(
        || match std::env::var("HANDSHAKE_AMPLIFICATION").as_deref() {
            Ok("handshake") => Amplification::Handshake,
            Ok("cumulative") => Amplification::Cumulative,
            Ok("off") => Amplification::Off,
            _ => Amplification::Transmit,
        },
    )
}

/// Counts a transmit of `len` bytes on `connection` (`handshake_bytes` of them in handshake
/// frames, `accepted` the accept it holds, if any) and checks that it amplifies nothing: no more
/// than the connection received before `Authenticated`, and no datagram over the MTU or the
/// largest datagram received.
pub(crate) fn check(
    conn: &mut ServerConn,
    connection: ConnectionId,
    len: usize,
    handshake_bytes: usize,
    accepted: Option<&HandshakeAccept>,
) {
    let mode = amplification();
    if conn.authenticated.is_none() && mode != Amplification::Off {
        let established_here = accepted.is_some_and(|accept| !accept.confirm_required);
        let counted = if established_here && mode == Amplification::Handshake {
            handshake_bytes
        } else {
            len
        };
        conn.sent += counted;
        assert!(
            counted <= conn.fed,
            "amplification: a transmit of {counted} bytes on {connection} ({:?}, MTU {}) \
             before its handshake completed, which received only {} bytes",
            conn.params.kind,
            conn.params.mtu,
            conn.fed
        );
        assert!(
            mode != Amplification::Cumulative || conn.sent <= conn.fed,
            "amplification: {} bytes sent on {connection} ({:?}, MTU {}) before its \
             handshake completed, which received only {} bytes",
            conn.sent,
            conn.params.kind,
            conn.params.mtu,
            conn.fed
        );
    }
    if conn.params.kind == ConnectionKind::Datagram && mode != Amplification::Off {
        assert!(
            len <= conn.params.mtu.max(conn.largest_datagram),
            "a datagram of {} bytes on {connection}, over its MTU {} and the largest \
             datagram received ({} bytes)",
            len,
            conn.params.mtu,
            conn.largest_datagram
        );
    }
}
