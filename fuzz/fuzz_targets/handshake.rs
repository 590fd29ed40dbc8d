//! Arbitrary handshake packets into an accepting endpoint "server", driven by a sequence of
//! operations the input decides.
//!
//! The input first picks the server's authentication rules: no, one or two accepted tokens,
//! anonymous peers allowed or not, a tiny or a large replay cache, a short timestamp window and
//! handshake timeout, a small `max_handshake_size`, tickets or none, relays or none, and perhaps an
//! identity issued for `issued-1`. Then the operations:
//!
//! - raw bytes on a connection (a live one, a new one, one that is gone, one never accepted);
//! - a structurally valid handshake frame (`handshake_message` as the one HANDSHAKE fragment of a
//!   packet on stream -2 with flag TLS_HANDSHAKE) whose hello, accept or confirm fields the input
//!   chooses: fresh and consistent (a token hello signed with a token, an issued hello with the
//!   issued token, a ticket hello with the secret of a ticket the server handed out, a confirm over
//!   the proof of the accept the server sent), or a hello seen earlier with some fields changed and
//!   its proof kept or signed again (padding, which the proof does not cover, changes freely; so do
//!   `instance` and `peer_instance`); sometimes wrapped wrongly (another packet type, stream,
//!   flags, no or two fragments), sometimes followed by a ping or a data packet;
//! - a real connecting endpoint (`Endpoint::connect` with a token, an issued identity, a ticket or
//!   anonymously, with early data or not, as a relay or not) whose hello goes to a new accepted
//!   connection; the answers travel back and forth when the input pumps them, so that confirms,
//!   tickets and resumptions happen;
//! - a replay: the first input of a connection that authenticated, or a recorded flight, played
//!   again on a fresh connection or a live one;
//! - time passing (by steps, to the edges of the timestamp window, to the end of the window of an
//!   authenticated hello, to the handshake timeout, or to `poll_timeout`), identities re-issued
//!   and revoked, connections closed and lost.
//!
//! Whatever goes to the server may arrive whole, truncated, with a byte flipped, with garbage
//! appended, twice, or (on a stream) cut into chunks.
//!
//! Proves that the engine never panics on hostile handshakes, and that:
//! - no amplification: every transmit on an accepted connection before its `Authenticated` event
//!   is no larger than the bytes the connection received, and no datagram is larger than the MTU
//!   (or than the largest datagram received); `HANDSHAKE_AMPLIFICATION` makes this stricter or
//!   looser (see [`Amplification`]);
//! - a refused connection leaves nothing behind: after `HandshakeFailed` the connection is not
//!   counted by `connection_count` or `pending_handshakes`, input for it is for an unknown
//!   connection, and its id may be accepted again; more generally the engine's connections are
//!   exactly those its events left live, its pending handshakes are those not authenticated, and
//!   its reachable peers are the names of authenticated connections;
//! - a hello is authenticated at most once without a confirm: the same signed hello played again
//!   on a fresh connection (inside the timestamp window, since an older one is refused anyway) is
//!   never `Authenticated` a second time unless the server asked that connection for a confirm;
//! - an authenticated connection is who its hello said (its source, or an `anon-` name for an
//!   anonymous hello), and `Authenticated` comes once per connection;
//! - no handshake outlives `handshake_timeout` once `handle_timeout` ran;
//! - the timers settle: after `handle_timeout(t)`, `poll_timeout()` is after `t` (or `None`)
//!   within a bounded number of further `handle_timeout(t)` calls, so a runtime never spins;
//! - every transmit holds whole frames from "server", and none goes on a connection that is gone.
//!
//! The proofs are computed here from the transcripts of docs/protocol.md 8.4, so they must follow
//! any change to those. `HANDSHAKE_TRACE=1` prints every input, transmit and event, to follow a
//! reproducer.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use arbitrary::{Result, Unstructured};
use atbus_core::engine::{
    AllowRule, AnonymousPolicy, ConnectOptions, ConnectionId, ConnectionKind, ConnectionParams,
    Credential, Endpoint, EngineConfig, Event, IdentityKind, MessageMeta, Token, Transmit,
};
use atbus_proto::handshake::handshake_message::Body as HandshakeBody;
use atbus_proto::handshake::{
    AtbusAuthMode, AtbusHandshakeRole, ConnectionParameters, HandshakeAccept, HandshakeConfirm,
    HandshakeHello, HandshakeMessage,
};
use atbus_proto::protocol::frame_message::Body;
use atbus_proto::protocol::packet_content::FragmentType;
use atbus_proto::protocol::{
    AtbusCloseReason, AtbusPacketFlagType, AtbusPacketType, CloseReasonData, FrameMessage,
    MessageHead, PacketContent, PacketData, PingData,
};
use atbus_proto::{CodecConfig, Decoded, FrameCodec};
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// The accepting endpoint under test.
const SERVER: &str = "server";
/// The name the server may issue an identity for.
const ISSUED_NAME: &str = "issued-1";
/// Names of the token clients.
const CLIENT_NAMES: [&str; 2] = ["client-a", "client-b"];
/// The shared tokens: the server accepts none, the first, both or the second; never the third.
const TOKENS: [&[u8]; 3] = [
    b"fuzz token zero, 32 bytes long!!",
    b"fuzz token one, 32 bytes long!!!",
    b"fuzz token two: never accepted!!",
];
/// Unix time (ms) of the server at the start of every run.
const BASE_UNIX_MS: i64 = 1_767_225_600_000;
/// The reserved stream of handshake packets.
const HANDSHAKE_STREAM: i64 = -2;
/// Frames the server takes, and that the harness decodes with.
const MAX_FRAME_LENGTH: usize = 64 * 1024;
/// Simulated time never goes further than this from the start.
const MAX_ELAPSED: Duration = Duration::from_secs(4 * 3600);
/// Operations per input.
const MAX_OPS: usize = 64;
/// Live accepted connections at most (a new one beyond is not opened).
const MAX_CONNECTIONS: usize = 8;
/// Real clients at most: two with tokens or issued identities, one anonymous.
const MAX_CLIENTS: usize = 3;
/// Flights of real clients kept for replays.
const MAX_RECORDED: usize = 24;
/// Hellos, proofs and tickets kept to build handshakes from.
const MAX_KEPT: usize = 24;
/// `poll_transmit` must run dry within this many transmits.
const MAX_TRANSMITS: usize = 10_000;
/// Calls of `handle_timeout` at one instant before `poll_timeout` must be past it.
const MAX_SETTLE_ROUNDS: usize = 64;

/// Whether to print what happens (set `HANDSHAKE_TRACE=1` to follow a reproducer).
fn tracing() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("HANDSHAKE_TRACE").is_some())
}

macro_rules! trace {
    ($($arg:tt)*) => {
        if tracing() {
            eprintln!($($arg)*);
        }
    };
}

/// How strictly amplification is checked, from `HANDSHAKE_AMPLIFICATION`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Amplification {
    /// Unset or `transmit`: every transmit before `Authenticated` is no larger than all the bytes
    /// the connection received, and a datagram transmit no larger than the MTU (or the largest
    /// datagram received).
    Transmit,
    /// `handshake`: the same, but the frames that follow an accept completing the handshake in
    /// its transmit (the first ping, acknowledgements of early data) are not counted.
    Handshake,
    /// `cumulative`: as `transmit`, and all the bytes sent before `Authenticated` are no more
    /// than all received.
    Cumulative,
    /// `off`: not checked, to fuzz the other properties past a known amplification.
    Off,
}

fn amplification() -> Amplification {
    static MODE: OnceLock<Amplification> = OnceLock::new();
    *MODE.get_or_init(
        || match std::env::var("HANDSHAKE_AMPLIFICATION").as_deref() {
            Ok("handshake") => Amplification::Handshake,
            Ok("cumulative") => Amplification::Cumulative,
            Ok("off") => Amplification::Off,
            _ => Amplification::Transmit,
        },
    )
}

/// The instant every run starts at, captured once.
fn start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Encodes what the harness sends and decodes what it watches, with the server's frame limit.
fn codec() -> &'static FrameCodec {
    static CODEC: OnceLock<FrameCodec> = OnceLock::new();
    CODEC.get_or_init(|| {
        let config = CodecConfig::default()
            .with_max_frame_length(MAX_FRAME_LENGTH)
            .expect("valid codec configuration");
        FrameCodec::new(config)
    })
}

fn token(index: usize) -> Token {
    Token::new(TOKENS[index]).expect("tokens are long enough")
}

// The proofs, as docs/protocol.md 8.4 lays out their transcripts (written again here, so that
// the harness can sign hellos and confirms of its own).

