//! The handshake inside the endpoint (`docs/protocol.md` section 8): opening a connection with a
//! hello, checking a hello and answering it, checking the answer, refusing a peer that broke a
//! rule, and the identities issued to clients.
//!
//! A handshake message is the one fragment (type HANDSHAKE) of a packet on stream -2 with flag
//! TLS_HANDSHAKE. The accepting side answers a hello only once its proof checks, never with more
//! bytes than it received, and keeps nothing of a refused connection.

use std::time::{Duration, Instant};

use atbus_proto::handshake::handshake_message::Body as HandshakeBody;
use atbus_proto::handshake::{
    AtbusAuthMode, AtbusHandshakeRole, ConnectionParameters, HandshakeAccept, HandshakeConfirm,
    HandshakeHello, HandshakeMessage,
};
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
use crate::engine::auth::replay::Remembered;
use crate::engine::auth::state::HeldTicket;
use crate::engine::auth::ticket::{Ticket, TicketOrigin};
use crate::engine::auth::{
    AuthFailure, ConnectOptions, Credential, IdentityKind, IssuedIdentity, PeerIdentity, Token,
    valid_name,
};
use crate::engine::config::{ConnectionKind, ConnectionParams};
use crate::engine::connection::{ClientHandshake, Connection, Phase};
use crate::engine::error::{ConnectionError, IssueError};
use crate::engine::event::Event;
use crate::engine::rtt::RttEstimator;
use crate::engine::transmit::ConnectionId;
use crate::engine::wire::encode_content;

