//! Identity and authentication on the simulated network (`docs/protocol.md` section 8), one
//! module per rule of the auth issue: 1-RTT and token rotation, 0-RTT and replays, resumption
//! tickets, anonymous peers, issued identities, no spoofing, and refusals; and nodes reaching each
//! other through a relay, and through two meshed relays.

mod anonymous;
mod departure;
mod handshake;
mod issued;
mod mesh;
mod refusals;
mod relaying;
mod restart;
mod resumption;
mod spoofing;
mod support;
mod zero_rtt;