fn sign(key: &[u8], message: &[u8]) -> Bytes {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    Bytes::copy_from_slice(ring::hmac::sign(&key, message).as_ref())
}

fn put_lp(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn hello_transcript(hello: &HandshakeHello) -> Vec<u8> {
    let mut out = b"atbus-hello/1".to_vec();
    out.extend_from_slice(&hello.protocol_version.to_be_bytes());
    out.push(hello.mode as u8);
    out.push(hello.role as u8);
    put_lp(&mut out, hello.source.as_bytes());
    put_lp(&mut out, hello.destination.as_bytes());
    put_lp(&mut out, &hello.nonce);
    out.extend_from_slice(&hello.timestamp_milliseconds.to_be_bytes());
    out.extend_from_slice(&hello.stream_id.to_be_bytes());
    let parameters = hello.parameters.unwrap_or_default();
    out.push(parameters.kind as u8);
    out.extend_from_slice(&parameters.mtu.to_be_bytes());
    out.push(u8::from(hello.early_data));
    put_lp(&mut out, &hello.ticket);
    put_lp(&mut out, &hello.instance);
    put_lp(&mut out, &hello.peer_instance);
    out
}

fn confirm_transcript(accept_proof: &[u8]) -> Vec<u8> {
    let mut out = b"atbus-confirm/1".to_vec();
    put_lp(&mut out, accept_proof);
    out
}

fn resume_transcript(hello_proof: &[u8], accept_nonce: &[u8]) -> Vec<u8> {
    let mut out = b"atbus-resume/1".to_vec();
    put_lp(&mut out, hello_proof);
    put_lp(&mut out, accept_nonce);
    out
}

/// The handshake message a frame carries: `None` if it is not a handshake packet, `Err` if it is
/// one that does not decode (the engine's own rule).
fn handshake_of(frame: &FrameMessage) -> Option<std::result::Result<HandshakeBody, ()>> {
    let Some(Body::Packet(packet)) = &frame.body else {
        return None;
    };
    if packet.stream_id != HANDSHAKE_STREAM {
        return None;
    }
    let content = PacketContent::decode(packet.content.clone()).map_err(|_| ());
    Some(content.and_then(|content| {
        let [fragment] = content.fragment.as_slice() else {
            return Err(());
        };
        if fragment.packet_type != AtbusPacketType::Handshake as i32 {
            return Err(());
        }
        HandshakeMessage::decode(fragment.data.clone())
            .ok()
            .and_then(|message| message.body)
            .ok_or(())
    }))
}

/// How a handshake message is wrapped into a frame: rightly, or not quite.
struct Wrapping {
    packet_type: i32,
    fragments: usize,
    stream_id: i64,
    flags: i32,
}

impl Wrapping {
    fn right() -> Self {
        Self {
            packet_type: AtbusPacketType::Handshake as i32,
            fragments: 1,
            stream_id: HANDSHAKE_STREAM,
            flags: AtbusPacketFlagType::TlsHandshake as i32,
        }
    }

    fn arbitrary(u: &mut Unstructured) -> Result<Self> {
        let mut wrapping = Self::right();
        if u.ratio(1, 16)? {
            match u.int_in_range(0..=3u8)? {
                0 => wrapping.packet_type = *u.choose(&[0, 1, 3, 101, -1])?,
                1 => wrapping.fragments = *u.choose(&[0, 2])?,
                2 => wrapping.stream_id = *u.choose(&[-1, 0, 1, -3, i64::MIN])?,
                _ => wrapping.flags = *u.choose(&[0, 1, 2, 4, 8 | 1, 8 | 16, -1])?,
            }
        }
        Ok(wrapping)
    }
}

/// A handshake frame: `data` (normally an encoded `handshake_message`) wrapped as `wrapping` says.
fn handshake_frame(head: Option<MessageHead>, data: Bytes, wrapping: &Wrapping) -> Bytes {
    let fragment = FragmentType {
        packet_type: wrapping.packet_type,
        data,
        ..Default::default()
    };
    let frame = FrameMessage {
        head,
        body: Some(Body::Packet(PacketData {
            stream_id: wrapping.stream_id,
            content: PacketContent {
                fragment: vec![fragment; wrapping.fragments],
            }
            .encode_to_vec()
            .into(),
            flags: wrapping.flags,
            ..Default::default()
        })),
    };
    let mut out = BytesMut::new();
    // A frame over the limit is left out: the harness sends nothing then.
    let _ = codec().encode(&frame, &mut out);
    out.freeze()
}

fn head(source: &str, destination: &str) -> Option<MessageHead> {
    Some(MessageHead {
        source: source.to_string(),
        destination: destination.to_string(),
        ..Default::default()
    })
}

fn short_string(u: &mut Unstructured) -> Result<String> {
    let len = u.int_in_range(0..=12)?;
    (0..len)
        .map(|_| Ok(char::from(u.int_in_range(b'a'..=b'z')?)))
        .collect()
}

fn input_bytes(u: &mut Unstructured, max: usize) -> Result<Bytes> {
    let len = u.int_in_range(0..=max)?;
    Ok(Bytes::copy_from_slice(u.bytes(len.min(u.len()))?))
}

/// An `i64`, often an edge value.
fn int64(u: &mut Unstructured) -> Result<i64> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 => *u.choose(&[0, 1, -1, i64::MIN, i64::MAX, 65536, 1232])?,
        1 => i64::from(u.arbitrary::<u8>()?),
        _ => u.arbitrary()?,
    })
}

/// What the harness saw of the first hello of a connection (the one the server checks).
#[derive(Clone)]
struct HelloInfo {
    mode: i32,
    source: String,
    nonce: Bytes,
    proof: Bytes,
    stream_id: i64,
    timestamp_milliseconds: i64,
}

/// What the harness saw of the accept the server sent on a connection.
struct AcceptInfo {
    proof: Bytes,
    confirm_required: bool,
}

/// A ticket the server handed out, with the secret that signs hellos resuming with it.
#[derive(Clone)]
struct KnownTicket {
    sealed: Bytes,
    secret: Bytes,
    name: String,
    stream_id: i64,
}

/// An accepted connection of the server, as its events left it.
struct ServerConn {
    params: ConnectionParams,
    accepted_at: Instant,
    /// Bytes given to `handle_input` before `Authenticated`.
    fed: usize,
    /// Bytes of the transmits before `Authenticated`.
    sent: usize,
    /// The largest input given at once (a datagram, on a datagram connection).
    largest_datagram: usize,
    /// What it received first: the hello datagram, or the first chunk of a stream.
    first_input: Option<Bytes>,
    /// Whether `Authenticated` came for it.
    authenticated: Option<String>,
    /// The harness's own decoding of the input, until the first handshake frame.
    shadow: BytesMut,
    /// The first handshake frame was seen, or input that the server refuses.
    decided: bool,
    first_hello: Option<HelloInfo>,
    accept: Option<AcceptInfo>,
    /// The real client at the other end: its index and its connection id.
    client: Option<(usize, ConnectionId)>,
    /// Transmits of the server waiting to be handed to the client.
    to_client: Vec<Bytes>,
}

/// A real connecting endpoint.
struct Client {
    endpoint: Endpoint,
    next_id: u64,
    /// Its connections, and the server connection at the other end.
    links: BTreeMap<ConnectionId, ConnectionId>,
    /// The key of the hello on each of its connections (token or issued token), to learn tickets.
    keys: BTreeMap<ConnectionId, Vec<u8>>,
}

/// A flight a client sent: its bytes and the kind of connection it went on.
#[derive(Clone)]
struct Flight {
    data: Bytes,
    kind: ConnectionKind,
}

struct Harness {
    server: Endpoint,
    now: Instant,
    window: Duration,
    handshake_timeout: Duration,
    replay_cache_size: usize,
    /// The identity issued for `issued-1`: its stream and token, and the tokens issued before.
    issued: Option<(i64, Token)>,
    old_issued_tokens: Vec<Token>,
    conns: BTreeMap<ConnectionId, ServerConn>,
    /// Ids of connections refused or lost.
    dead: Vec<ConnectionId>,
    next_id: u64,
    clients: Vec<Option<Client>>,
    /// Peers reachable, as the server's events say.
    reachable: BTreeSet<String>,
    recorded: Vec<Flight>,
    /// Hellos seen (built here or sent by real clients), to change and send again.
    hellos: Vec<(Option<MessageHead>, HandshakeHello)>,
    /// The key each known hello proof was made with.
    signing_keys: BTreeMap<Bytes, Vec<u8>>,
    tickets: Vec<KnownTicket>,
    /// (nonce, proof) of the hellos authenticated so far.
    authenticated_hellos: BTreeSet<(Bytes, Bytes)>,
    /// Timestamps of the hellos authenticated, whose windows close at interesting times.
    authenticated_timestamps: Vec<i64>,
    /// The first input of connections that authenticated: what a replay attack records.
    authenticated_inputs: Vec<Flight>,
    /// Makes the nonces of fresh hellos unique.
    nonce_counter: u64,
    /// The server's instance, as its accepts say.
    server_instance: Bytes,
    /// Folded over everything the endpoints give back, so none of it is optimised away.
    digest: u64,
}

