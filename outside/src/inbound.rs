//! What a receiver keeps of each stream it is sent (section 5.3): fragments placed by offset in
//! units (a data byte, or the end of a message), whole messages in order, and the
//! acknowledgement it owes (sections 5.7 and 5.11).
//!
//! Fragments may come again, cut differently: a fragment is used from wherever the stream has
//! got to, whatever its own start.

use std::collections::{BTreeMap, VecDeque};

use atbus_proto::protocol::{AcknowledgeData, PacketContent, PacketData, StreamAcknowledge};
use bytes::Bytes;
use prost::Message;

/// `ATBUS_PACKET_FRAGMENT_FLAG_TYPE.HAS_MORE`.
pub const HAS_MORE: i32 = 1;
/// `ATBUS_PACKET_FLAG_TYPE.FINISH_STREAM`.
pub const FINISH_STREAM: i32 = 1;
/// How far past what it has received this receiver lets a sender go (its window).
pub const WINDOW: u64 = 64 << 20;

/// A whole message, as the application would take it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The node that sent it (the originator).
    pub from: String,
    /// Its stream.
    pub stream_id: i64,
    /// The offset of its first unit.
    pub offset: u64,
    /// Its `packet_type`, from the fragment that begins it.
    pub packet_type: i32,
    /// Its bytes.
    pub data: Vec<u8>,
}

/// A fragment held until the stream reaches it.
#[derive(Debug, Clone)]
struct Piece {
    data: Bytes,
    /// It covers the end unit of its message (or of the stream) after its data.
    ends: bool,
    /// That end is the end of the stream, not of a message.
    stream_end: bool,
    packet_type: i32,
}

impl Piece {
    fn units(&self) -> u64 {
        self.data.len() as u64 + u64::from(self.ends)
    }
}

/// One stream direction.
#[derive(Debug, Default)]
struct StreamIn {
    pieces: BTreeMap<u64, Piece>,
    /// Every unit below it is in: the acknowledge offset.
    next: u64,
    /// One past the highest unit received.
    max: u64,
    /// The message being put together: its start, type and bytes so far.
    current: Option<(u64, i32, Vec<u8>)>,
    finished: bool,
}

/// Everything received, by (originator, stream).
#[derive(Debug, Default)]
pub struct Inbound {
    streams: BTreeMap<(String, i64), StreamIn>,
    /// Whole messages not yet taken.
    pub messages: VecDeque<Received>,
    /// The timepoint of the latest packet from each originator, to echo.
    latest_timepoint: BTreeMap<String, i64>,
}

impl Inbound {
    /// Takes a packet from `from`. Err names what is wrong with it (nothing of it is kept).
    pub fn take_packet(&mut self, from: &str, packet: &PacketData) -> Result<(), String> {
        let padding = usize::try_from(packet.padding_size).map_err(|_| "negative padding")?;
        let plain = packet
            .content
            .len()
            .checked_sub(padding)
            .ok_or("padding longer than the content")?;
        let content = PacketContent::decode(packet.content.slice(..plain))
            .map_err(|error| format!("content does not decode: {error}"))?;
        let finish_stream = packet.flags & FINISH_STREAM != 0;
        let mut offset = u64::try_from(packet.stream_offset).map_err(|_| "negative offset")?;
        let stream = self
            .streams
            .entry((from.to_string(), packet.stream_id))
            .or_default();
        for fragment in content.fragment {
            let piece = match &fragment.close_reason {
                Some(_) if finish_stream => Piece {
                    data: Bytes::new(),
                    ends: true,
                    stream_end: true,
                    packet_type: fragment.packet_type,
                },
                Some(_) => continue, // the connection's close: no unit
                None => Piece {
                    ends: fragment.fragment_flag & HAS_MORE == 0,
                    data: fragment.data,
                    stream_end: false,
                    packet_type: fragment.packet_type,
                },
            };
            let units = piece.units();
            if units > 0 && offset + units > stream.next {
                // Of two pieces at one offset, the longer (a resend may be cut differently).
                match stream.pieces.get(&offset) {
                    Some(held) if held.units() >= units => {}
                    _ => {
                        stream.pieces.insert(offset, piece);
                    }
                }
            }
            offset += units;
        }
        stream.max = stream.max.max(offset);
        if packet.timepoint_microseconds != 0 {
            self.latest_timepoint
                .insert(from.to_string(), packet.timepoint_microseconds);
        }
        let delivered = stream.advance(from, packet.stream_id);
        self.messages.extend(delivered);
        Ok(())
    }

