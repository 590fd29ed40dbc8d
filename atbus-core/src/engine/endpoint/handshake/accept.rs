//! The accepting side of the handshake: the rules a hello must pass, the accept and its proof, the
//! ticket handed out, the confirm fallback when the replay cache is full, and anonymous names.

use std::time::Instant;

use atbus_proto::handshake::handshake_message::Body as HandshakeBody;
use atbus_proto::handshake::{AtbusAuthMode, AtbusHandshakeRole, HandshakeAccept, HandshakeHello};
use atbus_proto::protocol::frame_message::Body;
use atbus_proto::protocol::{FrameMessage, MessageHead, PingData};
use bytes::{Bytes, BytesMut};

use crate::engine::auth::proof::{self};
use crate::engine::auth::replay::Remembered;
use crate::engine::auth::ticket::{Ticket, TicketOrigin};
use crate::engine::auth::{AuthFailure, IdentityKind, PeerIdentity, valid_name};
use crate::engine::config::{ConnectionKind, ConnectionParams};
use crate::engine::connection::{Connection, Phase};
use crate::engine::endpoint::Endpoint;
use crate::engine::endpoint::restart::instance_tag;
use crate::engine::error::ConnectionError;
use crate::engine::event::Event;
use crate::engine::rtt::RttEstimator;
use crate::engine::transmit::ConnectionId;

use super::{ANONYMOUS_PREFIX, Checked, NONCE_LEN, accept_fields};

impl Endpoint {
    /// Takes `id` as the accepting side: its first frame must be a hello that passes the rules of
    /// [`AuthConfig`](crate::engine::AuthConfig). A refused connection ends with
    /// [`Event::HandshakeFailed`]; an accepted one with [`Event::Authenticated`].
    ///
    /// Returns the id the endpoint gave the connection.
    pub fn accept(
        &mut self,
        now: Instant,
        params: ConnectionParams,
    ) -> Result<ConnectionId, ConnectionError> {
        self.check_new_connection(params)?;
        self.tick(now);
        let rtt = RttEstimator::new(self.config.initial_rtt);
        let mut connection = Connection::new(String::new(), params, rtt, now);
        connection.phase = Phase::AwaitingHello;
        // Until the peer answers our accept, nothing we send it may outgrow what it sent: on a
        // datagram connection its source may be spoofed, and on any connection an unproven
        // peer must not draw more than it gives.
        connection.validated = false;
        connection.handshake_deadline = Some(now + self.config.auth.handshake_timeout);
        let id = self.insert_connection(connection);
        self.wake.insert(id);
        Ok(id)
    }

    /// The accepting side's answer to a hello sent again (its accept was lost): the same accept.
    pub(super) fn answer_resent_hello(&mut self, connection: ConnectionId, hello: &HandshakeHello) {
        let Some(state) = self.connections.get_mut(&connection) else {
            return;
        };
        if let Some((nonce, accept)) = &state.accepted_hello {
            if *nonce == hello.nonce {
                let accept = accept.clone();
                state.outbox.push(accept);
            }
        }
    }

