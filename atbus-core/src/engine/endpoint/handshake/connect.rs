//! The connecting side of the handshake: the hello (with early data and a ticket when it has
//! one), the accept checked against the proof, the confirm when asked for, and a refusal heard.

use std::time::{Duration, Instant};

use atbus_proto::handshake::handshake_message::Body as HandshakeBody;
use atbus_proto::handshake::{
    AtbusAuthMode, AtbusHandshakeRole, ConnectionParameters, HandshakeAccept, HandshakeConfirm,
    HandshakeHello,
};
use atbus_proto::protocol::{CloseReasonData, MessageHead};
use bytes::Bytes;

use crate::engine::auth::proof::{self};
use crate::engine::auth::state::HeldTicket;
use crate::engine::auth::ticket::TicketOrigin;
use crate::engine::auth::{
    AuthFailure, ConnectOptions, Credential, IdentityKind, PeerIdentity, valid_name,
};
use crate::engine::config::{ConnectionKind, ConnectionParams};
use crate::engine::connection::{ClientHandshake, Connection, Phase};
use crate::engine::endpoint::Endpoint;
use crate::engine::error::ConnectionError;
use crate::engine::event::Event;
use crate::engine::rtt::RttEstimator;
use crate::engine::transmit::ConnectionId;

use super::{HELLO_PAD_TO, NONCE_LEN, accept_fields};

impl Endpoint {
    /// Opens a connection as the connecting side: the first transmit on it is a hello proving
    /// `options.credential`. The connection is usable once [`Event::Authenticated`] comes, or at
    /// once for early data to `options.peer` when `options.early_data` is set (0-RTT).
    ///
    /// Returns the id the endpoint gave the connection.
    ///
    /// ```
    /// use std::time::Instant;
    /// use atbus_core::engine::{
    ///     ConnectOptions, ConnectionParams, Credential, Endpoint, EngineConfig, Event, Token,
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
    /// let at_client = client.connect(now, ConnectionParams::stream(), options)?;
    /// let at_server = server.accept(now, ConnectionParams::stream())?;
    ///
    /// let hello = client.poll_transmit(now).expect("the hello");
    /// server.handle_input(now, at_server, hello.data);
    /// let accept = server.poll_transmit(now).expect("the accept");
    /// client.handle_input(now, at_client, accept.data);
    /// assert!(std::iter::from_fn(|| client.poll_event())
    ///     .any(|event| matches!(event, Event::Authenticated { ref peer, .. } if peer == "server")));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn connect(
        &mut self,
        now: Instant,
        params: ConnectionParams,
        options: ConnectOptions,
    ) -> Result<ConnectionId, ConnectionError> {
        self.check_new_connection(params)?;
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
            instance: Bytes::copy_from_slice(&self.auth.instance),
            peer_instance: options
                .peer
                .as_ref()
                .and_then(|peer| self.peers.get(peer))
                .and_then(|peer| peer.instance.clone())
                .unwrap_or_default(),
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
        let id = self.insert_connection(connection);
        self.wake.insert(id);
        if early_data {
            // Data to the peer may leave with the hello.
            self.bind_to_peer(id, &peer);
        }
        Ok(id)
    }

    /// Checks the accept of our hello, and completes the connecting side.
    pub(super) fn on_accept(
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
                    // Sent with every transmit until the peer shows it has it.
                    state.confirm_frame = Some(frame);
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
        // A peer that restarted starts its streams over (and our early data with them).
        self.note_instance(&peer, accept.instance.clone(), connection);
        if handshake.early_data && !accept.early_data_accepted {
            // The peer did not take what went with the hello: send it again.
            if let Some(entry) = self.peers.get_mut(&peer) {
                for stream in entry.send.values_mut() {
                    self.stats.flights_lost += stream.on_connection_lost(connection) as u64;
                    crate::engine::endpoint::settle(
                        &mut self.connections,
                        &mut self.stats,
                        stream,
                        now,
                        false,
                    );
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
    pub(super) fn on_refused(
        &mut self,
        now: Instant,
        connection: ConnectionId,
        reason: CloseReasonData,
    ) {
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

    /// Notes that the hello of `connection` left now: the round trip counts from here, and on a
    /// datagram connection it is sent again if no answer comes.
    pub(in crate::engine::endpoint) fn hello_sent(
        &mut self,
        now: Instant,
        connection: ConnectionId,
    ) {
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
}
