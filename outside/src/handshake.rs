//! The handshake frames of section 8.2: a `handshake_message` as the data of the one HANDSHAKE
//! fragment of a packet on stream −2 with flag TLS_HANDSHAKE; a hello padded to 384 bytes.

use atbus_proto::FrameCodec;
use atbus_proto::handshake::handshake_message::Body as HandshakeBody;
use atbus_proto::handshake::{HandshakeHello, HandshakeMessage};
use atbus_proto::protocol::frame_message::Body;
use atbus_proto::protocol::packet_content::FragmentType;
use atbus_proto::protocol::{FrameMessage, MessageHead, PacketContent, PacketData};
use bytes::{Bytes, BytesMut};
use prost::Message;

/// The handshake stream.
pub const HANDSHAKE_STREAM: i64 = -2;
/// `ATBUS_PACKET_FLAG_TYPE.TLS_HANDSHAKE`.
pub const TLS_HANDSHAKE_FLAG: i32 = 8;
/// `ATBUS_PACKET_TYPE.HANDSHAKE`.
pub const HANDSHAKE_PACKET_TYPE: i32 = 2;
/// A hello is padded to at least this many bytes on the wire.
pub const HELLO_PADDED_LEN: usize = 384;

/// A handshake frame from `source` to `destination` carrying `body`, encoded.
pub fn handshake_frame(source: &str, destination: &str, body: HandshakeBody) -> Bytes {
    let message = HandshakeMessage { body: Some(body) };
    let frame = FrameMessage {
        head: Some(MessageHead {
            source: source.into(),
            destination: destination.into(),
            ..Default::default()
        }),
        body: Some(Body::Packet(PacketData {
            stream_id: HANDSHAKE_STREAM,
            content: PacketContent {
                fragment: vec![FragmentType {
                    packet_type: HANDSHAKE_PACKET_TYPE,
                    data: message.encode_to_vec().into(),
                    ..Default::default()
                }],
            }
            .encode_to_vec()
            .into(),
            flags: TLS_HANDSHAKE_FLAG,
            ..Default::default()
        })),
    };
    let mut wire = BytesMut::new();
    FrameCodec::default()
        .encode(&frame, &mut wire)
        .expect("a handshake frame is far below the frame limit");
    wire.freeze()
}

/// A hello frame padded as section 8.2 says: framed without padding (n bytes), then, if
/// n < 384, framed again with 384 − n zero bytes of padding.
pub fn padded_hello_frame(hello: &HandshakeHello) -> Bytes {
    let mut hello = hello.clone();
    hello.padding = Bytes::new();
    let (source, destination) = (hello.source.clone(), hello.destination.clone());
    let unpadded = handshake_frame(&source, &destination, HandshakeBody::Hello(hello.clone()));
    if unpadded.len() < HELLO_PADDED_LEN {
        hello.padding = vec![0; HELLO_PADDED_LEN - unpadded.len()].into();
    }
    handshake_frame(&source, &destination, HandshakeBody::Hello(hello))
}

/// The handshake message a frame carries, if it is a handshake packet that decodes.
pub fn handshake_body(frame: &FrameMessage) -> Option<HandshakeBody> {
    let Some(Body::Packet(packet)) = &frame.body else {
        return None;
    };
    if packet.stream_id != HANDSHAKE_STREAM {
        return None;
    }
    let content = PacketContent::decode(packet.content.clone()).ok()?;
    let fragment = content.fragment.first()?;
    HandshakeMessage::decode(fragment.data.clone()).ok()?.body
}
