//! Transport addresses: `scheme://…` strings naming how to reach a node, parsed with errors that
//! say what is wrong and what a valid address looks like.
//!
//! | scheme | form | transport |
//! |---|---|---|
//! | `tcp` | `tcp://host:port` | TCP |
//! | `tls` | `tls://host:port` | TLS over TCP (rustls) |
//! | `udp` | `udp://host:port` | the engine's own reliability over UDP |
//! | `quic` | `quic://host:port` | QUIC (quinn) |
//! | `unix` | `unix:///absolute/path` | Unix stream socket |
//! | `mem` | `mem://name` | two nodes in one process |
//!
//! Hosts are DNS names, IPv4 addresses, or IPv6 addresses in brackets (`tcp://[::1]:7800`).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Where a node listens or is reached.
///
/// ```
/// use atbus_core::Address;
///
/// let address: Address = "tcp://127.0.0.1:7800".parse()?;
/// assert_eq!(address.scheme(), "tcp");
/// assert_eq!(address.to_string(), "tcp://127.0.0.1:7800");
///
/// let error = "tcp://127.0.0.1".parse::<Address>().unwrap_err();
/// assert!(error.to_string().contains("port"));
/// # Ok::<(), atbus_core::AddressError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Address {
    /// `tcp://host:port`.
    Tcp(HostPort),
    /// `tls://host:port`.
    Tls(HostPort),
    /// `udp://host:port`.
    Udp(HostPort),
    /// `quic://host:port`.
    Quic(HostPort),
    /// `unix:///path`.
    Unix(PathBuf),
    /// `mem://name`.
    Mem(String),
}

/// A host (DNS name, IPv4, or IPv6 without its brackets) and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    /// The host.
    pub host: String,
    /// The port; 0 when listening asks the system to choose.
    pub port: u16,
}

impl HostPort {
    /// `host:port`, with brackets around an IPv6 host, as socket APIs take it.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// An address did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// No `scheme://` in front.
    #[error("{input:?} has no scheme: write e.g. tcp://127.0.0.1:7800 or unix:///run/atbus.sock")]
    MissingScheme {
        /// The address given.
        input: String,
    },
    /// A scheme atbus does not know.
    #[error("unknown scheme {scheme:?} in {input:?}: use tcp, tls, udp, quic, unix or mem")]
    UnknownScheme {
        /// The scheme given.
        scheme: String,
        /// The address given.
        input: String,
    },
    /// A network address without `:port`.
    #[error("{input:?} has no port: write {scheme}://host:port")]
    MissingPort {
        /// The scheme.
        scheme: String,
        /// The address given.
        input: String,
    },
    /// The port is not a number from 0 to 65535.
    #[error("{input:?}: the port {port:?} is not a number from 0 to 65535")]
    InvalidPort {
        /// The port text.
        port: String,
        /// The address given.
        input: String,
    },
    /// The host is empty, or malformed (an IPv6 address without brackets, spaces, a path).
    #[error("{input:?}: invalid host {host:?}: {reason}")]
    InvalidHost {
        /// The host text.
        host: String,
        /// What is wrong.
        reason: &'static str,
        /// The address given.
        input: String,
    },
    /// A `unix://` path that is not absolute.
    #[error("{input:?}: a unix socket path must be absolute, e.g. unix:///run/atbus.sock")]
    RelativeUnixPath {
        /// The address given.
        input: String,
    },
    /// A `mem://` address without a name.
    #[error("{input:?}: a mem address needs a name, e.g. mem://orders")]
    EmptyMemName {
        /// The address given.
        input: String,
    },
}

impl Address {
    /// The scheme: `tcp`, `tls`, `udp`, `quic`, `unix` or `mem`.
    pub fn scheme(&self) -> &'static str {
        match self {
            Address::Tcp(_) => "tcp",
            Address::Tls(_) => "tls",
            Address::Udp(_) => "udp",
            Address::Quic(_) => "quic",
            Address::Unix(_) => "unix",
            Address::Mem(_) => "mem",
        }
    }

    /// The host and port of a network address.
    pub fn host_port(&self) -> Option<&HostPort> {
        match self {
            Address::Tcp(hp) | Address::Tls(hp) | Address::Udp(hp) | Address::Quic(hp) => Some(hp),
            Address::Unix(_) | Address::Mem(_) => None,
        }
    }

    /// The same address on another port (for a listener that asked for port 0).
    pub fn with_port(&self, port: u16) -> Self {
        let mut address = self.clone();
        if let Address::Tcp(hp) | Address::Tls(hp) | Address::Udp(hp) | Address::Quic(hp) =
            &mut address
        {
            hp.port = port;
        }
        address
    }
}

