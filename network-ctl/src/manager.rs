//! The network manager: the service's logic over a [`Store`], without the bus. It checks
//! credentials, creates bootstrap tokens, registers nodes (binding and certificates in one
//! reply), answers queries and tracks liveness. [`service`](crate::service) feeds it requests
//! from the bus.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::Binding;
use crate::certs::{Authority, CertificateSet};
use crate::clock::{Clock, Millis};
use crate::error::ControlError;
use crate::proto::{self, request::Body as Ask, response::Body as Answer};
use crate::records::{BootstrapToken, Network, NewBinding, NodeState, NodeUpdate, Plane};
use crate::store::Store;
use crate::token::{self, DEFAULT_BOOTSTRAP_LIFETIME, DEFAULT_NET_TOKEN};

/// A registered node: its binding and its two certificate sets.
#[derive(Debug, Clone)]
pub struct Registered {
    /// The node token and its address.
    pub binding: Binding,
    /// Certificates for the control plane.
    pub control_plane: CertificateSet,
    /// Certificates for the data plane.
    pub data_plane: CertificateSet,
}

/// The network manager.
///
/// ```
/// use std::sync::Arc;
/// use network_ctl::clock::SystemClock;
/// use network_ctl::manager::Manager;
/// use network_ctl::{Network, SqliteStore};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let store = SqliteStore::open(dir.path().join("network-ctl.db"))?;
/// let network = Network::new("default", "10.1.1.0/24", None, None, 0)?;
/// let manager = Manager::start(
///     Arc::new(store),
///     Arc::new(SystemClock),
///     &["an operator token".to_string()],
///     vec![network],
/// )
/// .await?;
///
/// // An operator makes a bootstrap token; a node registers with it.
/// let (token, _stored) = manager.create_token(None, true).await?;
/// let registered = manager.register(&token, "default", "agent-host-1").await?;
/// assert_eq!(registered.binding.ip.to_string(), "10.1.1.2");
/// assert!(registered.control_plane.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
///
/// // The token was single-use.
/// assert!(manager.register(&token, "default", "agent-host-2").await.is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Manager {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    control: Authority,
    data: Authority,
    /// SHA-256 digests of the operator tokens.
    admin_digests: Vec<String>,
    /// Bus names of the nodes on the bus now (from discovery).
    connected: Mutex<HashSet<String>>,
}

/// Who a request came from, as the service saw it.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The bus name of the sender (authenticated by the bus).
    pub name: &'a str,
    /// Whether it proved an operator token.
    pub admin: bool,
}

