//! Provisional routes: what a relay learns from the frames it forwards (`docs/protocol.md`
//! section 5.9).
//!
//! Route tables cross the mesh at most every 50 ms per relay, plus the time to travel: a request
//! from node x on relay a can reach node y on relay b before b has a's table offering x. Without
//! more, b would answer y's reply with ROUTER_NOT_FOUND, and y would drop it and refuse to send
//! to x for a second, although b has just forwarded a frame from x that came through a.
//!
//! So a relay that forwards a frame that came from another relay R, on behalf of an originator N
//! that no table offers, notes "N through R". It forwards frames for N to R when neither a
//! connection of N's nor a table leads to N, never back to the relay the frame came from. The
//! route holds for [`PROVISIONAL_FOR`] after the last frame that taught it, and goes as soon as a
//! table offers N (tables decide from then on) or R goes. It is never announced to other relays:
//! it only leads back along the path a frame came by.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::Endpoint;

/// A provisional route holds this long after the last frame that taught it: long enough for the
/// tables to converge, short enough that a stale one is soon gone.
pub(crate) const PROVISIONAL_FOR: Duration = Duration::from_secs(5);

/// The provisional routes of a relay: for each node, the relay its frames came through and until
/// when that holds.
#[derive(Debug, Default)]
pub(crate) struct Provisional {
    routes: BTreeMap<String, (String, Instant)>,
}

impl Provisional {
    /// Notes that a frame from `node` came through `relay` at `now`.
    fn learn(&mut self, node: &str, relay: &str, now: Instant) {
        let until = now + PROVISIONAL_FOR;
        match self.routes.get_mut(node) {
            Some((via, held)) if via == relay => *held = until,
            Some(route) => *route = (relay.to_string(), until),
            None => {
                self.routes
                    .insert(node.to_string(), (relay.to_string(), until));
            }
        }
    }

    /// The relay frames for `node` go to at `now`, if a provisional route holds.
    fn relay_for(&self, node: &str, now: Instant) -> Option<&str> {
        self.routes
            .get(node)
            .filter(|(_, until)| now < *until)
            .map(|(relay, _)| relay.as_str())
    }

    /// Drops the route to `node` (a table offers it).
    pub(super) fn forget(&mut self, node: &str) {
        self.routes.remove(node);
    }

    /// Drops the routes through `relay` (it is gone).
    pub(super) fn forget_relay(&mut self, relay: &str) {
        self.routes.retain(|_, (via, _)| via != relay);
    }

    /// Drops the routes that no longer hold at `now`.
    pub(super) fn expire(&mut self, now: Instant) {
        self.routes.retain(|_, (_, until)| now < *until);
    }

    /// How many routes are held.
    pub(super) fn len(&self) -> usize {
        self.routes.len()
    }
}

impl Endpoint {
    /// Relays: notes, for a frame from `originator` that came from the peer `from`, the way back
    /// to the originator, when `from` is a relay and neither a connection nor a table leads
    /// there.
    pub(super) fn learn_route_back(&mut self, originator: &str, from: &str) {
        if originator == from
            || !self.is_relay_peer(from)
            || self.best_connection(originator).is_some()
            || self.tables_offer(originator)
        {
            return;
        }
        let now = self.clock;
        if let Some(mesh) = self.mesh_mut() {
            mesh.provisional.learn(originator, from, now);
        }
    }

    /// The relay a provisional route leads to for `node`, other than `except`.
    pub(super) fn provisional_next_hop(&self, node: &str, except: &str) -> Option<&str> {
        self.mesh()?
            .provisional
            .relay_for(node, self.clock)
            .filter(|&relay| relay != except && self.is_relay_peer(relay))
    }

    /// Relays: how many provisional routes are held (learned from forwarded frames, for nodes
    /// no table offers yet).
    pub fn provisional_routes(&self) -> usize {
        self.mesh().map_or(0, |mesh| mesh.provisional.len())
    }
}

#[cfg(test)]
mod tests {
    use atbus_proto::protocol::frame_message::Body;
    use atbus_proto::protocol::{FrameMessage, MessageHead, PacketData};
    use bytes::{Bytes, BytesMut};

    use super::*;
    use crate::engine::endpoint::forwarder::tests::{
        frame_through_up, frames_sent_on, relay_between_up_and_b,
    };
    use crate::engine::stream_id::StreamId;
    use crate::engine::transmit::ConnectionId;

    const UP: ConnectionId = ConnectionId(1);
    const B: ConnectionId = ConnectionId(2);

    /// A window probe from node "b" (on the relay) to `destination`.
    fn from_b_to(relay: &Endpoint, destination: &str) -> Bytes {
        let frame = FrameMessage {
            head: Some(MessageHead {
                source: "b".into(),
                destination: destination.into(),
                ..Default::default()
            }),
            body: Some(Body::Packet(PacketData::default())),
        };
        let mut out = BytesMut::new();
        relay.codec.encode(&frame, &mut out).expect("encode");
        out.freeze()
    }

    /// Whether `frames` hold a routing notice.
    fn notice(frames: &[FrameMessage]) -> bool {
        frames.iter().any(|frame| {
            matches!(&frame.body, Some(Body::Packet(packet)) if packet.stream_id == StreamId::ROUTING.get())
        })
    }

    #[test]
    fn a_reply_goes_back_through_the_relay_the_request_came_from_before_any_table_offers_it() {
        let now = Instant::now();
        let mut relay = relay_between_up_and_b(now);
        relay.handle_input(now, UP, frame_through_up(&relay, "a", "b", 1));
        assert_eq!(relay.provisional_routes(), 1, "a through up");
        let _ = frames_sent_on(&mut relay, now, B);

        let later = now + Duration::from_millis(10);
        relay.handle_input(later, B, from_b_to(&relay, "a"));
        let to_up = frames_sent_on(&mut relay, later, UP);
        assert!(
            to_up.iter().any(|frame| frame
                .head
                .as_ref()
                .is_some_and(|head| head.destination == "a" && head.forward_for_source == "b")),
            "b's reply went up: {to_up:?}"
        );
        assert_eq!(relay.stats().forward_dropped.get("no_route"), None);
    }

    #[test]
    fn a_provisional_route_expires_when_no_frame_renews_it() {
        let now = Instant::now();
        let mut relay = relay_between_up_and_b(now);
        relay.handle_input(now, UP, frame_through_up(&relay, "a", "b", 1));
        // "a" sends nothing more.
        let expired = now + PROVISIONAL_FOR;
        relay.handle_input(expired, B, from_b_to(&relay, "a"));
        let to_b = frames_sent_on(&mut relay, expired, B);
        assert!(notice(&to_b), "no route to a any more: {to_b:?}");
        assert_eq!(relay.stats().forward_dropped.get("no_route"), Some(&1));
    }

    #[test]
    fn a_routing_notice_passing_through_teaches_no_route() {
        let now = Instant::now();
        let mut relay = relay_between_up_and_b(now);
        // "up" tells b that it knows no route to "gone": the notice names "gone" as its subject.
        let frame = FrameMessage {
            head: Some(MessageHead {
                source: "up".into(),
                destination: "b".into(),
                forward_for_source: "gone".into(),
                hop_count: 1,
                ..Default::default()
            }),
            body: Some(Body::Packet(PacketData {
                stream_id: StreamId::ROUTING.get(),
                ..Default::default()
            })),
        };
        let mut out = BytesMut::new();
        relay.codec.encode(&frame, &mut out).expect("encode");
        relay.handle_input(now, UP, out.freeze());
        assert_eq!(relay.provisional_routes(), 0);
    }
}
