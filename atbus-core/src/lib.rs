//! The atbus-rs node: protocol engine, transports and the async `Node` API.
//!
//! This crate will hold the sans-IO protocol engine (streams, acknowledgements, fragmentation by
//! MTU, retransmission, flow control, several connections per peer, token authentication), the
//! transports that feed it (`tcp://`, `tls://`, `udp://`, `quic://`, `unix://`, `mem://`) and the
//! tokio `Node` API that services link (see `DESIGN.md` sections 3 and 5). It has no code yet; the
//! wire format it speaks lives in `atbus-proto`.
