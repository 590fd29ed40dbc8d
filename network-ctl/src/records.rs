//! What the control plane stores: networks, the bindings of node tokens to addresses, bootstrap
//! tokens (as digests) and the two certificate authorities.

use std::net::IpAddr;

use crate::cidr::Cidr;
use crate::clock::Millis;
use crate::error::ControlError;
use crate::pool::IpPool;
use crate::proto;

/// A network: a range keyed by its net token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// What nodes name it by.
    pub net_token: String,
    /// Its range.
    pub cidr: Cidr,
    /// The gateway address, never handed out.
    pub gateway: IpAddr,
    /// The server's own address, bound to the reserved node token.
    pub server_ip: IpAddr,
    /// When it was created.
    pub create_time: Millis,
}

impl Network {
    /// A network of `cidr` keyed by `net_token`, with the gateway (default: the first host) and
    /// the server address (default: the gateway) checked to be host addresses of the range.
    pub fn new(
        net_token: &str,
        cidr: &str,
        gateway: Option<&str>,
        server_ip: Option<&str>,
        now: Millis,
    ) -> Result<Self, ControlError> {
        if net_token.is_empty() || net_token.len() > 128 || net_token.chars().any(char::is_control)
        {
            return Err(ControlError::BadRequest(format!(
                "net token {net_token:?} must be 1 to 128 printable characters"
            )));
        }
        let cidr: Cidr = cidr
            .parse()
            .map_err(|error: crate::cidr::CidrError| ControlError::BadRequest(error.to_string()))?;
        let host = |what: &str, text: Option<&str>, default: IpAddr| -> Result<IpAddr, _> {
            let Some(text) = text.filter(|text| !text.is_empty()) else {
                return Ok(default);
            };
            let ip: IpAddr = text.parse().map_err(|_| {
                ControlError::BadRequest(format!("{what} {text:?} is not an IP address"))
            })?;
            let (first, last) = cidr.host_offsets();
            match cidr.offset_of(ip) {
                Some(offset) if offset >= first && offset <= last => Ok(ip),
                _ => Err(ControlError::BadRequest(format!(
                    "{what} {ip} is not a host address of {cidr}"
                ))),
            }
        };
        let gateway = host("gateway", gateway, cidr.address(cidr.host_offsets().0))?;
        let server_ip = host("server address", server_ip, gateway)?;
        Ok(Self {
            net_token: net_token.to_string(),
            cidr,
            gateway,
            server_ip,
            create_time: now,
        })
    }

    /// An empty pool of this network's addresses.
    pub fn pool(&self) -> IpPool {
        IpPool::new(self.cidr, &[self.gateway, self.server_ip])
    }

    /// Whether `other` describes the same range, gateway and server address.
    pub fn same_shape(&self, other: &Network) -> bool {
        self.cidr == other.cidr
            && self.gateway == other.gateway
            && self.server_ip == other.server_ip
    }

    /// The wire form, with the pool's figures: addresses that can be handed out and bound.
    pub fn to_wire(&self, capacity: u128, bound: usize) -> proto::Network {
        proto::Network {
            net_token: self.net_token.clone(),
            cidr: self.cidr.to_string(),
            gateway: self.gateway.to_string(),
            server_ip: self.server_ip.to_string(),
            capacity: u64::try_from(capacity).unwrap_or(u64::MAX),
            bound: bound as u64,
            create_time_ms: self.create_time,
        }
    }
}

/// Whether a node is on the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeState {
    /// Registered, never seen on the bus.
    NeverConnected,
    /// On the bus now.
    Connected,
    /// Seen once, gone now.
    Lost,
}

impl NodeState {
    /// The number stored in the `state` column.
    pub fn as_i64(self) -> i64 {
        match self {
            NodeState::NeverConnected => 0,
            NodeState::Connected => 1,
            NodeState::Lost => 2,
        }
    }

    /// The state stored as `value` (unknown values read as lost).
    pub fn from_i64(value: i64) -> Self {
        match value {
            0 => NodeState::NeverConnected,
            1 => NodeState::Connected,
            _ => NodeState::Lost,
        }
    }

