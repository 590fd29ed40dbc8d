//! Limits and timers of the engine, with the defaults a service gets when it sets nothing.

use std::time::Duration;

use super::auth::AuthConfig;

/// Limits and timers of an [`Endpoint`](super::Endpoint).
///
/// Memory an endpoint spends on one peer is bounded by `peer_send_window` (data queued until
/// acknowledged) plus `peer_receive_budget` (data received and not yet taken), whatever the peer
/// sends.
///
/// It is also the `engine:` section of the node's and the relay's YAML files: each field present
/// replaces the default, durations are written `250ms`, `5s`, `2m`; unknown keys are errors. The fields marked
/// *(code only)* are not read from YAML (`max_message_size` is a top-level key of the node's file).
/// Call [`validate`](Self::validate) on the result.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// The largest message, in bytes, that may be sent or received. Default 64 MiB. *(code only)*
    #[serde(skip)]
    pub max_message_size: usize,
    /// Units (about bytes) one stream may have queued and not yet acknowledged; a send beyond it
    /// returns `WouldBlock`. A single message may always be queued on an idle stream. Default 4 MiB.
    pub stream_send_window: u64,
    /// The same, for all streams to one peer together. Default 16 MiB.
    pub peer_send_window: u64,
    /// Bytes received from one peer and not yet taken by the application, across its streams;
    /// beyond it, data on datagram connections is dropped (and resent later) and stream
    /// connections stop being read. A stream is offered at most four fifths of it (the rest pays
    /// for the bookkeeping of pieces), so at least 5/4 of `max_message_size + 1`, or the largest
    /// messages could never be reassembled. Default 80 MiB + 80 KiB: 5/4 of the default
    /// `stream_receive_window`.
    pub peer_receive_budget: usize,
    /// Units one stream of a peer may send beyond what the application has taken: the window
    /// announced in acknowledgements (never more than the peer's share of
    /// `peer_receive_budget`). At least `max_message_size + 1`, or the largest messages could never
    /// be reassembled. Default 64 MiB + 64 KiB.
    pub stream_receive_window: u64,
    /// The window assumed for a peer's stream until its first acknowledgement says otherwise.
    /// Default 1 MiB. *(code only)*
    #[serde(skip)]
    pub initial_window: u64,
    /// Streams a peer may open towards this endpoint. Default 1024.
    pub max_streams_per_peer: usize,
    /// A message not acknowledged this long after it was queued is abandoned: it and the messages
    /// before it are never sent again, the peer skips them (RESET_OFFSET), and the application
    /// gets [`Event::MessagesExpired`](super::Event::MessagesExpired). `None` (the default): messages
    /// never expire.
    #[serde(deserialize_with = "crate::duration::deserialize_some")]
    pub message_timeout: Option<Duration>,
    /// The longest an acknowledgement is held back to be coalesced with others. Default 5 ms.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub max_ack_delay: Duration,
    /// An acknowledgement goes out at once after this many packets. Default 2. *(code only)*
    #[serde(skip)]
    pub ack_every_packets: u32,
    /// Most received ranges reported per stream in an acknowledgement. Default 16. *(code only)*
    #[serde(skip)]
    pub max_ack_ranges: usize,
    /// The RTT assumed before the first sample. Default 100 ms. *(code only)*
    #[serde(skip)]
    pub initial_rtt: Duration,
    /// Lower bound of the retransmission timeout. Default 20 ms.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub min_rto: Duration,
    /// Upper bound of the retransmission timeout after backoff. Default 10 s.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub max_rto: Duration,
    /// A connection that has sent nothing for this long is pinged. Default 5 s.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub keep_alive_interval: Duration,
    /// A connection silent for this long is declared dead. Default 30 s.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub idle_timeout: Duration,
    /// Frames of more bytes than this are refused by the codec. Default 2 MiB. *(code only)*
    #[serde(skip)]
    pub max_frame_length: usize,
    /// Relays: bytes of forwarded frames held for one connection (one destination node or
    /// relay). Default 4 MiB.
    pub forward_queue_limit: usize,
    /// Relays: what happens to a frame for a connection whose queue is full. Default
    /// [`ForwardOverflow::DropNewest`].
    pub forward_overflow: ForwardOverflow,
    /// Authentication: the tokens accepted, anonymous peers, tickets, the replay window.
    /// *(code only: the YAML files have their own keys for tokens)*
    #[serde(skip)]
    pub auth: AuthConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_message_size: 64 * 1024 * 1024,
            stream_send_window: 4 * 1024 * 1024,
            peer_send_window: 16 * 1024 * 1024,
            peer_receive_budget: (64 * 1024 * 1024 + 64 * 1024) / 4 * 5,
            stream_receive_window: 64 * 1024 * 1024 + 64 * 1024,
            initial_window: 1024 * 1024,
            max_streams_per_peer: 1024,
            message_timeout: None,
            max_ack_delay: Duration::from_millis(5),
            ack_every_packets: 2,
            max_ack_ranges: 16,
            initial_rtt: Duration::from_millis(100),
            min_rto: Duration::from_millis(20),
            max_rto: Duration::from_secs(10),
            keep_alive_interval: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            max_frame_length: atbus_proto::DEFAULT_MAX_FRAME_LENGTH,
            forward_queue_limit: 4 * 1024 * 1024,
            forward_overflow: ForwardOverflow::DropNewest,
            auth: AuthConfig::default(),
        }
    }
}

