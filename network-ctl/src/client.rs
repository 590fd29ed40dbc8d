//! Calling the network-manager from the bus: a [`Client`] sends requests to a live replica
//! (found through the relay's discovery; the replica is chosen by a consistent hash of the
//! client's name, so callers spread over replicas and each sticks to one while it lives) and
//! turns replies into results.

use std::time::Duration;

use atbus_core::engine::Token;
use atbus_core::runtime::{Node, NodeError, Services};
use atbus_discovery::Selector;
use atbus_discovery::policy::Policy;
use prost::Message as _;

use crate::presence::{self, MANAGER_ROLE, ROLE_LABEL};
use crate::proto::{self, request::Body as Ask, response::Body as Answer};

/// How long a request waits for its reply.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long connecting waits for the relay.
const RELAY_WAIT: Duration = Duration::from_secs(15);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The bus failed: no relay, no manager, no reply.
    #[error(transparent)]
    Bus(#[from] NodeError),
    /// The node could not reach a relay.
    #[error("no relay reached at {relays:?} ({reason}): check the addresses and the bus token")]
    NoRelay {
        /// The addresses tried.
        relays: Vec<String>,
        /// What happened: the relay's refusal, or the time waited.
        reason: String,
    },
    /// The manager refused the request.
    #[error("{message}")]
    Refused {
        /// Why, as a code.
        code: proto::ErrorCode,
        /// Why, for people.
        message: String,
    },
    /// The reply was not what the request asks for.
    #[error("unexpected reply from the network-manager: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The manager's refusal code, if it refused.
    pub fn code(&self) -> Option<proto::ErrorCode> {
        match self {
            ClientError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Where and how a client joins the bus.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Its bus name.
    pub name: String,
    /// Relay addresses (`tcp://host:port`...).
    pub relays: Vec<String>,
    /// The bus token.
    pub bus_token: String,
    /// An operator token, for operator calls.
    pub admin_token: Option<String>,
}

/// A connection to the network-manager service.
///
/// ```no_run
/// use network_ctl::client::{Client, ClientOptions, Lifetime};
///
/// # async fn run() -> Result<(), network_ctl::client::ClientError> {
/// let client = Client::connect(ClientOptions {
///     name: "operator-1".into(),
///     relays: vec!["tcp://127.0.0.1:7800".into()],
///     bus_token: "the bus token, 32 bytes or longer".into(),
///     admin_token: Some("an operator token".into()),
/// })
/// .await?;
/// let created = client
///     .create_token(Lifetime::For(std::time::Duration::from_secs(600)), false)
///     .await?;
/// println!("bootstrap token: {}", created.token);
/// for binding in client.node_list("", true).await? {
///     println!("{} {}/{}", binding.node_token, binding.ip, binding.prefix_len);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    node: Node,
    relay: String,
    services: Services,
    managers: Selector,
    policy: Policy,
    admin_token: String,
    timeout: Duration,
}

impl Client {
    /// Starts a node as `options` say and waits for its relay.
    pub async fn connect(options: ClientOptions) -> Result<Self, ClientError> {
        let token = Token::new(&options.bus_token)
            .map_err(|error| ClientError::Bus(NodeError::Token(error)))?;
        let mut builder = Node::builder().name(&options.name).token(token);
        for relay in &options.relays {
            builder = builder.relay(relay);
        }
        let node = builder.start().await?;
        let relay = match presence::relay_name(&node, RELAY_WAIT).await {
            Ok(relay) => relay,
            Err(refusal) => {
                node.shutdown_within(Duration::from_millis(100)).await;
                return Err(ClientError::NoRelay {
                    relays: options.relays,
                    reason: refusal
                        .unwrap_or_else(|| format!("none answered within {RELAY_WAIT:?}")),
                });
            }
        };
        Ok(Self::on(
            node,
            relay,
            options.admin_token.unwrap_or_default(),
        ))
    }

    /// A client on `node`, already connected to the relay named `relay`.
    pub fn on(node: Node, relay: String, admin_token: String) -> Self {
        let services = node.services(&relay, presence::record(&node, "client"));
        Self {
            policy: Policy::hashed(node.name()),
            managers: format!("{ROLE_LABEL}={MANAGER_ROLE}")
                .parse()
                .expect("a valid selector"),
            node,
            relay,
            services,
            admin_token,
            timeout: REQUEST_TIMEOUT,
        }
    }

    /// The client's node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The relay it goes through.
    pub fn relay(&self) -> &str {
        &self.relay
    }

    /// Sends `ask` to a network-manager and returns its answer, or its refusal as
    /// [`ClientError::Refused`].
    pub async fn call(&self, ask: Ask) -> Result<Answer, ClientError> {
        let request = proto::Request {
            admin_token: self.admin_token.clone(),
            body: Some(ask),
        };
        let reply = self
            .services
            .request_to(
                &self.managers,
                &self.policy,
                request.encode_to_vec(),
                self.timeout,
            )
            .await?;
        let response = proto::Response::decode(&reply.data[..])
            .map_err(|error| ClientError::Protocol(error.to_string()))?;
        match response.body {
            Some(Answer::Error(error)) => Err(ClientError::Refused {
                code: proto::ErrorCode::try_from(error.code)
                    .unwrap_or(proto::ErrorCode::Unspecified),
                message: error.message,
            }),
            Some(answer) => Ok(answer),
            None => Err(ClientError::Protocol("an empty reply".into())),
        }
    }

    /// Creates a bootstrap token living `lifetime`, registering one node only if
    /// `single_use`; the reply holds the token (shown this once) and what is stored of it.
    pub async fn create_token(
        &self,
        lifetime: Lifetime,
        single_use: bool,
    ) -> Result<proto::CreatedToken, ClientError> {
        let (expire_seconds, never_expires) = match lifetime {
            Lifetime::Default => (None, false),
            Lifetime::Never => (None, true),
            Lifetime::For(lifetime) => (Some(lifetime.as_secs().max(1)), false),
        };
        match self
            .call(Ask::CreateToken(proto::CreateTokenRequest {
                expire_seconds,
                never_expires,
                single_use,
            }))
            .await?
        {
            Answer::CreatedToken(created) => Ok(created),
            other => Err(unexpected(&other)),
        }
    }

    /// Every stored bootstrap token (ids, not the tokens).
    pub async fn list_tokens(&self) -> Result<Vec<proto::BootstrapToken>, ClientError> {
        match self
            .call(Ask::ListTokens(proto::ListTokensRequest {}))
            .await?
        {
            Answer::TokenList(list) => Ok(list.tokens),
            other => Err(unexpected(&other)),
        }
    }

    /// Creates (or ensures) a network.
    pub async fn create_network(
        &self,
        request: proto::CreateNetworkRequest,
    ) -> Result<proto::Network, ClientError> {
        match self.call(Ask::CreateNetwork(request)).await? {
            Answer::Network(network) => Ok(network),
            other => Err(unexpected(&other)),
        }
    }

    /// Every network.
    pub async fn networks(&self) -> Result<Vec<proto::Network>, ClientError> {
        match self
            .call(Ask::ListNetworks(proto::ListNetworksRequest {}))
            .await?
        {
            Answer::NetworkList(list) => Ok(list.networks),
            other => Err(unexpected(&other)),
        }
    }

    /// Registers this node with a bootstrap token in the network `net_token` ("" = default).
    pub async fn register(
        &self,
        bootstrap_token: &str,
        net_token: &str,
    ) -> Result<proto::Registered, ClientError> {
        let ask = Ask::Register(proto::RegisterRequest {
            bootstrap_token: bootstrap_token.into(),
            net_token: net_token.into(),
        });
        match self.call(ask).await? {
            Answer::Registered(registered) => Ok(registered),
            other => Err(unexpected(&other)),
        }
    }

    /// This node back with its node token: its binding.
    pub async fn hello(
        &self,
        node_token: &str,
        net_token: &str,
    ) -> Result<proto::Binding, ClientError> {
        let ask = Ask::Hello(proto::HelloRequest {
            node_token: node_token.into(),
            net_token: net_token.into(),
        });
        self.binding(ask).await
    }

    /// The binding of `node_token` (its address).
    pub async fn node_ip(
        &self,
        node_token: &str,
        net_token: &str,
    ) -> Result<proto::Binding, ClientError> {
        self.binding(Ask::NodeIp(node_request(node_token, net_token)))
            .await
    }

    /// The binding of `node_token` with its state.
    pub async fn node_state(
        &self,
        node_token: &str,
        net_token: &str,
    ) -> Result<proto::Binding, ClientError> {
        self.binding(Ask::NodeState(node_request(node_token, net_token)))
            .await
    }

    /// Unregisters `node_token`; returns the binding it had.
    pub async fn unregister(
        &self,
        node_token: &str,
        net_token: &str,
    ) -> Result<proto::Binding, ClientError> {
        self.binding(Ask::Unregister(node_request(node_token, net_token)))
            .await
    }

    /// The bindings of a network ("" = all), optionally only the connected ones.
    pub async fn node_list(
        &self,
        net_token: &str,
        connected_only: bool,
    ) -> Result<Vec<proto::Binding>, ClientError> {
        let ask = Ask::NodeList(proto::NodeListRequest {
            net_token: net_token.into(),
            connected_only,
        });
        match self.call(ask).await? {
            Answer::BindingList(list) => Ok(list.bindings),
            other => Err(unexpected(&other)),
        }
    }

    async fn binding(&self, ask: Ask) -> Result<proto::Binding, ClientError> {
        match self.call(ask).await? {
            Answer::Binding(binding) => Ok(binding),
            other => Err(unexpected(&other)),
        }
    }

    /// Shuts the client's node down.
    pub async fn shutdown(&self) {
        self.node.shutdown_within(Duration::from_millis(500)).await;
    }
}

/// How long a new bootstrap token lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// The server's default (10 minutes).
    Default,
    /// Forever.
    Never,
    /// This long.
    For(Duration),
}

fn node_request(node_token: &str, net_token: &str) -> proto::NodeRequest {
    proto::NodeRequest {
        node_token: node_token.into(),
        net_token: net_token.into(),
    }
}

fn unexpected(answer: &Answer) -> ClientError {
    ClientError::Protocol(format!("{answer:?}"))
}
