//! The sans-IO protocol engine: streams, acknowledgements, fragmentation, retransmission and flow
//! control as a state machine fed with bytes and time, with no sockets, tasks or clock of its own.
//!
//! It is being built bottom-up. What is here: [`message`] (messages as the application sees them),
//! [`transmit`] (connection handles and bytes to send) and `reassembly` (the receive side of one
//! stream direction). The endpoint that ties them to
//! connections and the send side come next; until then the internal pieces are exercised by their
//! unit tests only.

pub mod message;
pub mod transmit;
// The pieces below are used by the endpoint, which is not written yet.
#[allow(dead_code)]
pub(crate) mod piece;
#[allow(dead_code)]
pub(crate) mod ranges;
#[allow(dead_code)]
pub(crate) mod reassembly;
#[allow(dead_code)]
pub(crate) mod rtt;
#[allow(dead_code)]
pub(crate) mod send;
