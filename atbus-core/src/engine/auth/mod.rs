//! Identity and authentication (`docs/protocol.md` section 8): what a node proves when it
//! connects, what it accepts from others, and who a connection speaks for once it is up.
//!
//! - `proof`: the transcripts and HMAC-SHA256 proofs of the handshake, byte for byte;
//! - `replay`: the bounded cache of nonces that refuses a replayed first flight;
//! - `ticket`: resumption tickets sealed with a key only the accepting side knows;
//! - `issued`: identities the accepting side issues to clients on untrusted networks;
//! - `failure`: the rule a refused peer broke.
//!
//! The handshake itself runs inside the [`Endpoint`](super::Endpoint) (`endpoint/handshake.rs`).

pub(crate) mod failure;
pub(crate) mod issued;
pub(crate) mod proof;
pub(crate) mod replay;
pub(crate) mod state;
pub(crate) mod ticket;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use atbus_discovery::selector::Selector;

pub use failure::AuthFailure;
pub use issued::IssuedIdentity;

/// The shortest token accepted: 16 bytes (128 bits).
pub const MIN_TOKEN_LEN: usize = 16;

/// A secret shared by two nodes, or issued to one. It is never sent on the wire nor printed:
/// `Debug` shows only its fingerprint.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Arc<[u8]>);

/// A token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Shorter than [`MIN_TOKEN_LEN`].
    #[error("a token of {len} bytes is too short: use at least {MIN_TOKEN_LEN} random bytes")]
    TooShort {
        /// Its length.
        len: usize,
    },
    /// Not a string of hexadecimal digits.
    #[error("a hex token must have an even number of hexadecimal digits")]
    NotHex,
}

impl Token {
    /// A token of these secret bytes (a passphrase from a config file works: at least 16 bytes).
    pub fn new(bytes: impl AsRef<[u8]>) -> Result<Self, TokenError> {
        let bytes = bytes.as_ref();
        if bytes.len() < MIN_TOKEN_LEN {
            return Err(TokenError::TooShort { len: bytes.len() });
        }
        Ok(Self(bytes.into()))
    }

    /// Parses the hexadecimal form written by [`Token::reveal_hex`].
    pub fn from_hex(hex: &str) -> Result<Self, TokenError> {
        let hex = hex.trim();
        if hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TokenError::NotHex);
        }
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).unwrap_or_default())
            .collect();
        Self::new(bytes)
    }

    /// The secret bytes, e.g. to key a proof.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The secret as hexadecimal, to hand to the client it was issued to. Never log it.
    pub fn reveal_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The first 8 bytes of the token's SHA-256: names a token without revealing it.
    pub fn fingerprint(&self) -> [u8; 8] {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.0);
        let mut out = [0; 8];
        out.copy_from_slice(&digest.as_ref()[..8]);
        out
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fingerprint: String = self
            .fingerprint()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        write!(f, "Token(sha256:{fingerprint}…)")
    }
}

/// What a connecting node proves itself with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A token shared with the accepting side.
    Token(Token),
    /// An identity the accepting side issued to this node: its name is the endpoint's name.
    Issued {
        /// The stream id issued with it.
        stream_id: i64,
        /// The token issued with it.
        token: Token,
    },
    /// Nothing: the accepting side chooses this endpoint's name (the endpoint must have been
    /// created with an empty name) and limits what it may reach.
    Anonymous,
}

/// How [`Endpoint::connect`](super::Endpoint::connect) opens a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    /// The node expected at the other end. Needed for early data; when `None`, whoever answers
    /// (with a valid proof) becomes the connection's peer.
    pub peer: Option<String>,
    /// What this endpoint proves itself with.
    pub credential: Credential,
    /// Send queued data to `peer` with the hello, before the answer (0-RTT). Data the accepting
    /// side does not take is sent again after the answer, so nothing is lost either way.
    pub early_data: bool,
    /// Ask to act as a relay: forward frames for other nodes (only with a token or a ticket
    /// obtained with one).
    pub relay: bool,
    /// Use a resumption ticket from an earlier connection to `peer` when one is held.
    pub resume: bool,
}

impl ConnectOptions {
    /// Connect to `peer` with `credential`, early data and resumption on, as a plain node.
    pub fn new(peer: impl Into<String>, credential: Credential) -> Self {
        Self {
            peer: Some(peer.into()),
            credential,
            early_data: true,
            relay: false,
            resume: true,
        }
    }

    /// Connect to whoever answers, with `credential`: no early data, since the peer is unknown.
    pub fn to_anyone(credential: Credential) -> Self {
        Self {
            peer: None,
            credential,
            early_data: false,
            relay: false,
            resume: false,
        }
    }
}

