//! The state the engine keeps for one connection: its peer, RTT, liveness and keep-alive, the
//! pongs it owes, and the read buffer of a stream transport.

use std::time::Instant;

use atbus_proto::protocol::{CloseReasonData, PingData};
use bytes::BytesMut;

use super::config::ConnectionParams;
use super::rtt::RttEstimator;

/// Pongs owed beyond this are not queued: a peer pinging faster than we answer gets fewer.
const MAX_PONGS_OWED: usize = 4;

/// One connection to a peer.
#[derive(Debug)]
pub(crate) struct Connection {
    /// The peer at the other end.
    pub peer: String,
    /// Datagram or stream, and its MTU.
    pub params: ConnectionParams,
    /// Round-trip time on this connection.
    pub rtt: RttEstimator,
    /// Bytes of a stream transport not yet making a whole frame.
    pub read_buffer: BytesMut,
    /// When a valid frame last arrived.
    pub last_received: Instant,
    /// When the last ping went out.
    pub last_ping: Option<Instant>,
    /// The sequence of the ping awaiting its pong.
    pub ping_sequence: i64,
    /// Pings to answer.
    pub pongs_owed: Vec<PingData>,
    /// The timepoint and arrival time of the latest packet, to echo in the next acknowledgement.
    pub latest_packet: Option<(i64, Instant)>,
    /// The application closes the connection: one FINISH_CONNECTION goes out, then it is gone.
    pub closing: Option<CloseReasonData>,
}

impl Connection {
    /// A connection that has just come up.
    pub fn new(peer: String, params: ConnectionParams, rtt: RttEstimator, now: Instant) -> Self {
        Self {
            peer,
            params,
            rtt,
            read_buffer: BytesMut::new(),
            last_received: now,
            last_ping: None,
            ping_sequence: 0,
            pongs_owed: Vec::new(),
            latest_packet: None,
            closing: None,
        }
    }

    /// Notes a ping to answer.
    pub fn owe_pong(&mut self, ping: PingData) {
        if self.pongs_owed.len() < MAX_PONGS_OWED {
            self.pongs_owed.push(ping);
        }
    }
}
