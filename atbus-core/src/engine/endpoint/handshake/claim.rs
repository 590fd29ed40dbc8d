//! Who holds a name. A hello may name a peer this endpoint already has connections to, with
//! another instance (`docs/protocol.md` 8.3, the last rule). Either the holder is gone and the
//! newcomer is its restart (the streams start over, section 5.15), or a second node was started
//! with the same name: then the newcomer is refused with `name_taken` and the holder keeps its
//! connections and streams. Letting both in made them displace each other at every frame.
//!
//! Alive means heard from lately, and answering. The holder is taken as gone when none of its
//! connections has heard from it for 1.5 keep-alive intervals (it pings at least that often),
//! or when it did not answer the ping sent at the first claim within [`PROBE_TIMEOUT`] (or four
//! round trips, if longer). So a node that crashed without closing its connections (a datagram
//! transport, a host that vanished) gets its name back at its first redial after the probe, not
//! after the idle timeout; a live one keeps it however often the newcomer tries.

use std::time::{Duration, Instant};

use crate::engine::endpoint::Endpoint;
use crate::engine::endpoint::restart::instance_tag;

/// The shortest wait for the holder's answer to the claim's ping.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

impl Endpoint {
    /// Whether `name` is held by an instance other than `instance` that is alive. A claim on a
    /// live name pings the holder on each of its connections, unless a ping for an earlier
    /// claim is still waiting for its answer.
    ///
    /// A hello of the same instance is another connection of the same node, and a hello
    /// without an instance cannot be told apart: neither is a claim.
    pub(super) fn name_held_by_live_instance(
        &mut self,
        now: Instant,
        name: &str,
        instance: &[u8],
    ) -> bool {
        let Some(peer) = self.peers.get(name) else {
            return false;
        };
        let Some(known) = peer.instance.as_deref() else {
            return false;
        };
        if instance.is_empty() || instance_tag(known) == instance_tag(instance) {
            return false;
        }
        let established = peer
            .connections
            .iter()
            .filter_map(|id| self.connections.get(id).map(|state| (*id, state)))
            .filter(|(_, state)| state.is_established());
        let mut heard: Option<Instant> = None;
        let mut round_trip = Duration::ZERO;
        let mut holders = Vec::new();
        for (id, state) in established {
            heard = heard.max(Some(state.last_received));
            round_trip = round_trip.max(state.rtt.smoothed());
            holders.push(id);
        }
        let Some(heard) = heard else {
            return false;
        };
        if now.saturating_duration_since(heard) >= self.config.keep_alive_interval * 3 / 2 {
            return false; // silent: gone
        }
        let probe_timeout = PROBE_TIMEOUT.max(round_trip * 4);
        match peer.name_probe {
            // Pinged for an earlier claim, not heard from since, and the answer is overdue.
            Some(sent) if heard < sent && now.saturating_duration_since(sent) >= probe_timeout => {
                false
            }
            // Pinged, and the answer may still come.
            Some(sent) if heard < sent => true,
            // Not pinged yet, or it answered the last ping: ask again.
            _ => {
                if let Some(peer) = self.peers.get_mut(name) {
                    peer.name_probe = Some(now);
                }
                for id in holders {
                    if let Some(state) = self.connections.get_mut(&id) {
                        state.last_ping = None; // due at once
                    }
                    self.wake.insert(id);
                }
                true
            }
        }
    }
}
