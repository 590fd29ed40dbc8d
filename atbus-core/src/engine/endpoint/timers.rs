//! What happens when the endpoint's timers fire: idle connections declared dead, pings and
//! acknowledgements falling due, flights declared lost by time and by the retransmission timeout,
//! messages expiring, departed peers dropped. Only what is due is looked at: the timer index
//! (`engine/timer.rs`, kept by `endpoint/deadlines.rs`) says what that is.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use atbus_proto::protocol::{AtbusCloseReason, CloseReasonData};

use super::Endpoint;
use crate::engine::event::Event;
use crate::engine::timer::TimerKey;
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
    pub(super) fn loss_delay(&self, peer: &str) -> Duration {
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

    /// Lets the time pass: acts on every timer due at `now`, and on nothing else.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        let mut done: HashSet<TimerKey> = HashSet::new();
        // Acting on a timer may make another due at once (a dead connection's flights go
        // elsewhere, and the peer's retransmission timeout changes): a few rounds take those too.
        for _ in 0..3 {
            self.rearm();
            let mut due = Vec::new();
            while let Some(key) = self.timers.get_mut().pop_due(now) {
                due.push(key);
            }
            // Popped keys are disarmed: each is noted, to be armed again with what is left.
            for &key in &due {
                match key {
                    TimerKey::Connection(id) => self.wake.note(id),
                    TimerKey::Peer(id) => self.peers.touch_id(id),
                }
            }
            due.retain(|key| done.insert(*key));
            if due.is_empty() {
                break;
            }
            due.sort();
            let mut names = Vec::new();
            for key in due {
                match key {
                    TimerKey::Connection(id) => self.connection_timers(now, id),
                    TimerKey::Peer(id) => {
                        names.extend(self.peers.by_id(id).map(|(name, _)| name.to_string()))
                    }
                }
            }
            for name in names {
                self.peer_timers(now, &name);
                self.depart_if_due(now, &name);
            }
        }
    }

    /// Connection `id`'s timers at `now`: its handshake's, its idle timeout, its keep-alive ping.
    fn connection_timers(&mut self, now: Instant, id: ConnectionId) {
        self.handshake_timeout(now, id);
        let Some(state) = self.connections.get(&id) else {
            return;
        };
        // A connection in its handshake has the handshake's own deadline.
        if state.is_established() && state.last_received + self.config.idle_timeout <= now {
            let reason = CloseReasonData {
                code: AtbusCloseReason::PeerReset as i32,
                message: format!("silent for {:?}", self.config.idle_timeout),
            };
            self.drop_connection(now, id, reason);
            return;
        }
        if self.ping_due(state).is_some_and(|at| at <= now) {
            self.wake.insert(id);
        }
    }

    /// The timers of peer `name` at `now`: its acknowledgement falling due, its streams'
    /// messages expiring, flights declared lost by time and by the retransmission timeout.
    fn peer_timers(&mut self, now: Instant, name: &str) {
        let rto = self.rto(name);
        let loss_delay = self.loss_delay(name);
        let reachable = self.can_reach(name);
        let Some(peer) = self.peers.get_mut(name) else {
            return;
        };
        if !peer.needs_timers() {
            return;
        }
        if peer.ack_deadline.is_some_and(|at| at <= now) {
            // Due: it goes with the next transmit (the deadline is done with).
            peer.ack_now = true;
            peer.ack_deadline = None;
        }
        if !reachable {
            return; // nothing can be resent until a connection comes
        }
        if let Some(timeout) = self.config.message_timeout {
            for (&stream_id, stream) in peer.send.iter_mut() {
                let expired = stream.expire(now, timeout);
                super::settle(&mut self.connections, &mut self.stats, stream, now, true);
                if let Some((count, units)) = expired {
                    peer.unacked_units -= units;
                    self.stats.messages_expired += count as u64;
                    self.events.push_back(Event::MessagesExpired {
                        peer: name.to_string(),
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
        self.wake_blocked(name);
        self.wake_peer(name);
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called, if ever: a peek at
    /// the timer index, once it is brought up to date with what changed since the last call.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.rearm();
        #[cfg(debug_assertions)]
        self.check_timers();
        let next = self.timers.borrow().next();
        [next, self.announce_at()].into_iter().flatten().min()
    }
}
