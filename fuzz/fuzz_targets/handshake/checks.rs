//! The checks: every transmit and event of the server is taken and checked as it comes (whole
//! frames from "server" on live connections, amplification, who an authenticated connection is,
//! a hello authenticated at most once without a confirm, a refused connection leaving nothing
//! behind), then the server's state against what its events said.

use std::collections::BTreeSet;

use atbus_core::engine::{ConnectionId, Event, IdentityKind, Transmit};
use atbus_proto::Decoded;
use atbus_proto::handshake::AtbusAuthMode;
use atbus_proto::handshake::handshake_message::Body as HandshakeBody;

use crate::amplification;
use crate::common::start;
use crate::proofs::{resume_transcript, sign};
use crate::trace::describe;
use crate::wire::{codec, handshake_of};
use crate::world::{AcceptInfo, Flight, Harness, KnownTicket, ServerConn};
use crate::{MAX_KEPT, MAX_TRANSMITS, SERVER};

impl Harness {
    // ---- what the server says --------------------------------------------------------------

    /// Takes every transmit and event of the server, checking each, then checks its state.
    pub(crate) fn drain(&mut self) {
        let mut transmits = 0;
        loop {
            let mut progress = false;
            // Transmits first: the accept goes out with the state from before `Authenticated`.
            while let Some(transmit) = self.server.poll_transmit(self.now) {
                progress = true;
                transmits += 1;
                assert!(transmits < MAX_TRANSMITS, "poll_transmit does not run dry");
                self.check_transmit(transmit);
            }
            while let Some(event) = self.server.poll_event() {
                progress = true;
                self.check_event(event);
            }
            if !progress {
                break;
            }
        }
        self.check_state();
    }

    pub(crate) fn check_transmit(&mut self, transmit: Transmit) {
        let Transmit { connection, data } = transmit;
        let conn = self
            .conns
            .get_mut(&connection)
            .unwrap_or_else(|| panic!("a transmit on {connection}, which is not live"));
        assert!(!data.is_empty(), "an empty transmit on {connection}");
        trace!(
            "{:?} transmit {connection}: {} bytes: {}",
            self.now - start(),
            data.len(),
            describe(&data)
        );
        let mut rest = data.clone();
        let mut accepted = None;
        let mut handshake_bytes = 0;
        while !rest.is_empty() {
            let frame = match codec().decode_bytes(&mut rest) {
                Ok(Decoded::Frame(frame)) => frame,
                other => panic!(
                    "a transmit on {connection} holds something other than whole frames: {other:?}"
                ),
            };
            let message = frame.message;
            let source = message
                .head
                .as_ref()
                .map_or("", |head| head.source.as_str());
            assert_eq!(source, SERVER, "a frame from the server under another name");
            if let Some(handshake) = handshake_of(&message) {
                handshake_bytes += frame.wire_len;
                if let Ok(HandshakeBody::Accept(accept)) = handshake {
                    self.server_instance = accept.instance.clone();
                    accepted = Some(accept);
                }
            }
        }
        amplification::check(
            conn,
            connection,
            data.len(),
            handshake_bytes,
            accepted.as_ref(),
        );
        if let Some(accept) = accepted {
            // A ticket is resumable with a secret derived from the hello's key.
            let key = conn
                .first_hello
                .as_ref()
                .and_then(|hello| Some((hello, self.signing_keys.get(&hello.proof)?)));
            if let (false, Some((hello, key))) = (accept.ticket.is_empty(), key) {
                let ticket = KnownTicket {
                    sealed: accept.ticket.clone(),
                    secret: sign(key, &resume_transcript(&hello.proof, &accept.nonce)),
                    name: accept.destination.clone(),
                    stream_id: hello.stream_id,
                };
                Self::keep(&mut self.tickets, ticket, MAX_KEPT);
            }
            conn.accept = Some(AcceptInfo {
                proof: accept.proof,
                confirm_required: accept.confirm_required,
            });
        }
        if conn.client.is_some() {
            conn.to_client.push(data.clone());
        }
        self.mix(data.len() as u64);
    }

