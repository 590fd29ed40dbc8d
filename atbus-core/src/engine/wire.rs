//! Between pieces and the wire: a packet's content decoded into pieces at their offsets, checked
//! against the rules of `docs/protocol.md` section 5.3, and pieces encoded as fragments.

use atbus_proto::protocol::packet_content::FragmentType;
use atbus_proto::protocol::{
    AtbusPacketFlagType, AtbusPacketFragmentFlagType, CloseReasonData, PacketContent, PacketData,
};
use bytes::Bytes;
use prost::Message;

use super::message::MessageMeta;
use super::piece::{Piece, PieceEnd};

/// A packet's content, as pieces of its stream.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct DecodedPacket {
    /// The pieces, in order, contiguous from the packet's offset.
    pub pieces: Vec<Piece>,
    /// The reason of a FINISH_CONNECTION, when the packet carries one.
    pub connection_close: Option<CloseReasonData>,
}

/// Why a packet is invalid. The packet is dropped and counted; none of it is acknowledged.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum PacketError {
    /// `padding_size` is negative or larger than the content.
    #[error("padding_size {padding} does not fit content of {content} bytes")]
    BadPadding { padding: i32, content: usize },
    /// The content is not a `packet_content`.
    #[error("content is not a packet_content: {0}")]
    BadContent(prost::DecodeError),
    /// The offset is negative, or the packet would go past the largest offset.
    #[error("stream offset {0} is out of range")]
    OffsetOutOfRange(i64),
    /// A close reason where the protocol does not allow one.
    #[error(
        "close_reason on fragment {index} of a packet without FINISH_STREAM/FINISH_CONNECTION, with data, or not last"
    )]
    MisplacedClose { index: usize },
}

/// Whether `flags` has `flag`.
pub(crate) fn has_flag(flags: i32, flag: AtbusPacketFlagType) -> bool {
    flags & flag as i32 != 0
}

/// Decodes and checks the content of `packet`. Piece data slices the packet's content.
pub(crate) fn decode_packet(packet: &PacketData) -> Result<DecodedPacket, PacketError> {
    let padding = usize::try_from(packet.padding_size)
        .ok()
        .filter(|&padding| padding <= packet.content.len())
        .ok_or(PacketError::BadPadding {
            padding: packet.padding_size,
            content: packet.content.len(),
        })?;
    let content = packet.content.slice(..packet.content.len() - padding);
    let content = PacketContent::decode(content).map_err(PacketError::BadContent)?;
    let mut offset = u64::try_from(packet.stream_offset)
        .map_err(|_| PacketError::OffsetOutOfRange(packet.stream_offset))?;
    let finish_stream = has_flag(packet.flags, AtbusPacketFlagType::FinishStream);
    let finish_connection = has_flag(packet.flags, AtbusPacketFlagType::FinishConnection);
    let last = content.fragment.len().saturating_sub(1);
    let mut decoded = DecodedPacket::default();
    for (index, fragment) in content.fragment.into_iter().enumerate() {
        let has_more = fragment.fragment_flag & AtbusPacketFragmentFlagType::HasMore as i32 != 0;
        let end = match fragment.close_reason {
            Some(reason) => {
                if index != last || !fragment.data.is_empty() || has_more {
                    return Err(PacketError::MisplacedClose { index });
                }
                if finish_stream {
                    PieceEnd::Stream(reason)
                } else if finish_connection {
                    decoded.connection_close = Some(reason);
                    continue;
                } else {
                    return Err(PacketError::MisplacedClose { index });
                }
            }
            None if has_more => PieceEnd::None,
            None => PieceEnd::Message,
        };
        let piece = Piece {
            start: offset,
            data: fragment.data,
            end,
            meta: Some(MessageMeta {
                packet_type: fragment.packet_type,
                options: fragment.options,
                labels: fragment.labels,
            }),
        };
        offset = offset
            .checked_add(piece.units())
            .filter(|&end| end <= i64::MAX as u64)
            .ok_or(PacketError::OffsetOutOfRange(packet.stream_offset))?;
        decoded.pieces.push(piece);
    }
    Ok(decoded)
}

/// The fragment that carries `piece`.
pub(crate) fn fragment_of(piece: Piece) -> FragmentType {
    let (fragment_flag, close_reason) = match piece.end {
        PieceEnd::None => (AtbusPacketFragmentFlagType::HasMore as i32, None),
        PieceEnd::Message => (0, None),
        PieceEnd::Stream(reason) => (0, Some(reason)),
    };
    let meta = piece.meta.unwrap_or_default();
    FragmentType {
        packet_type: meta.packet_type,
        data: piece.data,
        fragment_flag,
        options: meta.options,
        labels: meta.labels,
        forward_for: None,
        close_reason,
    }
}

