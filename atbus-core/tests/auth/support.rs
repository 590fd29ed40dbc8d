//! Nodes for the authentication tests: an endpoint on the simulated network (the sim's
//! `EngineNode`) whose application records what it sends and receives, takes every message that
//! arrives, and can put raw bytes on its links (an attacker replaying or forging frames).

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atbus_core::engine::{
    AuthConfig, AuthFailure, ConnectOptions, ConnectionId, Endpoint, EngineConfig, Event, Token,
    Transmit,
};
pub use atbus_core::sim::params_of;
use atbus_core::sim::{Application, EngineNode, Link, LinkProfile, Network, NodeIndex};
use atbus_proto::FrameCodec;
use atbus_proto::protocol::frame_message::Body;
use atbus_proto::protocol::{FrameMessage, MessageHead, PacketContent, PacketData};
use bytes::{Bytes, BytesMut};
use prost::Message;

/// The Unix time every node's clock shows at the start of a simulation: 2026-01-01.
pub const UNIX_START: Duration = Duration::from_secs(1_767_225_600);

/// A token made of 32 copies of `byte`.
pub fn token(byte: u8) -> Token {
    Token::new([byte; 32]).expect("32 bytes")
}

/// An auth config accepting `tokens`.
pub fn accepting<const N: usize>(tokens: [Token; N]) -> AuthConfig {
    AuthConfig {
        tokens: tokens.to_vec(),
        ..AuthConfig::default()
    }
}

/// One endpoint with a record of everything it did.
pub type Node = EngineNode<Recorder>;

/// The record of everything an endpoint did.
#[derive(Default)]
pub struct Recorder {
    /// Every event, in order.
    pub events: Vec<Event>,
    /// Every message taken: (peer, stream, data).
    pub received: Vec<(String, i64, Bytes)>,
    /// Raw transmits to send before the endpoint's own.
    pub inject: VecDeque<Transmit>,
    /// Every transmit sent, in order (what a wiretap sees).
    pub sent: Vec<Transmit>,
    /// Bytes received and sent per connection.
    pub bytes_in: BTreeMap<ConnectionId, usize>,
    pub bytes_out: BTreeMap<ConnectionId, usize>,
    /// Raw bytes received per connection (for attackers without a connection in the endpoint).
    pub raw_in: BTreeMap<ConnectionId, Vec<Bytes>>,
}

/// A node whose clock shows `unix` at `now`.
pub fn node(name: &str, auth: AuthConfig, seed: u8, now: Instant, unix: Duration) -> Node {
    let config = EngineConfig {
        auth: AuthConfig {
            rng_seed: Some([seed; 32]),
            ..auth
        },
        ..EngineConfig::default()
    };
    let mut endpoint = Endpoint::new(name, config, now);
    endpoint.set_unix_time(now, unix);
    EngineNode::new(endpoint, Recorder::default())
}

impl Recorder {
    /// The Authenticated event of `connection`: (peer, early data accepted, resumed).
    pub fn authenticated(&self, connection: ConnectionId) -> Option<(String, bool, bool)> {
        self.events.iter().find_map(|event| match event {
            Event::Authenticated {
                connection: c,
                peer,
                early_data_accepted,
                resumed,
            } if *c == connection => Some((peer.clone(), *early_data_accepted, *resumed)),
            _ => None,
        })
    }

    /// The HandshakeFailed event of `connection`: the rule and the close reason's code.
    pub fn handshake_failure(&self, connection: ConnectionId) -> Option<(AuthFailure, i32)> {
        self.events.iter().find_map(|event| match event {
            Event::HandshakeFailed {
                connection: c,
                failure,
                reason,
            } if *c == connection => Some((*failure, reason.code.to_wire())),
            _ => None,
        })
    }

    /// The close reason code of the ConnectionLost event of `connection`.
    pub fn lost(&self, connection: ConnectionId) -> Option<i32> {
        self.events.iter().find_map(|event| match event {
            Event::ConnectionLost {
                connection: c,
                reason,
                ..
            } if *c == connection => Some(reason.code.to_wire()),
            _ => None,
        })
    }

    /// The messages taken from `peer`.
    pub fn messages_from(&self, peer: &str) -> Vec<Bytes> {
        self.received
            .iter()
            .filter(|(from, _, _)| from == peer)
            .map(|(_, _, data)| data.clone())
            .collect()
    }