    /// The acknowledgement owed to `from`: every stream of it, with a window of [`WINDOW`].
    pub fn acknowledgement(&self, from: &str) -> AcknowledgeData {
        let acknowledge = self
            .streams
            .iter()
            .filter(|((origin, _), _)| origin == from)
            .map(|((_, stream_id), stream)| StreamAcknowledge {
                stream_id: *stream_id,
                acknowledge_offset: stream.next as i64,
                received_max_offset: stream.max.max(stream.next) as i64,
                received_ranges: Vec::new(),
                window_offset: (stream.next + WINDOW) as i64,
            })
            .collect();
        AcknowledgeData {
            acknowledge,
            timepoint_microseconds: self.latest_timepoint.get(from).copied().unwrap_or(0),
            ack_delay_microseconds: 0,
        }
    }

    /// Whether `from` finished its direction of `stream_id`.
    pub fn finished(&self, from: &str, stream_id: i64) -> bool {
        self.streams
            .get(&(from.to_string(), stream_id))
            .is_some_and(|stream| stream.finished)
    }
}

impl StreamIn {
    /// Moves `next` over the pieces that reach it; returns the messages completed.
    fn advance(&mut self, from: &str, stream_id: i64) -> Vec<Received> {
        let mut done = Vec::new();
        loop {
            let next = self.next;
            let covering = self
                .pieces
                .range(..=next)
                .rev()
                .find(|(start, piece)| **start + piece.units() > next)
                .map(|(start, piece)| (*start, piece.clone()));
            let Some((start, piece)) = covering else {
                break;
            };
            let data_end = start + piece.data.len() as u64;
            if next < data_end {
                let (_, _, bytes) = self
                    .current
                    .get_or_insert_with(|| (next, piece.packet_type, Vec::new()));
                bytes.extend_from_slice(&piece.data[(next - start) as usize..]);
                self.next = data_end;
            }
            if piece.ends && self.next == data_end {
                self.next += 1;
                if piece.stream_end {
                    self.finished = true;
                } else {
                    let (offset, packet_type, data) =
                        self.current
                            .take()
                            .unwrap_or((data_end, piece.packet_type, Vec::new()));
                    done.push(Received {
                        from: from.to_string(),
                        stream_id,
                        offset,
                        packet_type,
                        data,
                    });
                }
            }
            let reached = self.next;
            self.pieces
                .retain(|start, piece| *start + piece.units() > reached);
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use atbus_proto::protocol::packet_content::FragmentType;

    use super::*;

    fn packet(offset: i64, fragments: &[(&[u8], bool)]) -> PacketData {
        PacketData {
            stream_offset: offset,
            stream_id: 1,
            content: PacketContent {
                fragment: fragments
                    .iter()
                    .map(|(data, more)| FragmentType {
                        data: Bytes::copy_from_slice(data),
                        fragment_flag: if *more { HAS_MORE } else { 0 },
                        ..Default::default()
                    })
                    .collect(),
            }
            .encode_to_vec()
            .into(),
            ..Default::default()
        }
    }

    #[test]
    fn messages_come_whole_in_order_whatever_the_cut_and_the_order_of_arrival() {
        let mut inbound = Inbound::default();
        // "hello" (units 0-5), "" (6), "ok" (7-9), sent out of order and cut again.
        inbound
            .take_packet("a", &packet(7, &[(b"ok", false)]))
            .unwrap();
        inbound
            .take_packet("a", &packet(2, &[(b"llo", false), (b"", false)]))
            .unwrap();
        assert!(inbound.messages.is_empty());
        inbound
            .take_packet("a", &packet(0, &[(b"hel", true)]))
            .unwrap();
        let got: Vec<Vec<u8>> = inbound.messages.iter().map(|m| m.data.clone()).collect();
        assert_eq!(got, [b"hello".to_vec(), Vec::new(), b"ok".to_vec()]);
        assert_eq!(
            inbound
                .messages
                .iter()
                .map(|m| m.offset)
                .collect::<Vec<_>>(),
            [0, 6, 7]
        );
        let ack = inbound.acknowledgement("a");
        assert_eq!(ack.acknowledge[0].acknowledge_offset, 10);
    }

    #[test]
    fn a_fragment_with_only_the_end_of_its_message_closes_it() {
        let mut inbound = Inbound::default();
        inbound
            .take_packet("a", &packet(0, &[(b"abc", true)]))
            .unwrap();
        inbound
            .take_packet("a", &packet(3, &[(b"", false)]))
            .unwrap();
        assert_eq!(inbound.messages.pop_front().unwrap().data, b"abc");
        assert_eq!(
            inbound.acknowledgement("a").acknowledge[0].acknowledge_offset,
            4
        );
    }
}
