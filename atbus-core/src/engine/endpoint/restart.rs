//! A peer that restarted: its handshake brings a new instance, everything it had received is
//! gone, and the streams to it start over from offset 0. What it had not acknowledged is sent
//! again (at least once: a message the old instance took but did not acknowledge arrives twice);
//! what it had sent us and we had whole stays readable; its unfinished messages are dropped.

use atbus_proto::protocol::{AtbusCloseReason, CloseReasonData};
use bytes::Bytes;

use super::Endpoint;
use crate::engine::event::Event;
use crate::engine::reassembly::Reassembler;
use crate::engine::transmit::ConnectionId;

impl Endpoint {
    /// Notes the instance `peer` proved on `connection`; if it differs from the one known, the
    /// peer restarted: its streams start over and its other connections (to the old instance)
    /// are closed.
    pub(super) fn note_instance(
        &mut self,
        peer_name: &str,
        instance: Bytes,
        connection: ConnectionId,
    ) {
        if instance.is_empty() {
            return;
        }
        let peer = self.peers.entry(peer_name.to_string()).or_default();
        let restarted = peer
            .instance
            .as_ref()
            .is_some_and(|known| *known != instance);
        peer.instance = Some(instance);
        if restarted {
            self.restart_peer(peer_name, connection);
        }
    }

    fn restart_peer(&mut self, peer_name: &str, current: ConnectionId) {
        let (budget, window) = (
            self.config.peer_receive_budget,
            self.config.stream_receive_window,
        );
        let initial_window = self.config.initial_window;
        let Some(peer) = self.peers.get_mut(peer_name) else {
            return;
        };
        tracing::info!(peer = peer_name, "peer restarted: its streams start over");
        // Receive side: keep the whole messages, forget the rest.
        let mut held = 0;
        for stream in peer.recv.values_mut() {
            while let Some(message) = stream.reassembler.pop_message() {
                stream.carried.push_back(message);
            }
            held += stream.carried.iter().map(|m| m.data.len()).sum::<usize>();
            stream.reassembler = Reassembler::new(budget, window);
            stream.advertised = 0;
        }
        peer.recv.retain(|_, stream| !stream.carried.is_empty());
        peer.received_held = held;
        peer.ack_pending.clear();
        peer.ack_now = false;
        peer.ack_deadline = None;
        peer.packets_since_ack = 0;
        peer.rto_backoff = 0;
        // Send side: everything unacknowledged again, from offset 0.
        let mut unacked = 0;
        for stream in peer.send.values_mut() {
            unacked += stream.restart(initial_window);
            super::settle(
                &mut self.connections,
                &mut self.stats,
                stream,
                self.clock,
                false,
            );
        }
        peer.unacked_units = unacked;
        let old: Vec<ConnectionId> = peer
            .connections
            .iter()
            .copied()
            .filter(|&id| id != current)
            .collect();
        for id in old {
            self.close_connection(
                id,
                CloseReasonData {
                    code: AtbusCloseReason::PeerReset as i32,
                    message: "the peer restarted".into(),
                },
            );
        }
        self.stats.peer_restarts += 1;
        self.events.push_back(Event::PeerRestarted {
            peer: peer_name.to_string(),
        });
    }
}
