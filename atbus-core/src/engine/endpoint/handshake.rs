//! The handshake inside the endpoint (`docs/protocol.md` section 8): opening a connection with a
//! hello, checking a hello and answering it, checking the answer, refusing a peer that broke a
//! rule, and the identities issued to clients.
//!
//! A handshake message is the one fragment (type HANDSHAKE) of a packet on stream -2 with flag
//! TLS_HANDSHAKE. The accepting side answers a hello only once its proof checks, never with more
//! bytes than it received, and keeps nothing of a refused connection.
//!
//! This file holds what both sides share (dispatch of handshake frames, refusals, timers, the
//! framing); the connecting side is in `handshake/connect.rs`, the accepting side in
//! `handshake/accept.rs`, and the rules that hold after the handshake in `handshake/authorize.rs`.

mod accept;
mod authorize;
mod claim;
mod connect;

use std::time::{Duration, Instant};

use atbus_proto::handshake::handshake_message::Body as HandshakeBody;
use atbus_proto::handshake::{HandshakeAccept, HandshakeMessage};
use atbus_proto::protocol::frame_message::Body;
use atbus_proto::protocol::packet_content::FragmentType;
use atbus_proto::protocol::{
    AtbusCloseReason, AtbusPacketFlagType, AtbusPacketType, CloseReasonData, FrameMessage,
    MessageHead, PacketContent, PacketData,
};
use bytes::{Bytes, BytesMut};
use prost::Message;

use super::Endpoint;
use crate::engine::auth::proof::{self, AcceptFields};
use crate::engine::auth::ticket::TicketOrigin;
use crate::engine::auth::{AuthFailure, IdentityKind, PeerIdentity};
use crate::engine::config::ConnectionKind;
use crate::engine::connection::{Connection, Phase};
use crate::engine::stream_id::StreamId;
use crate::engine::transmit::ConnectionId;
use crate::engine::wire::encode_content;

/// Bytes of a nonce.
const NONCE_LEN: usize = 16;
/// A hello is padded to this size (or the MTU) so that the answer never outgrows it.
const HELLO_PAD_TO: usize = 384;
/// On a datagram connection the hello is sent again after the RTO, doubling each time up to this
/// interval, until the accept comes or the handshake times out.
const MAX_HELLO_INTERVAL: Duration = Duration::from_secs(1);
/// The accept is sent again at most this many times while the confirm is awaited.
const MAX_ACCEPT_RESENDS: u32 = 8;
/// Prefix of the names given to anonymous peers.
pub(super) const ANONYMOUS_PREFIX: &str = "anon-";

/// What a checked hello authenticated.
struct Checked {
    name: String,
    kind: IdentityKind,
    relay: bool,
    key: Option<Vec<u8>>,
    resumed: bool,
    origin: Option<TicketOrigin>,
}

impl Endpoint {
    /// Who the peer of `connection` authenticated as, once it has.
    pub fn peer_identity(&self, connection: ConnectionId) -> Option<&PeerIdentity> {
        self.connections
            .get(&connection)
            .filter(|state| state.is_established())
            .and_then(|state| state.identity.as_ref())
    }

    /// Sets the Unix time this endpoint checks hello timestamps with: at `now` it is `unix` since
    /// the Unix epoch. An endpoint starts with the system clock; tests and simulations set it.
    pub fn set_unix_time(&mut self, now: Instant, unix: Duration) {
        self.auth.set_unix_time(now, unix);
    }

    /// Connections whose handshake is not complete.
    pub fn pending_handshakes(&self) -> usize {
        self.connections
            .values()
            .filter(|state| !state.is_established())
            .count()
    }

    /// Connections of any kind.
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// Nonces remembered against replays.
    pub fn replay_cache_len(&self) -> usize {
        self.auth.replay.len()
    }

    /// Refuses `connection`: logs the rule, counts it, and closes the connection with
    /// UNAUTHORIZED (the close frame goes out on the next transmit, then the connection is
    /// forgotten).
    pub(super) fn refuse(&mut self, connection: ConnectionId, failure: AuthFailure) {
        let Some(state) = self.connections.get_mut(&connection) else {
            return;
        };
        if state.closing.is_some() {
            return;
        }
        tracing::warn!(
            connection = connection.0,
            peer = %state.peer,
            rule = failure.as_str(),
            "connection refused: {}",
            failure.rule()
        );
        *self.stats.auth_failures.entry(failure).or_default() += 1;
        if !state.is_established() {
            state.failure = Some(failure);
        }
        state.outbox.clear();
        state.closing = Some(CloseReasonData {
            code: AtbusCloseReason::Unauthorized as i32,
            message: format!("unauthorized: {}", failure.as_str()),
        });
        self.wake.insert(connection);
    }

