//! The relay modes (`docs/protocol.md` 5.9): which of b, "a" and the extra peers "c" and "d" are
//! there and are relays; connections to relay peers opened by a real handshake with a scratch
//! endpoint of the peer's name (its accept says `role = relay`, so b lets frames on them carry
//! `forward_for_*`); what relays send besides packets and acknowledgements (routing notices on
//! stream -3, route tables on stream -4); floods of frames for b to forward; and the digest of a
//! frame as b should forward it.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use arbitrary::{Result, Unstructured};
use atbus_core::engine::{
    ConnectOptions, ConnectionId, ConnectionParams, Credential, Endpoint, EngineConfig, Event,
    ForwardOverflow, Token, Transmit,
};
use atbus_core::sim::{BackToBack, End};
use atbus_proto::protocol::packet_content::FragmentType;
use atbus_proto::protocol::{
    AtbusCloseReason, AtbusPacketFlagType, CloseReasonData, FrameMessage, MessageHead,
    PacketContent, PacketData, frame_message::Body,
};
use atbus_proto::routing::{Route, RouteTable};
use bytes::{Bytes, BytesMut};
use prost::Message;

use crate::common::{short_string, start};
use crate::input::{close_reason, int64};
use crate::peer::peer_codec;
use crate::world::{Harness, Link, known};
use crate::{FORWARD_QUEUE_LIMIT, LOCAL, MAX_FRAME_LENGTH, NAMES};

/// The Unix time of the start of a run, for b and the scratch endpoints alike.
pub(crate) const BASE_UNIX: Duration = Duration::from_secs(1_700_000_000);

/// The bus's stream of routing notices.
pub(crate) const ROUTING_STREAM: i64 = -3;
/// The bus's stream of route tables between relays.
pub(crate) const ROUTES_STREAM: i64 = -4;

/// Rounds of the handshake exchange before it must be over.
const MAX_HANDSHAKE_ROUNDS: usize = 64;

/// Who is there and who is a relay.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mode {
    /// b forwards frames for others.
    pub(crate) b_relay: bool,
    /// "a" is a relay: frames from it may speak for other nodes.
    pub(crate) a_relay: bool,
    /// A second direct peer "c" (not a relay).
    pub(crate) c: bool,
    /// A third direct peer "d", a relay.
    pub(crate) d: bool,
}

impl Mode {
    pub(crate) fn from_byte(byte: u8) -> Self {
        Self {
            b_relay: byte & 1 != 0,
            a_relay: byte & 2 != 0,
            c: byte & 4 != 0,
            d: byte & 8 != 0,
        }
    }

    /// Whether `peer` is a relay (its connections come by handshake).
    pub(crate) fn is_relay(&self, peer: &str) -> bool {
        match peer {
            "a" => self.a_relay,
            "d" => true,
            _ => false,
        }
    }

    /// The peers b has direct connections to.
    pub(crate) fn direct_peers(&self) -> Vec<&'static str> {
        let mut peers = vec!["a"];
        if self.c {
            peers.push("c");
        }
        if self.d {
            peers.push("d");
        }
        peers
    }
}

/// b's forward queues in a relay mode: the default limit or a smaller one, and an overflow policy.
pub(crate) fn forward_queues(u: &mut Unstructured, config: &mut EngineConfig) -> Result<()> {
    config.forward_queue_limit = *u.choose(&[FORWARD_QUEUE_LIMIT, 256 * 1024, 64 * 1024, 1000])?;
    config.forward_overflow = *u.choose(&[
        ForwardOverflow::DropNewest,
        ForwardOverflow::DropOldest,
        ForwardOverflow::Disconnect,
    ])?;
    Ok(())
}

fn token() -> Token {
    Token::new("engine_input: the relays' token").expect("long enough")
}

