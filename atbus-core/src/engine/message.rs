//! Messages as the application sees them: their bytes and the metadata of their first fragment.

use std::collections::BTreeMap;

use atbus_proto::protocol::PacketOptions;
use bytes::Bytes;

/// What travels with a message besides its bytes: carried by the fragment that begins it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MessageMeta {
    /// `ATBUS_PACKET_TYPE` value, or an application type from
    /// [`USER_PACKET_TYPE_MIN`](atbus_proto::USER_PACKET_TYPE_MIN). 0 is plain data.
    pub packet_type: i32,
    /// Per-message options (request and reply ids, application options).
    pub options: Option<PacketOptions>,
    /// Labels of the message, with the syntax of Kubernetes labels.
    pub labels: BTreeMap<String, String>,
}

/// A whole message taken from a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedMessage {
    /// Offset of the message's first unit in its stream direction.
    pub offset: u64,
    /// The message's bytes: a slice of the received packet when it came in one fragment.
    pub data: Bytes,
    /// Its type, options and labels.
    pub meta: MessageMeta,
}
