//! The endpoint's timers: idle connections declared dead, pings and acknowledgements falling due,
//! flights declared lost by time and by the retransmission timeout.

use std::time::{Duration, Instant};

use atbus_proto::protocol::{AtbusCloseReason, CloseReasonData};

use super::Endpoint;
use crate::engine::event::Event;
use crate::engine::transmit::ConnectionId;

/// The retransmission timeout doubles at most this many times.
const MAX_BACKOFF: u32 = 16;

impl Endpoint {
    /// The retransmission timeout for data to `peer`: the largest of its live connections', within
    /// the configured bounds, doubled for each timeout in a row.
    pub(super) fn rto(&self, peer: &str) -> Duration {
        let Some(state) = self.peers.get(peer) else {
            return self.config.max_rto;
        };
        let direct = state
            .connections
            .iter()
            .filter_map(|id| self.connections.get(id))
            .map(|connection| connection.rtt.rto())
            .max();
        // Through a relay: the whole path's, once measured.
        let routed = || state.route_rtt.as_ref().map(|rtt| rtt.rto());
        let base = direct
            .or_else(routed)
            .unwrap_or(self.config.initial_rtt * 3)
            .clamp(self.config.min_rto, self.config.max_rto);
        (base * 2u32.pow(state.rto_backoff.min(MAX_BACKOFF))).min(self.config.max_rto)
    }

    /// The loss delay for data to `peer`: the largest of its live connections'.
    fn loss_delay(&self, peer: &str) -> Duration {
        let state = self.peers.get(peer);
        state
            .into_iter()
            .flat_map(|state| state.connections.iter())
            .filter_map(|id| self.connections.get(id))
            .map(|connection| connection.rtt.loss_delay())
            .max()
            .or_else(|| {
                state
                    .and_then(|state| state.route_rtt.as_ref())
                    .map(|rtt| rtt.loss_delay())
            })
            .unwrap_or(self.config.initial_rtt)
    }

    /// Lets the time pass: acts on every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        self.handshake_timeouts(now);
        let dead: Vec<ConnectionId> = self
            .connections
            .iter()
            // A connection in its handshake has the handshake's own deadline.
            .filter(|(_, state)| {
                state.is_established() && state.last_received + self.config.idle_timeout <= now
            })
            .map(|(&id, _)| id)
            .collect();
        for id in dead {
            let reason = CloseReasonData {
                code: AtbusCloseReason::PeerReset as i32,
                message: format!("silent for {:?}", self.config.idle_timeout),
            };
            self.drop_connection(now, id, reason);
        }

        let names: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, peer)| peer.needs_timers())
            .map(|(name, _)| name.clone())
            .collect();
        for name in names {
            let rto = self.rto(&name);
            let loss_delay = self.loss_delay(&name);
            let reachable = self.can_reach(&name);
            let Some(peer) = self.peers.get_mut(&name) else {
                continue;
            };
            if peer.ack_deadline.is_some_and(|at| at <= now) {
                // Due: it goes with the next transmit (the deadline is done with).
                peer.ack_now = true;
                peer.ack_deadline = None;
            }
            if !reachable {
                continue; // nothing can be resent until a connection comes
            }
            if let Some(timeout) = self.config.message_timeout {
                for (&stream_id, stream) in peer.send.iter_mut() {
                    let expired = stream.expire(now, timeout);
                    super::settle(&mut self.connections, &mut self.stats, stream, now, true);
                    if let Some((count, units)) = expired {
                        peer.unacked_units -= units;
                        self.stats.messages_expired += count as u64;
                        self.events.push_back(Event::MessagesExpired {
                            peer: name.clone(),
                            stream_id: stream_id.into(),
                            count,
                        });
                    }
                }
            }
            let mut timed_out = false;
            for stream in peer.send.values_mut() {
                self.stats.flights_lost += stream.detect_lost(now, loss_delay) as u64;
                let expired = stream.on_timeout(now, rto);
                self.stats.flights_lost += expired as u64;
                super::settle(&mut self.connections, &mut self.stats, stream, now, true);
                timed_out |= expired > 0;
            }
            if timed_out {
                peer.rto_backoff += 1;
                peer.probe_owed = true;
                self.stats.rto_fired += 1;
            }
            self.wake_blocked(&name);
            self.wake_peer(&name);
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |at: Option<Instant>| {
            if let Some(at) = at {
                next = Some(next.map_or(at, |current| current.min(at)));
            }
        };
        consider(self.handshake_timer());
        consider(self.announce_at());
        for state in self.connections.values() {
            if state.is_established() {
                consider(Some(state.last_received + self.config.idle_timeout));
            }
            // An address not yet proven gets no pings (they would not fit its budget), nor does a
            // connection whose transport is backed up (it would not take them).
            if state.is_established() && state.validated && !state.transport_blocked {
                consider(Some(state.last_ping.map_or(self.epoch, |last| {
                    last + self.config.keep_alive_interval
                })));
            }
        }
        for (name, peer) in &self.peers {
            // Nothing can go to a peer without connections: no timer may keep firing for it.
            if !peer.needs_timers() || !self.can_reach(name) {
                continue;
            }
            consider(peer.ack_deadline);
            let rto = self.rto(name);
            let loss_delay = self.loss_delay(name);
            // Probes and resets wait while the connection they would go on is backed up.
            let blocked = self
                .data_connection(name)
                .and_then(|id| self.connections.get(&id))
                .is_some_and(|connection| connection.transport_blocked);
            for stream in peer.send.values() {
                consider(stream.loss_time(loss_delay));
                consider(stream.timeout_at(rto));
                if !blocked {
                    consider(stream.probe_at(rto));
                    consider(stream.reset_at());
                }
                if let Some(timeout) = self.config.message_timeout {
                    consider(stream.expiry_at(timeout));
                }
            }
        }
        next
    }
}
