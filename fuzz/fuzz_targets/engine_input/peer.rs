//! What the peer "a" (or, in the relay modes, the peer at the other end of the connection, and
//! the nodes a relay speaks for) sends: mostly-valid frames (pings, pongs answering b's pings,
//! packets whose fragments land near where their stream left off, acknowledgements of what b sent
//! with arbitrary ranges and windows; from relays, routing notices too), encoded back to back and
//! sometimes corrupted or cut.

use std::sync::OnceLock;

use arbitrary::{Result, Unstructured};
use atbus_core::engine::ConnectionId;
use atbus_proto::FrameCodec;
use atbus_proto::protocol::packet_content::FragmentType;
use atbus_proto::protocol::{
    AcknowledgeData, AtbusPacketFlagType, AtbusPacketFragmentFlagType, FrameMessage, MessageHead,
    OffsetRange, PacketContent, PacketData, PingData, StreamAcknowledge, frame_message::Body,
};
use bytes::{Bytes, BytesMut};
use prost::Message;

use crate::common::{codec_with_limit, short_string, start};
use crate::input::{close_reason, data, int64, meta, near, some};
use crate::relay::ROUTES_STREAM;
use crate::world::Harness;
use crate::{LOCAL, MAX_FRAME_LENGTH, NAMES, PEER};

/// The name of [`NAMES`] a frame speaks for, "z" for any other.
fn name_key(name: &str) -> &'static str {
    NAMES.iter().find(|known| **known == name).unwrap_or(&"z")
}

/// The codec that encodes what "a" sends: it may build frames over b's limit.
pub(crate) fn peer_codec() -> &'static FrameCodec {
    static CODEC: OnceLock<FrameCodec> = OnceLock::new();
    CODEC.get_or_init(|| codec_with_limit(4 * MAX_FRAME_LENGTH))
}

impl Harness {
    pub(crate) fn head(&self, u: &mut Unstructured) -> Result<Option<MessageHead>> {
        if u.ratio(1, 32)? {
            return Ok(None);
        }
        let (source, destination) = match u.int_in_range(0..=31u8)? {
            0 => (String::new(), String::new()),
            1 => ("c".to_string(), LOCAL.to_string()),
            2 => (PEER.to_string(), "c".to_string()),
            3 => (short_string(u)?, short_string(u)?),
            _ => (PEER.to_string(), LOCAL.to_string()),
        };
        Ok(Some(MessageHead {
            source,
            destination,
            ..Default::default()
        }))
    }

    /// A ping from "a", or a pong: usually answering b's latest ping on `connection`.
    pub(crate) fn ping(&self, u: &mut Unstructured, connection: ConnectionId) -> Result<Body> {
        if u.arbitrary()? {
            return Ok(Body::Ping(PingData {
                sequence: int64(u)?,
                timepoint_microseconds: int64(u)?,
            }));
        }
        let pong = match self.pings.get(&connection) {
            Some(&ping) if u.ratio(7, 8)? => ping,
            _ => PingData {
                sequence: int64(u)?,
                timepoint_microseconds: int64(u)?,
            },
        };
        Ok(Body::Pong(pong))
    }

    /// A packet from `from`: fragments from near where its stream left off.
    pub(crate) fn packet(&mut self, u: &mut Unstructured, from: &'static str) -> Result<Body> {
        let stream_id = self.stream_id(u)?;
        let next = self
            .incoming_next
            .get(&(from, stream_id))
            .copied()
            .unwrap_or(0);
        let stream_offset = match u.int_in_range(0..=15u8)? {
            0 => int64(u)?,
            1 => 0,
            2..=5 => near(u, next)? as i64,
            _ => next as i64,
        };
        let mut flags = 0;
        if u.ratio(1, 8)? {
            flags |= AtbusPacketFlagType::ResetOffset as i32;
        }
        let close = u.ratio(1, 8)?;
        if close {
            flags |= *u.choose(&[
                AtbusPacketFlagType::FinishStream as i32,
                AtbusPacketFlagType::FinishStream as i32,
                AtbusPacketFlagType::FinishConnection as i32,
                0,
            ])?;
        }
        if u.ratio(1, 32)? {
            flags = u.arbitrary()?;
        }
        let count = u.int_in_range(0..=4)?;
        let mut fragments = Vec::with_capacity(count + 1);
        let mut units = 0u64;
        for _ in 0..count {
            let meta = meta(u)?;
            let data = if stream_id == ROUTES_STREAM && self.mode.is_some() && u.ratio(3, 4)? {
                Self::route_table(u)?
            } else {
                data(u)?
            };
            let has_more = u.ratio(1, 3)?;
            units += data.len() as u64 + u64::from(!has_more);
            fragments.push(FragmentType {
                packet_type: meta.packet_type,
                data,
                fragment_flag: if u.ratio(1, 32)? {
                    u.arbitrary()?
                } else if has_more {
                    AtbusPacketFragmentFlagType::HasMore as i32
                } else {
                    0
                },
                options: meta.options,
                labels: meta.labels,
                forward_for: None,
                close_reason: if u.ratio(1, 32)? {
                    Some(close_reason(u)?)
                } else {
                    None
                },
            });
        }
        if close {
            units += 1;
            fragments.push(FragmentType {
                close_reason: Some(close_reason(u)?),
                ..Default::default()
            });
        }
        let mut content = PacketContent {
            fragment: fragments,
        }
        .encode_to_vec();
        let padding_size = match u.int_in_range(0..=15u8)? {
            0 => {
                let padding = u.int_in_range(0..=16u8)?;
                content.extend((0..padding).map(|_| 0xa5));
                i32::from(padding)
            }
            1 => u.arbitrary()?,
            _ => 0,
        };
        if u.ratio(1, 64)? {
            // Content that is not a packet_content.
            content = u.arbitrary()?;
        }
        if let Ok(offset) = u64::try_from(stream_offset) {
            self.incoming_next
                .insert((from, stream_id), offset.saturating_add(units));
        }
        Ok(Body::Packet(PacketData {
            stream_id,
            stream_offset,
            content: Bytes::from(content),
            flags,
            padding_size,
            timepoint_microseconds: if u.ratio(7, 8)? {
                self.elapsed_micros()
            } else {
                int64(u)?
            },
        }))
    }

