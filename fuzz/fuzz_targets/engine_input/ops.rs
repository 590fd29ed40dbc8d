//! The input decoded into operations: `step` picks one (raw bytes on a datagram or stream
//! connection, frames from "a" or, in the relay modes, from any peer, time passing, the
//! application reading, sending and finishing streams, connections lost, closed and added; in the
//! relay modes, floods of frames to forward) and the application's ones live here, with the
//! checks of what they return.

use std::time::Duration;

use arbitrary::{Result, Unstructured};
use atbus_core::engine::{ConnectionKind, SendError};
use bytes::Bytes;

use crate::input::{api_close_reason, meta};
use crate::world::Harness;
use crate::{MAX_CONNECTIONS, MAX_RELAY_CONNECTIONS, NAMES, PEER, STREAMS};

impl Harness {
    /// The peer an application operation is about: "a", or in the relay modes any name.
    fn app_peer(&self, u: &mut Unstructured) -> Result<&'static str> {
        match self.mode {
            None => Ok(PEER),
            Some(_) if u.ratio(1, 3)? => Ok(PEER),
            Some(_) => Ok(*u.choose(&NAMES)?),
        }
    }

    pub(crate) fn read(&mut self, peer: &'static str, stream_id: i64, max: usize) {
        for _ in 0..max {
            let Some(message) = self.endpoint.read(peer, stream_id) else {
                break;
            };
            assert!(
                message.data.len() <= self.max_message_size,
                "read a message of {} bytes, over max_message_size",
                message.data.len()
            );
            let next = self.read_next.entry((peer, stream_id)).or_default();
            assert!(
                message.offset >= *next,
                "stream {stream_id}: message at offset {} read after one ending at {next}",
                message.offset
            );
            *next = message.offset + message.data.len() as u64 + 1;
            self.mix(message.offset);
            self.mix(message.data.len() as u64);
            self.mix(u64::from(message.data.first().copied().unwrap_or(0)));
        }
    }

    pub(crate) fn send(&mut self, u: &mut Unstructured) -> Result<()> {
        let peer = self.app_peer(u)?;
        let stream_id = if u.ratio(1, 32)? {
            -1 - i64::from(u.arbitrary::<u8>()?)
        } else {
            *u.choose(&STREAMS)?
        };
        let data = match u.int_in_range(0..=7u8)? {
            0 => Bytes::from(vec![0x33; *u.choose(&[64 * 1024, 64 * 1024 + 1, 70_000])?]),
            1 => Bytes::from(vec![0x44; u.int_in_range(0..=64 * 1024)?]),
            2 => Bytes::from(vec![0x55; u.int_in_range(0..=4096)?]),
            _ => Bytes::from(vec![0x66; u.int_in_range(0..=600)?]),
        };
        let len = data.len();
        let meta = meta(u)?;
        match self.endpoint.send(peer, stream_id, data, meta) {
            Ok(offset) => self.mix(offset),
            Err(SendError::WouldBlock { peer: refused }) => {
                assert_eq!(refused, peer);
                self.blocked.insert((peer, stream_id));
            }
            Err(SendError::MessageTooLarge { size, max }) => {
                assert_eq!((size, max), (len, self.max_message_size));
            }
            Err(SendError::ReservedStream { stream_id: refused }) => {
                assert!(refused < 0 && refused == stream_id);
            }
            Err(error) => self.mix(error.to_string().len() as u64),
        }
        Ok(())
    }

    pub(crate) fn finish(&mut self, u: &mut Unstructured) -> Result<()> {
        let peer = self.app_peer(u)?;
        let stream_id = *u.choose(&STREAMS)?;
        let reason = api_close_reason(u)?;
        match self.endpoint.finish(peer, stream_id, reason) {
            Ok(()) => {
                self.finishing.insert((peer, stream_id));
            }
            Err(error) => {
                assert!(
                    self.finishing.contains(&(peer, stream_id)),
                    "finish of stream {stream_id} refused: {error}"
                );
            }
        }
        Ok(())
    }

    /// Runs one operation chosen by the input.
    pub(crate) fn step(&mut self, u: &mut Unstructured) -> Result<()> {
        let last = if self.mode.is_some() { 17 } else { 15 };
        match u.int_in_range(0..=last)? {
            0 => {
                let (connection, _) = self.pick_connection(u, ConnectionKind::Datagram, None)?;
                let len = u.int_in_range(0..=256)?;
                let bytes = Bytes::copy_from_slice(u.bytes(len.min(u.len()))?);
                self.endpoint.handle_input(self.now, connection, bytes);
            }
            1 => {
                let (connection, _) = self.pick_connection(u, ConnectionKind::Stream, None)?;
                let len = u.int_in_range(0..=64)?;
                let bytes = Bytes::copy_from_slice(u.bytes(len.min(u.len()))?);
                self.endpoint.handle_input(self.now, connection, bytes);
            }
            2..=6 => {
                let kind = if u.arbitrary()? {
                    ConnectionKind::Datagram
                } else {
                    ConnectionKind::Stream
                };
                let sender = match self.mode {
                    Some(mode) => *u.choose(&mode.direct_peers())?,
                    None => PEER,
                };
                let (connection, _) = self.pick_connection(u, kind, Some(sender))?;
                let wire = self.frames(u, connection)?;
                self.deliver(u, connection, wire);
            }
            7 => {
                let step = match u.int_in_range(0..=3u8)? {
                    0 => Duration::from_micros(u.int_in_range(0..=1000)?),
                    1 => Duration::from_millis(u.int_in_range(0..=100)?),
                    2 => Duration::from_millis(u.int_in_range(0..=5000)?),
                    _ => Duration::from_secs(u.int_in_range(0..=120)?),
                };
                self.advance_to(self.now + step);
            }
            8 => {
                if let Some(at) = self.endpoint.poll_timeout() {
                    self.advance_to(at);
                }
            }
            9 | 10 => {
                let peer = self.app_peer(u)?;
                let stream_id = self.stream_id(u)?;
                let max = u.int_in_range(1..=8)?;
                self.read(peer, stream_id, max);
            }
            11 | 12 => self.send(u)?,
            13 => self.finish(u)?,
            14 => {
                let kind = if u.arbitrary()? {
                    ConnectionKind::Datagram
                } else {
                    ConnectionKind::Stream
                };
                let (connection, _) = self.pick_connection(u, kind, None)?;
                if u.arbitrary()? {
                    self.endpoint.connection_lost(self.now, connection);
                } else {
                    let reason = api_close_reason(u)?;
                    self.endpoint.close_connection(connection, reason);
                }
            }
            15 => {
                let max = match self.mode {
                    Some(_) => MAX_RELAY_CONNECTIONS,
                    None => MAX_CONNECTIONS,
                };
                if self.live.len() < max {
                    let kind = if u.arbitrary()? {
                        ConnectionKind::Datagram
                    } else {
                        ConnectionKind::Stream
                    };
                    let peer = match self.mode {
                        Some(mode) => *u.choose(&mode.direct_peers())?,
                        None => PEER,
                    };
                    self.add_connection_to(u, kind, peer)?;
                }
            }
            16 => self.flood(u)?,
            _ => self.toggle_transport(u)?,
        }
        Ok(())
    }
}
