//! The key layout under the prefix: [`Keys`] builds every key (net and node tokens escaped so
//! that `%` is `%25` and `/` is `%2F`) and parses a key back into what it is ([`Key`]).

use std::net::IpAddr;

use crate::records::Plane;

/// What a key under the prefix is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Key {
    Network(String),
    Bootstrap(String),
    Binding(String, String),
    Address(String, IpAddr),
}

#[derive(Debug, Clone)]
pub(super) struct Keys {
    /// The prefix with one trailing `/`.
    pub(super) root: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Self {
        Self {
            root: format!("{}/", prefix.trim_end_matches('/')),
        }
    }

    pub(super) fn networks(&self) -> String {
        format!("{}networks/", self.root)
    }

    pub(super) fn network(&self, net_token: &str) -> String {
        format!("{}networks/{}", self.root, escape(net_token))
    }

    pub(super) fn bootstraps(&self) -> String {
        format!("{}bootstrap/", self.root)
    }

    pub(super) fn bootstrap(&self, digest: &str) -> String {
        format!("{}bootstrap/{}", self.root, escape(digest))
    }

    pub(super) fn bindings(&self) -> String {
        format!("{}bindings/", self.root)
    }

    pub(super) fn bindings_of(&self, net_token: &str) -> String {
        format!("{}bindings/{}/", self.root, escape(net_token))
    }

    pub(super) fn binding(&self, net_token: &str, node_token: &str) -> String {
        format!(
            "{}bindings/{}/{}",
            self.root,
            escape(net_token),
            escape(node_token)
        )
    }

    pub(super) fn addresses_of(&self, net_token: &str) -> String {
        format!("{}ips/{}/", self.root, escape(net_token))
    }

    pub(super) fn address(&self, net_token: &str, ip: IpAddr) -> String {
        format!("{}ips/{}/{ip}", self.root, escape(net_token))
    }

    pub(super) fn authority(&self, plane: Plane) -> String {
        format!("{}authorities/{}", self.root, plane.name())
    }

    pub(super) fn parse(&self, key: &str) -> Option<Key> {
        let (kind, rest) = key.strip_prefix(&self.root)?.split_once('/')?;
        match kind {
            "networks" => Some(Key::Network(unescape(rest)?)),
            "bootstrap" => Some(Key::Bootstrap(unescape(rest)?)),
            "bindings" => {
                let (net, node) = rest.split_once('/')?;
                Some(Key::Binding(unescape(net)?, unescape(node)?))
            }
            "ips" => {
                let (net, ip) = rest.split_once('/')?;
                Some(Key::Address(unescape(net)?, ip.parse().ok()?))
            }
            _ => None,
        }
    }
}

/// A token as one part of a key: `%` and `/` escaped.
fn escape(part: &str) -> String {
    let mut escaped = String::with_capacity(part.len());
    for c in part.chars() {
        match c {
            '%' => escaped.push_str("%25"),
            '/' => escaped.push_str("%2F"),
            c => escaped.push(c),
        }
    }
    escaped
}

fn unescape(part: &str) -> Option<String> {
    if part.contains('/') {
        return None;
    }
    let mut bytes = Vec::with_capacity(part.len());
    let mut rest = part.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_back_into_their_tokens() {
        let keys = Keys::new("/network-ctl/");
        assert_eq!(keys.root, "/network-ctl/");
        let key = keys.binding("a/b%c", "node");
        assert_eq!(key, "/network-ctl/bindings/a%2Fb%25c/node");
        assert_eq!(
            keys.parse(&key),
            Some(Key::Binding("a/b%c".into(), "node".into()))
        );
        let ip: IpAddr = "fd00::7".parse().unwrap();
        assert_eq!(
            keys.parse(&keys.address("default", ip)),
            Some(Key::Address("default".into(), ip))
        );
        assert_eq!(
            keys.parse(&keys.network("x")),
            Some(Key::Network("x".into()))
        );
        assert_eq!(keys.parse("/network-ctl/bindings/only-net"), None);
        assert_eq!(keys.parse("/network-ctl/networks/bad%2"), None);
        assert_eq!(keys.parse("/other/networks/x"), None);
        assert!(!keys.bindings_of("a").starts_with(&keys.bindings_of("a/")));
    }
}
