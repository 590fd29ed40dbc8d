//! The sans-IO protocol engine: streams, acknowledgements, fragmentation, retransmission and flow
//! control as a state machine fed with bytes and time, with no sockets, tasks or clock of its own.
//!
//! It is being built bottom-up. What is here: [`message`] (messages as the application sees them)
//! and `reassembly` (the receive side of one stream direction). The endpoint that ties them to
//! connections and the send side come next; until then the internal pieces are exercised by their
//! unit tests only.

pub mod message;
#[allow(dead_code)] // used by the endpoint, which is not written yet
pub(crate) mod reassembly;
