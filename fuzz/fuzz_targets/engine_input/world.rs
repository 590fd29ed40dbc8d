//! The world of a run: the endpoint "b" under test and what the harness knows of it (its live
//! connections, reachability, stream offsets both ways, b's latest pings and timepoint, blocked
//! and finishing streams), how it is set up from the input, and how input and time reach it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use arbitrary::{Result, Unstructured};
use atbus_core::engine::{ConnectionId, ConnectionKind, ConnectionParams, Endpoint};
use atbus_proto::protocol::PingData;
use bytes::Bytes;

use crate::common::{Digest, start};
use crate::input::int64;
use crate::{LOCAL, MAX_ELAPSED, PEER, STREAMS, config};

/// The driver: the endpoint and what the fuzzer knows of it.
pub(crate) struct Harness {
    pub(crate) endpoint: Endpoint,
    pub(crate) bound: usize,
    pub(crate) max_message_size: usize,
    pub(crate) now: Instant,
    /// The connections the endpoint has, as its events tell.
    pub(crate) live: BTreeMap<ConnectionId, ConnectionParams>,
    pub(crate) next_id: u64,
    /// Whether the last reachability event said "a" is reachable.
    pub(crate) reachable: bool,
    /// Per stream, where the next packet from "a" would naturally start.
    pub(crate) incoming_next: BTreeMap<i64, u64>,
    /// Per stream, one past the highest unit b has put on the wire.
    pub(crate) outgoing_end: BTreeMap<i64, u64>,
    /// The latest ping b sent on each connection, for "a" to answer.
    pub(crate) pings: BTreeMap<ConnectionId, PingData>,
    /// The latest packet timepoint b sent, for "a" to echo.
    pub(crate) timepoint: i64,
    /// Per stream, where the next message read may start at the earliest.
    pub(crate) read_next: BTreeMap<i64, u64>,
    /// Streams that refused a send and await `Writable`.
    pub(crate) blocked: BTreeSet<i64>,
    /// Streams finished by the application and not yet closed.
    pub(crate) finishing: BTreeSet<i64>,
    /// Streams of "a" that finished.
    pub(crate) peer_finished: BTreeSet<i64>,
    /// Folded over everything the endpoint gives back, so none of it is optimised away.
    pub(crate) digest: Digest,
}

impl Harness {
    pub(crate) fn new(u: &mut Unstructured) -> Result<Self> {
        let message_timeout = match u.int_in_range(0..=3u8)? {
            0 => Some(Duration::from_millis(u.int_in_range(1..=10_000)?)),
            _ => None,
        };
        let config = config(message_timeout);
        let bound =
            config.peer_send_window as usize + config.max_message_size + config.peer_receive_budget;
        let max_message_size = config.max_message_size;
        let now = start();
        let mut harness = Self {
            endpoint: Endpoint::new(LOCAL, config, now),
            bound,
            max_message_size,
            now,
            live: BTreeMap::new(),
            next_id: 1,
            reachable: false,
            incoming_next: BTreeMap::new(),
            outgoing_end: BTreeMap::new(),
            pings: BTreeMap::new(),
            timepoint: 0,
            read_next: BTreeMap::new(),
            blocked: BTreeSet::new(),
            finishing: BTreeSet::new(),
            peer_finished: BTreeSet::new(),
            digest: Digest::default(),
        };
        harness.add_connection(u, ConnectionKind::Datagram)?;
        harness.add_connection(u, ConnectionKind::Stream)?;
        Ok(harness)
    }

    pub(crate) fn add_connection(
        &mut self,
        u: &mut Unstructured,
        kind: ConnectionKind,
    ) -> Result<()> {
        let mtu = match kind {
            ConnectionKind::Datagram => *u.choose(&[1232, 548, 128, 1500, 200])?,
            ConnectionKind::Stream => *u.choose(&[64 * 1024, 1232, 128, 16 * 1024])?,
        };
        let params = ConnectionParams { kind, mtu };
        let id = ConnectionId(self.next_id);
        self.next_id += 1;
        self.endpoint
            .add_connection(self.now, id, PEER, params)
            .expect("a fresh id and a valid MTU");
        self.live.insert(id, params);
        Ok(())
    }

    /// A live connection of `kind` if there is one, else any live one, else an unknown id.
    pub(crate) fn pick_connection(
        &self,
        u: &mut Unstructured,
        kind: ConnectionKind,
    ) -> Result<(ConnectionId, Option<ConnectionKind>)> {
        let of_kind: Vec<ConnectionId> = self
            .live
            .iter()
            .filter(|(_, params)| params.kind == kind)
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
        Ok((id, self.live.get(&id).map(|params| params.kind)))
    }

    pub(crate) fn stream_id(&self, u: &mut Unstructured) -> Result<i64> {
        Ok(match u.int_in_range(0..=7u8)? {
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
        let chunked = self.live.get(&connection).map(|params| params.kind)
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

    pub(crate) fn mix(&mut self, value: u64) {
        self.digest.mix(value);
    }
}