/// An endpoint named `name` that accepts b's token and is a relay.
fn scratch(name: &str) -> Endpoint {
    let mut config = EngineConfig {
        max_frame_length: MAX_FRAME_LENGTH,
        ..EngineConfig::default()
    };
    config.auth.tokens = vec![token()];
    config.auth.relay = true;
    // The same instance every time: a new connection is not a restart.
    config.auth.rng_seed = Some([0x2d; 32]);
    let mut endpoint = Endpoint::new(name, config, start());
    endpoint.set_unix_time(start(), BASE_UNIX);
    endpoint
}

/// A digest of `frame` as encoded.
pub(crate) fn digest(frame: &FrameMessage) -> u64 {
    let mut hasher = DefaultHasher::new();
    frame.encode_to_vec().hash(&mut hasher);
    hasher.finish()
}

impl Harness {
    /// Opens a connection to the relay `peer` with a real handshake: b connects with the token,
    /// a scratch endpoint named `peer` accepts, and the two exchange back to back (the sim's
    /// `BackToBack`) until both are quiet. Then the scratch endpoint is dropped and the harness
    /// speaks for `peer` on the connection.
    pub(crate) fn handshake(&mut self, peer: &'static str, params: ConnectionParams) {
        let mut other = Scratch {
            endpoint: scratch(peer),
            peer,
        };
        let options = ConnectOptions {
            peer: Some(peer.to_string()),
            credential: Credential::Token(token()),
            early_data: false,
            relay: self.mode.is_some_and(|mode| mode.b_relay),
            resume: false,
        };
        let link = BackToBack::connect(
            self.now,
            &mut self.endpoint,
            &mut other.endpoint,
            params,
            options,
        )
        .expect("a valid MTU");
        let id = link.a;
        self.note_id(id);
        self.handshaking = Some((id, params));
        link.exchange(self.now, self, &mut other, MAX_HANDSHAKE_ROUNDS);
        self.handshaking = None;
        let link = self
            .live
            .get(&id)
            .unwrap_or_else(|| panic!("the handshake with the scratch {peer} did not complete"));
        assert!(link.relay, "{peer}'s accept said relay");
    }

    /// b's `Authenticated` for the connection being opened.
    pub(crate) fn authenticated(&mut self, connection: ConnectionId, peer: &str) {
        let Some((id, params)) = self.handshaking else {
            panic!("Authenticated for {connection} while no handshake runs");
        };
        assert_eq!(connection, id, "Authenticated for another connection");
        let relay = self
            .endpoint
            .peer_identity(connection)
            .is_some_and(|identity| identity.relay);
        self.live.insert(
            connection,
            Link {
                params,
                peer: known(peer),
                relay,
            },
        );
    }

    /// A name of [`NAMES`], or now and then none or another one.
    pub(crate) fn name(u: &mut Unstructured) -> Result<String> {
        Ok(match u.int_in_range(0..=15u8)? {
            0 => String::new(),
            1 => short_string(u)?,
            _ => (*u.choose(&NAMES)?).to_string(),
        })
    }

    /// The head of a frame from `sender` in a relay mode: mostly for b, else for another name
    /// (for b to forward); from a relay, often speaking for another node.
    pub(crate) fn relay_head(
        &self,
        u: &mut Unstructured,
        sender: &'static str,
        relay: bool,
    ) -> Result<Option<MessageHead>> {
        if u.ratio(1, 32)? {
            return Ok(None);
        }
        let source = match u.int_in_range(0..=31u8)? {
            0 => Self::name(u)?,
            _ => sender.to_string(),
        };
        let destination = match u.int_in_range(0..=7u8)? {
            0..=3 => LOCAL.to_string(),
            _ => Self::name(u)?,
        };
        let (forward_for_source, forward_for_connection_id) = if relay && u.ratio(2, 3)? {
            let id = match u.int_in_range(0..=3u8)? {
                0 => int64(u)?,
                _ => 0,
            };
            // Only the harness's names: every peer b keeps counts against the memory bound.
            let originator = match u.int_in_range(0..=15u8)? {
                0 => String::new(),
                _ => (*u.choose(&NAMES)?).to_string(),
            };
            (originator, id)
        } else if u.ratio(1, 64)? {
            ("x".to_string(), 0)
        } else {
            (String::new(), 0)
        };
        // Around the hop limit (16), or anything.
        let hop_count = match u.int_in_range(0..=7u8)? {
            0 => u.arbitrary()?,
            1 => 15,
            2 => 16,
            _ => 0,
        };
        Ok(Some(MessageHead {
            source,
            destination,
            forward_for_source,
            forward_for_connection_id,
            hop_count,
            // Tags only as the engine stamps them (the frames it sends, forwarded below).
            ..Default::default()
        }))
    }