impl Harness {
    fn new(u: &mut Unstructured) -> Result<Self> {
        let now = start();
        let mut config = EngineConfig {
            max_frame_length: MAX_FRAME_LENGTH,
            ..EngineConfig::default()
        };
        let auth = &mut config.auth;
        auth.tokens = match u.int_in_range(0..=3u8)? {
            0 => Vec::new(),
            1 => vec![token(0)],
            2 => vec![token(0), token(1)],
            _ => vec![token(1)],
        };
        if u.arbitrary()? {
            auth.anonymous = Some(AnonymousPolicy {
                allow: vec![AllowRule::Name(SERVER.to_string())],
            });
        }
        auth.replay_cache_size = *u.choose(&[0, 1, 2, 3, 65_536])?;
        auth.timestamp_window = *u.choose(&[
            Duration::from_secs(300),
            Duration::from_secs(10),
            Duration::from_secs(1),
            Duration::ZERO,
        ])?;
        auth.handshake_timeout = *u.choose(&[
            Duration::from_secs(10),
            Duration::from_secs(2),
            Duration::from_millis(100),
        ])?;
        auth.max_handshake_size = *u.choose(&[2048, 2048, 128, 400, 700, 65_536])?;
        auth.allow_relays = u.arbitrary()?;
        auth.ticket_lifetime = *u.choose(&[
            Some(Duration::from_secs(24 * 3600)),
            Some(Duration::from_secs(24 * 3600)),
            None,
            Some(Duration::from_secs(1)),
            Some(Duration::ZERO),
        ])?;
        if u.ratio(1, 4)? {
            auth.ticket_key = Some(token(2));
        }
        auth.rng_seed = Some([u.arbitrary::<u8>()?; 32]);
        let (window, handshake_timeout, replay_cache_size) = (
            auth.timestamp_window,
            auth.handshake_timeout,
            auth.replay_cache_size,
        );
        let mut server = Endpoint::new(SERVER, config, now);
        server.set_unix_time(now, Duration::from_millis(BASE_UNIX_MS as u64));
        let mut harness = Self {
            server,
            now,
            window,
            handshake_timeout,
            replay_cache_size,
            issued: None,
            old_issued_tokens: Vec::new(),
            conns: BTreeMap::new(),
            dead: Vec::new(),
            next_id: 1,
            clients: (0..MAX_CLIENTS).map(|_| None).collect(),
            reachable: BTreeSet::new(),
            recorded: Vec::new(),
            hellos: Vec::new(),
            signing_keys: BTreeMap::new(),
            tickets: Vec::new(),
            authenticated_hellos: BTreeSet::new(),
            authenticated_timestamps: Vec::new(),
            authenticated_inputs: Vec::new(),
            nonce_counter: 0,
            server_instance: Bytes::new(),
            digest: 0,
        };
        if u.ratio(2, 3)? {
            harness.issue(u)?;
        }
        Ok(harness)
    }

    /// The server's Unix clock now, in milliseconds.
    fn unix_ms(&self) -> i64 {
        BASE_UNIX_MS + (self.now - start()).as_millis() as i64
    }

    fn window_ms(&self) -> i64 {
        self.window.as_millis() as i64
    }

    fn mix(&mut self, value: u64) {
        self.digest = (self.digest ^ value).wrapping_mul(0x0000_0100_0000_01b3);
    }

    fn keep<T>(list: &mut Vec<T>, item: T, max: usize) {
        if list.len() >= max {
            list.remove(0);
        }
        list.push(item);
    }

    // ---- the server's connections ----------------------------------------------------------

    fn connection_params(u: &mut Unstructured, kind: ConnectionKind) -> Result<ConnectionParams> {
        Ok(match kind {
            ConnectionKind::Stream => *u.choose(&[
                ConnectionParams::stream(),
                ConnectionParams::stream(),
                ConnectionParams::stream().with_mtu(1232),
                ConnectionParams::stream().with_mtu(128),
            ])?,
            ConnectionKind::Datagram => *u.choose(&[
                ConnectionParams::datagram_ipv4(),
                ConnectionParams::datagram_ipv6(),
                ConnectionParams::datagram_ipv4().with_mtu(128),
            ])?,
        })
    }

    fn kind(u: &mut Unstructured) -> Result<ConnectionKind> {
        Ok(if u.arbitrary()? {
            ConnectionKind::Stream
        } else {
            ConnectionKind::Datagram
        })
    }

    /// Accepts a new connection of `kind`: under a fresh id, or the id of one that is gone (the
    /// server must have forgotten it).
    fn open(&mut self, u: &mut Unstructured, kind: ConnectionKind) -> Result<Option<ConnectionId>> {
        if self.conns.len() >= MAX_CONNECTIONS {
            return Ok(None);
        }
        let params = Self::connection_params(u, kind)?;
        let id = if !self.dead.is_empty() && u.ratio(1, 4)? {
            let index = u.choose_index(self.dead.len())?;
            self.dead.swap_remove(index)
        } else {
            self.next_id += 1;
            ConnectionId(self.next_id - 1)
        };
        if let Err(error) = self.server.accept(self.now, id, params) {
            panic!("accepting {id} failed: {error} (the server should not know this id)");
        }
        self.conns.insert(
            id,
            ServerConn {
                params,
                accepted_at: self.now,
                fed: 0,
                sent: 0,
                largest_datagram: 0,
                first_input: None,
                authenticated: None,
                shadow: BytesMut::new(),
                decided: false,
                first_hello: None,
                accept: None,
                client: None,
                to_client: Vec::new(),
            },
        );
        Ok(Some(id))
    }

    /// Where to send something: a new connection (of `kind` if given), a live one, or one the
    /// server does not have.
    fn target(
        &mut self,
        u: &mut Unstructured,
        kind: Option<ConnectionKind>,
    ) -> Result<ConnectionId> {
        let choice = u.int_in_range(0..=15u8)?;
        if choice == 0 {
            return Ok(if !self.dead.is_empty() && u.arbitrary()? {
                *u.choose(&self.dead)?
            } else {
                ConnectionId(self.next_id + u64::from(u.int_in_range(0..=3u8)?))
            });
        }
        if (1..=6).contains(&choice) && !self.conns.is_empty() {
            let pending: Vec<ConnectionId> = self
                .conns
                .iter()
                .filter(|(_, conn)| conn.authenticated.is_none())
                .map(|(&id, _)| id)
                .collect();
            if !pending.is_empty() && choice <= 4 {
                return Ok(*u.choose(&pending)?);
            }
            let all: Vec<ConnectionId> = self.conns.keys().copied().collect();
            return Ok(*u.choose(&all)?);
        }
        let kind = match kind {
            Some(kind) if u.ratio(7, 8)? => kind,
            _ => Self::kind(u)?,
        };
        Ok(match self.open(u, kind)? {
            Some(id) => id,
            None => *u.choose(&self.conns.keys().copied().collect::<Vec<_>>())?,
        })
    }

    /// Gives `data` to the server on `id`, as the harness and the server see it.
    fn feed(&mut self, id: ConnectionId, data: Bytes) {
        let Some(conn) = self.conns.get_mut(&id) else {
            let before = self.server.stats().unknown_connection;
            self.server.handle_input(self.now, id, data);
            assert_eq!(
                self.server.stats().unknown_connection,
                before + 1,
                "input for {id}, which is gone, was not for an unknown connection"
            );
            return;
        };
        if conn.authenticated.is_none() {
            conn.fed += data.len();
        }
        conn.largest_datagram = conn.largest_datagram.max(data.len());
        if conn.first_input.is_none() {
            conn.first_input = Some(data.clone());
        }
        trace!(
            "{:?} input {id}: {} bytes (fed {}): {}",
            self.now - start(),
            data.len(),
            conn.fed,
            describe(&data)
        );
        if !conn.decided {
            Self::shadow_decode(conn, &data);
        }
        self.server.handle_input(self.now, id, data);
    }