impl EngineConfig {
    /// Checks that the limits fit together: a message of `max_message_size` must fit one
    /// stream's receive window, and that window four fifths of the receive budget. The error
    /// names the field to change.
    ///
    /// ```
    /// use atbus_core::engine::EngineConfig;
    ///
    /// assert!(EngineConfig::default().validate().is_ok());
    /// let small_budget = EngineConfig {
    ///     peer_receive_budget: 64 * 1024 * 1024,
    ///     ..EngineConfig::default()
    /// };
    /// let error = small_budget.validate().unwrap_err();
    /// assert!(error.contains("peer_receive_budget"), "{error}");
    /// ```
    pub fn validate(&self) -> Result<(), String> {
        let largest = self.max_message_size as u64 + 1;
        if self.stream_receive_window < largest {
            return Err(format!(
                "stream_receive_window ({}) must be at least max_message_size + 1 ({largest}): \
                 raise it or lower max_message_size",
                self.stream_receive_window
            ));
        }
        let offered = self.peer_receive_budget as u64 / 5 * 4;
        if offered < largest {
            return Err(format!(
                "peer_receive_budget ({}) must be at least 5/4 of max_message_size + 1 ({}): \
                 a stream is offered four fifths of it, and the largest message must fit",
                self.peer_receive_budget,
                largest.div_ceil(4) * 5
            ));
        }
        if self.max_frame_length < super::MIN_MTU {
            return Err(format!(
                "max_frame_length ({}) must be at least {}",
                self.max_frame_length,
                super::MIN_MTU
            ));
        }
        Ok(())
    }
}

/// What a relay does when the queue of forwarded frames for a connection is full: its
/// destination reads more slowly than it is sent to. The queue is per connection, so a slow
/// consumer never holds up the others; the senders to it recover dropped frames end to end (and
/// their windows to it fill, so their sends wait or return WouldBlock).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForwardOverflow {
    /// The frame that does not fit is dropped (counted as `queue_full`).
    #[default]
    DropNewest,
    /// The oldest frames are dropped to make room (counted as `queue_full_oldest`).
    DropOldest,
    /// The slow connection is closed (counted as `slow_consumer`): its node reconnects, and
    /// everything unacknowledged is resent.
    Disconnect,
}

/// How a connection carries frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionKind {
    /// Whole datagrams, possibly lost, duplicated or reordered (UDP).
    Datagram,
    /// An ordered byte stream (TCP, TLS, Unix, QUIC streams, in-process).
    Stream,
}

/// What the engine needs to know of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionParams {
    /// Datagram or stream.
    pub kind: ConnectionKind,
    /// The most bytes of one transmit: a datagram's payload, or a batch of frames on a stream.
    pub mtu: usize,
}

impl ConnectionParams {
    /// UDP over IPv4: 548 bytes, what every IPv4 path carries (576 less IP and UDP headers).
    pub const fn datagram_ipv4() -> Self {
        Self {
            kind: ConnectionKind::Datagram,
            mtu: 548,
        }
    }

    /// UDP over IPv6: 1232 bytes (the IPv6 minimum MTU of 1280, less headers).
    pub const fn datagram_ipv6() -> Self {
        Self {
            kind: ConnectionKind::Datagram,
            mtu: 1232,
        }
    }

    /// A stream transport, in batches of 64 KiB.
    pub const fn stream() -> Self {
        Self {
            kind: ConnectionKind::Stream,
            mtu: 64 * 1024,
        }
    }

    /// The same kind with another MTU.
    pub const fn with_mtu(self, mtu: usize) -> Self {
        Self { mtu, ..self }
    }
}
