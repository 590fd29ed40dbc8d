//! The atbus-rs relay: a node that forwards the frames it is not the destination of, so that
//! nodes without a direct connection reach each other through it (`docs/protocol.md` section 5.9).
//! Streams stay end to end between the nodes: the relay neither acknowledges nor reorders, it
//! stamps each frame with the originator and forwards it to the destination's connection, and
//! answers a frame for an unknown destination with ROUTER_NOT_FOUND.
//!
//! It runs as the `atbus-relay` binary (`atbus-relay --help`), or inside a process:
//!
//! ```
//! use atbus_core::engine::Token;
//! use atbus_core::runtime::Node;
//! use atbus_relay::Relay;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let token = Token::new("a shared secret of 32 bytes!!!!!")?;
//! let relay = Relay::builder()
//!     .listen("tcp://127.0.0.1:0")
//!     .token(token.clone())
//!     .start()
//!     .await?;
//! let address = relay.local_addresses()[0].to_string();
//! let echo = Node::builder().name("echo").token(token.clone()).relay(&address).start().await?;
//! let client = Node::builder().name("client").token(token).relay(&address).start().await?;
//!
//! client.send("echo", "hello through the relay").await?;
//! let message = echo.recv().await.expect("a message");
//! assert_eq!(message.source, "client");
//! # client.shutdown().await;
//! # echo.shutdown().await;
//! # relay.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! Relays connect to each other (`RelayBuilder::peer`, YAML `peers`) in a chain or a mesh: they
//! exchange route tables and forward through each other, up to 16 relays between two nodes.
//!
//! With an admin address (`RelayBuilder::admin`, YAML `admin`, default `127.0.0.1:7801` for the
//! binary) it serves `/healthz`, `/readyz`, `/metrics` (Prometheus), `/v1/nodes`,
//! `/v1/connections`, `/v1/routes` and `/v1/nodes?watch=1&heartbeat=N` (server-sent events).

mod admin;
mod admin_records;
pub mod config;
mod discovery;
mod relay;

pub use config::{ConfigError, DEFAULT_ADMIN, DEFAULT_LISTEN, RelayConfig};
pub use relay::{Relay, RelayBuilder};