    /// Decodes the input of a connection as the server does until it decides on the first
    /// handshake frame: the hello it checks, if that frame is one.
    fn shadow_decode(conn: &mut ServerConn, data: &Bytes) {
        let decide = |conn: &mut ServerConn, frame: &FrameMessage| {
            conn.decided = true;
            if let Some(Ok(HandshakeBody::Hello(hello))) = handshake_of(frame) {
                conn.first_hello = Some(HelloInfo {
                    mode: hello.mode,
                    source: hello.source.clone(),
                    nonce: hello.nonce.clone(),
                    proof: hello.proof.clone(),
                    stream_id: hello.stream_id,
                    timestamp_milliseconds: hello.timestamp_milliseconds,
                });
            }
        };
        match conn.params.kind {
            ConnectionKind::Datagram => {
                let mut datagram = data.clone();
                while !datagram.is_empty() {
                    match codec().decode_bytes(&mut datagram) {
                        Ok(Decoded::Frame(frame)) => {
                            // Other frames before the hello are dropped, and it comes later.
                            if handshake_of(&frame.message).is_some() {
                                decide(conn, &frame.message);
                                return;
                            }
                        }
                        _ => {
                            // Garbage instead of a hello: the server refuses the connection.
                            conn.decided = true;
                            return;
                        }
                    }
                }
            }
            ConnectionKind::Stream => {
                conn.shadow.extend_from_slice(data);
                match codec().decode(&mut conn.shadow) {
                    Ok(Decoded::Frame(frame)) => decide(conn, &frame.message),
                    Ok(Decoded::Incomplete { .. }) => {}
                    Err(_) => conn.decided = true,
                }
                if conn.decided {
                    conn.shadow = BytesMut::new();
                }
            }
        }
    }

    /// Hands `bytes` to `id`: whole, cut short, with a byte flipped, with garbage after it, twice,
    /// or (on a stream) in chunks.
    fn deliver(&mut self, u: &mut Unstructured, id: ConnectionId, bytes: Bytes) -> Result<()> {
        let stream = self
            .conns
            .get(&id)
            .is_some_and(|conn| conn.params.kind == ConnectionKind::Stream);
        match u.int_in_range(0..=15u8)? {
            0 if !bytes.is_empty() => {
                let at = u.choose_index(bytes.len())?;
                self.feed(id, bytes.slice(..at));
            }
            1 if !bytes.is_empty() => {
                let mut changed = bytes.to_vec();
                let at = u.choose_index(changed.len())?;
                changed[at] ^= u.int_in_range(1..=255u8)?;
                self.feed(id, changed.into());
            }
            2 => {
                let mut longer = bytes.to_vec();
                longer.extend_from_slice(&input_bytes(u, 64)?);
                self.feed(id, longer.into());
            }
            3 => {
                self.feed(id, bytes.clone());
                self.feed(id, bytes);
            }
            4..=7 if stream => {
                let mut rest = bytes;
                while !rest.is_empty() {
                    let len = if u.is_empty() {
                        rest.len()
                    } else {
                        u.int_in_range(1..=rest.len())?
                    };
                    let chunk = rest.split_to(len);
                    self.feed(id, chunk);
                }
            }
            _ => self.feed(id, bytes),
        }
        Ok(())
    }

    // ---- what the server says --------------------------------------------------------------

    /// Takes every transmit and event of the server, checking each, then checks its state.
    fn drain(&mut self) {
        let mut transmits = 0;
        loop {
            let mut progress = false;
            // Transmits first: the accept goes out with the state from before `Authenticated`.
            while let Some(transmit) = self.server.poll_transmit(self.now) {
                progress = true;
                transmits += 1;
                assert!(transmits < MAX_TRANSMITS, "poll_transmit does not run dry");
                self.check_transmit(transmit);
            }
            while let Some(event) = self.server.poll_event() {
                progress = true;
                self.check_event(event);
            }
            if !progress {
                break;
            }
        }
        self.check_state();
    }

    fn check_transmit(&mut self, transmit: Transmit) {
        let Transmit { connection, data } = transmit;
        let conn = self
            .conns
            .get_mut(&connection)
            .unwrap_or_else(|| panic!("a transmit on {connection}, which is not live"));
        assert!(!data.is_empty(), "an empty transmit on {connection}");
        trace!(
            "{:?} transmit {connection}: {} bytes: {}",
            self.now - start(),
            data.len(),
            describe(&data)
        );
        let mut rest = data.clone();
        let mut accepted = None;
        let mut handshake_bytes = 0;
        while !rest.is_empty() {
            let frame = match codec().decode_bytes(&mut rest) {
                Ok(Decoded::Frame(frame)) => frame,
                other => panic!(
                    "a transmit on {connection} holds something other than whole frames: {other:?}"
                ),
            };
            let message = frame.message;
            let source = message
                .head
                .as_ref()
                .map_or("", |head| head.source.as_str());
            assert_eq!(source, SERVER, "a frame from the server under another name");
            if let Some(handshake) = handshake_of(&message) {
                handshake_bytes += frame.wire_len;
                if let Ok(HandshakeBody::Accept(accept)) = handshake {
                    self.server_instance = accept.instance.clone();
                    accepted = Some(accept);
                }
            }
        }
        let mode = amplification();
        if conn.authenticated.is_none() && mode != Amplification::Off {
            let established_here = accepted
                .as_ref()
                .is_some_and(|accept| !accept.confirm_required);
            let counted = if established_here && mode == Amplification::Handshake {
                handshake_bytes
            } else {
                data.len()
            };
            conn.sent += counted;
            assert!(
                counted <= conn.fed,
                "amplification: a transmit of {counted} bytes on {connection} ({:?}, MTU {}) \
                 before its handshake completed, which received only {} bytes",
                conn.params.kind,
                conn.params.mtu,
                conn.fed
            );
            assert!(
                mode != Amplification::Cumulative || conn.sent <= conn.fed,
                "amplification: {} bytes sent on {connection} ({:?}, MTU {}) before its \
                 handshake completed, which received only {} bytes",
                conn.sent,
                conn.params.kind,
                conn.params.mtu,
                conn.fed
            );
        }
        if conn.params.kind == ConnectionKind::Datagram && mode != Amplification::Off {
            assert!(
                data.len() <= conn.params.mtu.max(conn.largest_datagram),
                "a datagram of {} bytes on {connection}, over its MTU {} and the largest \
                 datagram received ({} bytes)",
                data.len(),
                conn.params.mtu,
                conn.largest_datagram
            );
        }
        if let Some(accept) = accepted {
            // A ticket is resumable with a secret derived from the hello's key.
            let key = conn
                .first_hello
                .as_ref()
                .and_then(|hello| Some((hello, self.signing_keys.get(&hello.proof)?)));
            if let (false, Some((hello, key))) = (accept.ticket.is_empty(), key) {
                let ticket = KnownTicket {
                    sealed: accept.ticket.clone(),
                    secret: sign(key, &resume_transcript(&hello.proof, &accept.nonce)),
                    name: accept.destination.clone(),
                    stream_id: hello.stream_id,
                };
                Self::keep(&mut self.tickets, ticket, MAX_KEPT);
            }
            conn.accept = Some(AcceptInfo {
                proof: accept.proof,
                confirm_required: accept.confirm_required,
            });
        }
        if conn.client.is_some() {
            conn.to_client.push(data.clone());
        }
        self.mix(data.len() as u64);
    }