    pub(crate) fn check_event(&mut self, event: Event) {
        trace!("{:?} event {event:?}", self.now - start());
        match event {
            Event::Authenticated {
                connection,
                peer,
                early_data_accepted,
                resumed,
            } => {
                let conn = self
                    .conns
                    .get_mut(&connection)
                    .unwrap_or_else(|| panic!("Authenticated for {connection}, which is not live"));
                assert!(
                    conn.authenticated.is_none(),
                    "Authenticated twice for {connection}"
                );
                conn.authenticated = Some(peer.clone());
                // The connection may be gone already (refused after the event, its close sent
                // and its ConnectionLost queued): check_state sees to the identity of the others.
                let kind = self.server.peer_identity(connection).map(|identity| {
                    assert_eq!(identity.name, peer, "the identity of {connection}");
                    identity.kind.clone()
                });
                let hello = conn.first_hello.clone().unwrap_or_else(|| {
                    panic!(
                        "{connection} is authenticated, but its first handshake frame was no hello"
                    )
                });
                if hello.mode == AtbusAuthMode::Anonymous as i32 {
                    assert!(
                        kind.as_ref()
                            .is_none_or(|kind| *kind == IdentityKind::Anonymous)
                            && peer.starts_with("anon-"),
                        "an anonymous hello authenticated {connection} as {peer:?} ({kind:?})"
                    );
                } else {
                    assert_eq!(
                        peer, hello.source,
                        "{connection} is authenticated under another name than its hello's"
                    );
                    assert!(
                        kind != Some(IdentityKind::Anonymous),
                        "a hello of mode {} authenticated {connection} as anonymous",
                        hello.mode
                    );
                    if let Some(data) = conn.first_input.clone() {
                        let kind = conn.params.kind;
                        Self::keep(
                            &mut self.authenticated_inputs,
                            Flight { data, kind },
                            MAX_KEPT,
                        );
                    }
                    let confirmed = conn
                        .accept
                        .as_ref()
                        .is_some_and(|accept| accept.confirm_required);
                    let fresh = self
                        .authenticated_hellos
                        .insert((hello.nonce.clone(), hello.proof.clone()));
                    Self::keep(
                        &mut self.authenticated_timestamps,
                        hello.timestamp_milliseconds,
                        MAX_KEPT,
                    );
                    assert!(
                        fresh || confirmed,
                        "replay: a hello authenticated before (nonce {:02x?}) authenticated \
                         {connection} again without a confirm, {} ms into the run (window {} ms, \
                         replay cache {} of {})",
                        hello.nonce.as_ref(),
                        (self.now - start()).as_millis(),
                        self.window_ms(),
                        self.server.replay_cache_len(),
                        self.replay_cache_size
                    );
                }
                self.mix(u64::from(early_data_accepted) << 1 | u64::from(resumed));
            }
            Event::HandshakeFailed {
                connection,
                failure,
                reason,
            } => {
                let conn = self
                    .conns
                    .remove(&connection)
                    .unwrap_or_else(|| panic!("HandshakeFailed for {connection}, not live"));
                assert!(
                    conn.authenticated.is_none(),
                    "HandshakeFailed for {connection}, which was authenticated"
                );
                assert!(
                    self.server.peer_identity(connection).is_none(),
                    "{connection} keeps an identity after HandshakeFailed"
                );
                self.forget(connection, &conn);
                self.mix(failure as u64 ^ reason.code.to_wire() as u64);
            }
            Event::ConnectionLost {
                connection,
                peer,
                reason,
            } => {
                let conn = self
                    .conns
                    .remove(&connection)
                    .unwrap_or_else(|| panic!("ConnectionLost for {connection}, not live"));
                if let Some(name) = &conn.authenticated {
                    assert_eq!(*name, peer, "ConnectionLost names another peer");
                }
                self.forget(connection, &conn);
                self.mix(reason.code.to_wire() as u64);
            }
            Event::PeerReachable { peer } => {
                assert!(self.reachable.insert(peer), "PeerReachable twice");
            }
            Event::PeerUnreachable { peer } => {
                assert!(
                    self.reachable.remove(&peer),
                    "PeerUnreachable while unreachable"
                );
            }
            Event::Readable { peer, stream_id } => {
                for _ in 0..16 {
                    let Some(message) = self.server.read(&peer, stream_id) else {
                        break;
                    };
                    self.mix(message.offset ^ message.data.len() as u64);
                }
            }
            Event::NameAssigned { name } => {
                panic!("the accepting server was assigned the name {name:?}")
            }
            other => self.mix(format!("{other:?}").len() as u64),
        }
    }

    /// A connection is gone: its id may come again, and its client loses its link.
    pub(crate) fn forget(&mut self, id: ConnectionId, conn: &ServerConn) {
        Self::keep(&mut self.dead, id, 16);
        if let Some((index, client_id)) = conn.client {
            if let Some(client) = self.clients[index].as_mut() {
                client.links.remove(&client_id);
            }
        }
    }

    /// The server's connections are those its events left live.
    pub(crate) fn check_state(&mut self) {
        assert_eq!(
            self.server.connection_count(),
            self.conns.len(),
            "connection_count() against the connections the events left live"
        );
        let pending = self
            .conns
            .values()
            .filter(|conn| conn.authenticated.is_none())
            .count();
        assert_eq!(
            self.server.pending_handshakes(),
            pending,
            "pending_handshakes() against the connections not authenticated"
        );
        let mut names = BTreeSet::new();
        for (&id, conn) in &self.conns {
            assert_eq!(
                self.server.peer_identity(id).is_some(),
                conn.authenticated.is_some(),
                "peer_identity({id}) against its Authenticated event"
            );
            names.extend(conn.authenticated.clone());
        }
        let reachable: BTreeSet<String> =
            self.server.reachable_peers().map(str::to_string).collect();
        assert_eq!(
            reachable, names,
            "reachable peers against authenticated connections"
        );
        assert_eq!(
            reachable, self.reachable,
            "reachable peers against the events"
        );
        let cached = self.server.replay_cache_len();
        assert!(
            cached <= self.replay_cache_size,
            "the replay cache holds {cached} nonces, over its size {}",
            self.replay_cache_size
        );
        let failures: u64 = self.server.stats().auth_failures.values().sum();
        self.mix(failures ^ cached as u64);
    }
}