    /// A handshake frame on `connection`, or any frame on a connection still in its handshake.
    pub(super) fn handle_handshake_frame(
        &mut self,
        now: Instant,
        connection: ConnectionId,
        frame: FrameMessage,
        wire_len: usize,
    ) {
        let Some(state) = self.connections.get(&connection) else {
            return;
        };
        let handshake = handshake_of(&frame);
        match (&state.phase, handshake) {
            (Phase::AwaitingHello, Some(Ok(HandshakeBody::Hello(hello)))) => {
                let head = frame.head.unwrap_or_default();
                if let Some(state) = self.connections.get_mut(&connection) {
                    state.answerable = true;
                }
                if wire_len > self.config.auth.max_handshake_size {
                    self.refuse(connection, AuthFailure::Oversized);
                    return;
                }
                if let Err(failure) = self.on_hello(now, connection, head, hello, wire_len) {
                    self.refuse(connection, failure);
                }
            }
            (Phase::AwaitingHello, Some(Err(_) | Ok(_))) => {
                self.refuse(connection, AuthFailure::Malformed);
            }
            (Phase::AwaitingHello, None) => match state.params.kind {
                // A datagram may overtake the one holding the hello: drop it, it comes again.
                ConnectionKind::Datagram => self.stats.early_data_dropped += 1,
                ConnectionKind::Stream => self.refuse(connection, AuthFailure::ExpectedHandshake),
            },
            (
                Phase::AwaitingConfirm { key, accept_proof },
                Some(Ok(HandshakeBody::Confirm(confirm))),
            ) => {
                let transcript = proof::confirm_transcript(accept_proof);
                if !proof::verify(key, &transcript, &confirm.proof) {
                    self.refuse(connection, AuthFailure::BadProof);
                    return;
                }
                self.establish_accepted(connection, false);
            }
            (Phase::AwaitingConfirm { .. }, Some(Ok(HandshakeBody::Hello(hello)))) => {
                self.answer_resent_hello(connection, &hello);
            }
            (Phase::AwaitingConfirm { .. }, Some(_)) => {
                self.refuse(connection, AuthFailure::Malformed)
            }
            // Early data of a hello whose nonce could not be remembered: not delivered. On a
            // datagram connection the confirm may have been lost: the accept goes again (a few
            // times at most, and never larger than the hello), and the peer answers it with the
            // confirm.
            (Phase::AwaitingConfirm { .. }, None) => {
                self.stats.early_data_dropped += 1;
                if let Some(state) = self.connections.get_mut(&connection) {
                    if state.params.kind == ConnectionKind::Datagram
                        && state.accept_resends < MAX_ACCEPT_RESENDS
                    {
                        if let Some((_, accept)) = &state.accepted_hello {
                            let accept = accept.clone();
                            state.outbox.push(accept);
                            state.accept_resends += 1;
                        }
                    }
                }
            }
            (Phase::Connecting(_), Some(Ok(HandshakeBody::Accept(accept)))) => {
                let head = frame.head.unwrap_or_default();
                if let Err(failure) = self.on_accept(now, connection, head, accept) {
                    self.refuse(connection, failure);
                }
            }
            (Phase::Connecting(_), None) => {
                if let Some(reason) = refusal_of(&frame) {
                    self.on_refused(now, connection, reason);
                }
                // Anything else may have overtaken the accept: it comes again.
            }
            (Phase::Connecting(_), Some(_)) => self.refuse(connection, AuthFailure::Malformed),
            (Phase::Established, Some(Ok(HandshakeBody::Hello(hello)))) => {
                self.answer_resent_hello(connection, &hello);
            }
            // The accept again: our confirm was lost.
            (Phase::Established, Some(Ok(HandshakeBody::Accept(_)))) => {
                if let Some(state) = self.connections.get_mut(&connection) {
                    if let Some(confirm) = state.confirm_frame.clone() {
                        state.outbox.push(confirm);
                    }
                }
            }
            // A stray handshake message: nothing to do.
            (Phase::Established, _) => {}
        }
    }