    /// A routing notice from a relay: no route (a fragment with a close reason, FINISH_STREAM),
    /// or the largest frame the path takes (no fragment).
    pub(crate) fn notice(&self, u: &mut Unstructured) -> Result<Body> {
        let mut packet = PacketData {
            stream_id: ROUTING_STREAM,
            timepoint_microseconds: self.elapsed_micros(),
            ..Default::default()
        };
        if u.arbitrary()? {
            let reason = if u.ratio(3, 4)? {
                CloseReasonData {
                    code: AtbusCloseReason::RouterNotFound as i32,
                    message: short_string(u)?,
                }
            } else {
                close_reason(u)?
            };
            let fragment = FragmentType {
                close_reason: Some(reason),
                ..Default::default()
            };
            packet.content = Bytes::from(
                PacketContent {
                    fragment: vec![fragment],
                }
                .encode_to_vec(),
            );
            packet.flags = if u.ratio(7, 8)? {
                AtbusPacketFlagType::FinishStream as i32
            } else {
                u.arbitrary()?
            };
        } else {
            packet.stream_offset = match u.int_in_range(0..=3u8)? {
                0 => int64(u)?,
                _ => *u.choose(&[1, 64, 127, 128, 129, 200, 548, 1232, 16 * 1024, 64 * 1024])?,
            };
        }
        Ok(Body::Packet(packet))
    }

    /// A route table: some of the names, at arbitrary hops.
    pub(crate) fn route_table(u: &mut Unstructured) -> Result<Bytes> {
        let count = u.int_in_range(0..=6)?;
        let mut routes = Vec::with_capacity(count);
        for _ in 0..count {
            routes.push(Route {
                node: Self::name(u)?,
                hops: *u.choose(&[0, 0, 1, 2, 3, 15, 16, 17, u32::MAX])?,
            });
        }
        Ok(Bytes::from(RouteTable { routes }.encode_to_vec()))
    }

    /// Notes the frame b should send if it forwards `frame`, which came in on `connection`.
    pub(crate) fn expect_forward(&mut self, connection: ConnectionId, frame: &FrameMessage) {
        let Some(head) = &frame.head else {
            return;
        };
        // Past the hop limit, nothing is forwarded.
        if !matches!(frame.body, Some(Body::Packet(_) | Body::Acknowledge(_)))
            || head.hop_count >= 16
        {
            return;
        }
        let forward_for_source = match head.forward_for_source.is_empty() {
            true => head.source.clone(),
            false => head.forward_for_source.clone(),
        };
        let stamped = FrameMessage {
            head: Some(MessageHead {
                source: LOCAL.to_string(),
                destination: head.destination.clone(),
                forward_for_source,
                forward_for_connection_id: connection.0 as i64,
                hop_count: head.hop_count + 1,
                source_instance: head.source_instance,
                destination_instance: head.destination_instance,
            }),
            body: frame.body.clone(),
        };
        self.expected_forwards.insert(digest(&stamped));
    }