    /// An acknowledgement from `from` of what b sent it, with arbitrary ranges and windows.
    pub(crate) fn acknowledge(&self, u: &mut Unstructured, from: &'static str) -> Result<Body> {
        let entries = u.int_in_range(0..=3)?;
        let mut acknowledge = Vec::with_capacity(entries);
        let known: Vec<i64> = self
            .outgoing_end
            .keys()
            .filter(|(peer, _)| *peer == from)
            .map(|&(_, stream_id)| stream_id)
            .collect();
        for _ in 0..entries {
            let stream_id = if !known.is_empty() && u.ratio(7, 8)? {
                *u.choose(&known)?
            } else {
                self.stream_id(u)?
            };
            let sent = self
                .outgoing_end
                .get(&(from, stream_id))
                .copied()
                .unwrap_or(0);
            let offset = |u: &mut Unstructured| -> Result<i64> {
                Ok(match u.int_in_range(0..=7u8)? {
                    0 => int64(u)?,
                    1 => 0,
                    2 | 3 => near(u, sent)? as i64,
                    4 => u.int_in_range(0..=sent)? as i64,
                    _ => sent as i64,
                })
            };
            let acknowledge_offset = offset(u)?;
            let received_max_offset = offset(u)?;
            let received_ranges = some(u, 4, |u| {
                let start = offset(u)?;
                let end = if u.ratio(3, 4)? {
                    start.saturating_add(i64::from(u.int_in_range(0..=2000u16)?))
                } else {
                    offset(u)?
                };
                Ok(OffsetRange { start, end })
            })?;
            let window_offset = match u.int_in_range(0..=7u8)? {
                0 => 0,
                1 => int64(u)?,
                2 => near(u, sent)? as i64,
                _ => sent.saturating_add(u64::from(u.int_in_range(0..=128u8)?) * 1024) as i64,
            };
            acknowledge.push(StreamAcknowledge {
                stream_id,
                acknowledge_offset,
                received_max_offset,
                received_ranges,
                window_offset,
            });
        }
        Ok(Body::Acknowledge(AcknowledgeData {
            acknowledge,
            timepoint_microseconds: if u.ratio(7, 8)? {
                self.timepoint
            } else {
                int64(u)?
            },
            ack_delay_microseconds: if u.ratio(7, 8)? {
                i64::from(u.int_in_range(0..=10_000u16)?)
            } else {
                int64(u)?
            },
        }))
    }

    pub(crate) fn elapsed_micros(&self) -> i64 {
        i64::try_from((self.now - start()).as_micros()).unwrap_or(i64::MAX)
    }

    /// One to three frames from the peer of `connection` ("a" outside the relay modes), encoded
    /// back to back; sometimes one byte is corrupted or the end cut off.
    pub(crate) fn frames(
        &mut self,
        u: &mut Unstructured,
        connection: ConnectionId,
    ) -> Result<Bytes> {
        let count = u.int_in_range(1..=3)?;
        let mut wire = BytesMut::new();
        for _ in 0..count {
            let (head, from, relay) = match self.mode {
                None => (self.head(u)?, PEER, false),
                Some(_) => {
                    let (sender, relay) = self
                        .live
                        .get(&connection)
                        .map_or((PEER, false), |link| (link.peer, link.relay));
                    let head = self.relay_head(u, sender, relay)?;
                    let from = match head.as_ref() {
                        Some(head) if !head.forward_for_source.is_empty() => {
                            name_key(&head.forward_for_source)
                        }
                        _ => sender,
                    };
                    (head, from, relay)
                }
            };
            let body = match u.int_in_range(0..=15u8)? {
                0 if relay && u.arbitrary()? => Some(self.notice(u)?),
                0 => None,
                1..=3 => Some(self.ping(u, connection)?),
                4..=10 => Some(self.packet(u, from)?),
                _ => Some(self.acknowledge(u, from)?),
            };
            let frame = FrameMessage { head, body };
            if self.mode.is_some()
                && frame
                    .head
                    .as_ref()
                    .is_some_and(|head| head.destination != LOCAL)
            {
                self.expect_forward(connection, &frame);
            }
            // A frame over the codec's limit is left out.
            let _ = peer_codec().encode(&frame, &mut wire);
        }
        if !wire.is_empty() && u.ratio(1, 16)? {
            let at = u.choose_index(wire.len())?;
            if u.arbitrary()? {
                wire[at] ^= u.int_in_range(1..=255u8)?;
            } else {
                wire.truncate(at);
            }
        }
        Ok(wire.freeze())
    }
}