impl Manager {
    /// Starts the manager on `store`: loads (or creates) the two certificate authorities,
    /// ensures every network of `networks` and puts the reserved binding back in every stored
    /// network. `admin_tokens` are the operator tokens (kept here as digests only).
    pub async fn start(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        admin_tokens: &[String],
        networks: Vec<Network>,
    ) -> Result<Self, ControlError> {
        let control = authority(&*store, Plane::Control).await?;
        let data = authority(&*store, Plane::Data).await?;
        for network in networks {
            store.ensure_network(network).await?;
        }
        for status in store.networks().await? {
            store.ensure_network(status.network).await?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                clock,
                control,
                data,
                admin_digests: admin_tokens.iter().map(|t| token::digest(t)).collect(),
                connected: Mutex::default(),
            }),
        })
    }

    /// The storage.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The CA certificate of `plane`.
    pub fn authority_pem(&self, plane: Plane) -> &str {
        match plane {
            Plane::Control => self.inner.control.cert_pem(),
            Plane::Data => self.inner.data.cert_pem(),
        }
    }

    fn now(&self) -> Millis {
        self.inner.clock.now()
    }

    /// Whether `token` is one of the operator tokens.
    pub fn is_admin_token(&self, token: &str) -> bool {
        !token.is_empty() && self.inner.admin_digests.contains(&token::digest(token))
    }

    /// Creates a bootstrap token living `lifetime` (`None`: never), registering one node only if
    /// `single_use`. Returns the token (shown once) and what is stored of it.
    pub async fn create_token(
        &self,
        lifetime: Option<Duration>,
        single_use: bool,
    ) -> Result<(String, BootstrapToken), ControlError> {
        let now = self.now();
        let expire_time = match lifetime {
            None => None,
            Some(lifetime) if lifetime > token::MAX_BOOTSTRAP_LIFETIME => {
                return Err(ControlError::BadRequest(format!(
                    "a lifetime of {} is longer than the 100 years allowed: give a shorter one, or never",
                    humantime::format_duration(lifetime)
                )));
            }
            Some(lifetime) => Some(now + lifetime.as_millis() as Millis),
        };
        let secret = token::generate(token::BOOTSTRAP_TOKEN_LEN);
        let stored = BootstrapToken {
            digest: token::digest(&secret),
            create_time: now,
            expire_time,
            single_use,
            uses: 0,
        };
        self.inner.store.add_bootstrap_token(stored.clone()).await?;
        Ok((secret, stored))
    }

    /// Deletes expired bootstrap tokens (housekeeping: registration checks expiry itself).
    pub async fn sweep(&self) -> Result<usize, ControlError> {
        let swept = self.inner.store.sweep_bootstrap_tokens(self.now()).await?;
        if swept > 0 {
            tracing::info!(swept, "expired bootstrap tokens deleted");
        }
        Ok(swept)
    }

    /// Sweeps every `interval` until the manager is dropped.
    pub fn spawn_sweeper(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                if let Err(error) = (Manager { inner }).sweep().await {
                    tracing::warn!(%error, "sweeping bootstrap tokens failed; trying again at the next tick");
                }
            }
        })
    }

    /// Creates (or ensures) a network.
    pub async fn create_network(&self, network: Network) -> Result<Network, ControlError> {
        self.inner.store.ensure_network(network).await
    }

    /// Registers the node `node_name` with `bootstrap_token` in the network `net_token`.
    pub async fn register(
        &self,
        bootstrap_token: &str,
        net_token: &str,
        node_name: &str,
    ) -> Result<Registered, ControlError> {
        if bootstrap_token.is_empty() {
            return Err(ControlError::Unauthenticated(
                "a registration needs a bootstrap token (network-ctl token create makes one)"
                    .into(),
            ));
        }
        let mut binding = self
            .inner
            .store
            .register(NewBinding {
                bootstrap_digest: token::digest(bootstrap_token),
                net_token: net_or_default(net_token).to_string(),
                node_token: token::generate(token::NODE_TOKEN_LEN),
                node_name: node_name.to_string(),
                now: self.now(),
            })
            .await?;
        // The certificates are made after the commit; if that fails, the binding nobody would
        // hold the token of is taken back.
        let issued = self
            .inner
            .control
            .issue(&binding.node_token, binding.ip)
            .and_then(|control| {
                Ok((
                    control,
                    self.inner.data.issue(&binding.node_token, binding.ip)?,
                ))
            });
        let (control_plane, data_plane) = match issued {
            Ok(sets) => sets,
            Err(error) => {
                let taken_back = self
                    .inner
                    .store
                    .unregister(&binding.net_token, &binding.node_token)
                    .await;
                if let Err(undo) = taken_back {
                    tracing::warn!(%undo, ip = %binding.ip, "a binding without certificates could not be taken back; it is reclaimed first when the network fills");
                }
                return Err(error);
            }
        };
        if self.is_connected(node_name) {
            binding = self.mark(&binding, NodeState::Connected).await?;
        }
        tracing::info!(net_token = %binding.net_token, ip = %binding.ip, node = node_name, "node registered");
        Ok(Registered {
            binding,
            control_plane,
            data_plane,
        })
    }

    /// A node back with its node token: its binding (the same address). Only the bus node that
    /// registered the token (or, for a binding without one, any) may say hello with it.
    pub async fn hello(
        &self,
        node_token: &str,
        net_token: &str,
        node_name: &str,
    ) -> Result<Binding, ControlError> {
        let net_token = net_or_default(net_token);
        let binding = self.known(net_token, node_token).await?;
        // The token alone is no proof (it is in the node's certificates, which its peers see):
        // the binding stays with the bus name that registered it.
        if !binding.node_name.is_empty() && binding.node_name != node_name {
            return Err(ControlError::Unauthenticated(format!(
                "node token {node_token:?} belongs to the bus node {:?}, not {node_name:?}; an operator can unregister it (network-ctl node unregister) so that this node registers afresh",
                binding.node_name
            )));
        }
        let state = self.is_connected(node_name).then_some(NodeState::Connected);
        let update = NodeUpdate {
            state,
            node_name: Some(node_name.to_string()),
            last_seen: state.map(|_| self.now()),
        };
        self.inner
            .store
            .update_node(net_token, node_token, update, self.now())
            .await
    }

    async fn known(&self, net_token: &str, node_token: &str) -> Result<Binding, ControlError> {
        self.inner
            .store
            .binding(net_token, node_token)
            .await?
            .ok_or_else(|| ControlError::UnknownNode {
                node_token: node_token.to_string(),
                net_token: net_token.to_string(),
            })
    }

    async fn mark(&self, binding: &Binding, state: NodeState) -> Result<Binding, ControlError> {
        let now = self.now();
        let update = NodeUpdate {
            state: Some(state),
            node_name: None,
            last_seen: Some(now),
        };
        self.inner
            .store
            .update_node(&binding.net_token, &binding.node_token, update, now)
            .await
    }

    fn is_connected(&self, node_name: &str) -> bool {
        !node_name.is_empty()
            && self
                .inner
                .connected
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .contains(node_name)
    }

    /// The bus says the node `node_name` is on it (`true`) or gone: every binding held under
    /// that name becomes connected or lost, with its last-seen time.
    pub async fn node_seen(&self, node_name: &str, connected: bool) -> Result<(), ControlError> {
        {
            let mut names = self
                .inner
                .connected
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if connected {
                names.insert(node_name.to_string());
            } else {
                names.remove(node_name);
            }
        }
        let state = if connected {
            NodeState::Connected
        } else {
            NodeState::Lost
        };
        for binding in self.inner.store.bindings_of_node(node_name).await? {
            if binding.state != state {
                self.mark(&binding, state).await?;
            }
        }
        Ok(())
    }

    /// Replaces the set of connected names (a discovery snapshot): nodes absent from it that
    /// were connected become lost.
    pub async fn nodes_present(&self, names: HashSet<String>) -> Result<(), ControlError> {
        self.inner
            .connected
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone_from(&names);
        for name in &names {
            self.node_seen(name, true).await?;
        }
        for binding in self.inner.store.bindings(None).await? {
            let gone = binding.state == NodeState::Connected
                && binding.node_token != token::RESERVED_NODE_TOKEN
                && !names.contains(&binding.node_name);
            if gone {
                self.mark(&binding, NodeState::Lost).await?;
            }
        }
        Ok(())
    }

    /// Answers one request from `caller`. `admin_token` has been checked into `caller.admin`.
    pub async fn handle(&self, caller: Caller<'_>, request: proto::Request) -> proto::Response {
        let body = match self.answer(caller, request).await {
            Ok(answer) => answer,
            Err(error) => {
                tracing::debug!(caller = caller.name, %error, "request refused");
                Answer::Error(proto::Error {
                    code: error.code().into(),
                    message: error.to_string(),
                })
            }
        };
        proto::Response { body: Some(body) }
    }

    async fn answer(
        &self,
        caller: Caller<'_>,
        request: proto::Request,
    ) -> Result<Answer, ControlError> {
        let Some(ask) = request.body else {
            return Err(ControlError::BadRequest(
                "the request names no operation (a newer client?)".into(),
            ));
        };
        let admin = || {
            if caller.admin {
                Ok(())
            } else {
                Err(ControlError::Unauthenticated(format!(
                    "{} needs an operator token (adminTokens in server.yml); {} presented none that is valid",
                    operation(&ask),
                    caller.name
                )))
            }
        };
        match &ask {
            Ask::CreateToken(create) => {
                admin()?;
                let lifetime = match (create.expire_seconds, create.never_expires) {
                    (Some(_), true) => {
                        return Err(ControlError::BadRequest(
                            "a token cannot both expire and never expire: give expire_seconds or never_expires".into(),
                        ));
                    }
                    (Some(0), false) => {
                        return Err(ControlError::BadRequest(
                            "a lifetime of 0 s expires at once: give a positive lifetime".into(),
                        ));
                    }
                    (Some(seconds), false) => Some(Duration::from_secs(seconds)),
                    (None, true) => None,
                    (None, false) => Some(DEFAULT_BOOTSTRAP_LIFETIME),
                };
                let (token, stored) = self.create_token(lifetime, create.single_use).await?;
                Ok(Answer::CreatedToken(proto::CreatedToken {
                    token,
                    info: Some(stored.to_wire()),
                }))
            }
            Ask::ListTokens(_) => {
                admin()?;
                let tokens = self.inner.store.bootstrap_tokens().await?;
                Ok(Answer::TokenList(proto::TokenList {
                    tokens: tokens.iter().map(BootstrapToken::to_wire).collect(),
                }))
            }
            Ask::CreateNetwork(create) => {
                admin()?;
                let network = Network::new(
                    &create.net_token,
                    &create.cidr,
                    Some(&create.gateway),
                    Some(&create.server_ip),
                    self.now(),
                )?;
                let network = self.create_network(network).await?;
                let status = self
                    .inner
                    .store
                    .networks()
                    .await?
                    .into_iter()
                    .find(|status| status.network.net_token == network.net_token);
                let (capacity, bound) = status.map_or((0, 0), |s| (s.capacity, s.bound));
                Ok(Answer::Network(network.to_wire(capacity, bound)))
            }
            Ask::ListNetworks(_) => {
                admin()?;
                let networks = self.inner.store.networks().await?;
                Ok(Answer::NetworkList(proto::NetworkList {
                    networks: networks
                        .iter()
                        .map(|status| status.network.to_wire(status.capacity, status.bound))
                        .collect(),
                }))
            }
            Ask::Register(register) => {
                let registered = self
                    .register(&register.bootstrap_token, &register.net_token, caller.name)
                    .await?;
                Ok(Answer::Registered(proto::Registered {
                    binding: Some(registered.binding.to_wire()),
                    control_plane: Some(set_wire(registered.control_plane)),
                    data_plane: Some(set_wire(registered.data_plane)),
                }))
            }
            Ask::Hello(hello) => {
                if hello.node_token == token::RESERVED_NODE_TOKEN && !caller.admin {
                    return Err(ControlError::Reserved(format!(
                        "the reserved node token {:?} belongs to the server",
                        token::RESERVED_NODE_TOKEN
                    )));
                }
                let binding = self
                    .hello(&hello.node_token, &hello.net_token, caller.name)
                    .await?;
                Ok(Answer::Binding(binding.to_wire()))
            }
            Ask::NodeIp(node) | Ask::NodeState(node) => {
                let binding = self.owned(caller, node).await?;
                Ok(Answer::Binding(binding.to_wire()))
            }
            Ask::NodeList(list) => {
                admin()?;
                let net_token = (!list.net_token.is_empty()).then_some(list.net_token.as_str());
                let bindings = self.inner.store.bindings(net_token).await?;
                Ok(Answer::BindingList(proto::BindingList {
                    bindings: bindings
                        .iter()
                        .filter(|binding| {
                            !list.connected_only || binding.state == NodeState::Connected
                        })
                        .map(Binding::to_wire)
                        .collect(),
                }))
            }
            Ask::Unregister(node) => {
                self.owned(caller, node).await?;
                let binding = self
                    .inner
                    .store
                    .unregister(net_or_default(&node.net_token), &node.node_token)
                    .await?;
                tracing::info!(net_token = %binding.net_token, ip = %binding.ip, "node unregistered");
                Ok(Answer::Binding(binding.to_wire()))
            }
        }
    }

    /// The binding a node request names, if the caller is an operator or the node itself.
    async fn owned(
        &self,
        caller: Caller<'_>,
        node: &proto::NodeRequest,
    ) -> Result<Binding, ControlError> {
        let binding = self
            .known(net_or_default(&node.net_token), &node.node_token)
            .await;
        match binding {
            Ok(binding) if caller.admin || binding.node_name == caller.name => Ok(binding),
            Err(error) if caller.admin => Err(error),
            // Not telling a stranger whether the token exists.
            _ => Err(ControlError::Unauthenticated(format!(
                "only an operator or the node itself may ask about a node; {} is neither",
                caller.name
            ))),
        }
    }
}

async fn authority(store: &dyn Store, plane: Plane) -> Result<Authority, ControlError> {
    let candidate = Authority::generate(plane)?;
    let stored = store.ensure_authority(plane, candidate).await?;
    Authority::load(plane, &stored)
}

fn net_or_default(net_token: &str) -> &str {
    if net_token.is_empty() {
        DEFAULT_NET_TOKEN
    } else {
        net_token
    }
}

fn operation(ask: &Ask) -> &'static str {
    match ask {
        Ask::CreateToken(_) => "creating a bootstrap token",
        Ask::ListTokens(_) => "listing bootstrap tokens",
        Ask::CreateNetwork(_) => "creating a network",
        Ask::ListNetworks(_) => "listing networks",
        Ask::Register(_) => "registering",
        Ask::Hello(_) => "hello",
        Ask::NodeIp(_) => "asking a node's address",
        Ask::NodeList(_) => "listing nodes",
        Ask::NodeState(_) => "asking a node's state",
        Ask::Unregister(_) => "unregistering a node",
    }
}

fn set_wire(set: CertificateSet) -> proto::CertificateSet {
    proto::CertificateSet {
        ca_pem: set.ca_pem,
        cert_pem: set.cert_pem,
        key_pem: set.key_pem,
    }
}