    /// The transmits sent on `connection`.
    pub fn sent_on(&self, connection: ConnectionId) -> Vec<Bytes> {
        self.sent
            .iter()
            .filter(|t| t.connection == connection)
            .map(|t| t.data.clone())
            .collect()
    }
}

impl Application for Recorder {
    /// Takes every event, and every message of the streams that became readable.
    fn pump(&mut self, endpoint: &mut Endpoint) {
        while let Some(event) = endpoint.poll_event() {
            if let Event::Readable { peer, stream_id } = &event {
                while let Some(message) = endpoint.read(peer, *stream_id) {
                    self.received
                        .push((peer.clone(), stream_id.get(), message.data));
                }
            }
            self.events.push(event);
        }
    }

    fn inject(&mut self) -> Option<Transmit> {
        self.inject.pop_front()
    }

    fn received(&mut self, connection: ConnectionId, data: &Bytes) {
        *self.bytes_in.entry(connection).or_default() += data.len();
        self.raw_in
            .entry(connection)
            .or_default()
            .push(data.clone());
    }

    fn polled(&mut self, endpoint: &mut Endpoint, transmit: Option<&Transmit>) {
        // Polling may drop a refused connection: its event is due even when nothing is sent.
        self.pump(endpoint);
        if let Some(transmit) = transmit {
            *self.bytes_out.entry(transmit.connection).or_default() += transmit.data.len();
            self.sent.push(transmit.clone());
        }
    }
}

/// A simulated network of [`Node`]s.
pub struct World {
    pub net: Network<Node>,
}

impl World {
    pub fn new(seed: u64) -> Self {
        Self {
            net: Network::new(seed),
        }
    }

    /// Adds the node `name` accepting what `auth` says.
    pub fn add(&mut self, name: &str, auth: AuthConfig) -> NodeIndex {
        let seed = self.net.node_count() as u8 + 1;
        let now = self.net.now();
        // Every node's clock agrees: UNIX_START when the simulation began.
        let unix = UNIX_START + self.net.elapsed();
        self.net.add_node(node(name, auth, seed, now, unix))
    }

    pub fn node(&self, index: NodeIndex) -> &Node {
        self.net.node(index)
    }

    pub fn node_mut(&mut self, index: NodeIndex) -> &mut Node {
        self.net.node_mut(index)
    }

    /// Connects `client` to `server` over `profile`: the client opens with `options`, the
    /// server accepts.
    pub fn connect(
        &mut self,
        client: NodeIndex,
        server: NodeIndex,
        profile: LinkProfile,
        options: ConnectOptions,
    ) -> Link {
        let link = self
            .net
            .handshake(client, server, profile, options)
            .expect("connect");
        self.net.poll_node(client);
        link
    }

    /// A link from `client`'s connection `at_client` (opened with `connect`) to a new connection
    /// `server` accepts.
    pub fn accepted_link(
        &mut self,
        client: NodeIndex,
        at_client: ConnectionId,
        server: NodeIndex,
        profile: LinkProfile,
    ) -> Link {
        self.net
            .accept_link(client, at_client, server, profile)
            .expect("accept")
    }

    /// Connects `client` as the restart of a node whose old connection to `server` vanished
    /// without a word (killed silently a moment ago): the server cannot tell a crash from a
    /// second node yet, so the first hello is refused with `name_taken` and the server pings
    /// the old instance; that ping goes unanswered, and the redial after the probe timeout is
    /// accepted as the restart. Returns the accepted link.
    pub fn connect_as_restart(
        &mut self,
        client: NodeIndex,
        server: NodeIndex,
        profile: LinkProfile,
        options: ConnectOptions,
    ) -> Link {
        let refused = self.connect(client, server, profile.clone(), options.clone());
        self.run_for(Duration::from_millis(200));
        assert_eq!(
            self.node(server)
                .handshake_failure(refused.b_connection)
                .map(|(failure, _)| failure),
            Some(AuthFailure::NameTaken),
            "the claim is refused while the old instance may be alive"
        );
        self.run_for(Duration::from_secs(1));
        self.connect(client, server, profile, options)
    }

