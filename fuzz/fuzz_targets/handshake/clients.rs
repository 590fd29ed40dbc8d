//! The real connecting endpoints (one with tokens, one with the issued identity, one anonymous):
//! created on demand, connecting to a new server connection, their flights recorded and delivered,
//! the hellos in them learnt with their keys, and the server's answers pumped back to them.

use std::collections::BTreeMap;
use std::time::Duration;

use arbitrary::{Result, Unstructured};
use atbus_core::engine::{
    ConnectOptions, ConnectionId, ConnectionKind, Credential, Endpoint, EngineConfig, Event,
    MessageMeta,
};
use atbus_proto::Decoded;
use atbus_proto::handshake::AtbusAuthMode;
use atbus_proto::handshake::handshake_message::Body as HandshakeBody;
use bytes::Bytes;

use crate::proofs::token;
use crate::wire::{codec, handshake_of};
use crate::world::{Client, Flight, Harness};
use crate::{
    CLIENT_NAMES, ISSUED_NAME, MAX_CLIENTS, MAX_KEPT, MAX_RECORDED, MAX_TRANSMITS, SERVER, TOKENS,
};

impl Harness {
    /// Client 0 speaks with tokens, client 1 with the issued identity, client 2 anonymously.
    pub(crate) fn client(&mut self, u: &mut Unstructured, index: usize) -> Result<&mut Client> {
        if self.clients[index].is_none() {
            let name = match index {
                0 => *u.choose(&CLIENT_NAMES)?,
                1 => ISSUED_NAME,
                _ => "",
            };
            let mut config = EngineConfig::default();
            config.auth.rng_seed = Some([index as u8 + 1; 32]);
            let mut endpoint = Endpoint::new(name, config, self.now);
            // The client's clock: mostly the server's, sometimes off by about the window.
            let skew = match u.int_in_range(0..=7u8)? {
                0 => self.window_ms() + 1,
                1 => -self.window_ms() - 1,
                2 => self.window_ms(),
                3 => -self.window_ms() / 2,
                _ => 0,
            };
            let unix = (self.unix_ms() + skew).max(0) as u64;
            endpoint.set_unix_time(self.now, Duration::from_millis(unix));
            self.clients[index] = Some(Client {
                endpoint,
                links: BTreeMap::new(),
                keys: BTreeMap::new(),
            });
        }
        Ok(self.clients[index].as_mut().expect("created above"))
    }

    /// A real client connects: its hello (and early data) goes to a new accepted connection.
    pub(crate) fn connect(&mut self, u: &mut Unstructured) -> Result<()> {
        let index = u.int_in_range(0..=MAX_CLIENTS - 1)?;
        let issued = self.issued.clone();
        let (credential, key) = match index {
            0 => {
                let which = *u.choose(&[0, 0, 1, 2])?;
                (
                    Credential::Token(token(which)),
                    Some(TOKENS[which].to_vec()),
                )
            }
            1 => {
                let (stream_id, token) = match &issued {
                    Some((stream_id, token)) if u.ratio(7, 8)? => (*stream_id, token.clone()),
                    _ => (i64::from(u.int_in_range(0..=3u8)?), token(0)),
                };
                let stream_id = if u.ratio(1, 8)? {
                    stream_id + 1
                } else {
                    stream_id
                };
                let key = token.expose().to_vec();
                (Credential::Issued { stream_id, token }, Some(key))
            }
            _ => (Credential::Anonymous, None),
        };
        let mut options = match u.int_in_range(0..=7u8)? {
            0 => ConnectOptions::to_anyone(credential),
            1 => ConnectOptions::new("other", credential),
            _ => ConnectOptions::new(SERVER, credential),
        };
        options.early_data &= u.arbitrary::<bool>()?;
        options.relay = u.ratio(1, 4)?;
        options.resume = u.ratio(3, 4)?;
        let kind = Self::kind(u)?;
        let params = Self::connection_params(u, kind)?;
        let data_len = u.int_in_range(0..=600)?;
        let stream_id = i64::from(u.int_in_range(0..=3u8)?);
        let now = self.now;
        let client = self.client(u, index)?;
        if options.early_data {
            let data = Bytes::from(vec![0x42; data_len]);
            let _ = client
                .endpoint
                .send(SERVER, stream_id, data, MessageMeta::default());
        }
        let client_id = match client.endpoint.connect(now, params, options) {
            Ok(id) => id,
            Err(error) => {
                self.mix(error.to_string().len() as u64);
                return Ok(());
            }
        };
        if let Some(key) = key {
            client.keys.insert(client_id, key);
        }
        // The server accepts it, usually on a connection of the same kind.
        let server_kind = if u.ratio(15, 16)? {
            kind
        } else {
            Self::kind(u)?
        };
        if let Some(server_id) = self.open(u, server_kind)? {
            let conn = self.conns.get_mut(&server_id).expect("opened above");
            conn.client = Some((index, client_id));
            if let Some(client) = self.clients[index].as_mut() {
                client.links.insert(client_id, server_id);
            }
        }
        let deliver = u.ratio(7, 8)?;
        self.drain_client(u, index, deliver)
    }

