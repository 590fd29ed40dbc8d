//! Tokens: random bootstrap and node tokens, the digests bootstrap tokens are stored as, the
//! reserved node token, and bootstrap token lifetimes as people write them (`10m`, `never`).

use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};

/// The node token the server itself holds in every network, spelled as in the seed (nine
/// characters, so no generated sixteen-character token can equal it). It is ensured on start
/// and can never be unregistered or reclaimed.
pub const RESERVED_NODE_TOKEN: &str = "reserverd";

/// The net token of the network configured by `networkAddr`, and the one requests mean when
/// they name none.
pub const DEFAULT_NET_TOKEN: &str = "default";

/// Length of a node token (as in the seed).
pub const NODE_TOKEN_LEN: usize = 16;

/// Length of a bootstrap token.
pub const BOOTSTRAP_TOKEN_LEN: usize = 32;

/// How long a bootstrap token lives when its creator does not say.
pub const DEFAULT_BOOTSTRAP_LIFETIME: Duration = Duration::from_secs(10 * 60);

/// The longest lifetime a bootstrap token may be given (longer: `never`).
pub const MAX_BOOTSTRAP_LIFETIME: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A random token of `len` characters from `a-z0-9` (about 5.2 bits each).
pub fn generate(len: usize) -> String {
    let random = SystemRandom::new();
    let mut token = String::with_capacity(len);
    let mut bytes = [0u8; 64];
    while token.len() < len {
        random
            .fill(&mut bytes)
            .expect("the operating system's random source works");
        // 252 = 7 * 36: bytes above it are dropped so every character is equally likely.
        for &byte in bytes.iter().filter(|&&b| b < 252) {
            if token.len() == len {
                break;
            }
            token.push(ALPHABET[(byte % 36) as usize] as char);
        }
    }
    token
}

/// The SHA-256 digest of `token` in hex: what is stored of a bootstrap token.
pub fn digest(token: &str) -> String {
    atbus_discovery::token_digest(token.as_bytes())
}

/// The id shown for a stored bootstrap token: the start of its digest.
pub fn id_of(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

/// A bootstrap token's lifetime as written by people: a duration such as `10m`, `90s` or `2h`,
/// or `never`. `Ok(None)` is `never`.
pub fn parse_lifetime(text: &str) -> Result<Option<Duration>, String> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("never") {
        return Ok(None);
    }
    let lifetime = humantime::parse_duration(text).map_err(|error| {
        format!("{text:?} is not a lifetime ({error}): write it as 10m, 90s, 2h or never")
    })?;
    if lifetime.is_zero() {
        return Err(format!(
            "a lifetime of {text:?} expires at once: give a positive duration or never"
        ));
    }
    Ok(Some(lifetime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_have_the_length_and_alphabet_asked_for_and_differ() {
        let a = generate(NODE_TOKEN_LEN);
        let b = generate(NODE_TOKEN_LEN);
        assert_eq!(a.len(), 16);
        assert!(a.bytes().all(|c| ALPHABET.contains(&c)), "{a}");
        assert_ne!(a, b);
        assert_ne!(a.len(), RESERVED_NODE_TOKEN.len());
    }

    #[test]
    fn lifetimes_parse_durations_and_never() {
        assert_eq!(parse_lifetime("10m"), Ok(Some(Duration::from_secs(600))));
        assert_eq!(
            parse_lifetime("1h 30m"),
            Ok(Some(Duration::from_secs(5400)))
        );
        assert_eq!(parse_lifetime("never"), Ok(None));
        assert!(
            parse_lifetime("0s")
                .unwrap_err()
                .contains("expires at once")
        );
        assert!(
            parse_lifetime("soon")
                .unwrap_err()
                .contains("10m, 90s, 2h or never")
        );
    }

    #[test]
    fn a_digest_is_hex_sha256_and_its_id_is_its_start() {
        let digest = digest("abc");
        assert_eq!(
            digest,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(id_of(&digest), "ba7816bf8f01");
    }
}
