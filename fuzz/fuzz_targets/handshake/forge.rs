//! Handshakes built here: hellos (fresh and consistent for one mode, or seen before with some
//! fields changed, their proofs kept or signed again), accepts a hostile client might send, and
//! confirms over the server's accept; then the operation that wraps one into a frame and sends it.

use arbitrary::{Result, Unstructured};
use atbus_core::engine::{ConnectionId, ConnectionKind};
use atbus_proto::handshake::handshake_message::Body as HandshakeBody;
use atbus_proto::handshake::{
    AtbusAuthMode, AtbusHandshakeRole, ConnectionParameters, HandshakeAccept, HandshakeConfirm,
    HandshakeHello, HandshakeMessage,
};
use atbus_proto::protocol::frame_message::Body;
use atbus_proto::protocol::packet_content::FragmentType;
use atbus_proto::protocol::{FrameMessage, MessageHead, PacketContent, PacketData, PingData};
use bytes::{Bytes, BytesMut};
use prost::Message;

use crate::common::short_string;
use crate::ops::{input_bytes, int64};
use crate::proofs::{confirm_transcript, hello_transcript, sign};
use crate::wire::{Wrapping, codec, handshake_frame, head};
use crate::world::{Flight, Harness};
use crate::{CLIENT_NAMES, ISSUED_NAME, MAX_KEPT, MAX_RECORDED, SERVER, TOKENS};

impl Harness {
    pub(crate) fn fresh_nonce(&mut self, u: &mut Unstructured) -> Result<Bytes> {
        self.nonce_counter += 1;
        let len = *u.choose(&[16, 16, 16, 32, 24, 0, 15, 33])?;
        let mut nonce = self.nonce_counter.to_be_bytes().to_vec();
        nonce.resize(len.max(8), 0xa5);
        nonce.truncate(len);
        Ok(nonce.into())
    }

    /// The key of a proof: the tokens, the issued token (current or earlier), or nothing.
    pub(crate) fn choose_key(&self, u: &mut Unstructured) -> Result<Option<Vec<u8>>> {
        Ok(match u.int_in_range(0..=7u8)? {
            0 => None,
            1 => Some(TOKENS[2].to_vec()),
            2 => Some(TOKENS[1].to_vec()),
            3 if !self.old_issued_tokens.is_empty() => {
                Some(u.choose(&self.old_issued_tokens)?.expose().to_vec())
            }
            4 | 5 if self.issued.is_some() => self
                .issued
                .as_ref()
                .map(|(_, token)| token.expose().to_vec()),
            6 if !self.tickets.is_empty() => Some(u.choose(&self.tickets)?.secret.to_vec()),
            _ => Some(TOKENS[0].to_vec()),
        })
    }

    /// A hello: fresh and consistent for one mode, or one seen before with some fields changed.
    pub(crate) fn build_hello(
        &mut self,
        u: &mut Unstructured,
    ) -> Result<(Option<MessageHead>, HandshakeHello)> {
        let based = !self.hellos.is_empty() && u.ratio(1, 2)?;
        let (mut frame_head, mut hello, mut key) = if based {
            let (head, hello) = u.choose(&self.hellos)?.clone();
            let key = self.signing_keys.get(&hello.proof).cloned();
            (head, hello, key)
        } else {
            self.fresh_hello(u)?
        };
        // How often each field changes: rarely for a hello seen before (one change at a time).
        let (numerator, denominator) = if based { (1, 10) } else { (1, 24) };
        let mut changed = false;
        for field in 0..14u8 {
            if !u.ratio(numerator, denominator)? {
                continue;
            }
            changed = true;
            match field {
                0 => hello.protocol_version = *u.choose(&[0, 2, -1, i32::MAX, 1])?,
                1 => hello.mode = *u.choose(&[0, 1, 2, 3, 4, -1])?,
                2 => hello.role = *u.choose(&[0, 1, 2, -1])?,
                3 => {
                    hello.source = match u.int_in_range(0..=5u8)? {
                        0 => String::new(),
                        1 => ISSUED_NAME.to_string(),
                        2 => "anon-0123456789abcdef".to_string(),
                        3 => SERVER.to_string(),
                        4 => "a b".to_string(),
                        _ => short_string(u)?,
                    }
                }
                4 => hello.destination = u.choose(&["", "other", SERVER, "server "])?.to_string(),
                5 => hello.nonce = self.fresh_nonce(u)?,
                6 => {
                    let now_ms = self.unix_ms();
                    let window = self.window_ms();
                    hello.timestamp_milliseconds = match u.int_in_range(0..=7u8)? {
                        0 => now_ms + window,
                        1 => now_ms - window,
                        2 => now_ms + window + 1,
                        3 => now_ms - window - 1,
                        4 => i64::MIN,
                        5 => i64::MAX,
                        6 => 0,
                        _ => now_ms,
                    }
                }
                7 => hello.stream_id = int64(u)?,
                8 => {
                    hello.parameters = match u.int_in_range(0..=3u8)? {
                        0 => None,
                        _ => Some(ConnectionParameters {
                            kind: *u.choose(&[0, 1, 2, -1])?,
                            mtu: int64(u)?,
                        }),
                    }
                }
                9 => hello.early_data = !hello.early_data,
                10 => {
                    hello.ticket = if !self.tickets.is_empty() && u.arbitrary()? {
                        let ticket = u.choose(&self.tickets)?;
                        let mut sealed = ticket.sealed.to_vec();
                        if !sealed.is_empty() && u.arbitrary()? {
                            let at = u.choose_index(sealed.len())?;
                            sealed[at] ^= 1;
                        }
                        sealed.into()
                    } else {
                        input_bytes(u, 80)?
                    }
                }
                11 => {
                    // Another instance: the client restarted.
                    hello.instance = Bytes::from(vec![u.int_in_range(0..=3u8)?; 8]);
                    if u.ratio(1, 8)? {
                        hello.instance = input_bytes(u, 12)?;
                    }
                }
                12 => {
                    hello.peer_instance = match u.int_in_range(0..=3u8)? {
                        0 => Bytes::new(),
                        1 => Bytes::from(vec![9; 8]),
                        2 => input_bytes(u, 12)?,
                        _ => self.server_instance.clone(),
                    }
                }
                _ => key = self.choose_key(u)?,
            }
        }
        // Padding is not covered by the proof: any amount, the same proof.
        hello.padding = match u.int_in_range(0..=7u8)? {
            0 => Bytes::new(),
            1 => Bytes::from(vec![0; u.int_in_range(0..=900)?]),
            2 => input_bytes(u, 64)?,
            _ => hello.padding,
        };
        if !based || changed || u.ratio(1, 8)? {
            hello.proof = match u.int_in_range(0..=15u8)? {
                0 => Bytes::new(),
                1 => input_bytes(u, 40)?,
                2 => hello.proof,
                _ => key
                    .as_ref()
                    .map_or_else(Bytes::new, |key| sign(key, &hello_transcript(&hello))),
            };
        }
        if let Some(key) = key {
            self.remember_key(hello.proof.clone(), key);
        }
        // The head names the hello's source and destination, or does not quite.
        if !based || u.ratio(1, 8)? {
            frame_head = match u.int_in_range(0..=31u8)? {
                0 => None,
                1 => head(&short_string(u)?, &hello.destination),
                2 => head(&hello.source, &short_string(u)?),
                _ => head(&hello.source, &hello.destination),
            };
        }
        Ok((frame_head, hello))
    }