    /// Handshake timers of connection `id` at `now`: the hello resent on a datagram connection,
    /// the connection refused when its handshake took too long.
    pub(super) fn handshake_timeout(&mut self, now: Instant, id: ConnectionId) {
        let Some(state) = self.connections.get_mut(&id) else {
            return;
        };
        if state.handshake_deadline.is_some_and(|at| at <= now) && state.closing.is_none() {
            self.refuse(id, AuthFailure::Timeout);
            return;
        }
        let rto = state.rtt.rto();
        if let Phase::Connecting(handshake) = &mut state.phase {
            if handshake.resend_at.is_some_and(|at| at <= now) {
                handshake.attempts += 1;
                handshake.resent = true;
                let interval = rto * 2u32.pow(handshake.attempts.min(16));
                handshake.resend_at = Some(now + interval.min(MAX_HELLO_INTERVAL));
                state.outbox.push(handshake.hello_frame.clone());
                self.wake.insert(id);
            }
        }
    }

    /// The earliest handshake timer of `state`.
    pub(super) fn handshake_timer(state: &Connection) -> Option<Instant> {
        let resend = match &state.phase {
            Phase::Connecting(handshake) => handshake.resend_at,
            _ => None,
        };
        let deadline = state.handshake_deadline.filter(|_| state.closing.is_none());
        deadline.into_iter().chain(resend).min()
    }

    /// A handshake frame: `message` as the one HANDSHAKE fragment of a packet on stream -2,
    /// padded (hello only) to at least `pad_to` bytes.
    fn handshake_frame(
        &self,
        source: &str,
        destination: &str,
        mut message: HandshakeBody,
        pad_to: usize,
    ) -> Bytes {
        let mut padding = 0;
        loop {
            if let HandshakeBody::Hello(hello) = &mut message {
                hello.padding = vec![0; padding].into();
            }
            let data = HandshakeMessage {
                body: Some(message.clone()),
            }
            .encode_to_vec();
            let fragment = FragmentType {
                packet_type: AtbusPacketType::Handshake as i32,
                data: data.into(),
                ..Default::default()
            };
            let frame = FrameMessage {
                head: Some(MessageHead {
                    source: source.to_string(),
                    destination: destination.to_string(),
                    ..Default::default()
                }),
                body: Some(Body::Packet(PacketData {
                    stream_id: StreamId::HANDSHAKE.get(),
                    content: encode_content(vec![fragment]),
                    flags: AtbusPacketFlagType::TlsHandshake as i32,
                    ..Default::default()
                })),
            };
            let len = self.codec.encoded_len(&frame);
            let is_hello = matches!(message, HandshakeBody::Hello(_));
            if is_hello && len < pad_to && padding < pad_to {
                padding += pad_to - len;
                continue;
            }
            let mut out = BytesMut::with_capacity(len);
            // Encoding into a buffer of the right size only fails over the frame limit, which
            // `connect` and `on_hello` check against the MTU and the hello.
            let _ = self.codec.encode(&frame, &mut out);
            return out.freeze();
        }
    }
}

/// The fields of an accept its proof covers.
pub(super) fn accept_fields(accept: &HandshakeAccept) -> AcceptFields<'_> {
    AcceptFields {
        source: &accept.source,
        destination: &accept.destination,
        nonce: &accept.nonce,
        early_data_accepted: accept.early_data_accepted,
        confirm_required: accept.confirm_required,
        role: accept.role,
        ticket: &accept.ticket,
        ticket_lifetime_seconds: accept.ticket_lifetime_seconds,
        instance: &accept.instance,
    }
}

/// The handshake message a frame carries: `None` if it is not a handshake packet, an error if it
/// is one that does not decode.
fn handshake_of(frame: &FrameMessage) -> Option<Result<HandshakeBody, ()>> {
    let Some(Body::Packet(packet)) = &frame.body else {
        return None;
    };
    if packet.stream_id != StreamId::HANDSHAKE.get() {
        return None;
    }
    let decoded = (|| {
        let content = PacketContent::decode(packet.content.clone()).map_err(|_| ())?;
        let [fragment] = content.fragment.as_slice() else {
            return Err(());
        };
        if fragment.packet_type != AtbusPacketType::Handshake as i32 {
            return Err(());
        }
        HandshakeMessage::decode(fragment.data.clone())
            .ok()
            .and_then(|message| message.body)
            .ok_or(())
    })();
    Some(decoded)
}

/// The close reason of a FINISH_CONNECTION frame.
fn refusal_of(frame: &FrameMessage) -> Option<CloseReasonData> {
    let Some(Body::Packet(packet)) = &frame.body else {
        return None;
    };
    if packet.flags & AtbusPacketFlagType::FinishConnection as i32 == 0 {
        return None;
    }
    let content = PacketContent::decode(packet.content.clone()).ok()?;
    content
        .fragment
        .into_iter()
        .find_map(|fragment| fragment.close_reason)
}
