//! Route tables between relays (`docs/protocol.md` section 5.9). A relay tells each relay it is
//! connected to which nodes it can reach: its own nodes at 0 hops, and what the other relays told
//! it, one hop further, up to [`MAX_HOPS`]; never what it learned from the receiver itself (split
//! horizon). A table goes as one message on stream −4, reliable and ordered like any stream, and
//! replaces the previous one; it is sent on connect, after changes (at most every
//! [`ANNOUNCE_EVERY`]), and so again in full after a reconnection. A relay forwards a frame for a
//! node it does not hold to the relay offering the fewest hops.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use atbus_proto::routing::{Route, RouteTable};
use bytes::Bytes;
use prost::Message;

use super::Endpoint;
use crate::engine::error::SendError;
use crate::engine::message::MessageMeta;

/// The bus's stream of route tables between relays.
pub(crate) const ROUTES_STREAM: i64 = -4;

/// Routes longer than this many relays are dropped: loops in the tables count up to it and stop.
pub const MAX_HOPS: u32 = 16;

/// Changes are announced at most this often.
pub(crate) const ANNOUNCE_EVERY: Duration = Duration::from_millis(50);

/// What a relay knows of the other relays' routes.
#[derive(Debug, Default)]
pub(crate) struct Mesh {
    /// For each relay peer, the nodes it offered and the hops from here through it.
    tables: BTreeMap<String, BTreeMap<String, u32>>,
    /// Something changed since the last announcement.
    dirty: bool,
    /// When the tables last went out.
    last_announce: Option<Instant>,
}

impl Endpoint {
    /// The relay to forward a frame for `node` to: the one offering the fewest hops, other than
    /// `except` (the relay the frame came from).
    pub(super) fn mesh_next_hop(&self, node: &str, except: &str) -> Option<&str> {
        self.mesh
            .tables
            .iter()
            .filter(|(relay, _)| relay.as_str() != except && self.is_relay_peer(relay))
            .filter_map(|(relay, table)| table.get(node).map(|&hops| (hops, relay)))
            .min()
            .map(|(_, relay)| relay.as_str())
    }

    /// Relays: the routes other relays offered, as (node, relay, hops), the fewest hops per node.
    pub fn relay_routes(&self) -> Vec<(String, String, u32)> {
        let mut best: BTreeMap<&str, (u32, &str)> = BTreeMap::new();
        for (relay, table) in &self.mesh.tables {
            if !self.is_relay_peer(relay) {
                continue;
            }
            for (node, &hops) in table {
                let entry = best.entry(node).or_insert((hops, relay));
                *entry = (*entry).min((hops, relay));
            }
        }
        best.into_iter()
            .map(|(node, (hops, relay))| (node.to_string(), relay.to_string(), hops))
            .collect()
    }

    /// Relays: bytes of forwarded frames waiting for their connections.
    pub fn forward_queued_bytes(&self) -> usize {
        self.connections
            .values()
            .map(|connection| connection.forward_bytes)
            .sum()
    }

    /// Notes that the nodes this relay can reach may have changed.
    pub(super) fn routes_changed(&mut self) {
        if self.config.auth.relay {
            self.mesh.dirty = true;
        }
    }

    /// Forgets the routes `relay` offered (it is gone).
    pub(super) fn forget_relay_routes(&mut self, relay: &str) {
        if self.mesh.tables.remove(relay).is_some() {
            self.routes_changed();
        }
    }

    /// When the next announcement is due, if one is.
    pub(super) fn announce_at(&self) -> Option<Instant> {
        if !self.mesh.dirty {
            return None;
        }
        Some(
            self.mesh
                .last_announce
                .map_or(self.epoch, |last| last + ANNOUNCE_EVERY),
        )
    }

    /// Queues this relay's table to each relay peer, when due.
    pub(super) fn announce_routes(&mut self, now: Instant) {
        if self.announce_at().is_none_or(|at| at > now) {
            return;
        }
        let relays: Vec<String> = self
            .peers
            .keys()
            .filter(|name| self.is_relay_peer(name))
            .cloned()
            .collect();
        let mut blocked = false;
        for relay in relays {
            let table = Bytes::from(self.table_for(&relay).encode_to_vec());
            match self.queue_message(&relay, ROUTES_STREAM, table, MessageMeta::default()) {
                Ok(_) => {}
                // Its window is full: the next announcement carries the whole table anyway.
                Err(SendError::WouldBlock { .. }) => blocked = true,
                Err(error) => tracing::warn!(%error, relay, "route table not sent"),
            }
        }
        self.mesh.dirty = blocked;
        self.mesh.last_announce = Some(now);
    }

    /// The routes offered to `relay`: this relay's own nodes, and what the other relays offered,
    /// one hop further, within the limit.
    fn table_for(&self, relay: &str) -> RouteTable {
        let mut routes: BTreeMap<&str, u32> = BTreeMap::new();
        for (name, peer) in &self.peers {
            if !peer.connections.is_empty() && !self.is_relay_peer(name) {
                routes.insert(name, 0);
            }
        }
        for (other, table) in &self.mesh.tables {
            if other == relay || !self.is_relay_peer(other) {
                continue; // split horizon; and only live relays
            }
            for (node, &hops) in table {
                if hops < MAX_HOPS && node != relay {
                    let entry = routes.entry(node).or_insert(hops);
                    *entry = (*entry).min(hops);
                }
            }
        }
        RouteTable {
            routes: routes
                .into_iter()
                .map(|(node, hops)| Route {
                    node: node.to_string(),
                    hops,
                })
                .collect(),
        }
    }

    /// Takes the route tables `peer` sent: kept if this endpoint is a relay and `peer` one too,
    /// dropped otherwise.
    pub(super) fn take_route_tables(&mut self, peer: &str) {
        let accept = self.config.auth.relay && self.is_relay_peer(peer);
        while let Some(message) = self.read(peer, ROUTES_STREAM) {
            if !accept {
                continue;
            }
            let Ok(table) = RouteTable::decode(message.data) else {
                self.stats.invalid_packets += 1;
                continue;
            };
            let routes = table
                .routes
                .into_iter()
                .filter(|route| route.node != self.name && route.hops < MAX_HOPS)
                .map(|route| (route.node, route.hops + 1))
                .collect();
            self.mesh.tables.insert(peer.to_string(), routes);
            self.routes_changed();
        }
    }
}
