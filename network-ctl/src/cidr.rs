//! Address ranges: an IPv4 or IPv6 CIDR, its host addresses counted as offsets from the network
//! address, so that a /16 and a /64 are handled alike.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// A network given as `address/prefix`, the address with no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Why a CIDR was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed CIDR {input:?}: {reason}")]
pub struct CidrError {
    input: String,
    reason: String,
}

impl Cidr {
    /// The network address.
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn bits(&self) -> u8 {
        if self.network.is_ipv4() { 32 } else { 128 }
    }

    /// The mask of the host part, as an offset.
    fn host_mask(&self) -> u128 {
        let host_bits = self.bits() - self.prefix;
        if host_bits == 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        }
    }

    /// The offsets nodes may hold: IPv4 leaves out the network and broadcast addresses, IPv6
    /// the subnet-router anycast address (offset 0).
    pub fn host_offsets(&self) -> (u128, u128) {
        let last = self.host_mask();
        if self.network.is_ipv4() {
            (1, last - 1)
        } else {
            (1, last)
        }
    }

    /// The address `offset` past the network address (the caller keeps it in range).
    pub fn address(&self, offset: u128) -> IpAddr {
        match self.network {
            IpAddr::V4(network) => IpAddr::V4(Ipv4Addr::from(u32::from(network) | (offset as u32))),
            IpAddr::V6(network) => IpAddr::V6(Ipv6Addr::from(u128::from(network) | offset)),
        }
    }

    /// How far `address` is from the network address, if it is inside the network.
    pub fn offset_of(&self, address: IpAddr) -> Option<u128> {
        let (value, network) = match (address, self.network) {
            (IpAddr::V4(a), IpAddr::V4(n)) => (u32::from(a) as u128, u32::from(n) as u128),
            (IpAddr::V6(a), IpAddr::V6(n)) => (u128::from(a), u128::from(n)),
            _ => return None,
        };
        (value & !self.host_mask() == network).then_some(value & self.host_mask())
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let refuse = |reason: String| CidrError {
            input: input.to_string(),
            reason,
        };
        let (address, prefix) = input
            .trim()
            .split_once('/')
            .ok_or_else(|| refuse("expected address/prefix, such as 10.1.0.0/16".into()))?;
        let address: IpAddr = address
            .parse()
            .map_err(|_| refuse(format!("{address:?} is not an IPv4 or IPv6 address")))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| refuse(format!("{prefix:?} is not a prefix length")))?;
        // At least a gateway and one node: IPv4 up to /30, IPv6 up to /126.
        let longest = if address.is_ipv4() { 30 } else { 126 };
        if prefix > longest {
            return Err(refuse(format!(
                "a /{prefix} has no room for a gateway and a node: use /{longest} or shorter"
            )));
        }
        let mut cidr = Cidr {
            network: address,
            prefix,
        };
        let raw = match address {
            IpAddr::V4(a) => u32::from(a) as u128,
            IpAddr::V6(a) => u128::from(a),
        };
        let mask = cidr.host_mask();
        cidr.network = match address {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from((raw & !mask) as u32)),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(raw & !mask)),
        };
        if raw & mask != 0 {
            return Err(refuse(format!(
                "host bits are set: the network is {}/{prefix}",
                cidr.network
            )));
        }
        Ok(cidr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv4_network_leaves_out_its_network_and_broadcast_addresses() {
        let cidr: Cidr = "10.1.1.0/24".parse().unwrap();
        assert_eq!(cidr.host_offsets(), (1, 254));
        assert_eq!(cidr.address(1).to_string(), "10.1.1.1");
        assert_eq!(cidr.address(254).to_string(), "10.1.1.254");
        assert_eq!(cidr.offset_of("10.1.1.77".parse().unwrap()), Some(77));
        assert_eq!(cidr.offset_of("10.1.2.1".parse().unwrap()), None);
        assert_eq!(cidr.offset_of("::1".parse().unwrap()), None);
        let wide: Cidr = "10.7.0.0/16".parse().unwrap();
        assert_eq!(wide.host_offsets(), (1, 65_534));
        assert_eq!(wide.address(65_534).to_string(), "10.7.255.254");
    }

    #[test]
    fn an_ipv6_network_leaves_out_only_the_anycast_address() {
        let cidr: Cidr = "fd00:1::/64".parse().unwrap();
        assert_eq!(cidr.host_offsets(), (1, u64::MAX as u128));
        assert_eq!(cidr.address(5).to_string(), "fd00:1::5");
        assert_eq!(cidr.to_string(), "fd00:1::/64");
    }

    #[test]
    fn malformed_cidrs_are_refused_with_the_reason() {
        for (input, says) in [
            ("10.1.1.0", "expected address/prefix"),
            ("10.1.1/24", "not an IPv4 or IPv6 address"),
            ("10.1.1.0/x", "not a prefix length"),
            ("10.1.1.0/31", "no room"),
            ("10.1.1.0/33", "no room"),
            ("10.1.1.5/24", "the network is 10.1.1.0/24"),
            ("fd00::1/64", "the network is fd00::/64"),
        ] {
            let error = input.parse::<Cidr>().unwrap_err().to_string();
            assert!(error.contains(says), "{input}: {error}");
        }
    }
}
