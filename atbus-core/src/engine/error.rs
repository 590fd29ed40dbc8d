//! Errors the engine returns to the application.

/// Why a message was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The stream's or the peer's send window is full. Wait for
    /// [`Event::Writable`](super::Event::Writable) and send again.
    #[error("the send window to {peer} is full: wait for a Writable event and try again")]
    WouldBlock {
        /// The peer.
        peer: String,
    },
    /// The message is larger than `max_message_size`.
    #[error("message of {size} bytes is over the limit of {max} bytes")]
    MessageTooLarge {
        /// Its size.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// The message's type, options and labels do not fit in a packet of the smallest MTU.
    #[error(
        "message metadata of {size} bytes does not fit a packet of {room} bytes: use fewer labels"
    )]
    MetadataTooLarge {
        /// Encoded size of the metadata.
        size: usize,
        /// Room for it in the smallest packet.
        room: usize,
    },
    /// The stream was finished: nothing more may be sent on it.
    #[error("stream {stream_id} to {peer} is finished")]
    StreamFinished {
        /// The peer.
        peer: String,
        /// The stream.
        stream_id: i64,
    },
    /// A relay reported that it knows no route to the peer (ROUTER_NOT_FOUND), moments ago.
    #[error("no route to {peer}: the relay does not know it (is it running and connected?)")]
    NoRoute {
        /// The peer.
        peer: String,
    },
    /// Negative stream ids belong to the bus itself.
    #[error("stream id {stream_id} is reserved: applications use ids from 0")]
    ReservedStream {
        /// The id asked for.
        stream_id: i64,
    },
}

/// Why a connection could not be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionError {
    /// The MTU is larger than a frame may be (`max_frame_length`): frames filling it would be
    /// refused.
    #[error("an MTU of {mtu} bytes is over the frame limit of {max} bytes")]
    MtuTooLarge {
        /// The MTU given.
        mtu: usize,
        /// The configured frame limit.
        max: usize,
    },
    /// The MTU leaves no room for stream data.
    #[error("an MTU of {mtu} bytes is too small: at least {min} are needed")]
    MtuTooSmall {
        /// The MTU given.
        mtu: usize,
        /// The smallest the engine accepts.
        min: usize,
    },
    /// The endpoint's name cannot be used on the wire (empty, too long, or with spaces or
    /// control characters), or an anonymous connection was asked for by a named endpoint.
    #[error("{0}")]
    InvalidName(String),
    /// The hello does not fit the connection's MTU (names or ticket too long).
    #[error("the handshake hello of {size} bytes does not fit the MTU of {mtu} bytes")]
    HelloTooLarge {
        /// Size of the hello frame.
        size: usize,
        /// The connection's MTU.
        mtu: usize,
    },
    /// Early data was asked for without naming the peer it goes to.
    #[error("early data needs the peer's name in ConnectOptions::peer")]
    EarlyDataNeedsPeer,
}

/// Why an identity could not be issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    /// The name cannot be used on the wire.
    #[error("cannot issue an identity named {name:?}: a name is 1 to 253 visible characters")]
    InvalidName {
        /// The name asked for.
        name: String,
    },
    /// Negative stream ids belong to the bus.
    #[error("cannot issue stream id {stream_id}: applications use ids from 0")]
    ReservedStream {
        /// The id asked for.
        stream_id: i64,
    },
}