/// A destination an anonymous peer may reach.
#[derive(Debug, Clone)]
pub enum AllowRule {
    /// The node of this name.
    Name(String),
    /// The nodes whose labels match.
    Selector(Selector),
}

impl AllowRule {
    /// Whether the node `name`, with `labels` when known, is allowed by this rule.
    pub fn allows(&self, name: &str, labels: Option<&BTreeMap<String, String>>) -> bool {
        match self {
            AllowRule::Name(allowed) => allowed == name,
            AllowRule::Selector(selector) => labels.is_some_and(|labels| selector.matches(labels)),
        }
    }
}

/// What anonymous peers may do. Without it (the default), anonymous hellos are refused.
#[derive(Debug, Clone, Default)]
pub struct AnonymousPolicy {
    /// The destinations they may address; everything else is refused with UNAUTHORIZED.
    pub allow: Vec<AllowRule>,
}

/// How this endpoint authenticates and what it accepts (part of
/// [`EngineConfig`](super::EngineConfig)).
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Shared tokens accepted from connecting peers. Several may be valid at once, so that a new
    /// token can be rolled out before the old one is removed. Empty: only issued identities,
    /// tickets and (if allowed) anonymous peers are accepted.
    pub tokens: Vec<Token>,
    /// How far a hello's timestamp may be from this node's clock. Default 300 s.
    pub timestamp_window: Duration,
    /// Most nonces remembered to refuse replays. When full, a hello is still accepted but its
    /// early data is not, and it must confirm (1-RTT). Default 65 536.
    pub replay_cache_size: usize,
    /// A handshake not completed this long after the connection came is abandoned. Default 10 s.
    pub handshake_timeout: Duration,
    /// The largest handshake frame accepted, in bytes. Default 2048.
    pub max_handshake_size: usize,
    /// Whether anonymous peers are accepted, and what they may reach. Default: refused.
    pub anonymous: Option<AnonymousPolicy>,
    /// Whether peers with a shared token may act as relays. Default true.
    pub allow_relays: bool,
    /// This node is a relay: its accepts say so, and the peers it accepts then take frames it
    /// forwards for other nodes (`forward_for_*`). Default false.
    pub relay: bool,
    /// How long resumption tickets handed out are valid; `None` hands out none. Default 24 h.
    pub ticket_lifetime: Option<Duration>,
    /// The key tickets are sealed with (nodes sharing it accept each other's tickets). Default: a
    /// random key per endpoint.
    pub ticket_key: Option<Token>,
    /// This node's labels, which the selectors of an anonymous allow list are matched against.
    pub labels: BTreeMap<String, String>,
    /// Seed of the random numbers (nonces, keys, names); `None` seeds from the operating system.
    /// Tests set it for reproducible runs.
    pub rng_seed: Option<[u8; 32]>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            tokens: Vec::new(),
            timestamp_window: Duration::from_secs(300),
            replay_cache_size: 65_536,
            handshake_timeout: Duration::from_secs(10),
            max_handshake_size: 2048,
            anonymous: None,
            allow_relays: true,
            relay: false,
            ticket_lifetime: Some(Duration::from_secs(24 * 3600)),
            ticket_key: None,
            labels: BTreeMap::new(),
            rng_seed: None,
        }
    }
}

/// How the peer of a connection was authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityKind {
    /// The runtime bound the connection to a name ([`Endpoint::add_connection`]): the transport
    /// vouches for it (in-process, or mutual TLS).
    ///
    /// [`Endpoint::add_connection`]: super::Endpoint::add_connection
    Transport,
    /// A shared token.
    Token,
    /// An issued identity.
    Issued {
        /// The one stream it may send on.
        stream_id: i64,
        /// Which issue of the name it proved.
        generation: u64,
    },
    /// No proof: the name was chosen here.
    Anonymous,
}

impl IdentityKind {
    /// Whether a peer authenticated this way may register in discovery under its name (an
    /// anonymous peer's name was chosen for it and is not its own to claim).
    pub fn may_register(&self) -> bool {
        !matches!(self, IdentityKind::Anonymous)
    }
}

/// Who the peer of a connection is, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// Its name: every frame on the connection must carry it as `source`.
    pub name: String,
    /// How it was authenticated.
    pub kind: IdentityKind,
    /// Whether it may forward frames for other nodes.
    pub relay: bool,
    /// Whether the connection was resumed with a ticket.
    pub resumed: bool,
}

/// Whether `name` may be a node's name on the wire: 1 to 253 bytes of visible characters.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| {
            c.is_ascii_graphic() || (!c.is_ascii() && !c.is_control() && !c.is_whitespace())
        })
}
