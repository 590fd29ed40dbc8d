//! Frames on the wire: the codec with the server's frame limit, the handshake message a frame
//! carries (the engine's own rule), and handshake frames wrapped rightly or not quite.

use std::sync::OnceLock;

use arbitrary::{Result, Unstructured};
use atbus_proto::FrameCodec;
use atbus_proto::handshake::HandshakeMessage;
use atbus_proto::handshake::handshake_message::Body as HandshakeBody;
use atbus_proto::protocol::frame_message::Body;
use atbus_proto::protocol::packet_content::FragmentType;
use atbus_proto::protocol::{
    AtbusPacketFlagType, AtbusPacketType, FrameMessage, MessageHead, PacketContent, PacketData,
};
use bytes::{Bytes, BytesMut};
use prost::Message;

use crate::common::codec_with_limit;
use crate::{HANDSHAKE_STREAM, MAX_FRAME_LENGTH};

/// Encodes what the harness sends and decodes what it watches, with the server's frame limit.
pub(crate) fn codec() -> &'static FrameCodec {
    static CODEC: OnceLock<FrameCodec> = OnceLock::new();
    CODEC.get_or_init(|| codec_with_limit(MAX_FRAME_LENGTH))
}

/// The handshake message a frame carries: `None` if it is not a handshake packet, `Err` if it is
/// one that does not decode (the engine's own rule).
pub(crate) fn handshake_of(frame: &FrameMessage) -> Option<std::result::Result<HandshakeBody, ()>> {
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
pub(crate) struct Wrapping {
    pub(crate) packet_type: i32,
    pub(crate) fragments: usize,
    pub(crate) stream_id: i64,
    pub(crate) flags: i32,
}

impl Wrapping {
    pub(crate) fn right() -> Self {
        Self {
            packet_type: AtbusPacketType::Handshake as i32,
            fragments: 1,
            stream_id: HANDSHAKE_STREAM,
            flags: AtbusPacketFlagType::TlsHandshake as i32,
        }
    }

    pub(crate) fn arbitrary(u: &mut Unstructured) -> Result<Self> {
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
pub(crate) fn handshake_frame(
    head: Option<MessageHead>,
    data: Bytes,
    wrapping: &Wrapping,
) -> Bytes {
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

pub(crate) fn head(source: &str, destination: &str) -> Option<MessageHead> {
    Some(MessageHead {
        source: source.to_string(),
        destination: destination.to_string(),
        ..Default::default()
    })
}