    /// A fresh hello that passes the server's rules if its mode is allowed: the head, the hello
    /// and the key of its proof.
    #[allow(clippy::type_complexity)]
    pub(crate) fn fresh_hello(
        &mut self,
        u: &mut Unstructured,
    ) -> Result<(Option<MessageHead>, HandshakeHello, Option<Vec<u8>>)> {
        let kind = u.int_in_range(0..=1)?;
        let mut hello = HandshakeHello {
            protocol_version: atbus_proto::PROTOCOL_VERSION as i32,
            mode: AtbusAuthMode::Token as i32,
            role: if u.ratio(1, 4)? {
                AtbusHandshakeRole::Relay
            } else {
                AtbusHandshakeRole::Node
            } as i32,
            source: u.choose(&CLIENT_NAMES)?.to_string(),
            destination: if u.ratio(1, 4)? { "" } else { SERVER }.to_string(),
            nonce: self.fresh_nonce(u)?,
            timestamp_milliseconds: self.unix_ms(),
            stream_id: 0,
            parameters: Some(ConnectionParameters {
                kind,
                mtu: if kind == 0 { 65_536 } else { 1232 },
            }),
            early_data: u.arbitrary()?,
            ticket: Bytes::new(),
            padding: Bytes::new(),
            instance: Bytes::from(vec![1; 8]),
            peer_instance: if u.arbitrary()? {
                self.server_instance.clone()
            } else {
                Bytes::new()
            },
            proof: Bytes::new(),
        };
        if hello.nonce.len() != 16 && u.ratio(3, 4)? {
            hello.nonce.truncate(16);
        }
        let key = match u.int_in_range(0..=7u8)? {
            0 | 1 => {
                hello.mode = AtbusAuthMode::Issued as i32;
                hello.source = ISSUED_NAME.to_string();
                hello.role = AtbusHandshakeRole::Node as i32;
                match &self.issued {
                    Some((stream_id, token)) => {
                        hello.stream_id = *stream_id;
                        Some(token.expose().to_vec())
                    }
                    None => Some(TOKENS[0].to_vec()),
                }
            }
            2 => {
                hello.mode = AtbusAuthMode::Anonymous as i32;
                hello.source = String::new();
                hello.role = AtbusHandshakeRole::Node as i32;
                hello.early_data = false;
                None
            }
            3 | 4 if !self.tickets.is_empty() => {
                let ticket = u.choose(&self.tickets)?.clone();
                hello.mode = AtbusAuthMode::Ticket as i32;
                hello.source = ticket.name;
                hello.stream_id = ticket.stream_id;
                hello.ticket = ticket.sealed;
                Some(ticket.secret.to_vec())
            }
            _ => Some(TOKENS[*u.choose(&[0, 0, 0, 1])?].to_vec()),
        };
        // An honest client pads the hello so that the answer never outgrows it.
        if u.ratio(3, 4)? {
            hello.padding = Bytes::from(vec![0; 256]);
        }
        let head = head(&hello.source, &hello.destination);
        Ok((head, hello, key))
    }