/// The reserved stream handshake packets travel on.
pub(crate) const HANDSHAKE_STREAM: i64 = -2;
/// Bytes of a nonce.
const NONCE_LEN: usize = 16;
/// A hello is padded to this size (or the MTU) so that the answer never outgrows it.
const HELLO_PAD_TO: usize = 384;
/// A hello is sent at most this many times on a datagram connection.
const MAX_HELLO_ATTEMPTS: u32 = 8;
/// Prefix of the names given to anonymous peers.
const ANONYMOUS_PREFIX: &str = "anon-";

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
    /// Opens `id` as the connecting side: the first transmit on it is a hello proving
    /// `options.credential`. The connection is usable once [`Event::Authenticated`] comes, or at
    /// once for early data to `options.peer` when `options.early_data` is set (0-RTT).
    ///
    /// ```
    /// use std::time::Instant;
    /// use atbus_core::engine::{
    ///     ConnectOptions, ConnectionId, ConnectionParams, Credential, Endpoint, EngineConfig, Event, Token,
    /// };
    ///
    /// let now = Instant::now();
    /// let token = Token::new("a shared secret of 32 bytes!!!!!")?;
    /// let mut server_config = EngineConfig::default();
    /// server_config.auth.tokens = vec![token.clone()];
    /// let mut server = Endpoint::new("server", server_config, now);
    /// let mut client = Endpoint::new("client", EngineConfig::default(), now);
    ///
    /// let options = ConnectOptions::new("server", Credential::Token(token));
    /// client.connect(now, ConnectionId(1), ConnectionParams::stream(), options)?;
    /// server.accept(now, ConnectionId(7), ConnectionParams::stream())?;
    ///
    /// let hello = client.poll_transmit(now).expect("the hello");
    /// server.handle_input(now, ConnectionId(7), hello.data);
    /// let accept = server.poll_transmit(now).expect("the accept");
    /// client.handle_input(now, ConnectionId(1), accept.data);
    /// assert!(std::iter::from_fn(|| client.poll_event())
    ///     .any(|event| matches!(event, Event::Authenticated { ref peer, .. } if peer == "server")));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn connect(
        &mut self,
        now: Instant,
        id: ConnectionId,
        params: ConnectionParams,
        options: ConnectOptions,
    ) -> Result<(), ConnectionError> {
        self.check_new_connection(id, params)?;
        self.tick(now);
        let anonymous = matches!(options.credential, Credential::Anonymous);
        if anonymous && !self.name.is_empty() {
            return Err(ConnectionError::InvalidName(format!(
                "an anonymous connection needs an endpoint created with an empty name (this one \
                 is {:?}): the accepting side chooses the name",
                self.name
            )));
        }
        if !anonymous && !valid_name(&self.name) {
            return Err(ConnectionError::InvalidName(format!(
                "{:?} cannot be sent as a node name: use 1 to 253 visible characters",
                self.name
            )));
        }
        if let Some(peer) = &options.peer {
            if !valid_name(peer) {
                return Err(ConnectionError::InvalidName(format!(
                    "{peer:?} cannot be a peer's name: use 1 to 253 visible characters"
                )));
            }
        }
        let early_data = options.early_data && !anonymous;
        if early_data && options.peer.is_none() {
            return Err(ConnectionError::EarlyDataNeedsPeer);
        }
        let now_ms = self.auth.unix_ms(now);
        let held = options
            .peer
            .as_ref()
            .filter(|_| options.resume)
            .and_then(|peer| self.auth.tickets.get(peer))
            .filter(|ticket| ticket.expires_ms > now_ms && ticket.stands_for(&options.credential))
            .cloned();
        let (mode, stream_id, key) = match (&options.credential, &held) {
            (_, Some(ticket)) => (
                AtbusAuthMode::Ticket,
                match options.credential {
                    Credential::Issued { stream_id, .. } => stream_id,
                    _ => 0,
                },
                Some(ticket.secret.to_vec()),
            ),
            (Credential::Token(token), None) => {
                (AtbusAuthMode::Token, 0, Some(token.expose().to_vec()))
            }
            (Credential::Issued { stream_id, token }, None) => (
                AtbusAuthMode::Issued,
                *stream_id,
                Some(token.expose().to_vec()),
            ),
            (Credential::Anonymous, None) => (AtbusAuthMode::Anonymous, 0, None),
        };
        let nonce: [u8; NONCE_LEN] = self.auth.random();
        let mut hello = HandshakeHello {
            protocol_version: atbus_proto::PROTOCOL_VERSION as i32,
            mode: mode as i32,
            role: if options.relay {
                AtbusHandshakeRole::Relay as i32
            } else {
                AtbusHandshakeRole::Node as i32
            },
            source: self.name.clone(),
            destination: options.peer.clone().unwrap_or_default(),
            nonce: Bytes::copy_from_slice(&nonce),
            timestamp_milliseconds: now_ms,
            stream_id,
            parameters: Some(ConnectionParameters {
                kind: match params.kind {
                    ConnectionKind::Stream => 0,
                    ConnectionKind::Datagram => 1,
                },
                mtu: params.mtu as i64,
            }),
            early_data,
            ticket: held
                .as_ref()
                .map(|ticket| Bytes::from(ticket.sealed.clone()))
                .unwrap_or_default(),
            padding: Bytes::new(),
            proof: Bytes::new(),
        };
        if let Some(key) = &key {
            hello.proof =
                Bytes::copy_from_slice(&proof::sign(key, &proof::hello_transcript(&hello)));
        }
        let hello_proof = hello.proof.to_vec();
        let (source, destination) = (hello.source.clone(), hello.destination.clone());
        let frame = self.handshake_frame(
            &source,
            &destination,
            HandshakeBody::Hello(hello),
            HELLO_PAD_TO.min(params.mtu),
        );
        if frame.len() > params.mtu {
            return Err(ConnectionError::HelloTooLarge {
                size: frame.len(),
                mtu: params.mtu,
            });
        }
        let rtt = RttEstimator::new(self.config.initial_rtt);
        let peer = options.peer.clone().unwrap_or_default();
        let mut connection = Connection::new(peer.clone(), params, rtt, now);
        connection.outbox.push(frame.clone());
        connection.handshake_deadline = Some(now + self.config.auth.handshake_timeout);
        connection.phase = Phase::Connecting(Box::new(ClientHandshake {
            hello_frame: frame,
            hello_proof,
            nonce: nonce.to_vec(),
            key,
            credential: options.credential,
            resumed: held.is_some(),
            expected_peer: options.peer,
            early_data,
            sent_at: None,
            resent: false,
            resend_at: None,
            attempts: 0,
        }));
        self.connections.insert(id, connection);
        if early_data {
            // Data to the peer may leave with the hello.
            self.bind_to_peer(id, &peer);
        }
        Ok(())
    }

    /// Takes `id` as the accepting side: its first frame must be a hello that passes the rules of
    /// [`AuthConfig`](crate::engine::AuthConfig). A refused connection ends with
    /// [`Event::HandshakeFailed`]; an accepted one with [`Event::Authenticated`].
    pub fn accept(
        &mut self,
        now: Instant,
        id: ConnectionId,
        params: ConnectionParams,
    ) -> Result<(), ConnectionError> {
        self.check_new_connection(id, params)?;
        self.tick(now);
        let rtt = RttEstimator::new(self.config.initial_rtt);
        let mut connection = Connection::new(String::new(), params, rtt, now);
        connection.phase = Phase::AwaitingHello;
        connection.handshake_deadline = Some(now + self.config.auth.handshake_timeout);
        self.connections.insert(id, connection);
        Ok(())
    }

    /// Issues the identity `(name, stream_id, token)` for a client on an untrusted network, valid
    /// for `lifetime`: the client connects with
    /// [`Credential::Issued`](crate::engine::Credential::Issued) under that name, and may send on
    /// that stream only. Issuing a name again replaces its previous identity.
    pub fn issue_identity(
        &mut self,
        now: Instant,
        name: &str,
        stream_id: i64,
        lifetime: Duration,
    ) -> Result<IssuedIdentity, IssueError> {
        if !valid_name(name) || name.starts_with(ANONYMOUS_PREFIX) {
            return Err(IssueError::InvalidName {
                name: name.to_string(),
            });
        }
        if stream_id < 0 {
            return Err(IssueError::ReservedStream { stream_id });
        }
        let secret: [u8; 32] = self.auth.random();
        let token = Token::new(secret).unwrap_or_else(|_| unreachable!("32 bytes is long enough"));
        let now_ms = self.auth.unix_ms(now);
        let identity = self
            .auth
            .issued
            .issue(name, stream_id, token, now_ms, lifetime);
        // Connections that proved the previous issue of this name are refused from now on.
        self.refuse_stale_identities(now);
        Ok(identity)
    }

    /// Revokes the identity issued to `name`: its connections are refused at once (and any frame
    /// still arriving on them), and its handshakes from now on. Returns whether it was issued.
    pub fn revoke_identity(&mut self, now: Instant, name: &str) -> bool {
        let revoked = self.auth.issued.revoke(name);
        self.refuse_stale_identities(now);
        revoked
    }

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

    /// Refuses the connections whose issued identity is no longer live.
    fn refuse_stale_identities(&mut self, now: Instant) {
        let now_ms = self.auth.unix_ms(now);
        let stale: Vec<ConnectionId> = self
            .connections
            .iter()
            .filter(|(_, state)| {
                matches!(
                    state.identity.as_ref().map(|identity| (&identity.name, &identity.kind)),
                    Some((name, IdentityKind::Issued { generation, .. }))
                        if !self.auth.issued.is_live(name, *generation, now_ms)
                )
            })
            .map(|(&id, _)| id)
            .collect();
        for id in stale {
            self.refuse(id, AuthFailure::Revoked);
        }
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
            // Early data of a hello whose nonce could not be remembered: not delivered.
            (Phase::AwaitingConfirm { .. }, None) => self.stats.early_data_dropped += 1,
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
            // A resent accept, or a stray handshake message: nothing to do.
            (Phase::Established, _) => {}
        }
    }

    /// The accepting side's answer to a hello sent again (its accept was lost): the same accept.
    fn answer_resent_hello(&mut self, connection: ConnectionId, hello: &HandshakeHello) {
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
    fn on_hello(
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
        let early_data_accepted = hello.early_data && !confirm_required;
        let nonce: [u8; NONCE_LEN] = self.auth.random();
        let role = if checked.relay {
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
    fn signed_accept(
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
    fn check_hello(
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
    fn anonymous_name(&mut self) -> String {
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
    fn establish_accepted(&mut self, connection: ConnectionId, early_data_accepted: bool) {
        let Some(state) = self.connections.get_mut(&connection) else {
            return;
        };
        state.phase = Phase::Established;
        state.handshake_deadline = None;
        let Some(identity) = state.identity.clone() else {
            return;
        };
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

    /// Checks the accept of our hello, and completes the connecting side.
    fn on_accept(
        &mut self,
        now: Instant,
        connection: ConnectionId,
        head: MessageHead,
        accept: HandshakeAccept,
    ) -> Result<(), AuthFailure> {
        let now_ms = self.auth.unix_ms(now);
        let Some(state) = self.connections.get_mut(&connection) else {
            return Ok(());
        };
        let Phase::Connecting(handshake) = &state.phase else {
            return Ok(());
        };
        if !valid_name(&accept.source)
            || head.source != accept.source
            || head.destination != accept.destination
            || !(NONCE_LEN..=32).contains(&accept.nonce.len())
        {
            return Err(AuthFailure::Malformed);
        }
        if handshake
            .expected_peer
            .as_ref()
            .is_some_and(|peer| *peer != accept.source)
        {
            return Err(AuthFailure::WrongPeer);
        }
        let anonymous = matches!(handshake.credential, Credential::Anonymous);
        if anonymous {
            if !valid_name(&accept.destination) || accept.destination.len() > 253 {
                return Err(AuthFailure::Malformed);
            }
        } else if accept.destination != self.name {
            return Err(AuthFailure::Malformed);
        }
        if let Some(key) = &handshake.key {
            let transcript = proof::accept_transcript(
                &handshake.hello_proof,
                &handshake.nonce,
                accept_fields(&accept),
            );
            if !proof::verify(key, &transcript, &accept.proof) {
                return Err(AuthFailure::BadPeerProof);
            }
        }
        let Phase::Connecting(handshake) = std::mem::replace(&mut state.phase, Phase::Established)
        else {
            return Ok(());
        };
        state.handshake_deadline = None;
        if let (Some(sent_at), false) = (handshake.sent_at, handshake.resent) {
            state
                .rtt
                .update(now.saturating_duration_since(sent_at), Duration::ZERO);
        }
        let peer = accept.source.clone();
        state.peer = peer.clone();
        let relay = accept.role == AtbusHandshakeRole::Relay as i32;
        state.identity = Some(PeerIdentity {
            name: peer.clone(),
            kind: match handshake.credential {
                Credential::Anonymous => IdentityKind::Anonymous,
                Credential::Issued { stream_id, .. } => IdentityKind::Issued {
                    stream_id,
                    generation: 0,
                },
                Credential::Token(_) => IdentityKind::Token,
            },
            relay,
            resumed: handshake.resumed,
        });
        if accept.confirm_required {
            if let Some(key) = &handshake.key {
                let proof = proof::sign(key, &proof::confirm_transcript(&accept.proof));
                let frame = self.handshake_frame(
                    &self.name.clone(),
                    &peer,
                    HandshakeBody::Confirm(HandshakeConfirm {
                        proof: Bytes::copy_from_slice(&proof),
                    }),
                    0,
                );
                if let Some(state) = self.connections.get_mut(&connection) {
                    state.outbox.push(frame);
                }
            }
        }
        if anonymous {
            self.name = accept.destination.clone();
            self.events.push_back(Event::NameAssigned {
                name: accept.destination.clone(),
            });
        }
        // A ticket for the next connection.
        let origin = match &handshake.credential {
            Credential::Token(token) => Some(TicketOrigin::Token {
                fingerprint: token.fingerprint(),
            }),
            Credential::Issued { stream_id, .. } => Some(TicketOrigin::Issued {
                stream_id: *stream_id,
                generation: 0,
            }),
            Credential::Anonymous => None,
        };
        if let (Some(key), Some(origin), false) = (&handshake.key, origin, accept.ticket.is_empty())
        {
            let lifetime_ms = accept.ticket_lifetime_seconds.saturating_mul(1000);
            self.auth.tickets.insert(
                peer.clone(),
                HeldTicket {
                    sealed: accept.ticket.to_vec(),
                    secret: proof::sign(
                        key,
                        &proof::resume_transcript(&handshake.hello_proof, &accept.nonce),
                    ),
                    expires_ms: now_ms.saturating_add(lifetime_ms),
                    origin,
                },
            );
        }
        if handshake.early_data && !accept.early_data_accepted {
            // The peer did not take what went with the hello: send it again.
            if let Some(entry) = self.peers.get_mut(&peer) {
                for stream in entry.send.values_mut() {
                    self.stats.flights_lost += stream.on_connection_lost(connection) as u64;
                }
            }
        }
        tracing::debug!(connection = connection.0, peer = %peer, "connected and authenticated");
        self.stats.handshakes_completed += 1;
        self.bind_to_peer(connection, &peer);
        self.events.push_back(Event::Authenticated {
            connection,
            peer,
            early_data_accepted: handshake.early_data && accept.early_data_accepted,
            resumed: handshake.resumed,
        });
        Ok(())
    }

    /// The accepting side refused our hello.
    fn on_refused(&mut self, now: Instant, connection: ConnectionId, reason: CloseReasonData) {
        let Some(state) = self.connections.get_mut(&connection) else {
            return;
        };
        if let Phase::Connecting(handshake) = &state.phase {
            if handshake.resumed {
                // The ticket may be what was refused: the next connection proves the credential.
                if let Some(peer) = &handshake.expected_peer {
                    self.auth.tickets.remove(peer);
                }
            }
        }
        tracing::warn!(
            connection = connection.0,
            reason = %reason.message,
            "the accepting side refused the handshake"
        );
        *self
            .stats
            .auth_failures
            .entry(AuthFailure::RefusedByPeer)
            .or_default() += 1;
        if let Some(state) = self.connections.get_mut(&connection) {
            state.failure = Some(AuthFailure::RefusedByPeer);
        }
        self.drop_connection(now, connection, reason);
    }

    /// Handshake timers: hellos resent on datagram connections, handshakes that took too long.
    pub(super) fn handshake_timeouts(&mut self, now: Instant) {
        let mut expired = Vec::new();
        for (&id, state) in self.connections.iter_mut() {
            if state.handshake_deadline.is_some_and(|at| at <= now) && state.closing.is_none() {
                expired.push(id);
                continue;
            }
            let rto = state.rtt.rto();
            if let Phase::Connecting(handshake) = &mut state.phase {
                if handshake.resend_at.is_some_and(|at| at <= now)
                    && handshake.attempts < MAX_HELLO_ATTEMPTS
                {
                    handshake.attempts += 1;
                    handshake.resent = true;
                    handshake.resend_at = Some(now + rto * 2u32.pow(handshake.attempts));
                    state.outbox.push(handshake.hello_frame.clone());
                }
            }
        }
        for id in expired {
            self.refuse(id, AuthFailure::Timeout);
        }
    }

    /// The earliest handshake timer.
    pub(super) fn handshake_timer(&self) -> Option<Instant> {
        self.connections
            .values()
            .flat_map(|state| {
                let resend = match &state.phase {
                    Phase::Connecting(handshake) if handshake.attempts < MAX_HELLO_ATTEMPTS => {
                        handshake.resend_at
                    }
                    _ => None,
                };
                [
                    state.handshake_deadline.filter(|_| state.closing.is_none()),
                    resend,
                ]
            })
            .flatten()
            .min()
    }

    /// Notes that the hello of `connection` left now: the round trip counts from here, and on a
    /// datagram connection it is sent again if no answer comes.
    pub(super) fn hello_sent(&mut self, now: Instant, connection: ConnectionId) {
        let Some(state) = self.connections.get_mut(&connection) else {
            return;
        };
        let datagram = state.params.kind == ConnectionKind::Datagram;
        let rto = state.rtt.rto();
        if let Phase::Connecting(handshake) = &mut state.phase {
            if handshake.sent_at.is_none() {
                handshake.sent_at = Some(now);
                if datagram {
                    handshake.resend_at = Some(now + rto);
                }
            }
        }
    }

    /// Whether a frame from an authenticated peer may be taken; refuses the connection if not.
    pub(super) fn authorize(
        &mut self,
        now: Instant,
        connection: ConnectionId,
        head: &MessageHead,
        body: Option<&Body>,
    ) -> bool {
        let Some(state) = self.connections.get(&connection) else {
            return false;
        };
        let Some(identity) = &state.identity else {
            return true;
        };
        let failure = if head.source != identity.name {
            Some(AuthFailure::SpoofedSource)
        } else if (!head.forward_for_source.is_empty() || head.forward_for_connection_id != 0)
            && !identity.relay
        {
            Some(AuthFailure::ForwardingNotAllowed)
        } else {
            match &identity.kind {
                IdentityKind::Issued {
                    stream_id,
                    generation,
                } if self.is_accepting_side(connection) => {
                    let now_ms = self.auth.unix_ms(now);
                    if !self
                        .auth
                        .issued
                        .is_live(&identity.name, *generation, now_ms)
                    {
                        Some(AuthFailure::Revoked)
                    } else {
                        match body {
                            Some(Body::Packet(packet))
                                if packet.stream_id >= 0 && packet.stream_id != *stream_id =>
                            {
                                Some(AuthFailure::StreamNotAllowed)
                            }
                            _ => None,
                        }
                    }
                }
                IdentityKind::Anonymous if self.is_accepting_side(connection) => {
                    let allowed = self.config.auth.anonymous.as_ref().is_some_and(|policy| {
                        let labels =
                            (head.destination == self.name).then_some(&self.config.auth.labels);
                        policy
                            .allow
                            .iter()
                            .any(|rule| rule.allows(&head.destination, labels))
                    });
                    (!allowed).then_some(AuthFailure::DestinationNotAllowed)
                }
                _ => None,
            }
        };
        match failure {
            Some(failure) => {
                self.refuse(connection, failure);
                false
            }
            None => true,
        }
    }

    /// Whether this endpoint accepted `connection` (rather than opened it).
    fn is_accepting_side(&self, connection: ConnectionId) -> bool {
        self.connections
            .get(&connection)
            .is_some_and(|state| state.accepted_hello.is_some())
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
                    stream_id: HANDSHAKE_STREAM,
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
fn accept_fields(accept: &HandshakeAccept) -> AcceptFields<'_> {
    AcceptFields {
        source: &accept.source,
        destination: &accept.destination,
        nonce: &accept.nonce,
        early_data_accepted: accept.early_data_accepted,
        confirm_required: accept.confirm_required,
        role: accept.role,
        ticket: &accept.ticket,
        ticket_lifetime_seconds: accept.ticket_lifetime_seconds,
    }
}

/// The handshake message a frame carries: `None` if it is not a handshake packet, an error if it
/// is one that does not decode.
fn handshake_of(frame: &FrameMessage) -> Option<Result<HandshakeBody, ()>> {
    let Some(Body::Packet(packet)) = &frame.body else {
        return None;
    };
    if packet.stream_id != HANDSHAKE_STREAM {
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
