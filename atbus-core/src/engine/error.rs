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
    /// The id is already in use.
    #[error("connection id {0} is already in use")]
    DuplicateId(super::ConnectionId),
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
}
