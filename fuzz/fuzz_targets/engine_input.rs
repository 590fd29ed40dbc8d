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
//! The harness is split by concern, under `engine_input/`: `world` holds the endpoint and what
//! the harness knows of it, and hands it input and time; `ops` decodes the input into operations;
//! `peer` builds the frames "a" sends; `input` draws values (integers, data, metadata, close
//! reasons) from the input; `checks` drains the endpoint and checks every transmit, event and its
//! state, and that the timers settle. `common` is shared with `handshake`.
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
#[path = "engine_input/world.rs"]
mod world;

use std::hint::black_box;
use std::time::Duration;

use arbitrary::Unstructured;
use atbus_core::engine::EngineConfig;
use libfuzzer_sys::fuzz_target;

use world::Harness;

/// The endpoint under test.
const LOCAL: &str = "b";
/// Its only peer.
const PEER: &str = "a";
/// Frames b's codec accepts: small, so that the limit is reachable.
const MAX_FRAME_LENGTH: usize = 128 * 1024;
/// Simulated time never goes further than this from the start.
const MAX_ELAPSED: Duration = Duration::from_secs(4 * 3600);
/// Operations per input.
const MAX_OPS: usize = 200;
/// Live connections at most.
const MAX_CONNECTIONS: usize = 4;
/// `poll_transmit` must run dry within this many transmits after one operation.
const MAX_TRANSMITS: usize = 100_000;
/// Rounds of `handle_timeout` at one instant before the timers must be quiet.
const MAX_SETTLE_ROUNDS: usize = 10_000;
/// The streams most operations use; others come from arbitrary ids.
const STREAMS: [i64; 5] = [0, 1, 2, 3, 7];

/// Small limits, so that windows, budgets and the stream limit are all reachable; messages expire
/// after `message_timeout` if the input sets one.
fn config(message_timeout: Option<Duration>) -> EngineConfig {
    EngineConfig {
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
    }
}

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
    black_box(harness.endpoint.stats());
    black_box(harness.digest);
});
