//! The world of a run: the endpoint "b" under test and what the harness knows of it (its live
//! connections and their peers, reachability, stream offsets both ways per peer, b's latest pings
//! and timepoint, blocked and finishing streams, the frames b should forward), how it is set up
//! from the input, and how input and time reach it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use arbitrary::{Result, Unstructured};
use atbus_core::engine::{ConnectionId, ConnectionKind, ConnectionParams, Endpoint};
use atbus_proto::protocol::PingData;
use bytes::Bytes;

use crate::common::{Digest, start};
use crate::input::int64;
use crate::relay::Mode;
use crate::{LOCAL, MAX_ELAPSED, NAMES, PEER, STREAMS, config};

/// A stream of one peer: the peer's name (one of [`NAMES`]) and the stream id.
pub(crate) type Key = (&'static str, i64);

/// A live connection: its parameters, its peer and whether the peer is a relay (its handshake
/// said so).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Link {
    pub(crate) params: ConnectionParams,
    pub(crate) peer: &'static str,
    pub(crate) relay: bool,
}

/// The name of [`NAMES`] equal to `name`: the engine names no other peer.
pub(crate) fn known(name: &str) -> &'static str {
    NAMES
        .iter()
        .find(|known| **known == name)
        .unwrap_or_else(|| panic!("the engine names a peer the harness never named: {name:?}"))
}

/// The driver: the endpoint and what the fuzzer knows of it.
pub(crate) struct Harness {
    pub(crate) endpoint: Endpoint,
    pub(crate) bound: usize,
    pub(crate) max_message_size: usize,
    pub(crate) now: Instant,
    /// The relay mode, if the input chose one.
    pub(crate) mode: Option<Mode>,
    /// The connections the endpoint has, as its events tell.
    pub(crate) live: BTreeMap<ConnectionId, Link>,
    /// One past the highest connection id the endpoint handed out.
    pub(crate) next_id: u64,
    /// The peers the last reachability events said are reachable.
    pub(crate) reachable: BTreeSet<&'static str>,
    /// Per stream, where the next packet from its peer would naturally start.
    pub(crate) incoming_next: BTreeMap<Key, u64>,
    /// Per stream, one past the highest unit b has put on the wire.
    pub(crate) outgoing_end: BTreeMap<Key, u64>,
    /// The latest ping b sent on each connection, for "a" to answer.
    pub(crate) pings: BTreeMap<ConnectionId, PingData>,
    /// The latest packet timepoint b sent, for "a" to echo.
    pub(crate) timepoint: i64,
    /// Per stream, where the next message read may start at the earliest.
    pub(crate) read_next: BTreeMap<Key, u64>,
    /// Streams that refused a send and await `Writable`.
    pub(crate) blocked: BTreeSet<Key>,
    /// Streams finished by the application and not yet closed.
    pub(crate) finishing: BTreeSet<Key>,
    /// Streams of the peers that finished.
    pub(crate) peer_finished: BTreeSet<Key>,
    /// Relays: digests of the frames b may forward (as it should stamp them), since the last
    /// drain (or longer, while a connection's transport is blocked and holds them).
    pub(crate) expected_forwards: BTreeSet<u64>,
    /// b's limit of forwarded frames held per connection.
    pub(crate) forward_limit: usize,
    /// Connections the runtime's queue of is full (`set_transport_blocked`).
    pub(crate) transport_blocked: BTreeSet<ConnectionId>,
    /// Bytes of forwarded frames and notices per connection in the current drain.
    pub(crate) forwarded_bytes: BTreeMap<ConnectionId, usize>,
    /// The connection whose handshake the harness is driving, if any.
    pub(crate) handshaking: Option<(ConnectionId, ConnectionParams)>,
    /// Folded over everything the endpoint gives back, so none of it is optimised away.
    pub(crate) digest: Digest,
}

impl Harness {
    pub(crate) fn new(u: &mut Unstructured, mode: Option<Mode>) -> Result<Self> {
        let message_timeout = match u.int_in_range(0..=3u8)? {
            0 => Some(Duration::from_millis(u.int_in_range(1..=10_000)?)),
            _ => None,
        };
        let mut config = config(message_timeout, mode.is_some_and(|mode| mode.b_relay));
        if mode.is_some() {
            crate::relay::forward_queues(u, &mut config)?;
        }
        let forward_limit = config.forward_queue_limit;
        let per_peer =
            config.peer_send_window as usize + config.max_message_size + config.peer_receive_budget;
        // Each peer the engine keeps (any of the names, in the relay modes) has the same bound.
        let bound = per_peer * if mode.is_some() { NAMES.len() } else { 1 };
        let max_message_size = config.max_message_size;
        let now = start();
        let mut harness = Self {
            endpoint: Endpoint::new(LOCAL, config, now),
            bound,
            max_message_size,
            now,
            mode,
            live: BTreeMap::new(),
            next_id: 1,
            reachable: BTreeSet::new(),
            incoming_next: BTreeMap::new(),
            outgoing_end: BTreeMap::new(),
            pings: BTreeMap::new(),
            timepoint: 0,
            read_next: BTreeMap::new(),
            blocked: BTreeSet::new(),
            finishing: BTreeSet::new(),
            peer_finished: BTreeSet::new(),
            expected_forwards: BTreeSet::new(),
            forward_limit,
            transport_blocked: BTreeSet::new(),
            forwarded_bytes: BTreeMap::new(),
            handshaking: None,
            digest: Digest::default(),
        };
        if let Some(mode) = mode {
            harness.endpoint.set_unix_time(now, crate::relay::BASE_UNIX);
            harness.add_connection_to(u, ConnectionKind::Datagram, PEER)?;
            harness.add_connection_to(u, ConnectionKind::Stream, PEER)?;
            if mode.c {
                let kind = Self::kind(u)?;
                harness.add_connection_to(u, kind, "c")?;
            }
            if mode.d {
                let kind = Self::kind(u)?;
                harness.add_connection_to(u, kind, "d")?;
            }
        } else {
            harness.add_connection(u, ConnectionKind::Datagram)?;
            harness.add_connection(u, ConnectionKind::Stream)?;
        }
        Ok(harness)
    }

