//! Arbitrary handshake packets into an accepting endpoint "server", driven by a sequence of
//! operations the input decides.
//!
//! The input first picks the server's authentication rules: no, one or two accepted tokens,
//! anonymous peers allowed or not, a tiny or a large replay cache, a short timestamp window and
//! handshake timeout, a small `max_handshake_size`, tickets or none, relays or none, and perhaps an
//! identity issued for `issued-1`. Then the operations:
//!
//! - raw bytes on a connection (a live one, a new one, one that is gone, one never accepted);
//! - a structurally valid handshake frame (`handshake_message` as the one HANDSHAKE fragment of a
//!   packet on stream -2 with flag TLS_HANDSHAKE) whose hello, accept or confirm fields the input
//!   chooses: fresh and consistent (a token hello signed with a token, an issued hello with the
//!   issued token, a ticket hello with the secret of a ticket the server handed out, a confirm over
//!   the proof of the accept the server sent), or a hello seen earlier with some fields changed and
//!   its proof kept or signed again (padding, which the proof does not cover, changes freely; so do
//!   `instance` and `peer_instance`); sometimes wrapped wrongly (another packet type, stream,
//!   flags, no or two fragments), sometimes followed by a ping or a data packet;
//! - a real connecting endpoint (`Endpoint::connect` with a token, an issued identity, a ticket or
//!   anonymously, with early data or not, as a relay or not) whose hello goes to a new accepted
//!   connection; the answers travel back and forth when the input pumps them, so that confirms,
//!   tickets and resumptions happen;
//! - a replay: the first input of a connection that authenticated, or a recorded flight, played
//!   again on a fresh connection or a live one;
//! - time passing (by steps, to the edges of the timestamp window, to the end of the window of an
//!   authenticated hello, to the handshake timeout, or to `poll_timeout`), identities re-issued
//!   and revoked, connections closed and lost.
//!
//! Whatever goes to the server may arrive whole, truncated, with a byte flipped, with garbage
//! appended, twice, or (on a stream) cut into chunks.
//!
//! Proves that the engine never panics on hostile handshakes, and that:
//! - no amplification: every transmit on an accepted connection before its `Authenticated` event
//!   is no larger than the bytes the connection received, and no datagram is larger than the MTU
//!   (or than the largest datagram received); `HANDSHAKE_AMPLIFICATION` makes this stricter or
//!   looser (see [`amplification::Amplification`]);
//! - a refused connection leaves nothing behind: after `HandshakeFailed` the connection is not
//!   counted by `connection_count` or `pending_handshakes`, input for it is for an unknown
//!   connection, and its id may be accepted again; more generally the engine's connections are
//!   exactly those its events left live, its pending handshakes are those not authenticated, and
//!   its reachable peers are the names of authenticated connections;
//! - a hello is authenticated at most once without a confirm: the same signed hello played again
//!   on a fresh connection (inside the timestamp window, since an older one is refused anyway) is
//!   never `Authenticated` a second time unless the server asked that connection for a confirm;
//! - an authenticated connection is who its hello said (its source, or an `anon-` name for an
//!   anonymous hello), and `Authenticated` comes once per connection;
//! - no handshake outlives `handshake_timeout` once `handle_timeout` ran;
//! - the timers settle: after `handle_timeout(t)`, `poll_timeout()` is after `t` (or `None`)
//!   within a bounded number of further `handle_timeout(t)` calls, so a runtime never spins;
//! - every transmit holds whole frames from "server", and none goes on a connection that is gone.
//!
//! The proofs are computed here from the transcripts of docs/protocol.md 8.4, so they must follow
//! any change to those. `HANDSHAKE_TRACE=1` prints every input, transmit and event, to follow a
//! reproducer.
//!
//! The harness is split by concern, under `handshake/`: `world` holds the state (the server, its
//! connections as the events left them, what the harness learnt) and delivers input; `ops` decodes
//! the input into operations; `forge` builds hellos, accepts and confirms; `clients` runs the real
//! connecting endpoints; `time` lets time pass; `checks` drains the server and checks every
//! transmit, event and its state; `amplification` counts what goes out before `Authenticated`;
//! `wire` and `proofs` encode frames and sign transcripts; `trace` prints what happens. `common`
//! is shared with `engine_input`.
#![no_main]

#[macro_use]
#[path = "handshake/trace.rs"]
mod trace;

#[path = "handshake/amplification.rs"]
mod amplification;
#[path = "handshake/checks.rs"]
mod checks;
#[path = "handshake/clients.rs"]
mod clients;
mod common;
#[path = "handshake/forge.rs"]
mod forge;
#[path = "handshake/ops.rs"]
mod ops;
#[path = "handshake/proofs.rs"]
mod proofs;
#[path = "handshake/time.rs"]
mod time;
#[path = "handshake/wire.rs"]
mod wire;
#[path = "handshake/world.rs"]
mod world;

use std::hint::black_box;
use std::time::Duration;

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;

use world::Harness;

/// The accepting endpoint under test.
const SERVER: &str = "server";
/// The name the server may issue an identity for.
const ISSUED_NAME: &str = "issued-1";
/// Names of the token clients.
const CLIENT_NAMES: [&str; 2] = ["client-a", "client-b"];
/// The shared tokens: the server accepts none, the first, both or the second; never the third.
const TOKENS: [&[u8]; 3] = [
    b"fuzz token zero, 32 bytes long!!",
    b"fuzz token one, 32 bytes long!!!",
    b"fuzz token two: never accepted!!",
];
/// Unix time (ms) of the server at the start of every run.
const BASE_UNIX_MS: i64 = 1_767_225_600_000;
/// The reserved stream of handshake packets.
const HANDSHAKE_STREAM: i64 = -2;
/// Frames the server takes, and that the harness decodes with.
const MAX_FRAME_LENGTH: usize = 64 * 1024;
/// Simulated time never goes further than this from the start.
const MAX_ELAPSED: Duration = Duration::from_secs(4 * 3600);
/// Operations per input.
const MAX_OPS: usize = 64;
/// Live accepted connections at most (a new one beyond is not opened).
const MAX_CONNECTIONS: usize = 8;
/// Real clients at most: two with tokens or issued identities, one anonymous.
const MAX_CLIENTS: usize = 3;
/// Flights of real clients kept for replays.
const MAX_RECORDED: usize = 24;
/// Hellos, proofs and tickets kept to build handshakes from.
const MAX_KEPT: usize = 24;
/// `poll_transmit` must run dry within this many transmits.
const MAX_TRANSMITS: usize = 10_000;
/// Calls of `handle_timeout` at one instant before `poll_timeout` must be past it.
const MAX_SETTLE_ROUNDS: usize = 64;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(mut harness) = Harness::new(&mut u) else {
        return;
    };
    harness.drain();
    for _ in 0..MAX_OPS {
        if u.is_empty() || harness.step(&mut u).is_err() {
            break;
        }
        harness.drain();
    }
    black_box(harness.server.stats());
    black_box(harness.digest);
});
