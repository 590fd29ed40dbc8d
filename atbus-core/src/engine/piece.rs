//! A piece of a stream direction: a run of units starting at an offset, as one fragment carries
//! it. The send side cuts pieces out of queued messages; the receive side holds them until they
//! join into messages.

use bytes::Bytes;

use super::message::MessageMeta;
use atbus_proto::protocol::CloseReasonData;

/// A piece of one stream direction: what one fragment carries.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Piece {
    /// Offset of the piece's first unit.
    pub start: u64,
    /// The data bytes, one unit each.
    pub data: Bytes,
    /// What the piece ends with, if anything: the end unit of a message or of the stream.
    pub end: PieceEnd,
    /// Metadata of the message this piece begins, when it begins one.
    pub meta: Option<MessageMeta>,
}

/// The unit after a piece's data, when it has one.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PieceEnd {
    /// The message continues after this piece (HAS_MORE).
    None,
    /// The piece's message ends here.
    Message,
    /// The stream direction ends here, for this reason.
    Stream(CloseReasonData),
}

impl Piece {
    /// One past the last unit the piece covers.
    pub fn end_offset(&self) -> u64 {
        self.start + self.units()
    }

    /// How many units the piece covers.
    pub fn units(&self) -> u64 {
        self.data.len() as u64 + u64::from(!matches!(self.end, PieceEnd::None))
    }

    /// The units `[from, to)` of this piece, which must overlap it. Metadata stays with the first
    /// unit, the end with the last.
    pub fn slice(&self, from: u64, to: u64) -> Piece {
        let from = from.max(self.start);
        let to = to.min(self.end_offset());
        let data_end = self.start + self.data.len() as u64;
        let data = self
            .data
            .slice((from - self.start) as usize..(to.min(data_end) - self.start) as usize);
        Piece {
            start: from,
            data,
            end: if to == self.end_offset() {
                self.end.clone()
            } else {
                PieceEnd::None
            },
            meta: if from == self.start {
                self.meta.clone()
            } else {
                None
            },
        }
    }
}
