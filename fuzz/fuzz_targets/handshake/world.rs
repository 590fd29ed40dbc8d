//! The world of a run: the server under test and what the harness knows of it (its connections
//! as its events left them, the real clients, the hellos, keys, tickets and flights seen), how it
//! is set up from the input, and how input reaches a server connection (whole, cut, flipped,
//! doubled or in chunks) while the harness decodes it alongside to know the hello the server
//! checks.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use arbitrary::{Result, Unstructured};
use atbus_core::engine::{
    AllowRule, AnonymousPolicy, ConnectionId, ConnectionKind, ConnectionParams, Endpoint,
    EngineConfig, Token,
};
use atbus_proto::Decoded;
use atbus_proto::handshake::HandshakeHello;
use atbus_proto::handshake::handshake_message::Body as HandshakeBody;
use atbus_proto::protocol::{FrameMessage, MessageHead};
use bytes::{Bytes, BytesMut};

use crate::common::{Digest, start};
use crate::ops::input_bytes;
use crate::proofs::token;
use crate::trace::describe;
use crate::wire::{codec, handshake_of};
use crate::{BASE_UNIX_MS, MAX_CLIENTS, MAX_CONNECTIONS, MAX_FRAME_LENGTH, SERVER};

/// What the harness saw of the first hello of a connection (the one the server checks).
#[derive(Clone)]
pub(crate) struct HelloInfo {
    pub(crate) mode: i32,
    pub(crate) source: String,
    pub(crate) nonce: Bytes,
    pub(crate) proof: Bytes,
    pub(crate) stream_id: i64,
    pub(crate) timestamp_milliseconds: i64,
}

/// What the harness saw of the accept the server sent on a connection.
pub(crate) struct AcceptInfo {
    pub(crate) proof: Bytes,
    pub(crate) confirm_required: bool,
}

/// A ticket the server handed out, with the secret that signs hellos resuming with it.
#[derive(Clone)]
pub(crate) struct KnownTicket {
    pub(crate) sealed: Bytes,
    pub(crate) secret: Bytes,
    pub(crate) name: String,
    pub(crate) stream_id: i64,
}

/// An accepted connection of the server, as its events left it.
pub(crate) struct ServerConn {
    pub(crate) params: ConnectionParams,
    pub(crate) accepted_at: Instant,
    /// Bytes given to `handle_input` before `Authenticated`.
    pub(crate) fed: usize,
    /// Bytes of the transmits before `Authenticated`.
    pub(crate) sent: usize,
    /// The largest input given at once (a datagram, on a datagram connection).
    pub(crate) largest_datagram: usize,
    /// What it received first: the hello datagram, or the first chunk of a stream.
    pub(crate) first_input: Option<Bytes>,
    /// Whether `Authenticated` came for it.
    pub(crate) authenticated: Option<String>,
    /// The harness's own decoding of the input, until the first handshake frame.
    pub(crate) shadow: BytesMut,
    /// The first handshake frame was seen, or input that the server refuses.
    pub(crate) decided: bool,
    pub(crate) first_hello: Option<HelloInfo>,
    pub(crate) accept: Option<AcceptInfo>,
    /// The real client at the other end: its index and its connection id.
    pub(crate) client: Option<(usize, ConnectionId)>,
    /// Transmits of the server waiting to be handed to the client.
    pub(crate) to_client: Vec<Bytes>,
}

/// A real connecting endpoint.
pub(crate) struct Client {
    pub(crate) endpoint: Endpoint,
    /// Its connections, and the server connection at the other end.
    pub(crate) links: BTreeMap<ConnectionId, ConnectionId>,
    /// The key of the hello on each of its connections (token or issued token), to learn tickets.
    pub(crate) keys: BTreeMap<ConnectionId, Vec<u8>>,
}

/// A flight a client sent: its bytes and the kind of connection it went on.
#[derive(Clone)]
pub(crate) struct Flight {
    pub(crate) data: Bytes,
    pub(crate) kind: ConnectionKind,
}

