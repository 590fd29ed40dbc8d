//! Route tables between relays (`docs/protocol.md` section 5.9). A relay tells each relay it is
//! connected to which nodes it can reach: its own nodes at 0 hops, and what the other relays told
//! it, one hop further, up to [`MAX_HOPS`]; never what it learned from the receiver itself (split
//! horizon). A table goes as one message on stream −4, reliable and ordered like any stream, and
//! replaces the previous one. A relay forwards a frame for a node it does not hold to the relay
//! offering the fewest hops.
//!
//! When a table goes out, and to whom: the relays a relay owes its table are kept by name.
//!
//! - All of them after a change of what it can reach, at most every [`ANNOUNCE_EVERY`]: a node
//!   of its own came or went, a relay connected (so a relay gets the whole table when it
//!   connects, and again after a reconnection) or went, or a table it took differs from the one
//!   it replaces. An identical table changes nothing, so two relays do not echo each other's
//!   tables back and forth.
//! - All of them again every [`REANNOUNCE_EVERY`], change or not: whatever kept a table from
//!   arriving or from being applied, the next full round repairs it.
//! - One relay on demand: a relay that sends this one a frame for a node this one cannot reach
//!   holds a stale table of it (`route.rs`).
//! - A relay stays owed until its table is queued: a full window (the previous tables are not
//!   acknowledged yet) or any other refusal is tried again [`ANNOUNCE_EVERY`] later, so no
//!   failure leaves a relay with an old table until the next change.
//!
//! Tables take time to cross the mesh: a frame can reach its destination through a relay before
//! that relay has the table that leads back to its originator. Until the tables do, the routes a
//! relay learns from the frames it forwards lead the replies back (`provisional.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use atbus_proto::routing::{Route, RouteTable};
use bytes::Bytes;
use prost::Message;

use super::Endpoint;
use super::provisional::Provisional;
use crate::engine::error::SendError;
use crate::engine::message::MessageMeta;
use crate::engine::stream_id::StreamId;

/// Routes longer than this many relays are dropped: loops in the tables count up to it and stop.
pub const MAX_HOPS: u32 = 16;

/// Changes are announced at most this often.
pub(crate) const ANNOUNCE_EVERY: Duration = Duration::from_millis(50);

/// Every relay is sent the whole table this often, whether it changed or not.
pub(crate) const REANNOUNCE_EVERY: Duration = Duration::from_secs(20);

/// What a relay knows of the other relays' routes, and what it owes them of its own.
#[derive(Debug, Default)]
pub(crate) struct Mesh {
    /// For each relay peer, the nodes it offered and the hops from here through it.
    tables: BTreeMap<String, BTreeMap<String, u32>>,
    /// The relays owed this relay's table.
    owed: BTreeSet<String>,
    /// The relays whose last table could not be queued (logged once per run of failures).
    failing: BTreeSet<String>,
    /// When tables last went out.
    last_announce: Option<Instant>,
    /// When every relay was last sent the whole table.
    last_full: Option<Instant>,
    /// Routes learned from forwarded frames, for the nodes the tables do not offer yet.
    pub(super) provisional: Provisional,
}