    pub(crate) fn kind(u: &mut Unstructured) -> Result<ConnectionKind> {
        Ok(if u.arbitrary()? {
            ConnectionKind::Datagram
        } else {
            ConnectionKind::Stream
        })
    }

    pub(crate) fn add_connection(
        &mut self,
        u: &mut Unstructured,
        kind: ConnectionKind,
    ) -> Result<()> {
        self.add_connection_to(u, kind, PEER)
    }

    /// A new connection to `peer`: bound by `add_connection`, or, to a peer the mode makes a
    /// relay, opened by a handshake with a scratch endpoint of that name.
    pub(crate) fn add_connection_to(
        &mut self,
        u: &mut Unstructured,
        kind: ConnectionKind,
        peer: &'static str,
    ) -> Result<()> {
        let mtu = match kind {
            ConnectionKind::Datagram => *u.choose(&[1232, 548, 128, 1500, 200])?,
            ConnectionKind::Stream => *u.choose(&[64 * 1024, 1232, 128, 16 * 1024])?,
        };
        if self.mode.is_some_and(|mode| mode.is_relay(peer)) {
            // The hello must fit the connection.
            let params = ConnectionParams {
                kind,
                mtu: mtu.max(512),
            };
            self.handshake(peer, params);
            return Ok(());
        }
        let params = ConnectionParams { kind, mtu };
        let id = self
            .endpoint
            .add_connection(self.now, peer, params)
            .expect("a valid MTU");
        self.note_id(id);
        self.live.insert(
            id,
            Link {
                params,
                peer,
                relay: false,
            },
        );
        Ok(())
    }

    /// A live connection of `kind` (of `peer`'s, if given) if there is one, else any live one,
    /// else an unknown id.
    pub(crate) fn pick_connection(
        &self,
        u: &mut Unstructured,
        kind: ConnectionKind,
        peer: Option<&str>,
    ) -> Result<(ConnectionId, Option<ConnectionKind>)> {
        let of_kind: Vec<ConnectionId> = self
            .live
            .iter()
            .filter(|(_, link)| link.params.kind == kind)
            .filter(|(_, link)| peer.is_none_or(|peer| link.peer == peer))
            .map(|(&id, _)| id)
            .collect();
        let all: Vec<ConnectionId> = self.live.keys().copied().collect();
        let id = if !of_kind.is_empty() && u.ratio(15, 16)? {
            *u.choose(&of_kind)?
        } else if !all.is_empty() && u.ratio(7, 8)? {
            *u.choose(&all)?
        } else {
            ConnectionId(u.int_in_range(0..=self.next_id + 1)?)
        };
        Ok((id, self.live.get(&id).map(|link| link.params.kind)))
    }

    pub(crate) fn stream_id(&self, u: &mut Unstructured) -> Result<i64> {
        Ok(match u.int_in_range(0..=7u8)? {
            // The bus's routing notices and route tables, with relays about.
            0 if self.mode.is_some() && u.ratio(1, 2)? => *u.choose(&[-3, -4])?,
            0 => int64(u)?,
            1 => i64::from(u.int_in_range(0..=40u8)?),
            _ => *u.choose(&STREAMS)?,
        })
    }

    /// Hands `bytes` to `connection`: a stream connection may get them in several chunks.
    pub(crate) fn deliver(
        &mut self,
        u: &mut Unstructured,
        connection: ConnectionId,
        mut bytes: Bytes,
    ) {
        let chunked = self.live.get(&connection).map(|link| link.params.kind)
            == Some(ConnectionKind::Stream)
            && u.ratio(1, 4).unwrap_or(false);
        if chunked {
            while !bytes.is_empty() {
                let len = u.int_in_range(1..=bytes.len()).unwrap_or(bytes.len());
                let chunk = bytes.split_to(len);
                self.endpoint.handle_input(self.now, connection, chunk);
            }
        } else {
            self.endpoint.handle_input(self.now, connection, bytes);
        }
    }

    /// Lets time pass to `to` (kept within the horizon and never backwards).
    pub(crate) fn advance_to(&mut self, to: Instant) {
        let horizon = start() + MAX_ELAPSED;
        self.now = to.min(horizon).max(self.now);
        self.endpoint.handle_timeout(self.now);
        self.settle();
    }

    /// Notes an id the endpoint handed out: ids past it are unknown to the endpoint.
    pub(crate) fn note_id(&mut self, id: ConnectionId) {
        self.next_id = self.next_id.max(id.0 + 1);
    }

    pub(crate) fn mix(&mut self, value: u64) {
        self.digest.mix(value);
    }
}
