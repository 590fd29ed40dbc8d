//! Identities issued to clients on untrusted networks: the accepting
//! side hands a client the triple (name, stream id, token); the client's handshakes are checked
//! against exactly that triple, and a revoked or expired identity is refused on its next frame.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::{AuthFailure, Token};

/// An identity issued by [`Endpoint::issue_identity`](crate::engine::Endpoint::issue_identity):
/// hand all of it to the client, over a channel you trust.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedIdentity {
    /// The name the client must use as its node name.
    pub name: String,
    /// The one stream the client may send on.
    pub stream_id: i64,
    /// The client's token (its proof key).
    pub token: Token,
    /// When the identity stops being accepted.
    pub expires_at: SystemTime,
}

/// One issued identity as the accepting side keeps it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The stream issued with it.
    pub stream_id: i64,
    /// The token.
    pub token: Token,
    /// Unix time in milliseconds when it expires.
    pub expires_ms: i64,
    /// Which issue of the name this is: a re-issue makes older connections' identity stale.
    pub generation: u64,
    /// Revoked: kept so that its handshakes are refused as revoked until it is issued again.
    pub revoked: bool,
}

/// The identities this endpoint issued, by name.
#[derive(Debug, Default)]
pub struct IssuedRegistry {
    by_name: BTreeMap<String, Entry>,
    next_generation: u64,
}

impl IssuedRegistry {
    /// Issues (or re-issues, replacing the previous one) the identity `name` on `stream_id`.
    pub fn issue(
        &mut self,
        name: &str,
        stream_id: i64,
        token: Token,
        now_ms: i64,
        lifetime: Duration,
    ) -> IssuedIdentity {
        self.next_generation += 1;
        let lifetime_ms = i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX);
        let expires_ms = now_ms.saturating_add(lifetime_ms);
        self.by_name.insert(
            name.to_string(),
            Entry {
                stream_id,
                token: token.clone(),
                expires_ms,
                generation: self.next_generation,
                revoked: false,
            },
        );
        IssuedIdentity {
            name: name.to_string(),
            stream_id,
            token,
            expires_at: SystemTime::UNIX_EPOCH
                + Duration::from_millis(u64::try_from(expires_ms).unwrap_or(0)),
        }
    }

    /// Revokes `name`'s identity; whether there was a live one.
    pub fn revoke(&mut self, name: &str) -> bool {
        match self.by_name.get_mut(name) {
            Some(entry) if !entry.revoked => {
                entry.revoked = true;
                true
            }
            _ => false,
        }
    }

    /// The identity a hello with `name` and `stream_id` must prove, if it is issued and live.
    pub fn lookup(&self, name: &str, stream_id: i64, now_ms: i64) -> Result<&Entry, AuthFailure> {
        let entry = self.by_name.get(name).ok_or(AuthFailure::UnknownName)?;
        if entry.stream_id != stream_id {
            return Err(AuthFailure::UnknownName);
        }
        if entry.revoked || entry.expires_ms < now_ms {
            return Err(AuthFailure::Revoked);
        }
        Ok(entry)
    }

    /// Whether the identity `name` of `generation` is still issued and unexpired.
    pub fn is_live(&self, name: &str, generation: u64, now_ms: i64) -> bool {
        self.by_name.get(name).is_some_and(|entry| {
            entry.generation == generation && !entry.revoked && entry.expires_ms >= now_ms
        })
    }

    /// Whether `name` is reserved by an issued identity.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(byte: u8) -> Token {
        Token::new([byte; 32]).unwrap()
    }

    #[test]
    fn an_identity_is_found_only_with_its_exact_name_and_stream() {
        let mut registry = IssuedRegistry::default();
        registry.issue("client-1", 7, token(1), 1_000, Duration::from_secs(60));
        assert!(registry.lookup("client-1", 7, 2_000).is_ok());
        assert_eq!(
            registry.lookup("client-1", 8, 2_000).err(),
            Some(AuthFailure::UnknownName)
        );
        assert_eq!(
            registry.lookup("client-2", 7, 2_000).err(),
            Some(AuthFailure::UnknownName)
        );
        assert_eq!(
            registry.lookup("client-1", 7, 61_001).err(),
            Some(AuthFailure::Revoked)
        );
    }

    #[test]
    fn revoking_or_reissuing_makes_the_old_identity_stale() {
        let mut registry = IssuedRegistry::default();
        registry.issue("client-1", 7, token(1), 0, Duration::from_secs(60));
        let first = registry.lookup("client-1", 7, 0).unwrap().generation;
        registry.issue("client-1", 7, token(2), 0, Duration::from_secs(60));
        assert!(!registry.is_live("client-1", first, 0));
        let second = registry.lookup("client-1", 7, 0).unwrap().generation;
        assert!(registry.is_live("client-1", second, 0));
        assert!(registry.revoke("client-1"));
        assert!(!registry.is_live("client-1", second, 0));
        assert_eq!(
            registry.lookup("client-1", 7, 0).err(),
            Some(AuthFailure::Revoked)
        );
        assert!(!registry.revoke("client-1"));
    }
}