impl Endpoint {
    /// The relay to forward a frame for `node` to: the one offering the fewest hops, other than
    /// `except` (the relay the frame came from).
    pub(super) fn mesh_next_hop(&self, node: &str, except: &str) -> Option<&str> {
        self.mesh()?
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
        let Some(mesh) = self.mesh() else {
            return Vec::new();
        };
        for (relay, table) in &mesh.tables {
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

    /// Notes that the nodes this relay can reach may have changed: every relay is owed the
    /// table.
    pub(super) fn routes_changed(&mut self) {
        if let Some(forwarder) = self.forwarder.as_deref_mut() {
            forwarder.mesh.owed.extend(self.relays.iter().cloned());
        }
    }

    /// Owes `relay` this relay's table at the next announcement (its view of this relay is
    /// stale).
    pub(super) fn owe_table(&mut self, relay: &str) {
        if !self.is_relay_peer(relay) {
            return;
        }
        if let Some(mesh) = self.mesh_mut() {
            if !mesh.owed.contains(relay) {
                mesh.owed.insert(relay.to_string());
            }
        }
    }

    /// Forgets the routes `relay` offered, and those learned through it (it is gone).
    pub(super) fn forget_relay_routes(&mut self, relay: &str) {
        let Some(mesh) = self.mesh_mut() else {
            return;
        };
        mesh.owed.remove(relay);
        mesh.failing.remove(relay);
        mesh.provisional.forget_relay(relay);
        if mesh.tables.remove(relay).is_some() {
            self.routes_changed();
        }
    }

    /// When the next announcement is due, if one is: a relay with relay peers announces at
    /// least every [`REANNOUNCE_EVERY`].
    pub(super) fn announce_at(&self) -> Option<Instant> {
        let mesh = self.mesh()?;
        if self.relays.is_empty() {
            return None;
        }
        let full = mesh
            .last_full
            .map_or(self.epoch, |last| last + REANNOUNCE_EVERY);
        if mesh.owed.is_empty() {
            return Some(full);
        }
        let throttled = mesh
            .last_announce
            .map_or(self.epoch, |last| last + ANNOUNCE_EVERY);
        Some(throttled.min(full))
    }

    /// Queues this relay's table to each relay owed it, when due.
    pub(super) fn announce_routes(&mut self, now: Instant) {
        if self.announce_at().is_none_or(|at| at > now) {
            return;
        }
        let Some(forwarder) = self.forwarder.as_deref_mut() else {
            return;
        };
        let mesh = &mut forwarder.mesh;
        if mesh
            .last_full
            .is_none_or(|last| last + REANNOUNCE_EVERY <= now)
        {
            mesh.owed.extend(self.relays.iter().cloned());
            mesh.last_full = Some(now);
            mesh.provisional.expire(now);
        }
        let owed = std::mem::take(&mut mesh.owed);
        for relay in owed {
            if !self.is_relay_peer(&relay) {
                continue; // gone since
            }
            let table = Bytes::from(self.table_for(&relay).encode_to_vec());
            let queued = self.queue_message(
                &relay,
                StreamId::ROUTES.get(),
                table,
                MessageMeta::default(),
            );
            let Some(mesh) = self.mesh_mut() else {
                return;
            };
            match queued {
                Ok(_) => {
                    mesh.failing.remove(&relay);
                }
                // Its window is full: tried again at the next round, with the table as it is then.
                Err(SendError::WouldBlock { .. }) => {
                    mesh.owed.insert(relay);
                }
                Err(error) => {
                    if mesh.failing.insert(relay.clone()) {
                        tracing::warn!(%error, relay, "route table not sent: trying again");
                    }
                    mesh.owed.insert(relay);
                }
            }
        }
        if let Some(mesh) = self.mesh_mut() {
            mesh.last_announce = Some(now);
        }
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
        let tables = self.mesh().map(|mesh| &mesh.tables).into_iter().flatten();
        for (other, table) in tables {
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
    /// dropped otherwise. A table that differs from the one it replaces is a change.
    pub(super) fn take_route_tables(&mut self, peer: &str) {
        let accept = self.forwarder.is_some() && self.is_relay_peer(peer);
        while let Some(message) = self.read(peer, StreamId::ROUTES.get()) {
            if !accept {
                continue;
            }
            let Ok(table) = RouteTable::decode(message.data) else {
                self.stats.invalid_packets += 1;
                continue;
            };
            let routes: BTreeMap<String, u32> = table
                .routes
                .into_iter()
                .filter(|route| route.node != self.name && route.hops < MAX_HOPS)
                .map(|route| (route.node, route.hops + 1))
                .collect();
            let Some(mesh) = self.mesh_mut() else {
                continue;
            };
            // The nodes the tables offer now need no provisional route.
            for node in routes.keys() {
                mesh.provisional.forget(node);
            }
            if mesh.tables.get(peer) != Some(&routes) {
                mesh.tables.insert(peer.to_string(), routes);
                self.routes_changed();
            }
        }
    }

    /// Whether some relay's table offers `node`.
    pub(super) fn tables_offer(&self, node: &str) -> bool {
        self.mesh().is_some_and(|mesh| {
            mesh.tables
                .iter()
                .any(|(relay, table)| table.contains_key(node) && self.is_relay_peer(relay))
        })
    }
}

#[cfg(test)]
mod tests;