    /// A link on which only `server` runs the engine (it accepts); `attacker` sends raw bytes (its
    /// end is numbered by the network).
    pub fn raw_link(
        &mut self,
        attacker: NodeIndex,
        server: NodeIndex,
        profile: LinkProfile,
    ) -> Link {
        let at_attacker = self.net.number_connection(attacker);
        self.accepted_link(attacker, at_attacker, server, profile)
    }

    /// Sends raw `bytes` from `from` on its end of `link` (the a end).
    pub fn inject(&mut self, from: NodeIndex, connection: ConnectionId, bytes: Bytes) {
        self.net.node_mut(from).inject.push_back(Transmit {
            connection,
            data: bytes,
        });
        self.net.poll_node(from);
    }

    pub fn run_for(&mut self, duration: Duration) {
        assert!(self.net.run_for(duration), "the simulation stalled");
    }
}

/// A datagram link with `ms` of one-way delay.
pub fn datagram(ms: u64) -> LinkProfile {
    LinkProfile::perfect_datagram().with_delay(Duration::from_millis(ms))
}

/// A stream link with `ms` of one-way delay.
pub fn stream(ms: u64) -> LinkProfile {
    LinkProfile::perfect_stream().with_delay(Duration::from_millis(ms))
}

/// The frames in a datagram (or a whole stream's bytes).
pub fn frames_of(bytes: &[u8]) -> Vec<FrameMessage> {
    let codec = FrameCodec::default();
    let mut buffer = BytesMut::from(bytes);
    let mut frames = Vec::new();
    while let Ok(atbus_proto::Decoded::Frame(frame)) = codec.decode(&mut buffer) {
        frames.push(frame.message);
    }
    frames
}

/// One encoded frame.
pub fn encode(frame: &FrameMessage) -> Bytes {
    let mut out = BytesMut::new();
    FrameCodec::default()
        .encode(frame, &mut out)
        .expect("encode");
    out.freeze()
}

/// A data packet frame with one whole message `data` at offset 0 of `stream_id`.
pub fn data_frame(head: MessageHead, stream_id: i64, data: &'static [u8]) -> Bytes {
    let content = PacketContent {
        fragment: vec![atbus_proto::protocol::packet_content::FragmentType {
            data: Bytes::from_static(data),
            ..Default::default()
        }],
    };
    encode(&FrameMessage {
        head: Some(head),
        body: Some(Body::Packet(PacketData {
            stream_id,
            content: content.encode_to_vec().into(),
            timepoint_microseconds: 1,
            ..Default::default()
        })),
    })
}

/// A message head from `source` to `destination`.
pub fn head(source: &str, destination: &str) -> MessageHead {
    MessageHead {
        source: source.into(),
        destination: destination.into(),
        ..Default::default()
    }
}

/// Runs `body` with the engine's log lines captured; returns its result and the log text.
pub fn with_logs<R>(body: impl FnOnce() -> R) -> (R, String) {
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("log sink").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let sink = Sink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .finish();
    let result = tracing::subscriber::with_default(subscriber, body);
    let text = String::from_utf8_lossy(&sink.0.lock().expect("log sink")).into_owned();
    (result, text)
}

/// The first frame of `flight` (a hello) changed by `change`, encoded again, with the frames
/// after it unchanged.
pub fn rewrite_hello(
    flight: &[u8],
    change: impl FnOnce(&mut atbus_proto::handshake::HandshakeHello, &mut MessageHead),
) -> Bytes {
    use atbus_proto::handshake::{HandshakeMessage, handshake_message::Body as Hs};
    let mut frames = frames_of(flight);
    let first = &mut frames[0];
    let Some(Body::Packet(packet)) = &mut first.body else {
        panic!("the first frame is a packet");
    };
    let mut content = PacketContent::decode(packet.content.clone()).expect("content");
    let mut message =
        HandshakeMessage::decode(content.fragment[0].data.clone()).expect("handshake");
    let Some(Hs::Hello(hello)) = &mut message.body else {
        panic!("the first message is a hello");
    };
    let head = first.head.get_or_insert_with(Default::default);
    change(hello, head);
    content.fragment[0].data = message.encode_to_vec().into();
    packet.content = content.encode_to_vec().into();
    let mut out = BytesMut::new();
    for frame in &frames {
        out.extend_from_slice(&encode(frame));
    }
    out.freeze()
}