/// Encoded size of a fragment with `meta` and `data_len` bytes of data inside `packet_content`
/// (its tag and length prefix included), at most: varint lengths are counted at their largest
/// for the sizes a frame can hold.
pub(crate) fn fragment_overhead(
    meta: Option<&MessageMeta>,
    close: Option<&CloseReasonData>,
) -> usize {
    const KEY_AND_LEN: usize = 1 + 4;
    let close_len = close.map_or(0, |reason| KEY_AND_LEN + reason.encoded_len());
    let meta_len = meta.map_or(0, |meta| {
        FragmentType {
            packet_type: meta.packet_type,
            options: meta.options.clone(),
            labels: meta.labels.clone(),
            ..Default::default()
        }
        .encoded_len()
    });
    // fragment key+len, data key+len, fragment_flag (key + 1 byte), the metadata fields.
    KEY_AND_LEN + KEY_AND_LEN + 2 + meta_len + close_len
}

/// Encodes `fragments` as a `packet_content`.
pub(crate) fn encode_content(fragments: Vec<FragmentType>) -> Bytes {
    PacketContent {
        fragment: fragments,
    }
    .encode_to_vec()
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use atbus_proto::protocol::AtbusCloseReason;

    fn packet(offset: i64, flags: i32, fragments: Vec<FragmentType>) -> PacketData {
        PacketData {
            stream_id: 1,
            stream_offset: offset,
            content: encode_content(fragments),
            flags,
            ..Default::default()
        }
    }

    fn data(bytes: &'static [u8], has_more: bool) -> FragmentType {
        FragmentType {
            data: Bytes::from_static(bytes),
            fragment_flag: if has_more { 1 } else { 0 },
            ..Default::default()
        }
    }

    fn close() -> FragmentType {
        FragmentType {
            close_reason: Some(CloseReasonData {
                code: AtbusCloseReason::Shutdown as i32,
                message: String::new(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn fragments_become_contiguous_pieces_counting_an_end_unit_per_message() {
        let decoded = decode_packet(&packet(
            10,
            0,
            vec![data(b"ab", false), data(b"", false), data(b"cd", true)],
        ))
        .unwrap();
        let spans: Vec<_> = decoded
            .pieces
            .iter()
            .map(|piece| (piece.start, piece.end_offset(), piece.end.clone()))
            .collect();
        assert_eq!(
            spans,
            vec![
                (10, 13, PieceEnd::Message),
                (13, 14, PieceEnd::Message),
                (14, 16, PieceEnd::None)
            ]
        );
    }

    #[test]
    fn a_close_reason_ends_the_stream_on_finish_stream_and_covers_one_unit() {
        let flags = AtbusPacketFlagType::FinishStream as i32;
        let decoded = decode_packet(&packet(4, flags, vec![data(b"x", false), close()])).unwrap();
        assert_eq!(decoded.pieces[1].start, 6);
        assert!(matches!(decoded.pieces[1].end, PieceEnd::Stream(_)));
        assert_eq!(decoded.pieces[1].end_offset(), 7);
    }

    #[test]
    fn a_close_reason_on_finish_connection_alone_covers_no_unit() {
        let flags = AtbusPacketFlagType::FinishConnection as i32;
        let decoded = decode_packet(&packet(0, flags, vec![close()])).unwrap();
        assert!(decoded.pieces.is_empty());
        assert!(decoded.connection_close.is_some());
    }

    #[test]
    fn misplaced_close_reasons_bad_padding_and_bad_offsets_are_refused() {
        let flags = AtbusPacketFlagType::FinishStream as i32;
        assert!(matches!(
            decode_packet(&packet(0, 0, vec![close()])),
            Err(PacketError::MisplacedClose { index: 0 })
        ));
        assert!(matches!(
            decode_packet(&packet(0, flags, vec![close(), data(b"x", false)])),
            Err(PacketError::MisplacedClose { index: 0 })
        ));
        let mut padded = packet(0, 0, vec![data(b"x", false)]);
        padded.padding_size = padded.content.len() as i32 + 1;
        assert!(matches!(
            decode_packet(&padded),
            Err(PacketError::BadPadding { .. })
        ));
        assert!(matches!(
            decode_packet(&packet(-1, 0, vec![data(b"x", false)])),
            Err(PacketError::OffsetOutOfRange(-1))
        ));
        assert!(matches!(
            decode_packet(&packet(i64::MAX, 0, vec![data(b"x", false)])),
            Err(PacketError::OffsetOutOfRange(_))
        ));
        let mut garbage = packet(0, 0, vec![]);
        garbage.content = Bytes::from_static(&[0x0a, 0x05, 0x00]);
        assert!(matches!(
            decode_packet(&garbage),
            Err(PacketError::BadContent(_))
        ));
    }

    #[test]
    fn a_piece_round_trips_through_its_fragment() {
        let piece = Piece {
            start: 0,
            data: Bytes::from_static(b"hello"),
            end: PieceEnd::Message,
            meta: Some(MessageMeta {
                packet_type: 101,
                ..Default::default()
            }),
        };
        let fragment = fragment_of(piece.clone());
        let overhead = fragment_overhead(piece.meta.as_ref(), None);
        let encoded = PacketContent {
            fragment: vec![fragment.clone()],
        }
        .encoded_len();
        assert!(encoded <= overhead + 5, "{encoded} > {overhead} + 5");
        let decoded = decode_packet(&packet(0, 0, vec![fragment])).unwrap();
        assert_eq!(decoded.pieces, vec![piece]);
    }
}