    /// The wire form.
    pub fn to_wire(self) -> proto::NodeState {
        match self {
            NodeState::NeverConnected => proto::NodeState::NeverConnected,
            NodeState::Connected => proto::NodeState::Connected,
            NodeState::Lost => proto::NodeState::Lost,
        }
    }

    /// The name people read.
    pub fn name(self) -> &'static str {
        match self {
            NodeState::NeverConnected => "never connected",
            NodeState::Connected => "connected",
            NodeState::Lost => "lost",
        }
    }
}

/// A node token bound to an address of a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The node token.
    pub node_token: String,
    /// The network.
    pub net_token: String,
    /// The bound address.
    pub ip: IpAddr,
    /// The network's prefix length.
    pub prefix_len: u8,
    /// On the bus or not.
    pub state: NodeState,
    /// The node's bus name, as it registered or last said hello.
    pub node_name: String,
    /// When the binding was made.
    pub create_time: Millis,
    /// When it last changed (the least recent is reclaimed first).
    pub update_time: Millis,
    /// When the node last came onto the bus or left it (for a connected node: when it
    /// connected).
    pub last_seen: Option<Millis>,
}

impl Binding {
    /// The wire form.
    pub fn to_wire(&self) -> proto::Binding {
        proto::Binding {
            node_token: self.node_token.clone(),
            net_token: self.net_token.clone(),
            ip: self.ip.to_string(),
            prefix_len: self.prefix_len.into(),
            state: self.state.to_wire().into(),
            node_name: self.node_name.clone(),
            create_time_ms: self.create_time,
            update_time_ms: self.update_time,
            last_seen_ms: self.last_seen,
        }
    }
}

/// A bootstrap token as stored: its digest, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    /// Hex SHA-256 of the token.
    pub digest: String,
    /// When it was created.
    pub create_time: Millis,
    /// When it expires; `None`: never.
    pub expire_time: Option<Millis>,
    /// Whether it registers one node only.
    pub single_use: bool,
    /// How many nodes it registered.
    pub uses: u32,
}

impl BootstrapToken {
    /// Why it cannot register a node at `now`, if it cannot.
    pub fn refusal(&self, now: Millis) -> Option<ControlError> {
        if let Some(expired_at) = self.expire_time.filter(|&at| at <= now) {
            return Some(ControlError::ExpiredBootstrapToken { expired_at });
        }
        (self.single_use && self.uses > 0).then_some(ControlError::BootstrapTokenUsed)
    }

    /// The wire form.
    pub fn to_wire(&self) -> proto::BootstrapToken {
        proto::BootstrapToken {
            id: crate::token::id_of(&self.digest).to_string(),
            create_time_ms: self.create_time,
            expire_time_ms: self.expire_time,
            single_use: self.single_use,
            uses: self.uses,
        }
    }
}

/// Which certificate authority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Plane {
    /// Certificates for talking to the control plane.
    Control,
    /// Certificates for the data plane (the VPN itself).
    Data,
}

impl Plane {
    /// Its stored name.
    pub fn name(self) -> &'static str {
        match self {
            Plane::Control => "control",
            Plane::Data => "data",
        }
    }
}

/// A certificate authority as stored: PEM certificate and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorityPem {
    /// The CA certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

/// What a registration asks the storage to do in one transaction.
#[derive(Debug, Clone)]
pub struct NewBinding {
    /// The digest of the bootstrap token presented.
    pub bootstrap_digest: String,
    /// The network to join.
    pub net_token: String,
    /// The node token generated for the node.
    pub node_token: String,
    /// The node's bus name.
    pub node_name: String,
    /// Now.
    pub now: Millis,
}

/// A change to a binding's liveness or name.
#[derive(Debug, Clone, Default)]
pub struct NodeUpdate {
    /// The new state, if it changes.
    pub state: Option<NodeState>,
    /// The node's bus name, if it changes.
    pub node_name: Option<String>,
    /// When the node was last seen, if it was.
    pub last_seen: Option<Millis>,
}
