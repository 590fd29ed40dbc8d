//! A node over TCP or UDP, as a client written from the document would be: a TOKEN handshake
//! (hello padded to 384 bytes, the accept's proof checked), then frames in and out. What it does
//! with what arrives is up to the caller: [`Client::next_frame`] gives raw frames, and
//! [`Client::pump`] handles them as a node must (a pong for every ping, stream data kept and
//! acknowledged at once, a FINISH_CONNECTION turned into an error).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use atbus_proto::handshake::handshake_message::Body as HandshakeBody;
use atbus_proto::handshake::{ConnectionParameters, HandshakeHello};
use atbus_proto::protocol::frame_message::Body;
use atbus_proto::protocol::packet_content::FragmentType;
use atbus_proto::protocol::{FrameMessage, MessageHead, PacketContent, PacketData, PingData};
use atbus_proto::{Decoded, FrameCodec};
use bytes::{Bytes, BytesMut};
use prost::Message;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;

use crate::handshake::{handshake_body, padded_hello_frame};
use crate::inbound::{Inbound, Received};
use crate::transcript::{accept_transcript, hello_transcript, hmac_sha256};

/// `ATBUS_PACKET_FLAG_TYPE.FINISH_CONNECTION`.
pub const FINISH_CONNECTION: i32 = 2;
/// The largest datagram this client sends or expects over UDP to a loopback address.
const DATAGRAM_MTU: usize = 16 * 1024;

/// How the client reaches the other side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// An ordered byte stream.
    Tcp,
    /// Datagrams, one or more whole frames each.
    Udp,
}

/// What went wrong.
#[derive(Debug)]
pub enum ClientError {
    /// The socket failed.
    Io(std::io::Error),
    /// The other side closed the connection without a reason.
    Closed,
    /// The other side closed the connection with a FINISH_CONNECTION.
    Finished {
        /// `close_reason_data.code`.
        code: i32,
        /// `close_reason_data.message`.
        message: String,
    },
    /// Bytes that are not frames, or an accept that does not check.
    Protocol(String),
    /// Nothing came in time.
    Timeout,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Io(error) => write!(f, "i/o: {error}"),
            ClientError::Closed => write!(f, "closed without a reason"),
            ClientError::Finished { code, message } => {
                write!(f, "closed with reason {code}: {message}")
            }
            ClientError::Protocol(what) => write!(f, "protocol: {what}"),
            ClientError::Timeout => write!(f, "timed out"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<std::io::Error> for ClientError {
    fn from(error: std::io::Error) -> Self {
        ClientError::Io(error)
    }
}

enum Io {
    Tcp(TcpStream),
    Udp(UdpSocket),
}

/// An authenticated connection of a node named [`name`](Self::name).
pub struct Client {
    io: Io,
    codec: FrameCodec,
    read_buffer: BytesMut,
    decoded: VecDeque<FrameMessage>,
    /// This node's name.
    pub name: String,
    /// The accepting side's name, from its accept.
    pub peer: String,
    /// This node's instance (8 random bytes unless chosen).
    pub instance: Vec<u8>,
    /// Stream data received, and the messages it made.
    pub inbound: Inbound,
    /// Whether [`pump`](Self::pump) answers pings (a node MUST; a test may play one that does
    /// not).
    pub answer_pings: bool,
    /// Whether [`pump`](Self::pump) acknowledges stream data (a node must, for its senders to
    /// go on; a test may play one that reads and says nothing).
    pub acknowledge: bool,
    /// Pings received.
    pub pings_received: u64,
    /// Where each (destination, stream) this client sends on has got to, in units.
    next_offsets: BTreeMap<(String, i64), u64>,
    /// The instance tag each originator's relayed frames carried.
    peer_tags: BTreeMap<String, u32>,
    ping_sequence: i64,
    epoch: Instant,
}

/// A node's instance tag: the first 4 bytes of its instance, little-endian; 0 reads as 1.
pub fn instance_tag(instance: &[u8]) -> u32 {
    let mut bytes = [0u8; 4];
    let len = instance.len().min(4);
    bytes[..len].copy_from_slice(&instance[..len]);
    u32::from_le_bytes(bytes).max(1)
}

/// `len` fresh random bytes.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source");
    bytes
}

impl Client {
    /// Connects to `address` as `name`, proving `token` (its bytes as configured), with a fresh
    /// instance.
    pub async fn connect(
        transport: Transport,
        address: SocketAddr,
        name: &str,
        token: &[u8],
    ) -> Result<Client, ClientError> {
        Client::connect_as(transport, address, name, token, random_bytes(8)).await
    }

    /// [`connect`](Self::connect) with a chosen instance.
    pub async fn connect_as(
        transport: Transport,
        address: SocketAddr,
        name: &str,
        token: &[u8],
        instance: Vec<u8>,
    ) -> Result<Client, ClientError> {
        let mut client = Client::open(transport, address, name, instance).await?;
        client.handshake(token).await?;
        Ok(client)
    }