    /// Checks a hello and answers it.
    pub(super) fn on_hello(
        &mut self,
        now: Instant,
        connection: ConnectionId,
        head: MessageHead,
        hello: HandshakeHello,
        wire_len: usize,
    ) -> Result<(), AuthFailure> {
        let checked = self.check_hello(now, &head, &hello)?;
        let now_ms = self.auth.unix_ms(now);
        let window_ms = i64::try_from(self.config.auth.timestamp_window.as_millis()).unwrap_or(0);
        // An anonymous hello proves nothing, so there is nothing a replay could steal.
        let remembered = match checked.kind {
            IdentityKind::Anonymous => Remembered::Fresh,
            _ => self.auth.replay.remember(
                &hello.nonce,
                now_ms,
                hello.timestamp_milliseconds.saturating_add(window_ms),
            ),
        };
        let confirm_required = match remembered {
            Remembered::Replayed => return Err(AuthFailure::Replay),
            Remembered::Full => true,
            Remembered::Fresh => false,
        };
        // The hello numbers its early data for an instance of ours that is gone: nothing after
        // it is taken until the confirm, sent once the peer has started its streams over.
        let confirm_required = confirm_required
            || (!hello.peer_instance.is_empty()
                && instance_tag(&hello.peer_instance) != instance_tag(&self.auth.instance));
        // The last rule (8.3, rule 12): a second live node may not take a name (a restart may).
        if self.name_held_by_live_instance(now, &checked.name, &hello.instance) {
            tracing::warn!(
                connection = connection.0,
                peer = %checked.name,
                "a second node claims a name held by a live instance: the newcomer is refused"
            );
            return Err(AuthFailure::NameTaken);
        }
        let early_data_accepted = hello.early_data && !confirm_required;
        let nonce: [u8; NONCE_LEN] = self.auth.random();
        // The accept says what this node is: a relay's peers take forwarded frames from it.
        let role = if self.config.auth.relay {
            AtbusHandshakeRole::Relay
        } else {
            AtbusHandshakeRole::Node
        } as i32;
        let mut accept = HandshakeAccept {
            source: self.name.clone(),
            destination: checked.name.clone(),
            nonce: Bytes::copy_from_slice(&nonce),
            early_data_accepted,
            confirm_required,
            ticket: Bytes::new(),
            ticket_lifetime_seconds: 0,
            role,
            instance: Bytes::copy_from_slice(&self.auth.instance),
            proof: Bytes::new(),
        };
        if let (Some(key), Some(lifetime), Some(origin)) = (
            &checked.key,
            self.config.auth.ticket_lifetime,
            checked.origin,
        ) {
            let secret = proof::sign(key, &proof::resume_transcript(&hello.proof, &nonce));
            let lifetime_ms = i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX);
            let ticket = Ticket {
                name: checked.name.clone(),
                origin,
                relay: checked.relay,
                expires_ms: now_ms.saturating_add(lifetime_ms),
                secret,
            };
            let ticket_nonce: [u8; 12] = self.auth.random();
            accept.ticket = self.auth.ticket_key.seal(&ticket, ticket_nonce).into();
            accept.ticket_lifetime_seconds = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX);
        }
        let mut frame = self.signed_accept(&checked, &hello, &mut accept);
        if frame.len() > wire_len && !accept.ticket.is_empty() {
            // No amplification: rather no ticket than an answer larger than the hello.
            accept.ticket = Bytes::new();
            accept.ticket_lifetime_seconds = 0;
            frame = self.signed_accept(&checked, &hello, &mut accept);
        }
        if frame.len() > wire_len {
            return Err(AuthFailure::Malformed);
        }
        let accept_proof = accept.proof.to_vec();
        let Some(state) = self.connections.get_mut(&connection) else {
            return Ok(());
        };
        state.peer = checked.name.clone();
        state.identity = Some(PeerIdentity {
            name: checked.name.clone(),
            kind: checked.kind,
            relay: checked.relay,
            resumed: checked.resumed,
        });
        state.accepted_hello = Some((hello.nonce.clone(), frame.clone()));
        state.peer_instance = hello.instance.clone();
        state.outbox.push(frame);
        match (confirm_required, checked.key) {
            (true, Some(key)) => {
                state.phase = Phase::AwaitingConfirm { key, accept_proof };
            }
            _ => self.establish_accepted(connection, early_data_accepted),
        }
        Ok(())
    }

    /// The accept frame with its proof.
    pub(super) fn signed_accept(
        &mut self,
        checked: &Checked,
        hello: &HandshakeHello,
        accept: &mut HandshakeAccept,
    ) -> Bytes {
        accept.proof = match &checked.key {
            Some(key) => {
                let fields = accept_fields(accept);
                Bytes::copy_from_slice(&proof::sign(
                    key,
                    &proof::accept_transcript(&hello.proof, &hello.nonce, fields),
                ))
            }
            None => Bytes::new(),
        };
        self.handshake_frame(
            &self.name.clone(),
            &checked.name,
            HandshakeBody::Accept(accept.clone()),
            0,
        )
    }

    /// The rules a hello must pass, in the order of `docs/protocol.md` 8.3.
    pub(super) fn check_hello(
        &mut self,
        now: Instant,
        head: &MessageHead,
        hello: &HandshakeHello,
    ) -> Result<Checked, AuthFailure> {
        let auth = &self.config.auth;
        if hello.protocol_version != atbus_proto::PROTOCOL_VERSION as i32 {
            return Err(AuthFailure::UnsupportedVersion);
        }
        let parameters_valid = hello
            .parameters
            .is_some_and(|p| (0..=1).contains(&p.kind) && p.mtu > 0);
        if !(NONCE_LEN..=32).contains(&hello.nonce.len())
            || !parameters_valid
            || head.source != hello.source
            || head.destination != hello.destination
        {
            return Err(AuthFailure::Malformed);
        }
        if !hello.destination.is_empty() && hello.destination != self.name {
            return Err(AuthFailure::WrongDestination);
        }
        let now_ms = self.auth.unix_ms(now);
        let window_ms = i64::try_from(auth.timestamp_window.as_millis()).unwrap_or(i64::MAX);
        if now_ms.abs_diff(hello.timestamp_milliseconds) > window_ms.unsigned_abs() {
            return Err(AuthFailure::ExpiredTimestamp);
        }
        let relay = hello.role == AtbusHandshakeRole::Relay as i32;
        let transcript = proof::hello_transcript(hello);
        let mode = AtbusAuthMode::try_from(hello.mode).map_err(|_| AuthFailure::Malformed)?;
        if mode != AtbusAuthMode::Anonymous && !valid_name(&hello.source) {
            return Err(AuthFailure::Malformed);
        }
        match mode {
            AtbusAuthMode::Anonymous => {
                if auth.anonymous.is_none() {
                    return Err(AuthFailure::AnonymousRefused);
                }
                if !hello.source.is_empty() || hello.early_data {
                    return Err(AuthFailure::Malformed);
                }
                if relay {
                    return Err(AuthFailure::RelayRefused);
                }
                let name = self.anonymous_name();
                Ok(Checked {
                    name,
                    kind: IdentityKind::Anonymous,
                    relay: false,
                    key: None,
                    resumed: false,
                    origin: None,
                })
            }
            AtbusAuthMode::Token => {
                if relay && !auth.allow_relays {
                    return Err(AuthFailure::RelayRefused);
                }
                if hello.source.starts_with(ANONYMOUS_PREFIX)
                    || self.auth.issued.contains(&hello.source)
                {
                    // Those names belong to peers this node named itself.
                    return Err(AuthFailure::UnknownName);
                }
                let token = auth
                    .tokens
                    .iter()
                    .find(|token| proof::verify(token.expose(), &transcript, &hello.proof))
                    .ok_or(AuthFailure::BadProof)?;
                Ok(Checked {
                    name: hello.source.clone(),
                    kind: IdentityKind::Token,
                    relay,
                    key: Some(token.expose().to_vec()),
                    resumed: false,
                    origin: Some(TicketOrigin::Token {
                        fingerprint: token.fingerprint(),
                    }),
                })
            }
            AtbusAuthMode::Issued => {
                let entry = self
                    .auth
                    .issued
                    .lookup(&hello.source, hello.stream_id, now_ms)?;
                if relay {
                    return Err(AuthFailure::RelayRefused);
                }
                if !proof::verify(entry.token.expose(), &transcript, &hello.proof) {
                    return Err(AuthFailure::BadProof);
                }
                Ok(Checked {
                    name: hello.source.clone(),
                    kind: IdentityKind::Issued {
                        stream_id: entry.stream_id,
                        generation: entry.generation,
                    },
                    relay: false,
                    key: Some(entry.token.expose().to_vec()),
                    resumed: false,
                    origin: Some(TicketOrigin::Issued {
                        stream_id: entry.stream_id,
                        generation: entry.generation,
                    }),
                })
            }
            AtbusAuthMode::Ticket => {
                let ticket = self
                    .auth
                    .ticket_key
                    .open(&hello.ticket)
                    .filter(|ticket| ticket.expires_ms >= now_ms && ticket.name == hello.source)
                    .ok_or(AuthFailure::BadTicket)?;
                let kind = match ticket.origin {
                    TicketOrigin::Token { fingerprint } => {
                        // A ticket dies with the token it was obtained with.
                        if !auth.tokens.iter().any(|t| t.fingerprint() == fingerprint) {
                            return Err(AuthFailure::BadTicket);
                        }
                        IdentityKind::Token
                    }
                    TicketOrigin::Issued {
                        stream_id,
                        generation,
                    } => {
                        if stream_id != hello.stream_id
                            || !self.auth.issued.is_live(&ticket.name, generation, now_ms)
                        {
                            return Err(AuthFailure::Revoked);
                        }
                        IdentityKind::Issued {
                            stream_id,
                            generation,
                        }
                    }
                };
                if relay && !(ticket.relay && auth.allow_relays) {
                    return Err(AuthFailure::RelayRefused);
                }
                if !proof::verify(&ticket.secret, &transcript, &hello.proof) {
                    return Err(AuthFailure::BadProof);
                }
                Ok(Checked {
                    name: ticket.name,
                    kind,
                    relay,
                    key: Some(ticket.secret.to_vec()),
                    resumed: true,
                    origin: Some(ticket.origin),
                })
            }
        }
    }

    /// A fresh name for an anonymous peer, unique among the peers this endpoint knows.
    pub(super) fn anonymous_name(&mut self) -> String {
        loop {
            let random: [u8; 8] = self.auth.random();
            let suffix: String = random.iter().map(|b| format!("{b:02x}")).collect();
            let name = format!("{ANONYMOUS_PREFIX}{suffix}");
            if !self.peers.contains_key(&name) {
                self.auth.anonymous_count += 1;
                return name;
            }
        }
    }

    /// The accepting side's connection is authenticated: frames flow.
    pub(super) fn establish_accepted(
        &mut self,
        connection: ConnectionId,
        early_data_accepted: bool,
    ) {
        let timepoint = self.timepoint(self.clock);
        let Some(state) = self.connections.get_mut(&connection) else {
            return;
        };
        state.phase = Phase::Established;
        state.handshake_deadline = None;
        let instance = std::mem::take(&mut state.peer_instance);
        let Some(identity) = state.identity.clone() else {
            return;
        };
        // On a stream transport the handshake validates the address (no byte budget once the
        // accept is out, `docs/protocol.md` 8.3): the transport's own handshake proved it. A
        // datagram peer proves it by its first frame after the accept (until then, nothing sent
        // outgrows what it sent: it may not even have the accept yet, and a burst of data would
        // only crowd the accept out of a lossy path). A ping rides with the accept when it fits,
        // so that a live peer's pong validates the address at once, quiet as it may be.
        if state.params.kind == ConnectionKind::Stream {
            state.validate_after_accept = true;
        } else if state.last_ping.is_none() {
            let ping = FrameMessage {
                head: Some(MessageHead {
                    source: self.name.clone(),
                    destination: identity.name.clone(),
                    ..Default::default()
                }),
                body: Some(Body::Ping(PingData {
                    sequence: state.ping_sequence + 1,
                    timepoint_microseconds: timepoint,
                })),
            };
            let mut wire = BytesMut::new();
            let queued: usize = state.outbox.iter().map(Bytes::len).sum();
            let budget = state.received_total.saturating_sub(state.unvalidated_sent);
            if self.codec.encode(&ping, &mut wire).is_ok() && queued + wire.len() <= budget {
                state.ping_sequence += 1;
                state.last_ping = Some(self.clock);
                state.outbox.push(wire.freeze());
            }
        }
        self.note_instance(&identity.name, instance, connection);
        tracing::debug!(
            connection = connection.0,
            peer = %identity.name,
            kind = ?identity.kind,
            resumed = identity.resumed,
            "peer authenticated"
        );
        self.stats.handshakes_completed += 1;
        self.bind_to_peer(connection, &identity.name);
        self.events.push_back(Event::Authenticated {
            connection,
            peer: identity.name,
            early_data_accepted,
            resumed: identity.resumed,
        });
    }
}