    /// Takes every event and transmit of a client: transmits are recorded, and delivered to the
    /// server connection at the other end if `deliver`.
    pub(crate) fn drain_client(
        &mut self,
        u: &mut Unstructured,
        index: usize,
        deliver: bool,
    ) -> Result<()> {
        for _ in 0..8 {
            let Some(client) = self.clients[index].as_mut() else {
                return Ok(());
            };
            let mut flights = Vec::new();
            while let Some(event) = client.endpoint.poll_event() {
                match &event {
                    Event::HandshakeFailed { connection, .. }
                    | Event::ConnectionLost { connection, .. } => {
                        client.links.remove(connection);
                    }
                    _ => {}
                }
                flights.push((None, Bytes::from(format!("{event:?}"))));
            }
            let mut transmits = 0;
            while let Some(transmit) = client.endpoint.poll_transmit(self.now) {
                transmits += 1;
                assert!(
                    transmits < MAX_TRANSMITS,
                    "a client's poll_transmit runs on"
                );
                let link = client.links.get(&transmit.connection).copied();
                let key = client.keys.get(&transmit.connection).cloned();
                flights.push((Some((link, key)), transmit.data));
            }
            if flights.is_empty() {
                return Ok(());
            }
            for (sent, data) in flights {
                let Some((link, key)) = sent else {
                    self.mix(data.len() as u64);
                    continue;
                };
                let kind = link
                    .and_then(|id| self.conns.get(&id))
                    .map_or(ConnectionKind::Stream, |conn| conn.params.kind);
                self.learn(&data, key);
                Self::keep(
                    &mut self.recorded,
                    Flight {
                        data: data.clone(),
                        kind,
                    },
                    MAX_RECORDED,
                );
                if let (true, Some(id)) = (deliver, link) {
                    if self.conns.contains_key(&id) {
                        self.deliver(u, id, data)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Notes the hellos in a client's flight: to change and send them again, and the key of their
    /// proof.
    pub(crate) fn learn(&mut self, data: &Bytes, key: Option<Vec<u8>>) {
        let mut rest = data.clone();
        while let Ok(Decoded::Frame(frame)) = codec().decode_bytes(&mut rest) {
            if let Some(Ok(HandshakeBody::Hello(hello))) = handshake_of(&frame.message) {
                let signed_with_key = hello.mode == AtbusAuthMode::Token as i32
                    || hello.mode == AtbusAuthMode::Issued as i32;
                if let (true, Some(key)) = (signed_with_key, &key) {
                    self.remember_key(hello.proof.clone(), key.clone());
                }
                Self::keep(&mut self.hellos, (frame.message.head, hello), MAX_KEPT);
            }
        }
    }

    pub(crate) fn remember_key(&mut self, proof: Bytes, key: Vec<u8>) {
        if self.signing_keys.len() >= 4 * MAX_KEPT {
            self.signing_keys.pop_first();
        }
        self.signing_keys.insert(proof, key);
    }

    /// Hands what the server sent on one of its connections to the client at the other end, and
    /// what the client answers back.
    pub(crate) fn pump(&mut self, u: &mut Unstructured) -> Result<()> {
        let linked: Vec<ConnectionId> = self
            .conns
            .iter()
            .filter(|(_, conn)| conn.client.is_some())
            .map(|(&id, _)| id)
            .collect();
        if linked.is_empty() {
            return Ok(());
        }
        let server_id = *u.choose(&linked)?;
        let conn = self
            .conns
            .get_mut(&server_id)
            .expect("chosen among live ones");
        let (index, client_id) = conn.client.expect("chosen among linked ones");
        let inbox = std::mem::take(&mut conn.to_client);
        let now = self.now;
        if let Some(client) = self.clients[index].as_mut() {
            for data in inbox {
                // The network may lose a datagram.
                if u.ratio(1, 16)? {
                    continue;
                }
                client.endpoint.handle_input(now, client_id, data);
            }
        }
        let deliver = u.ratio(15, 16)?;
        self.drain_client(u, index, deliver)
    }
}