    fn check_event(&mut self, event: Event) {
        trace!("{:?} event {event:?}", self.now - start());
        match event {
            Event::Authenticated {
                connection,
                peer,
                early_data_accepted,
                resumed,
            } => {
                let conn = self
                    .conns
                    .get_mut(&connection)
                    .unwrap_or_else(|| panic!("Authenticated for {connection}, which is not live"));
                assert!(
                    conn.authenticated.is_none(),
                    "Authenticated twice for {connection}"
                );
                conn.authenticated = Some(peer.clone());
                // The connection may be gone already (refused after the event, its close sent
                // and its ConnectionLost queued): check_state sees to the identity of the others.
                let kind = self.server.peer_identity(connection).map(|identity| {
                    assert_eq!(identity.name, peer, "the identity of {connection}");
                    identity.kind.clone()
                });
                let hello = conn.first_hello.clone().unwrap_or_else(|| {
                    panic!(
                        "{connection} is authenticated, but its first handshake frame was no hello"
                    )
                });
                if hello.mode == AtbusAuthMode::Anonymous as i32 {
                    assert!(
                        kind.as_ref()
                            .is_none_or(|kind| *kind == IdentityKind::Anonymous)
                            && peer.starts_with("anon-"),
                        "an anonymous hello authenticated {connection} as {peer:?} ({kind:?})"
                    );
                } else {
                    assert_eq!(
                        peer, hello.source,
                        "{connection} is authenticated under another name than its hello's"
                    );
                    assert!(
                        kind != Some(IdentityKind::Anonymous),
                        "a hello of mode {} authenticated {connection} as anonymous",
                        hello.mode
                    );
                    if let Some(data) = conn.first_input.clone() {
                        let kind = conn.params.kind;
                        Self::keep(
                            &mut self.authenticated_inputs,
                            Flight { data, kind },
                            MAX_KEPT,
                        );
                    }
                    let confirmed = conn
                        .accept
                        .as_ref()
                        .is_some_and(|accept| accept.confirm_required);
                    let fresh = self
                        .authenticated_hellos
                        .insert((hello.nonce.clone(), hello.proof.clone()));
                    Self::keep(
                        &mut self.authenticated_timestamps,
                        hello.timestamp_milliseconds,
                        MAX_KEPT,
                    );
                    assert!(
                        fresh || confirmed,
                        "replay: a hello authenticated before (nonce {:02x?}) authenticated \
                         {connection} again without a confirm, {} ms into the run (window {} ms, \
                         replay cache {} of {})",
                        hello.nonce.as_ref(),
                        (self.now - start()).as_millis(),
                        self.window_ms(),
                        self.server.replay_cache_len(),
                        self.replay_cache_size
                    );
                }
                self.mix(u64::from(early_data_accepted) << 1 | u64::from(resumed));
            }
            Event::HandshakeFailed {
                connection,
                failure,
                reason,
            } => {
                let conn = self
                    .conns
                    .remove(&connection)
                    .unwrap_or_else(|| panic!("HandshakeFailed for {connection}, not live"));
                assert!(
                    conn.authenticated.is_none(),
                    "HandshakeFailed for {connection}, which was authenticated"
                );
                assert!(
                    self.server.peer_identity(connection).is_none(),
                    "{connection} keeps an identity after HandshakeFailed"
                );
                self.forget(connection, &conn);
                self.mix(failure as u64 ^ reason.code as u64);
            }
            Event::ConnectionLost {
                connection,
                peer,
                reason,
            } => {
                let conn = self
                    .conns
                    .remove(&connection)
                    .unwrap_or_else(|| panic!("ConnectionLost for {connection}, not live"));
                if let Some(name) = &conn.authenticated {
                    assert_eq!(*name, peer, "ConnectionLost names another peer");
                }
                self.forget(connection, &conn);
                self.mix(reason.code as u64);
            }
            Event::PeerReachable { peer } => {
                assert!(self.reachable.insert(peer), "PeerReachable twice");
            }
            Event::PeerUnreachable { peer } => {
                assert!(
                    self.reachable.remove(&peer),
                    "PeerUnreachable while unreachable"
                );
            }
            Event::Readable { peer, stream_id } => {
                for _ in 0..16 {
                    let Some(message) = self.server.read(&peer, stream_id) else {
                        break;
                    };
                    self.mix(message.offset ^ message.data.len() as u64);
                }
            }
            Event::NameAssigned { name } => {
                panic!("the accepting server was assigned the name {name:?}")
            }
            other => self.mix(format!("{other:?}").len() as u64),
        }
    }

    /// A connection is gone: its id may come again, and its client loses its link.
    fn forget(&mut self, id: ConnectionId, conn: &ServerConn) {
        Self::keep(&mut self.dead, id, 16);
        if let Some((index, client_id)) = conn.client {
            if let Some(client) = self.clients[index].as_mut() {
                client.links.remove(&client_id);
            }
        }
    }

    /// The server's connections are those its events left live.
    fn check_state(&mut self) {
        assert_eq!(
            self.server.connection_count(),
            self.conns.len(),
            "connection_count() against the connections the events left live"
        );
        let pending = self
            .conns
            .values()
            .filter(|conn| conn.authenticated.is_none())
            .count();
        assert_eq!(
            self.server.pending_handshakes(),
            pending,
            "pending_handshakes() against the connections not authenticated"
        );
        let mut names = BTreeSet::new();
        for (&id, conn) in &self.conns {
            assert_eq!(
                self.server.peer_identity(id).is_some(),
                conn.authenticated.is_some(),
                "peer_identity({id}) against its Authenticated event"
            );
            names.extend(conn.authenticated.clone());
        }
        let reachable: BTreeSet<String> =
            self.server.reachable_peers().map(str::to_string).collect();
        assert_eq!(
            reachable, names,
            "reachable peers against authenticated connections"
        );
        assert_eq!(
            reachable, self.reachable,
            "reachable peers against the events"
        );
        let cached = self.server.replay_cache_len();
        assert!(
            cached <= self.replay_cache_size,
            "the replay cache holds {cached} nonces, over its size {}",
            self.replay_cache_size
        );
        let failures: u64 = self.server.stats().auth_failures.values().sum();
        self.mix(failures ^ cached as u64);
    }

    // ---- time ------------------------------------------------------------------------------

    /// Lets time pass to `to` (kept within the horizon and never backwards), for the server and
    /// the clients.
    fn advance_to(&mut self, u: &mut Unstructured, to: Instant) -> Result<()> {
        self.now = to.min(start() + MAX_ELAPSED).max(self.now);
        self.server.handle_timeout(self.now);
        self.drain();
        for round in 0.. {
            match self.server.poll_timeout() {
                Some(at) if at <= self.now => {
                    assert!(
                        round < MAX_SETTLE_ROUNDS,
                        "poll_timeout stays at {:?} (now {:?}) after {round} calls of \
                         handle_timeout",
                        at.saturating_duration_since(start()),
                        self.now - start()
                    );
                    self.server.handle_timeout(self.now);
                    self.drain();
                }
                _ => break,
            }
        }
        for conn in self.conns.values() {
            if conn.authenticated.is_none() {
                assert!(
                    conn.accepted_at + self.handshake_timeout > self.now,
                    "a handshake accepted at {:?} is still pending at {:?}, past the handshake \
                     timeout of {:?}",
                    conn.accepted_at - start(),
                    self.now - start(),
                    self.handshake_timeout
                );
            }
        }
        for index in 0..MAX_CLIENTS {
            if let Some(client) = self.clients[index].as_mut() {
                client.endpoint.handle_timeout(self.now);
                let deliver = u.ratio(3, 4)?;
                self.drain_client(u, index, deliver)?;
            }
        }
        self.drain();
        Ok(())
    }

    // ---- real clients ----------------------------------------------------------------------

    /// Client 0 speaks with tokens, client 1 with the issued identity, client 2 anonymously.
    fn client(&mut self, u: &mut Unstructured, index: usize) -> Result<&mut Client> {
        if self.clients[index].is_none() {
            let name = match index {
                0 => *u.choose(&CLIENT_NAMES)?,
                1 => ISSUED_NAME,
                _ => "",
            };
            let mut config = EngineConfig::default();
            config.auth.rng_seed = Some([index as u8 + 1; 32]);
            let mut endpoint = Endpoint::new(name, config, self.now);
            // The client's clock: mostly the server's, sometimes off by about the window.
            let skew = match u.int_in_range(0..=7u8)? {
                0 => self.window_ms() + 1,
                1 => -self.window_ms() - 1,
                2 => self.window_ms(),
                3 => -self.window_ms() / 2,
                _ => 0,
            };
            let unix = (self.unix_ms() + skew).max(0) as u64;
            endpoint.set_unix_time(self.now, Duration::from_millis(unix));
            self.clients[index] = Some(Client {
                endpoint,
                next_id: 1,
                links: BTreeMap::new(),
                keys: BTreeMap::new(),
            });
        }
        Ok(self.clients[index].as_mut().expect("created above"))
    }

