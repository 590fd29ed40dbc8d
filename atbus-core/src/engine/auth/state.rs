//! What an endpoint keeps for authentication besides its connections: the replay cache, the
//! identities it issued, its ticket key and the tickets it holds, its random numbers, and the
//! Unix clock that hello timestamps are checked against.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use ring::rand::SecureRandom;

use super::issued::IssuedRegistry;
use super::proof::PROOF_LEN;
use super::replay::ReplayCache;
use super::ticket::{TicketKey, TicketOrigin};
use super::{AuthConfig, Credential};

/// A resumption ticket this endpoint holds for a peer.
#[derive(Debug, Clone)]
pub struct HeldTicket {
    /// The sealed bytes, as received.
    pub sealed: Vec<u8>,
    /// The key of the next hello's proof.
    pub secret: [u8; PROOF_LEN],
    /// Unix milliseconds after which it is no use.
    pub expires_ms: i64,
    /// The credential it was obtained with: it is used only in its place.
    pub origin: TicketOrigin,
}

impl HeldTicket {
    /// Whether this ticket may stand in for `credential`.
    pub fn stands_for(&self, credential: &Credential) -> bool {
        match (credential, self.origin) {
            (Credential::Token(token), TicketOrigin::Token { fingerprint }) => {
                token.fingerprint() == fingerprint
            }
            (Credential::Issued { stream_id, .. }, TicketOrigin::Issued { stream_id: s, .. }) => {
                *stream_id == s
            }
            _ => false,
        }
    }
}

/// The authentication state of an endpoint.
#[derive(Debug)]
pub struct AuthState {
    /// Nonces of accepted hellos.
    pub replay: ReplayCache,
    /// Identities issued here.
    pub issued: IssuedRegistry,
    /// Seals the tickets handed out.
    pub ticket_key: TicketKey,
    /// Tickets held for peers, by peer name.
    pub tickets: BTreeMap<String, HeldTicket>,
    rng: ChaCha20Rng,
    /// Unix time, in milliseconds, at the endpoint's epoch instant.
    unix_at_epoch_ms: i64,
    epoch: Instant,
    /// Anonymous names handed out so far.
    pub anonymous_count: u64,
    /// This endpoint's instance: random, so that peers tell a restart from a reconnection.
    pub instance: [u8; 8],
}

impl AuthState {
    /// The state for a new endpoint created at `epoch`.
    pub fn new(config: &AuthConfig, epoch: Instant) -> Self {
        let seed = config.rng_seed.unwrap_or_else(|| {
            let mut seed = [0; 32];
            // The operating system's generator; if it fails, the clock at least varies the seed.
            if ring::rand::SystemRandom::new().fill(&mut seed).is_err() {
                let nanos = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos();
                seed[..16].copy_from_slice(&nanos.to_le_bytes());
            }
            seed
        });
        let mut rng = ChaCha20Rng::from_seed(seed);
        let ticket_key = match &config.ticket_key {
            Some(secret) => {
                let digest = ring::digest::digest(&ring::digest::SHA256, secret.expose());
                let mut key = [0; 32];
                key.copy_from_slice(digest.as_ref());
                TicketKey::new(&key)
            }
            None => {
                let mut key = [0; 32];
                rng.fill_bytes(&mut key);
                TicketKey::new(&key)
            }
        };
        let mut instance = [0; 8];
        rng.fill_bytes(&mut instance);
        let unix_at_epoch_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Self {
            replay: ReplayCache::new(config.replay_cache_size),
            issued: IssuedRegistry::default(),
            ticket_key,
            tickets: BTreeMap::new(),
            rng,
            unix_at_epoch_ms,
            epoch,
            anonymous_count: 0,
            instance,
        }
    }

    /// Sets the Unix clock: at `now` it is `unix` since the Unix epoch.
    pub fn set_unix_time(&mut self, now: Instant, unix: Duration) {
        let since_epoch = now.saturating_duration_since(self.epoch).as_millis();
        let unix_ms = i64::try_from(unix.as_millis()).unwrap_or(i64::MAX);
        self.unix_at_epoch_ms = unix_ms.saturating_sub(i64::try_from(since_epoch).unwrap_or(0));
    }

    /// Unix time in milliseconds at `now`.
    pub fn unix_ms(&self, now: Instant) -> i64 {
        let since_epoch = now.saturating_duration_since(self.epoch).as_millis();
        self.unix_at_epoch_ms
            .saturating_add(i64::try_from(since_epoch).unwrap_or(i64::MAX))
    }

    /// `N` fresh random bytes.
    pub fn random<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        self.rng.fill_bytes(&mut out);
        out
    }
}