    /// A connection to `address` on which nothing was sent yet (see [`handshake`](Self::handshake)).
    pub async fn open(
        transport: Transport,
        address: SocketAddr,
        name: &str,
        instance: Vec<u8>,
    ) -> Result<Client, ClientError> {
        let io = match transport {
            Transport::Tcp => {
                let stream = TcpStream::connect(address).await?;
                stream.set_nodelay(true)?;
                Io::Tcp(stream)
            }
            Transport::Udp => {
                let socket = UdpSocket::bind("127.0.0.1:0").await?;
                socket.connect(address).await?;
                Io::Udp(socket)
            }
        };
        Ok(Client {
            io,
            codec: FrameCodec::default(),
            read_buffer: BytesMut::new(),
            decoded: VecDeque::new(),
            name: name.to_string(),
            peer: String::new(),
            instance,
            inbound: Inbound::default(),
            answer_pings: true,
            acknowledge: true,
            pings_received: 0,
            next_offsets: BTreeMap::new(),
            peer_tags: BTreeMap::new(),
            ping_sequence: 0,
            epoch: Instant::now(),
        })
    }

    /// The TOKEN handshake of section 8: a hello signed with `token`, then the accept, whose
    /// proof must check. Any frame before the accept other than the accept is an error.
    pub async fn handshake(&mut self, token: &[u8]) -> Result<(), ClientError> {
        let kind = match self.io {
            Io::Tcp(_) => 0,
            Io::Udp(_) => 1,
        };
        let mtu = match self.io {
            Io::Tcp(_) => 65_536,
            Io::Udp(_) => DATAGRAM_MTU as i64,
        };
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as i64;
        let mut hello = HandshakeHello {
            protocol_version: 1,
            source: self.name.clone(),
            nonce: random_bytes(16).into(),
            timestamp_milliseconds: timestamp,
            parameters: Some(ConnectionParameters { kind, mtu }),
            instance: self.instance.clone().into(),
            ..Default::default()
        };
        hello.proof = hmac_sha256(token, &hello_transcript(&hello)).into();
        self.send_raw(&padded_hello_frame(&hello)).await?;
        let frame = self.read_frame(Duration::from_secs(10)).await?;
        self.check_finish(&frame)?;
        let Some(HandshakeBody::Accept(accept)) = handshake_body(&frame) else {
            return Err(ClientError::Protocol(format!(
                "expected an accept, got {frame:?}"
            )));
        };
        let expected = hmac_sha256(
            token,
            &accept_transcript(&hello.proof, &hello.nonce, &accept),
        );
        if accept.proof[..] != expected[..] {
            return Err(ClientError::Protocol(
                "the accept's proof does not check".into(),
            ));
        }
        if accept.confirm_required {
            return Err(ClientError::Protocol(
                "a confirm was asked for (this client does not send one)".into(),
            ));
        }
        self.peer = accept.source;
        Ok(())
    }