pub(crate) struct Harness {
    pub(crate) server: Endpoint,
    pub(crate) now: Instant,
    pub(crate) window: Duration,
    pub(crate) handshake_timeout: Duration,
    pub(crate) replay_cache_size: usize,
    /// The identity issued for `issued-1`: its stream and token, and the tokens issued before.
    pub(crate) issued: Option<(i64, Token)>,
    pub(crate) old_issued_tokens: Vec<Token>,
    pub(crate) conns: BTreeMap<ConnectionId, ServerConn>,
    /// Ids of connections refused or lost.
    pub(crate) dead: Vec<ConnectionId>,
    /// One past the highest connection id the server handed out.
    pub(crate) next_id: u64,
    pub(crate) clients: Vec<Option<Client>>,
    /// Peers reachable, as the server's events say.
    pub(crate) reachable: BTreeSet<String>,
    pub(crate) recorded: Vec<Flight>,
    /// Hellos seen (built here or sent by real clients), to change and send again.
    pub(crate) hellos: Vec<(Option<MessageHead>, HandshakeHello)>,
    /// The key each known hello proof was made with.
    pub(crate) signing_keys: BTreeMap<Bytes, Vec<u8>>,
    pub(crate) tickets: Vec<KnownTicket>,
    /// (nonce, proof) of the hellos authenticated so far.
    pub(crate) authenticated_hellos: BTreeSet<(Bytes, Bytes)>,
    /// Timestamps of the hellos authenticated, whose windows close at interesting times.
    pub(crate) authenticated_timestamps: Vec<i64>,
    /// The first input of connections that authenticated: what a replay attack records.
    pub(crate) authenticated_inputs: Vec<Flight>,
    /// Makes the nonces of fresh hellos unique.
    pub(crate) nonce_counter: u64,
    /// The server's instance, as its accepts say.
    pub(crate) server_instance: Bytes,
    /// Folded over everything the endpoints give back, so none of it is optimised away.
    pub(crate) digest: Digest,
}

impl Harness {
    pub(crate) fn new(u: &mut Unstructured) -> Result<Self> {
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
            digest: Digest::default(),
        };
        if u.ratio(2, 3)? {
            harness.issue(u)?;
        }
        Ok(harness)
    }

    /// The server's Unix clock now, in milliseconds.
    pub(crate) fn unix_ms(&self) -> i64 {
        BASE_UNIX_MS + (self.now - start()).as_millis() as i64
    }

    pub(crate) fn window_ms(&self) -> i64 {
        self.window.as_millis() as i64
    }

    pub(crate) fn mix(&mut self, value: u64) {
        self.digest.mix(value);
    }

    pub(crate) fn keep<T>(list: &mut Vec<T>, item: T, max: usize) {
        if list.len() >= max {
            list.remove(0);
        }
        list.push(item);
    }

    // ---- the server's connections ----------------------------------------------------------

    pub(crate) fn connection_params(
        u: &mut Unstructured,
        kind: ConnectionKind,
    ) -> Result<ConnectionParams> {
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

    pub(crate) fn kind(u: &mut Unstructured) -> Result<ConnectionKind> {
        Ok(if u.arbitrary()? {
            ConnectionKind::Stream
        } else {
            ConnectionKind::Datagram
        })
    }

    /// Accepts a new connection of `kind`: the server hands out an id it never gave before, not
    /// even one of a connection that is gone.
    pub(crate) fn open(
        &mut self,
        u: &mut Unstructured,
        kind: ConnectionKind,
    ) -> Result<Option<ConnectionId>> {
        if self.conns.len() >= MAX_CONNECTIONS {
            return Ok(None);
        }
        let params = Self::connection_params(u, kind)?;
        let id = match self.server.accept(self.now, params) {
            Ok(id) => id,
            Err(error) => panic!("accepting a connection failed: {error}"),
        };
        assert!(
            id.0 >= self.next_id && !self.dead.contains(&id),
            "the server handed out {id} again"
        );
        self.next_id = id.0 + 1;
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
    pub(crate) fn target(
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
    pub(crate) fn feed(&mut self, id: ConnectionId, data: Bytes) {
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
    pub(crate) fn shadow_decode(conn: &mut ServerConn, data: &Bytes) {
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
    pub(crate) fn deliver(
        &mut self,
        u: &mut Unstructured,
        id: ConnectionId,
        bytes: Bytes,
    ) -> Result<()> {
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
}