    /// A real client connects: its hello (and early data) goes to a new accepted connection.
    fn connect(&mut self, u: &mut Unstructured) -> Result<()> {
        let index = u.int_in_range(0..=MAX_CLIENTS - 1)?;
        let issued = self.issued.clone();
        let (credential, key) = match index {
            0 => {
                let which = *u.choose(&[0, 0, 1, 2])?;
                (
                    Credential::Token(token(which)),
                    Some(TOKENS[which].to_vec()),
                )
            }
            1 => {
                let (stream_id, token) = match &issued {
                    Some((stream_id, token)) if u.ratio(7, 8)? => (*stream_id, token.clone()),
                    _ => (i64::from(u.int_in_range(0..=3u8)?), token(0)),
                };
                let stream_id = if u.ratio(1, 8)? {
                    stream_id + 1
                } else {
                    stream_id
                };
                let key = token.expose().to_vec();
                (Credential::Issued { stream_id, token }, Some(key))
            }
            _ => (Credential::Anonymous, None),
        };
        let mut options = match u.int_in_range(0..=7u8)? {
            0 => ConnectOptions::to_anyone(credential),
            1 => ConnectOptions::new("other", credential),
            _ => ConnectOptions::new(SERVER, credential),
        };
        options.early_data &= u.arbitrary::<bool>()?;
        options.relay = u.ratio(1, 4)?;
        options.resume = u.ratio(3, 4)?;
        let kind = Self::kind(u)?;
        let params = Self::connection_params(u, kind)?;
        let data_len = u.int_in_range(0..=600)?;
        let stream_id = i64::from(u.int_in_range(0..=3u8)?);
        let now = self.now;
        let client = self.client(u, index)?;
        if options.early_data {
            let data = Bytes::from(vec![0x42; data_len]);
            let _ = client
                .endpoint
                .send(SERVER, stream_id, data, MessageMeta::default());
        }
        let client_id = ConnectionId(client.next_id);
        client.next_id += 1;
        if let Err(error) = client.endpoint.connect(now, client_id, params, options) {
            self.mix(error.to_string().len() as u64);
            return Ok(());
        }
        if let Some(key) = key {
            client.keys.insert(client_id, key);
        }
        // The server accepts it, usually on a connection of the same kind.
        let server_kind = if u.ratio(15, 16)? {
            kind
        } else {
            Self::kind(u)?
        };
        if let Some(server_id) = self.open(u, server_kind)? {
            let conn = self.conns.get_mut(&server_id).expect("opened above");
            conn.client = Some((index, client_id));
            if let Some(client) = self.clients[index].as_mut() {
                client.links.insert(client_id, server_id);
            }
        }
        let deliver = u.ratio(7, 8)?;
        self.drain_client(u, index, deliver)
    }