    /// Sends `bytes` as they are: one datagram, or the next bytes of the stream.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        match &mut self.io {
            Io::Tcp(stream) => stream.write_all(bytes).await?,
            Io::Udp(socket) => {
                socket.send(bytes).await?;
            }
        }
        Ok(())
    }

    /// Encodes and sends `frame`.
    pub async fn send_frame(&mut self, frame: &FrameMessage) -> Result<(), ClientError> {
        let mut wire = BytesMut::new();
        self.codec
            .encode(frame, &mut wire)
            .map_err(|error| ClientError::Protocol(error.to_string()))?;
        self.send_raw(&wire).await
    }

    /// A head from this node to `destination`; through a relay (the destination is not the
    /// peer), with the instance tags of section 5.9.
    pub fn head(&self, destination: &str) -> MessageHead {
        let mut head = MessageHead {
            source: self.name.clone(),
            destination: destination.to_string(),
            ..Default::default()
        };
        if destination != self.peer {
            head.source_instance = instance_tag(&self.instance);
            head.destination_instance = self.peer_tags.get(destination).copied().unwrap_or(0);
        }
        head
    }

    /// Sends `data` to `to` on `stream_id` as one message in one fragment, at the next offset
    /// of that stream (no resend: meant for reliable paths and short tests).
    pub async fn send_message(
        &mut self,
        to: &str,
        stream_id: i64,
        data: &[u8],
    ) -> Result<PacketData, ClientError> {
        let timepoint = self.timepoint();
        let offset = self
            .next_offsets
            .entry((to.to_string(), stream_id))
            .or_insert(0);
        let packet = PacketData {
            stream_id,
            stream_offset: *offset as i64,
            content: PacketContent {
                fragment: vec![FragmentType {
                    data: Bytes::copy_from_slice(data),
                    ..Default::default()
                }],
            }
            .encode_to_vec()
            .into(),
            timepoint_microseconds: timepoint,
            ..Default::default()
        };
        *offset += data.len() as u64 + 1;
        let frame = FrameMessage {
            head: Some(self.head(to)),
            body: Some(Body::Packet(packet.clone())),
        };
        self.send_frame(&frame).await?;
        Ok(packet)
    }

    /// Sends a ping to the peer.
    pub async fn ping(&mut self) -> Result<(), ClientError> {
        self.ping_sequence += 1;
        let frame = FrameMessage {
            head: Some(self.head(&self.peer.clone())),
            body: Some(Body::Ping(PingData {
                sequence: self.ping_sequence,
                timepoint_microseconds: self.timepoint(),
            })),
        };
        self.send_frame(&frame).await
    }

    /// The next frame, as it came, within `wait`.
    pub async fn next_frame(&mut self, wait: Duration) -> Result<FrameMessage, ClientError> {
        self.read_frame(wait).await
    }

    /// The next frame, handled as a node handles it: a ping answered (if
    /// [`answer_pings`](Self::answer_pings)), a packet's data kept in
    /// [`inbound`](Self::inbound) and acknowledged at once, a FINISH_CONNECTION turned into
    /// [`ClientError::Finished`]. Returns the frame.
    pub async fn pump(&mut self, wait: Duration) -> Result<FrameMessage, ClientError> {
        let frame = self.read_frame(wait).await?;
        self.check_finish(&frame)?;
        let head = frame.head.clone().unwrap_or_default();
        let from = match head.forward_for_source.is_empty() {
            true => head.source.clone(),
            false => head.forward_for_source.clone(),
        };
        match &frame.body {
            Some(Body::Ping(ping)) => {
                self.pings_received += 1;
                if self.answer_pings {
                    let pong = FrameMessage {
                        head: Some(self.head(&self.peer.clone())),
                        body: Some(Body::Pong(*ping)),
                    };
                    self.send_frame(&pong).await?;
                }
            }
            Some(Body::Packet(packet)) if packet.stream_id >= 0 => {
                if head.source_instance != 0 {
                    self.peer_tags.insert(from.clone(), head.source_instance);
                }
                self.inbound
                    .take_packet(&from, packet)
                    .map_err(ClientError::Protocol)?;
                if !self.acknowledge {
                    return Ok(frame);
                }
                let ack = FrameMessage {
                    head: Some(self.head(&from)),
                    body: Some(Body::Acknowledge(self.inbound.acknowledgement(&from))),
                };
                self.send_frame(&ack).await?;
            }
            _ => {}
        }
        Ok(frame)
    }

    /// Pumps until a whole message is in, within `wait`.
    pub async fn recv_message(&mut self, wait: Duration) -> Result<Received, ClientError> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(message) = self.inbound.messages.pop_front() {
                return Ok(message);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::Timeout);
            }
            self.pump(left).await?;
        }
    }

    /// Pumps for `duration`: frames handled, nothing returned but errors.
    pub async fn pump_for(&mut self, duration: Duration) -> Result<(), ClientError> {
        let deadline = Instant::now() + duration;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            match self.pump(left).await {
                Ok(_) | Err(ClientError::Timeout) => {}
                Err(error) => return Err(error),
            }
        }
    }

    fn timepoint(&self) -> i64 {
        self.epoch.elapsed().as_micros() as i64 + 1
    }

    /// A FINISH_CONNECTION as an error.
    fn check_finish(&self, frame: &FrameMessage) -> Result<(), ClientError> {
        let Some(Body::Packet(packet)) = &frame.body else {
            return Ok(());
        };
        if packet.flags & FINISH_CONNECTION == 0 {
            return Ok(());
        }
        let reason = PacketContent::decode(packet.content.clone())
            .ok()
            .and_then(|content| content.fragment.into_iter().find_map(|f| f.close_reason))
            .unwrap_or_default();
        Err(ClientError::Finished {
            code: reason.code,
            message: reason.message,
        })
    }

    async fn read_frame(&mut self, wait: Duration) -> Result<FrameMessage, ClientError> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(frame) = self.decoded.pop_front() {
                return Ok(frame);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::Timeout);
            }
            match &mut self.io {
                Io::Tcp(stream) => {
                    match self.codec.decode(&mut self.read_buffer) {
                        Ok(Decoded::Frame(frame)) => return Ok(frame.message),
                        Ok(Decoded::Incomplete { .. }) => {}
                        Err(error) => return Err(ClientError::Protocol(error.to_string())),
                    }
                    let read = tokio::time::timeout(left, stream.read_buf(&mut self.read_buffer))
                        .await
                        .map_err(|_| ClientError::Timeout)??;
                    if read == 0 {
                        return Err(ClientError::Closed);
                    }
                }
                Io::Udp(socket) => {
                    let mut datagram = vec![0; 65_536];
                    let len = tokio::time::timeout(left, socket.recv(&mut datagram))
                        .await
                        .map_err(|_| ClientError::Timeout)??;
                    let mut bytes = Bytes::from(datagram).slice(..len);
                    while !bytes.is_empty() {
                        match self.codec.decode_bytes(&mut bytes) {
                            Ok(Decoded::Frame(frame)) => self.decoded.push_back(frame.message),
                            _ => break, // a truncated datagram: the rest is dropped
                        }
                    }
                }
            }
        }
    }
}
