//! Arbitrary input into one protocol engine: an endpoint "b" with a datagram and a stream
//! connection to its peer "a", driven by a sequence of operations the input decides.
//!
//! The operations: raw bytes as a datagram or as a chunk of the stream connection; mostly-valid
//! frames from "a" (pings, pongs answering b's pings, packets whose fragments land near the
//! previous ones so reassembly, RESET_OFFSET and FINISH_* are exercised, acknowledgements of what
//! b sent with arbitrary ranges and windows), whole or cut into chunks, sometimes corrupted; the
//! passing of time with `handle_timeout`, by an arbitrary step or to `poll_timeout`; the
//! application reading, sending and finishing streams; connections lost, closed and added again.
//! The input may set a `message_timeout`, so that queued messages expire. After every operation
//! the endpoint's transmits and events are drained and checked.
//!
//! Proves that the engine never panics on hostile input, and that: every transmit goes on a live
//! connection, holds whole frames that b's codec decodes, addressed from "b" to "a", and is no
//! larger than its connection's MTU; `memory()` stays within `peer_send_window +
//! max_message_size + peer_receive_budget`; `poll_transmit` runs dry; a message read is no larger
//! than `max_message_size` and starts past the previous one of its stream; events agree with what
//! happened (reachability alternates and matches the live connections, a lost connection was
//! live, `Writable` follows `WouldBlock`, `StreamClosed` follows `finish`, a stream finishes once);
//! and the timers settle: after time passes, calling `handle_timeout` again at the same instant
//! while `poll_timeout` says a timer is due makes progress every round (a counter changes) and
//! ends, so a runtime that sleeps until `poll_timeout` never spins.
//!
//! Relays (`docs/protocol.md` 5.9): an input whose last byte is `0xa0` or more has that byte taken
//! off to choose a relay mode (inputs ending below it run exactly as before): b may be a relay
//! (`auth.relay`, with a `forward_queue_limit` and `forward_overflow` policy the input picks); "a"
//! may be a relay, its connections then opened by a real handshake with a scratch endpoint "a"
//! that says so in its accept; a second direct peer "c" (bound by `add_connection`, MTUs of its
//! own) and a third "d" (a relay, by handshake) may be there. Frames from a relay then carry
//! `forward_for_source` (originators "x", "y", the direct peers, or nobody), routing notices on
//! stream -3 (no route, path MTU) and route tables on stream -4; frames addressed to others are
//! forwarded by b when it is a relay, also in floods that overrun its forward queues, and the
//! runtime's queue of a connection may fill (`set_transport_blocked`) so that its forward queue
//! fills across operations; the application sends to, reads from and finishes streams of any of
//! the names. Further checks then: a frame b forwards is exactly the frame it got, stamped
//! (destination kept, b as the source, the originator and the connection it came in on), on the
//! destination's connection or a relay's; b's own frames go to the connection's peer, or through a
//! relay to a peer without a direct connection and with room left for the relay's stamps; a
//! connection carries at most `forward_queue_limit` bytes of forwarded frames and notices in one
//! drain (a drain empties the queues it may); nothing goes out on a blocked connection but its
//! close; `Unroutable` comes only for peers without a direct connection; and with nothing
//! unacknowledged, no datagram connection has units in flight.
//!
//! The harness is split by concern, under `engine_input/`: `world` holds the endpoint and what
//! the harness knows of it, and hands it input and time; `ops` decodes the input into operations;
//! `peer` builds the frames "a" sends; `relay` the relay modes (handshakes with scratch
//! endpoints, routing notices, route tables, floods, the frames b should forward); `input` draws
//! values (integers, data, metadata, close reasons) from the input; `checks` drains the endpoint
//! and checks every transmit, event and its state, and that the timers settle. `common` is shared
//! with `handshake`.
#![no_main]

#[path = "engine_input/checks.rs"]
mod checks;
mod common;
#[path = "engine_input/input.rs"]
mod input;
#[path = "engine_input/ops.rs"]
mod ops;
#[path = "engine_input/peer.rs"]
mod peer;
#[path = "engine_input/relay.rs"]
mod relay;
#[path = "engine_input/world.rs"]
mod world;

use std::hint::black_box;
use std::time::Duration;

use arbitrary::Unstructured;
use atbus_core::engine::EngineConfig;
use libfuzzer_sys::fuzz_target;

use relay::Mode;
use world::Harness;

/// The endpoint under test.
const LOCAL: &str = "b";
/// Its main peer (the only one outside the relay modes).
const PEER: &str = "a";
/// Every name the harness uses: b's peers, the originators behind relays, a name nobody has, and
/// b itself. Events about any other name are a failure.
const NAMES: [&str; 7] = ["a", "b", "c", "d", "x", "y", "z"];
/// Forwarded frames a relay holds per connection by default (`forward_queue_limit`).
const FORWARD_QUEUE_LIMIT: usize = 4 * 1024 * 1024;
/// The last byte of an input from which on it selects a relay mode.
const MODE_MARKER: u8 = 0xa0;
/// Frames b's codec accepts: small, so that the limit is reachable.
const MAX_FRAME_LENGTH: usize = 128 * 1024;
/// Simulated time never goes further than this from the start.
const MAX_ELAPSED: Duration = Duration::from_secs(4 * 3600);
/// Operations per input.
const MAX_OPS: usize = 200;
/// Live connections at most (more in the relay modes, which have more peers).
const MAX_CONNECTIONS: usize = 4;
const MAX_RELAY_CONNECTIONS: usize = 6;
/// `poll_transmit` must run dry within this many transmits after one operation.
const MAX_TRANSMITS: usize = 100_000;
/// Rounds of `handle_timeout` at one instant before the timers must be quiet.
const MAX_SETTLE_ROUNDS: usize = 10_000;
/// The streams most operations use; others come from arbitrary ids.
const STREAMS: [i64; 5] = [0, 1, 2, 3, 7];

/// Small limits, so that windows, budgets and the stream limit are all reachable; messages expire
/// after `message_timeout` if the input sets one; `relay` makes b a relay.
fn config(message_timeout: Option<Duration>, relay: bool) -> EngineConfig {
    let mut config = EngineConfig {
        max_message_size: 64 * 1024,
        stream_send_window: 16 * 1024,
        peer_send_window: 32 * 1024,
        peer_receive_budget: 256 * 1024,
        stream_receive_window: 96 * 1024,
        initial_window: 32 * 1024,
        max_streams_per_peer: 16,
        message_timeout,
        max_frame_length: MAX_FRAME_LENGTH,
        ..EngineConfig::default()
    };
    config.auth.relay = relay;
    // Reproducible runs: the handshakes of the relay modes draw nonces from it.
    config.auth.rng_seed = Some([0x5b; 32]);
    config
}

fuzz_target!(|data: &[u8]| {
    let (mode, data) = match data.split_last() {
        Some((&last, rest)) if last >= MODE_MARKER && !rest.is_empty() => {
            (Some(Mode::from_byte(last - MODE_MARKER)), rest)
        }
        _ => (None, data),
    };
    let mut u = Unstructured::new(data);
    let Ok(mut harness) = Harness::new(&mut u, mode) else {
        return;
    };
    harness.drain();
    for _ in 0..MAX_OPS {
        if u.is_empty() || harness.step(&mut u).is_err() {
            break;
        }
        harness.drain();
    }
    black_box(harness.endpoint.stats());
    black_box(harness.digest);
});
