//! The state the engine keeps for one connection: its peer and how it was authenticated, where
//! its handshake stands, RTT, liveness and keep-alive, the pongs it owes, and the read buffer of a
//! stream transport.

use std::time::Instant;

use atbus_proto::protocol::{CloseReasonData, PingData};
use bytes::{Bytes, BytesMut};

use super::auth::{AuthFailure, Credential, PeerIdentity};
use super::config::{ConnectionKind, ConnectionParams};
use super::congestion::Congestion;
use super::rtt::RttEstimator;

/// Where a connection's handshake stands.
#[derive(Debug)]
pub(crate) enum Phase {
    /// Authenticated: frames flow.
    Established,
    /// Accepting side: waiting for the hello.
    AwaitingHello,
    /// Accepting side: the hello checked but its nonce could not be remembered, so the
    /// connecting side must confirm with a proof over our nonce first.
    AwaitingConfirm {
        /// The key of the proofs.
        key: Vec<u8>,
        /// The proof of the accept we sent, which the confirm's proof covers.
        accept_proof: Vec<u8>,
    },
    /// Connecting side: the hello is out, the accept awaited.
    Connecting(Box<ClientHandshake>),
}

/// The connecting side's handshake in progress.
#[derive(Debug)]
pub(crate) struct ClientHandshake {
    /// The hello frame, as sent (resent as is on datagram connections).
    pub hello_frame: Bytes,
    /// The hello's proof and nonce, which the accept's proof covers.
    pub hello_proof: Vec<u8>,
    /// The hello's nonce.
    pub nonce: Vec<u8>,
    /// The key of the proofs: a token or a ticket's secret; `None` when anonymous.
    pub key: Option<Vec<u8>>,
    /// The credential, to store a ticket under.
    pub credential: Credential,
    /// Whether the hello carried a ticket.
    pub resumed: bool,
    /// The node we mean to reach, if known.
    pub expected_peer: Option<String>,
    /// Whether data follows the hello before the accept.
    pub early_data: bool,
    /// When the hello first went out; `None` until it did.
    pub sent_at: Option<Instant>,
    /// Whether the hello was sent more than once (its round trip is then no RTT sample).
    pub resent: bool,
    /// When to send the hello again (datagram connections).
    pub resend_at: Option<Instant>,
    /// Resends so far.
    pub attempts: u32,
}

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
    /// The congestion window of a datagram connection; `None` on stream transports, which
    /// have their own.
    pub congestion: Option<Congestion>,
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
    /// Where the handshake stands.
    pub phase: Phase,
    /// Who the peer authenticated as; `None` until it has.
    pub identity: Option<PeerIdentity>,
    /// Handshake frames to send before anything else.
    pub outbox: Vec<Bytes>,
    /// The runtime's queue for the connection is full (its socket does not drain): nothing is
    /// handed out for it until that clears.
    pub transport_blocked: bool,
    /// When the handshake must be complete.
    pub handshake_deadline: Option<Instant>,
    /// Bytes received before authentication: no answer to them may be larger.
    pub unauthenticated_received: usize,
    /// Whether the unauthenticated input decoded as a handshake (only then is a refusal sent).
    pub answerable: bool,
    /// The rule the peer broke, when the connection is being refused.
    pub failure: Option<AuthFailure>,
    /// Accepting side: the hello's nonce and the accept sent for it, to answer a resent hello.
    pub accepted_hello: Option<(Bytes, Bytes)>,
    /// Accepting side: the instance the hello proved, noted once the connection is established.
    pub peer_instance: Bytes,
    /// Bytes received on the connection.
    pub received_total: usize,
    /// Whether the peer proved it receives at its address; until then (accepted datagram
    /// connections) what is sent is bounded by what was received.
    pub validated: bool,
    /// Bytes sent while not validated.
    pub unvalidated_sent: usize,
    /// The handshake proved the address: the connection is validated as soon as the transmit
    /// holding the accept is out (that transmit still keeps to the budget).
    pub validate_after_accept: bool,
    /// Accepting side: times the accept was sent again while the confirm was awaited.
    pub accept_resends: u32,
    /// Connecting side: the confirm, sent with every transmit until the accepting side shows it
    /// has it (any frame but a handshake).
    pub confirm_frame: Option<Bytes>,
}

impl Connection {
    /// A connection that has just come up.
    pub fn new(peer: String, params: ConnectionParams, rtt: RttEstimator, now: Instant) -> Self {
        Self {
            peer,
            params,
            rtt,
            congestion: (params.kind == ConnectionKind::Datagram)
                .then(|| Congestion::new(params.mtu, now)),
            read_buffer: BytesMut::new(),
            last_received: now,
            last_ping: None,
            ping_sequence: 0,
            pongs_owed: Vec::new(),
            latest_packet: None,
            closing: None,
            phase: Phase::Established,
            identity: None,
            outbox: Vec::new(),
            transport_blocked: false,
            handshake_deadline: None,
            unauthenticated_received: 0,
            answerable: false,
            failure: None,
            accepted_hello: None,
            peer_instance: Bytes::new(),
            received_total: 0,
            validated: true,
            unvalidated_sent: 0,
            validate_after_accept: false,
            accept_resends: 0,
            confirm_frame: None,
        }
    }

    /// Whether the connection is authenticated.
    pub fn is_established(&self) -> bool {
        matches!(self.phase, Phase::Established)
    }

    /// Notes a ping to answer.
    pub fn owe_pong(&mut self, ping: PingData) {
        if self.pongs_owed.len() < MAX_PONGS_OWED {
            self.pongs_owed.push(ping);
        }
    }
}