    /// An accept, as a confused or hostile client might send one to a server.
    pub(crate) fn build_accept(&mut self, u: &mut Unstructured) -> Result<HandshakeAccept> {
        Ok(HandshakeAccept {
            source: u.choose(&["client-a", SERVER, ""])?.to_string(),
            destination: u.choose(&[SERVER, "client-a", ""])?.to_string(),
            nonce: self.fresh_nonce(u)?,
            early_data_accepted: u.arbitrary()?,
            confirm_required: u.arbitrary()?,
            ticket: input_bytes(u, 40)?,
            ticket_lifetime_seconds: int64(u)?,
            role: *u.choose(&[0, 1, 7])?,
            instance: input_bytes(u, 8)?,
            proof: input_bytes(u, 40)?,
        })
    }

    /// A confirm for `id`: over the proof of the accept the server sent on it, keyed by the key
    /// of its hello (the right confirm), or by another key, or arbitrary.
    pub(crate) fn build_confirm(
        &mut self,
        u: &mut Unstructured,
        id: ConnectionId,
    ) -> Result<HandshakeConfirm> {
        let conn = self.conns.get(&id);
        let accept_proof = conn
            .and_then(|conn| conn.accept.as_ref())
            .map(|accept| accept.proof.clone());
        let hello_key = conn
            .and_then(|conn| conn.first_hello.as_ref())
            .and_then(|hello| self.signing_keys.get(&hello.proof))
            .cloned();
        let proof = match (accept_proof, u.int_in_range(0..=7u8)?) {
            (_, 0) => input_bytes(u, 40)?,
            (_, 1) => Bytes::new(),
            (Some(accept_proof), 2) => match self.choose_key(u)? {
                Some(key) => sign(&key, &confirm_transcript(&accept_proof)),
                None => Bytes::new(),
            },
            (Some(accept_proof), _) => match hello_key {
                Some(key) => sign(&key, &confirm_transcript(&accept_proof)),
                None => sign(TOKENS[0], &confirm_transcript(&accept_proof)),
            },
            (None, _) => input_bytes(u, 32)?,
        };
        Ok(HandshakeConfirm { proof })
    }

    /// A handshake frame built here, to a connection the input picks.
    pub(crate) fn send_built(&mut self, u: &mut Unstructured) -> Result<()> {
        let choice = u.int_in_range(0..=15u8)?;
        let (frame_head, body, kind) = match choice {
            0..=10 => {
                let (head, hello) = self.build_hello(u)?;
                let kind = match hello.parameters.map(|p| p.kind) {
                    Some(0) => Some(ConnectionKind::Stream),
                    Some(1) => Some(ConnectionKind::Datagram),
                    _ => None,
                };
                Self::keep(&mut self.hellos, (head.clone(), hello.clone()), MAX_KEPT);
                (head, Some(HandshakeBody::Hello(hello)), kind)
            }
            11 => {
                let accept = self.build_accept(u)?;
                let head = head(&accept.source, &accept.destination);
                (head, Some(HandshakeBody::Accept(accept)), None)
            }
            _ => (head("client-a", SERVER), None, None),
        };
        let id = self.target(u, kind)?;
        let body = match (body, choice) {
            (Some(body), _) => Some(body),
            (None, 12) => None,
            (None, _) => Some(HandshakeBody::Confirm(self.build_confirm(u, id)?)),
        };
        let data = if u.ratio(1, 32)? {
            input_bytes(u, 64)?
        } else {
            HandshakeMessage { body }.encode_to_vec().into()
        };
        let wrapping = Wrapping::arbitrary(u)?;
        let mut wire = BytesMut::from(&handshake_frame(frame_head, data, &wrapping)[..]);
        // Sometimes another frame follows in the same input: a ping, or a packet of early data.
        if u.ratio(1, 8)? {
            let frame = FrameMessage {
                head: head("client-a", SERVER),
                body: Some(if u.arbitrary()? {
                    Body::Ping(PingData {
                        sequence: 1,
                        timepoint_microseconds: 1,
                    })
                } else {
                    Body::Packet(PacketData {
                        stream_id: i64::from(u.int_in_range(0..=3u8)?),
                        content: PacketContent {
                            fragment: vec![FragmentType {
                                data: input_bytes(u, 32)?,
                                ..Default::default()
                            }],
                        }
                        .encode_to_vec()
                        .into(),
                        timepoint_microseconds: 1,
                        ..Default::default()
                    })
                }),
            };
            let _ = codec().encode(&frame, &mut wire);
        }
        let wire = wire.freeze();
        if let Some(conn) = self.conns.get(&id) {
            let flight = Flight {
                data: wire.clone(),
                kind: conn.params.kind,
            };
            Self::keep(&mut self.recorded, flight, MAX_RECORDED);
        }
        self.deliver(u, id, wire)
    }
}
