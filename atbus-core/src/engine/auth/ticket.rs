//! Resumption tickets: after a handshake proven with a token, the accepting side seals what it
//! needs to trust the next connection (the name, how it was authenticated, a fresh secret) with a
//! key only it knows, and hands the sealed bytes to the connecting side. The next hello carries the
//! ticket and a proof keyed by the secret instead of the long-term token.
//!
//! Sealed layout: a 12-byte nonce, then ChaCha20-Poly1305 of the plain layout below with the
//! associated data `atbus-ticket/1`. The format is private to the side that seals it.

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use super::proof::PROOF_LEN;

/// Version byte of the plain layout.
const VERSION: u8 = 1;
/// Associated data of every ticket.
const AAD: &[u8] = b"atbus-ticket/1";
/// Bytes of the plain layout before the name.
const FIXED_LEN: usize = 1 + 1 + 1 + 8 + 8 + 8 + 8 + PROOF_LEN;

/// How the connection the ticket came from was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TicketOrigin {
    /// With the shared token of this fingerprint (the first 8 bytes of its SHA-256): the ticket dies
    /// with the token when it is rotated out.
    Token {
        /// Fingerprint of the token.
        fingerprint: [u8; 8],
    },
    /// With an issued identity: the ticket dies when the identity is revoked or re-issued.
    Issued {
        /// The stream id issued with it.
        stream_id: i64,
        /// Which issue of the name.
        generation: u64,
    },
}

/// What a ticket vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// The connecting node's name.
    pub name: String,
    /// How it was authenticated.
    pub origin: TicketOrigin,
    /// Whether it was accepted as a relay.
    pub relay: bool,
    /// Unix time in milliseconds after which the ticket is refused.
    pub expires_ms: i64,
    /// The key of the next hello's proof.
    pub secret: [u8; PROOF_LEN],
}

/// The key tickets are sealed with.
pub struct TicketKey(LessSafeKey);

impl std::fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketKey(<redacted>)")
    }
}

impl TicketKey {
    /// A key from 32 secret bytes.
    pub fn new(bytes: &[u8; 32]) -> Self {
        // ChaCha20-Poly1305 takes any 32-byte key.
        let key = UnboundKey::new(&CHACHA20_POLY1305, bytes)
            .unwrap_or_else(|_| unreachable!("a 32-byte ChaCha20-Poly1305 key is always valid"));
        Self(LessSafeKey::new(key))
    }

    /// Seals `ticket` with the fresh `nonce`.
    pub fn seal(&self, ticket: &Ticket, nonce: [u8; NONCE_LEN]) -> Vec<u8> {
        let mut plain = Vec::with_capacity(FIXED_LEN + ticket.name.len() + 16);
        plain.push(VERSION);
        let (kind, fingerprint, stream_id, generation) = match ticket.origin {
            TicketOrigin::Token { fingerprint } => (0, fingerprint, 0, 0),
            TicketOrigin::Issued {
                stream_id,
                generation,
            } => (1, [0; 8], stream_id, generation),
        };
        plain.push(kind);
        plain.push(u8::from(ticket.relay));
        plain.extend_from_slice(&ticket.expires_ms.to_be_bytes());
        plain.extend_from_slice(&fingerprint);
        plain.extend_from_slice(&stream_id.to_be_bytes());
        plain.extend_from_slice(&generation.to_be_bytes());
        plain.extend_from_slice(&ticket.secret);
        plain.extend_from_slice(ticket.name.as_bytes());
        // Sealing in place cannot fail for a buffer far below ChaCha20-Poly1305's limit.
        if self
            .0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(AAD),
                &mut plain,
            )
            .is_err()
        {
            return Vec::new();
        }
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&plain);
        sealed
    }

    /// Opens a sealed ticket: `None` when it was not sealed with this key, was altered, or does
    /// not parse.
    pub fn open(&self, sealed: &[u8]) -> Option<Ticket> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buffer = rest.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(AAD), &mut buffer)
            .ok()?;
        if plain.len() < FIXED_LEN || plain[0] != VERSION {
            return None;
        }
        let int = |at: usize| -> [u8; 8] {
            let mut out = [0; 8];
            out.copy_from_slice(&plain[at..at + 8]);
            out
        };
        let expires_ms = i64::from_be_bytes(int(3));
        let fingerprint = int(11);
        let stream_id = i64::from_be_bytes(int(19));
        let generation = u64::from_be_bytes(int(27));
        let mut secret = [0; PROOF_LEN];
        secret.copy_from_slice(&plain[35..35 + PROOF_LEN]);
        let origin = match plain[1] {
            0 => TicketOrigin::Token { fingerprint },
            1 => TicketOrigin::Issued {
                stream_id,
                generation,
            },
            _ => return None,
        };
        let name = String::from_utf8(plain[FIXED_LEN..].to_vec()).ok()?;
        Some(Ticket {
            name,
            origin,
            relay: plain[2] == 1,
            expires_ms,
            secret,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket() -> Ticket {
        Ticket {
            name: "client-1".into(),
            origin: TicketOrigin::Issued {
                stream_id: 42,
                generation: 3,
            },
            relay: false,
            expires_ms: 1_767_225_600_000,
            secret: [7; PROOF_LEN],
        }
    }

    #[test]
    fn a_sealed_ticket_opens_to_what_was_sealed() {
        let key = TicketKey::new(&[1; 32]);
        let sealed = key.seal(&ticket(), [9; NONCE_LEN]);
        assert_eq!(key.open(&sealed), Some(ticket()));
        let token = Ticket {
            origin: TicketOrigin::Token {
                fingerprint: [5; 8],
            },
            relay: true,
            ..ticket()
        };
        assert_eq!(key.open(&key.seal(&token, [1; NONCE_LEN])), Some(token));
    }

    #[test]
    fn a_ticket_altered_or_sealed_with_another_key_does_not_open() {
        let key = TicketKey::new(&[1; 32]);
        let sealed = key.seal(&ticket(), [9; NONCE_LEN]);
        for index in 0..sealed.len() {
            let mut altered = sealed.clone();
            altered[index] ^= 1;
            assert_eq!(key.open(&altered), None, "byte {index} altered");
        }
        assert_eq!(TicketKey::new(&[2; 32]).open(&sealed), None);
        assert_eq!(key.open(&sealed[..10]), None);
        assert_eq!(key.open(&[]), None);
    }
}