fn parse_host_port(scheme: &str, rest: &str, input: &str) -> Result<HostPort, AddressError> {
    let invalid_host = |host: &str, reason| AddressError::InvalidHost {
        host: host.to_string(),
        reason,
        input: input.to_string(),
    };
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let Some((host, after)) = bracketed.split_once(']') else {
            return Err(invalid_host(rest, "an IPv6 address needs a closing ']'"));
        };
        let Some(port) = after.strip_prefix(':') else {
            return Err(AddressError::MissingPort {
                scheme: scheme.to_string(),
                input: input.to_string(),
            });
        };
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(invalid_host(host, "not an IPv6 address"));
        }
        (host, port)
    } else {
        let Some((host, port)) = rest.rsplit_once(':') else {
            return Err(AddressError::MissingPort {
                scheme: scheme.to_string(),
                input: input.to_string(),
            });
        };
        if host.contains(':') {
            return Err(invalid_host(
                host,
                "write an IPv6 address in brackets, e.g. [::1]",
            ));
        }
        (host, port)
    };
    if host.is_empty() {
        return Err(invalid_host(host, "it is empty"));
    }
    if host
        .chars()
        .any(|c| c.is_whitespace() || c == '/' || c == '@' || c.is_control())
    {
        return Err(invalid_host(host, "it holds spaces, '/' or '@'"));
    }
    let port = port.parse::<u16>().map_err(|_| AddressError::InvalidPort {
        port: port.to_string(),
        input: input.to_string(),
    })?;
    Ok(HostPort {
        host: host.to_string(),
        port,
    })
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let Some((scheme, rest)) = input.split_once("://") else {
            return Err(AddressError::MissingScheme {
                input: input.to_string(),
            });
        };
        let network =
            |make: fn(HostPort) -> Address| parse_host_port(scheme, rest, input).map(make);
        match scheme {
            "tcp" => network(Address::Tcp),
            "tls" => network(Address::Tls),
            "udp" => network(Address::Udp),
            "quic" => network(Address::Quic),
            "unix" => {
                if !rest.starts_with('/') {
                    return Err(AddressError::RelativeUnixPath {
                        input: input.to_string(),
                    });
                }
                Ok(Address::Unix(PathBuf::from(rest)))
            }
            "mem" => {
                if rest.is_empty() {
                    return Err(AddressError::EmptyMemName {
                        input: input.to_string(),
                    });
                }
                Ok(Address::Mem(rest.to_string()))
            }
            _ => Err(AddressError::UnknownScheme {
                scheme: scheme.to_string(),
                input: input.to_string(),
            }),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(hp) | Address::Tls(hp) | Address::Udp(hp) | Address::Quic(hp) => {
                write!(f, "{}://{}", self.scheme(), hp.authority())
            }
            Address::Unix(path) => write!(f, "unix://{}", path.display()),
            Address::Mem(name) => write!(f, "mem://{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scheme_parses_and_prints_back() {
        for text in [
            "tcp://127.0.0.1:7800",
            "tls://relay.example.com:443",
            "udp://[::1]:7800",
            "quic://10.0.0.1:0",
            "unix:///run/atbus/relay.sock",
            "mem://orders",
        ] {
            let address: Address = text.parse().unwrap();
            assert_eq!(address.to_string(), text);
        }
        let udp: Address = "udp://[::1]:7800".parse().unwrap();
        assert_eq!(udp.host_port().unwrap().host, "::1");
        assert_eq!(udp.with_port(9).to_string(), "udp://[::1]:9");
    }

    /// Whether an error is of the expected kind.
    type Is = fn(&AddressError) -> bool;

    #[test]
    fn each_mistake_gets_its_own_error() {
        let cases: [(&str, Is); 9] = [
            ("127.0.0.1:7800", |e| {
                matches!(e, AddressError::MissingScheme { .. })
            }),
            ("http://a:1", |e| {
                matches!(e, AddressError::UnknownScheme { .. })
            }),
            ("tcp://a", |e| matches!(e, AddressError::MissingPort { .. })),
            ("tcp://a:99999", |e| {
                matches!(e, AddressError::InvalidPort { .. })
            }),
            ("tcp://:80", |e| {
                matches!(e, AddressError::InvalidHost { .. })
            }),
            ("tcp://::1:80", |e| {
                matches!(e, AddressError::InvalidHost { .. })
            }),
            ("tcp://[nope]:80", |e| {
                matches!(e, AddressError::InvalidHost { .. })
            }),
            ("unix://relative.sock", |e| {
                matches!(e, AddressError::RelativeUnixPath { .. })
            }),
            ("mem://", |e| matches!(e, AddressError::EmptyMemName { .. })),
        ];
        for (text, is) in cases {
            let error = text.parse::<Address>().unwrap_err();
            assert!(is(&error), "{text}: {error}");
            assert!(error.to_string().contains(text), "{error} names the input");
        }
    }
}
