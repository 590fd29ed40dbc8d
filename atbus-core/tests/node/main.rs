//! The tokio runtime end to end, over real sockets on loopback: every stream transport carries
//! messages in order, requests get their own replies, backpressure holds, a lost connection loses
//! no message, a restarted peer is reconnected, and shutdown flushes.

mod backpressure;
mod failover;
mod large;
mod messaging;
mod peers;
mod secure;
mod support;