    /// Takes every event and transmit of a client: transmits are recorded, and delivered to the
    /// server connection at the other end if `deliver`.
    fn drain_client(&mut self, u: &mut Unstructured, index: usize, deliver: bool) -> Result<()> {
        for _ in 0..8 {
            let Some(client) = self.clients[index].as_mut() else {
                return Ok(());
            };
            let mut flights = Vec::new();
            while let Some(event) = client.endpoint.poll_event() {
                match &event {
                    Event::HandshakeFailed { connection, .. }
                    | Event::ConnectionLost { connection, .. } => {
                        client.links.remove(connection);
                    }
                    _ => {}
                }
                flights.push((None, Bytes::from(format!("{event:?}"))));
            }
            let mut transmits = 0;
            while let Some(transmit) = client.endpoint.poll_transmit(self.now) {
                transmits += 1;
                assert!(
                    transmits < MAX_TRANSMITS,
                    "a client's poll_transmit runs on"
                );
                let link = client.links.get(&transmit.connection).copied();
                let key = client.keys.get(&transmit.connection).cloned();
                flights.push((Some((link, key)), transmit.data));
            }
            if flights.is_empty() {
                return Ok(());
            }
            for (sent, data) in flights {
                let Some((link, key)) = sent else {
                    self.mix(data.len() as u64);
                    continue;
                };
                let kind = link
                    .and_then(|id| self.conns.get(&id))
                    .map_or(ConnectionKind::Stream, |conn| conn.params.kind);
                self.learn(&data, key);
                Self::keep(
                    &mut self.recorded,
                    Flight {
                        data: data.clone(),
                        kind,
                    },
                    MAX_RECORDED,
                );
                if let (true, Some(id)) = (deliver, link) {
                    if self.conns.contains_key(&id) {
                        self.deliver(u, id, data)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Notes the hellos in a client's flight: to change and send them again, and the key of their
    /// proof.
    fn learn(&mut self, data: &Bytes, key: Option<Vec<u8>>) {
        let mut rest = data.clone();
        while let Ok(Decoded::Frame(frame)) = codec().decode_bytes(&mut rest) {
            if let Some(Ok(HandshakeBody::Hello(hello))) = handshake_of(&frame.message) {
                let signed_with_key = hello.mode == AtbusAuthMode::Token as i32
                    || hello.mode == AtbusAuthMode::Issued as i32;
                if let (true, Some(key)) = (signed_with_key, &key) {
                    self.remember_key(hello.proof.clone(), key.clone());
                }
                Self::keep(&mut self.hellos, (frame.message.head, hello), MAX_KEPT);
            }
        }
    }

    fn remember_key(&mut self, proof: Bytes, key: Vec<u8>) {
        if self.signing_keys.len() >= 4 * MAX_KEPT {
            self.signing_keys.pop_first();
        }
        self.signing_keys.insert(proof, key);
    }

    /// Hands what the server sent on one of its connections to the client at the other end, and
    /// what the client answers back.
    fn pump(&mut self, u: &mut Unstructured) -> Result<()> {
        let linked: Vec<ConnectionId> = self
            .conns
            .iter()
            .filter(|(_, conn)| conn.client.is_some())
            .map(|(&id, _)| id)
            .collect();
        if linked.is_empty() {
            return Ok(());
        }
        let server_id = *u.choose(&linked)?;
        let conn = self
            .conns
            .get_mut(&server_id)
            .expect("chosen among live ones");
        let (index, client_id) = conn.client.expect("chosen among linked ones");
        let inbox = std::mem::take(&mut conn.to_client);
        let now = self.now;
        if let Some(client) = self.clients[index].as_mut() {
            for data in inbox {
                // The network may lose a datagram.
                if u.ratio(1, 16)? {
                    continue;
                }
                client.endpoint.handle_input(now, client_id, data);
            }
        }
        let deliver = u.ratio(15, 16)?;
        self.drain_client(u, index, deliver)
    }

    // ---- handshakes built here -------------------------------------------------------------

    fn fresh_nonce(&mut self, u: &mut Unstructured) -> Result<Bytes> {
        self.nonce_counter += 1;
        let len = *u.choose(&[16, 16, 16, 32, 24, 0, 15, 33])?;
        let mut nonce = self.nonce_counter.to_be_bytes().to_vec();
        nonce.resize(len.max(8), 0xa5);
        nonce.truncate(len);
        Ok(nonce.into())
    }

    /// The key of a proof: the tokens, the issued token (current or earlier), or nothing.
    fn choose_key(&self, u: &mut Unstructured) -> Result<Option<Vec<u8>>> {
        Ok(match u.int_in_range(0..=7u8)? {
            0 => None,
            1 => Some(TOKENS[2].to_vec()),
            2 => Some(TOKENS[1].to_vec()),
            3 if !self.old_issued_tokens.is_empty() => {
                Some(u.choose(&self.old_issued_tokens)?.expose().to_vec())
            }
            4 | 5 if self.issued.is_some() => self
                .issued
                .as_ref()
                .map(|(_, token)| token.expose().to_vec()),
            6 if !self.tickets.is_empty() => Some(u.choose(&self.tickets)?.secret.to_vec()),
            _ => Some(TOKENS[0].to_vec()),
        })
    }

    /// A hello: fresh and consistent for one mode, or one seen before with some fields changed.
    fn build_hello(
        &mut self,
        u: &mut Unstructured,
    ) -> Result<(Option<MessageHead>, HandshakeHello)> {
        let based = !self.hellos.is_empty() && u.ratio(1, 2)?;
        let (mut frame_head, mut hello, mut key) = if based {
            let (head, hello) = u.choose(&self.hellos)?.clone();
            let key = self.signing_keys.get(&hello.proof).cloned();
            (head, hello, key)
        } else {
            self.fresh_hello(u)?
        };
        // How often each field changes: rarely for a hello seen before (one change at a time).
        let (numerator, denominator) = if based { (1, 10) } else { (1, 24) };
        let mut changed = false;
        for field in 0..14u8 {
            if !u.ratio(numerator, denominator)? {
                continue;
            }
            changed = true;
            match field {
                0 => hello.protocol_version = *u.choose(&[0, 2, -1, i32::MAX, 1])?,
                1 => hello.mode = *u.choose(&[0, 1, 2, 3, 4, -1])?,
                2 => hello.role = *u.choose(&[0, 1, 2, -1])?,
                3 => {
                    hello.source = match u.int_in_range(0..=5u8)? {
                        0 => String::new(),
                        1 => ISSUED_NAME.to_string(),
                        2 => "anon-0123456789abcdef".to_string(),
                        3 => SERVER.to_string(),
                        4 => "a b".to_string(),
                        _ => short_string(u)?,
                    }
                }
                4 => hello.destination = u.choose(&["", "other", SERVER, "server "])?.to_string(),
                5 => hello.nonce = self.fresh_nonce(u)?,
                6 => {
                    let now_ms = self.unix_ms();
                    let window = self.window_ms();
                    hello.timestamp_milliseconds = match u.int_in_range(0..=7u8)? {
                        0 => now_ms + window,
                        1 => now_ms - window,
                        2 => now_ms + window + 1,
                        3 => now_ms - window - 1,
                        4 => i64::MIN,
                        5 => i64::MAX,
                        6 => 0,
                        _ => now_ms,
                    }
                }
                7 => hello.stream_id = int64(u)?,
                8 => {
                    hello.parameters = match u.int_in_range(0..=3u8)? {
                        0 => None,
                        _ => Some(ConnectionParameters {
                            kind: *u.choose(&[0, 1, 2, -1])?,
                            mtu: int64(u)?,
                        }),
                    }
                }
                9 => hello.early_data = !hello.early_data,
                10 => {
                    hello.ticket = if !self.tickets.is_empty() && u.arbitrary()? {
                        let ticket = u.choose(&self.tickets)?;
                        let mut sealed = ticket.sealed.to_vec();
                        if !sealed.is_empty() && u.arbitrary()? {
                            let at = u.choose_index(sealed.len())?;
                            sealed[at] ^= 1;
                        }
                        sealed.into()
                    } else {
                        input_bytes(u, 80)?
                    }
                }
                11 => {
                    // Another instance: the client restarted.
                    hello.instance = Bytes::from(vec![u.int_in_range(0..=3u8)?; 8]);
                    if u.ratio(1, 8)? {
                        hello.instance = input_bytes(u, 12)?;
                    }
                }
                12 => {
                    hello.peer_instance = match u.int_in_range(0..=3u8)? {
                        0 => Bytes::new(),
                        1 => Bytes::from(vec![9; 8]),
                        2 => input_bytes(u, 12)?,
                        _ => self.server_instance.clone(),
                    }
                }
                _ => key = self.choose_key(u)?,
            }
        }
        // Padding is not covered by the proof: any amount, the same proof.
        hello.padding = match u.int_in_range(0..=7u8)? {
            0 => Bytes::new(),
            1 => Bytes::from(vec![0; u.int_in_range(0..=900)?]),
            2 => input_bytes(u, 64)?,
            _ => hello.padding,
        };
        if !based || changed || u.ratio(1, 8)? {
            hello.proof = match u.int_in_range(0..=15u8)? {
                0 => Bytes::new(),
                1 => input_bytes(u, 40)?,
                2 => hello.proof,
                _ => key
                    .as_ref()
                    .map_or_else(Bytes::new, |key| sign(key, &hello_transcript(&hello))),
            };
        }
        if let Some(key) = key {
            self.remember_key(hello.proof.clone(), key);
        }
        // The head names the hello's source and destination, or does not quite.
        if !based || u.ratio(1, 8)? {
            frame_head = match u.int_in_range(0..=31u8)? {
                0 => None,
                1 => head(&short_string(u)?, &hello.destination),
                2 => head(&hello.source, &short_string(u)?),
                _ => head(&hello.source, &hello.destination),
            };
        }
        Ok((frame_head, hello))
    }

    /// A fresh hello that passes the server's rules if its mode is allowed: the head, the hello
    /// and the key of its proof.
    #[allow(clippy::type_complexity)]
    fn fresh_hello(
        &mut self,
        u: &mut Unstructured,
    ) -> Result<(Option<MessageHead>, HandshakeHello, Option<Vec<u8>>)> {
        let kind = u.int_in_range(0..=1)?;
        let mut hello = HandshakeHello {
            protocol_version: atbus_proto::PROTOCOL_VERSION as i32,
            mode: AtbusAuthMode::Token as i32,
            role: if u.ratio(1, 4)? {
                AtbusHandshakeRole::Relay
            } else {
                AtbusHandshakeRole::Node
            } as i32,
            source: u.choose(&CLIENT_NAMES)?.to_string(),
            destination: if u.ratio(1, 4)? { "" } else { SERVER }.to_string(),
            nonce: self.fresh_nonce(u)?,
            timestamp_milliseconds: self.unix_ms(),
            stream_id: 0,
            parameters: Some(ConnectionParameters {
                kind,
                mtu: if kind == 0 { 65_536 } else { 1232 },
            }),
            early_data: u.arbitrary()?,
            ticket: Bytes::new(),
            padding: Bytes::new(),
            instance: Bytes::from(vec![1; 8]),
            peer_instance: if u.arbitrary()? {
                self.server_instance.clone()
            } else {
                Bytes::new()
            },
            proof: Bytes::new(),
        };
        if hello.nonce.len() != 16 && u.ratio(3, 4)? {
            hello.nonce.truncate(16);
        }
        let key = match u.int_in_range(0..=7u8)? {
            0 | 1 => {
                hello.mode = AtbusAuthMode::Issued as i32;
                hello.source = ISSUED_NAME.to_string();
                hello.role = AtbusHandshakeRole::Node as i32;
                match &self.issued {
                    Some((stream_id, token)) => {
                        hello.stream_id = *stream_id;
                        Some(token.expose().to_vec())
                    }
                    None => Some(TOKENS[0].to_vec()),
                }
            }
            2 => {
                hello.mode = AtbusAuthMode::Anonymous as i32;
                hello.source = String::new();
                hello.role = AtbusHandshakeRole::Node as i32;
                hello.early_data = false;
                None
            }
            3 | 4 if !self.tickets.is_empty() => {
                let ticket = u.choose(&self.tickets)?.clone();
                hello.mode = AtbusAuthMode::Ticket as i32;
                hello.source = ticket.name;
                hello.stream_id = ticket.stream_id;
                hello.ticket = ticket.sealed;
                Some(ticket.secret.to_vec())
            }
            _ => Some(TOKENS[*u.choose(&[0, 0, 0, 1])?].to_vec()),
        };
        // An honest client pads the hello so that the answer never outgrows it.
        if u.ratio(3, 4)? {
            hello.padding = Bytes::from(vec![0; 256]);
        }
        let head = head(&hello.source, &hello.destination);
        Ok((head, hello, key))
    }

    /// An accept, as a confused or hostile client might send one to a server.
    fn build_accept(&mut self, u: &mut Unstructured) -> Result<HandshakeAccept> {
        Ok(HandshakeAccept {
            source: u.choose(&["client-a", SERVER, ""])?.to_string(),
            destination: u.choose(&[SERVER, "client-a", ""])?.to_string(),
            nonce: self.fresh_nonce(u)?,
            early_data_accepted: u.arbitrary()?,
            confirm_required: u.arbitrary()?,
            ticket: input_bytes(u, 40)?,
            ticket_lifetime_seconds: int64(u)?,
            role: *u.choose(&[0, 1, 7])?,
            instance: input_bytes(u, 8)?,
            proof: input_bytes(u, 40)?,
        })
    }

    /// A confirm for `id`: over the proof of the accept the server sent on it, keyed by the key
    /// of its hello (the right confirm), or by another key, or arbitrary.
    fn build_confirm(
        &mut self,
        u: &mut Unstructured,
        id: ConnectionId,
    ) -> Result<HandshakeConfirm> {
        let conn = self.conns.get(&id);
        let accept_proof = conn
            .and_then(|conn| conn.accept.as_ref())
            .map(|accept| accept.proof.clone());
        let hello_key = conn
            .and_then(|conn| conn.first_hello.as_ref())
            .and_then(|hello| self.signing_keys.get(&hello.proof))
            .cloned();
        let proof = match (accept_proof, u.int_in_range(0..=7u8)?) {
            (_, 0) => input_bytes(u, 40)?,
            (_, 1) => Bytes::new(),
            (Some(accept_proof), 2) => match self.choose_key(u)? {
                Some(key) => sign(&key, &confirm_transcript(&accept_proof)),
                None => Bytes::new(),
            },
            (Some(accept_proof), _) => match hello_key {
                Some(key) => sign(&key, &confirm_transcript(&accept_proof)),
                None => sign(TOKENS[0], &confirm_transcript(&accept_proof)),
            },
            (None, _) => input_bytes(u, 32)?,
        };
        Ok(HandshakeConfirm { proof })
    }

    /// A handshake frame built here, to a connection the input picks.
    fn send_built(&mut self, u: &mut Unstructured) -> Result<()> {
        let choice = u.int_in_range(0..=15u8)?;
        let (frame_head, body, kind) = match choice {
            0..=10 => {
                let (head, hello) = self.build_hello(u)?;
                let kind = match hello.parameters.map(|p| p.kind) {
                    Some(0) => Some(ConnectionKind::Stream),
                    Some(1) => Some(ConnectionKind::Datagram),
                    _ => None,
                };
                Self::keep(&mut self.hellos, (head.clone(), hello.clone()), MAX_KEPT);
                (head, Some(HandshakeBody::Hello(hello)), kind)
            }
            11 => {
                let accept = self.build_accept(u)?;
                let head = head(&accept.source, &accept.destination);
                (head, Some(HandshakeBody::Accept(accept)), None)
            }
            _ => (head("client-a", SERVER), None, None),
        };
        let id = self.target(u, kind)?;
        let body = match (body, choice) {
            (Some(body), _) => Some(body),
            (None, 12) => None,
            (None, _) => Some(HandshakeBody::Confirm(self.build_confirm(u, id)?)),
        };
        let data = if u.ratio(1, 32)? {
            input_bytes(u, 64)?
        } else {
            HandshakeMessage { body }.encode_to_vec().into()
        };
        let wrapping = Wrapping::arbitrary(u)?;
        let mut wire = BytesMut::from(&handshake_frame(frame_head, data, &wrapping)[..]);
        // Sometimes another frame follows in the same input: a ping, or a packet of early data.
        if u.ratio(1, 8)? {
            let frame = FrameMessage {
                head: head("client-a", SERVER),
                body: Some(if u.arbitrary()? {
                    Body::Ping(PingData {
                        sequence: 1,
                        timepoint_microseconds: 1,
                    })
                } else {
                    Body::Packet(PacketData {
                        stream_id: i64::from(u.int_in_range(0..=3u8)?),
                        content: PacketContent {
                            fragment: vec![FragmentType {
                                data: input_bytes(u, 32)?,
                                ..Default::default()
                            }],
                        }
                        .encode_to_vec()
                        .into(),
                        timepoint_microseconds: 1,
                        ..Default::default()
                    })
                }),
            };
            let _ = codec().encode(&frame, &mut wire);
        }
        let wire = wire.freeze();
        if let Some(conn) = self.conns.get(&id) {
            let flight = Flight {
                data: wire.clone(),
                kind: conn.params.kind,
            };
            Self::keep(&mut self.recorded, flight, MAX_RECORDED);
        }
        self.deliver(u, id, wire)
    }

    // ---- other operations ------------------------------------------------------------------

    /// A client's flight played again, mostly on a fresh connection.
    fn replay(&mut self, u: &mut Unstructured) -> Result<()> {
        let flight = if !self.authenticated_inputs.is_empty() && u.arbitrary()? {
            u.choose(&self.authenticated_inputs)?.clone()
        } else if !self.recorded.is_empty() {
            u.choose(&self.recorded)?.clone()
        } else {
            return Ok(());
        };
        let id = self.target(u, Some(flight.kind))?;
        self.deliver(u, id, flight.data)
    }

    fn raw(&mut self, u: &mut Unstructured) -> Result<()> {
        let id = self.target(u, None)?;
        let bytes = input_bytes(u, 256)?;
        self.deliver(u, id, bytes)
    }

    /// Issues (or re-issues) the identity of `issued-1`, or another.
    fn issue(&mut self, u: &mut Unstructured) -> Result<()> {
        let name = if u.ratio(7, 8)? {
            ISSUED_NAME.to_string()
        } else {
            u.choose(&["client-a", "anon-x", "", "issued-2"])?
                .to_string()
        };
        let stream_id = i64::from(u.int_in_range(0..=3u8)?) - i64::from(u.ratio(1, 16)?);
        let lifetime = *u.choose(&[
            Duration::from_secs(3600),
            Duration::from_secs(3600),
            Duration::from_secs(1),
            Duration::ZERO,
        ])?;
        match self
            .server
            .issue_identity(self.now, &name, stream_id, lifetime)
        {
            Ok(identity) if name == ISSUED_NAME => {
                if let Some((_, old)) = self.issued.replace((identity.stream_id, identity.token)) {
                    Self::keep(&mut self.old_issued_tokens, old, 4);
                }
            }
            Ok(identity) => self.mix(identity.stream_id as u64),
            Err(error) => self.mix(error.to_string().len() as u64),
        }
        Ok(())
    }

    fn admin(&mut self, u: &mut Unstructured) -> Result<()> {
        match u.int_in_range(0..=3u8)? {
            0 => self.issue(u)?,
            1 => {
                let revoked = self.server.revoke_identity(self.now, ISSUED_NAME);
                self.mix(u64::from(revoked));
            }
            _ => {
                let ids: Vec<ConnectionId> = self.conns.keys().copied().collect();
                let Some(&id) = u.choose(&ids).ok() else {
                    return Ok(());
                };
                if u.arbitrary()? {
                    self.server.connection_lost(self.now, id);
                } else {
                    let reason = CloseReasonData {
                        code: AtbusCloseReason::Shutdown as i32,
                        message: short_string(u)?,
                    };
                    self.server.close_connection(id, reason);
                }
            }
        }
        Ok(())
    }

    fn advance(&mut self, u: &mut Unstructured) -> Result<()> {
        let to = match u.int_in_range(0..=10u8)? {
            0 => self.now + Duration::from_millis(u.int_in_range(0..=100)?),
            1 => self.now + Duration::from_millis(u.int_in_range(0..=5000)?),
            2 => self.now + Duration::from_secs(u.int_in_range(0..=120)?),
            3 => self.now + self.window,
            4 => self.now + self.window + Duration::from_millis(1),
            5 => self.now + self.window.saturating_sub(Duration::from_millis(1)),
            6 => self.now + self.handshake_timeout,
            8 if !self.authenticated_timestamps.is_empty() => {
                // To the end of the window of a hello authenticated (its nonce may be forgotten
                // from then on), or just past it.
                let timestamp = *u.choose(&self.authenticated_timestamps)?;
                let end = timestamp.saturating_add(self.window_ms()) - BASE_UNIX_MS;
                let end = u64::try_from(end).unwrap_or(0) + u64::from(u.int_in_range(0..=1u8)?);
                start() + Duration::from_millis(end.min(MAX_ELAPSED.as_millis() as u64))
            }
            7 => {
                // To just past the deadline of the oldest pending handshake.
                let oldest = self
                    .conns
                    .values()
                    .filter(|conn| conn.authenticated.is_none())
                    .map(|conn| conn.accepted_at)
                    .min()
                    .unwrap_or(self.now);
                oldest + self.handshake_timeout + Duration::from_millis(u.int_in_range(0..=1)?)
            }
            _ => self.server.poll_timeout().unwrap_or(self.now),
        };
        self.advance_to(u, to)
    }

    /// Runs one operation chosen by the input.
    fn step(&mut self, u: &mut Unstructured) -> Result<()> {
        let op = u.int_in_range(0..=19u8)?;
        trace!("-- operation {op}");
        match op {
            0 => self.raw(u)?,
            1..=5 => self.send_built(u)?,
            6..=8 => self.connect(u)?,
            9..=11 => self.pump(u)?,
            12 | 13 => self.replay(u)?,
            14..=16 => self.advance(u)?,
            17 => {
                let kind = Self::kind(u)?;
                self.open(u, kind)?;
            }
            _ => self.admin(u)?,
        }
        Ok(())
    }
}

/// The frames of `data`, in short, for the trace.
fn describe(data: &Bytes) -> String {
    let mut rest = data.clone();
    let mut out = Vec::new();
    while !rest.is_empty() {
        let frame = match codec().decode_bytes(&mut rest) {
            Ok(Decoded::Frame(frame)) => frame,
            Ok(Decoded::Incomplete { .. }) => {
                out.push(format!("incomplete({})", rest.len()));
                break;
            }
            Err(error) => {
                out.push(format!("error({error})"));
                break;
            }
        };
        let message = frame.message;
        let what = match handshake_of(&message) {
            Some(Ok(body)) => format!("{body:?}"),
            Some(Err(())) => "bad handshake".to_string(),
            None => format!("{:?}", message.body),
        };
        out.push(format!(
            "[{} bytes, head {:?}: {what}]",
            frame.wire_len, message.head
        ));
    }
    out.join(" ")
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(mut harness) = Harness::new(&mut u) else {
        return;
    };
    harness.drain();
    for _ in 0..MAX_OPS {
        if u.is_empty() || harness.step(&mut u).is_err() {
            break;
        }
        harness.drain();
    }
    black_box(harness.server.stats());
    black_box(harness.digest);
});