    /// The runtime's queue for a connection fills or drains: while it is full, b must hand out
    /// nothing for it but its close, and a relay's forward queue for it fills.
    pub(crate) fn toggle_transport(&mut self, u: &mut Unstructured) -> Result<()> {
        let kind = Self::kind(u)?;
        let (connection, _) = self.pick_connection(u, kind, None)?;
        let blocked = !self.transport_blocked.contains(&connection);
        self.endpoint.set_transport_blocked(connection, blocked);
        if self.live.contains_key(&connection) {
            if blocked {
                self.transport_blocked.insert(connection);
            } else {
                self.transport_blocked.remove(&connection);
            }
        }
        Ok(())
    }

    /// A flood: one frame from a peer for another node, large or not, delivered many times in a
    /// row without b getting to send: its forward queue for the destination fills.
    pub(crate) fn flood(&mut self, u: &mut Unstructured) -> Result<()> {
        let Some(mode) = self.mode else {
            return Ok(());
        };
        let sender = *u.choose(&mode.direct_peers())?;
        let kind = Self::kind(u)?;
        let (connection, _) = self.pick_connection(u, kind, Some(sender))?;
        let relay = self.live.get(&connection).is_some_and(|link| link.relay);
        let Some(mut head) = self.relay_head(u, sender, relay)? else {
            return Ok(());
        };
        if head.destination == LOCAL || u.ratio(1, 2)? {
            head.destination = (*u.choose(&mode.direct_peers())?).to_string();
        }
        let len = match u.int_in_range(0..=3u8)? {
            0 => u.int_in_range(0..=70 * 1024)?,
            1 => 16 * 1024,
            2 => 1100,
            _ => 60 * 1024,
        };
        let stream_id = self.stream_id(u)?;
        let fragment = FragmentType {
            data: Bytes::from(vec![u.arbitrary::<u8>()?; len]),
            ..Default::default()
        };
        let frame = FrameMessage {
            head: Some(head),
            body: Some(Body::Packet(PacketData {
                stream_id,
                stream_offset: self.elapsed_micros(),
                content: Bytes::from(
                    PacketContent {
                        fragment: vec![fragment],
                    }
                    .encode_to_vec(),
                ),
                timepoint_microseconds: self.elapsed_micros(),
                ..Default::default()
            })),
        };
        let mut wire = BytesMut::new();
        if peer_codec().encode(&frame, &mut wire).is_err() {
            return Ok(());
        }
        self.expect_forward(connection, &frame);
        let wire = wire.freeze();
        let count = match u.int_in_range(0..=3u8)? {
            0 => *u.choose(&[40, 70, 96])?,
            _ => u.int_in_range(1..=8)?,
        };
        for _ in 0..count {
            self.endpoint
                .handle_input(self.now, connection, wire.clone());
        }
        Ok(())
    }
}

/// b, as the end of the link to a scratch relay: its events and its transmits elsewhere are
/// checked as always, and what it sends the relay must fit the connection.
impl End for Harness {
    fn endpoint(&mut self) -> &mut Endpoint {
        &mut self.endpoint
    }

    fn event(&mut self, event: Event) {
        self.check_event(event);
    }

    fn elsewhere(&mut self, transmit: Transmit) {
        self.check_transmit(transmit);
    }

    fn crossing(&mut self, transmit: &Transmit) {
        let mtu = self
            .handshaking
            .map_or(usize::MAX, |(_, params)| params.mtu);
        assert!(
            transmit.data.len() <= mtu,
            "a handshake transmit over the MTU"
        );
    }
}

/// The scratch relay of a handshake: it must not refuse b.
struct Scratch {
    endpoint: Endpoint,
    peer: &'static str,
}

impl End for Scratch {
    fn endpoint(&mut self) -> &mut Endpoint {
        &mut self.endpoint
    }

    fn event(&mut self, event: Event) {
        assert!(
            !matches!(event, Event::HandshakeFailed { .. }),
            "the scratch {} refused b: {event:?}",
            self.peer
        );
    }
}
