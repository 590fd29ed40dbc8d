//! The engine on the deterministic simulated network, over many seeds: random workloads (message
//! sizes 0 B to 1 MiB, several streams, both directions) over profiles from perfect to 20% loss
//! with duplication and reordering, and with a connection killed mid-transfer while another
//! survives. For every seed: every message arrives exactly once, in order, byte for byte; every
//! stream finishes at both ends; engine memory stays under its configured bound; the run ends.
//!
//! `ATBUS_SIM_SEEDS=N ATBUS_SIM_SEED_START=S cargo test --release -p atbus-core --test simulation`
//! runs N seeds from S (default 300 from 0 in release, 24 in a debug build). A failure names its seed and profile, and
//! `ATBUS_SIM_SEEDS=1 ATBUS_SIM_SEED_START=<seed>` replays it.

mod simulation_support;

use std::time::Duration;

use atbus_core::sim::LinkProfile;
use simulation_support::{Outcome, Outgoing, Scenario, Workload, run, run_scenario};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|value| {
            value
                .parse()
                .unwrap_or_else(|_| panic!("{name}={value:?} is not a number"))
        })
        .unwrap_or(default)
}

#[test]
fn every_message_arrives_once_in_order_over_every_profile() {
    // Unoptimised builds (the plain test suite) run fewer seeds; release runs a few hundred.
    let default_count = if cfg!(debug_assertions) { 24 } else { 300 };
    let count = env_u64("ATBUS_SIM_SEEDS", default_count);
    let start = env_u64("ATBUS_SIM_SEED_START", 0);
    let mut failures = Vec::new();
    let mut simulated = Duration::ZERO;
    for seed in start..start + count {
        let scenario = Scenario::from_seed(seed);
        match run_scenario(&scenario) {
            Outcome::Done { elapsed, .. } => simulated += elapsed,
            Outcome::Failed(problem) => {
                failures.push(format!(
                    "seed {seed} ({}): {problem}\n  replay: ATBUS_SIM_SEEDS=1 \
                     ATBUS_SIM_SEED_START={seed} cargo test --release -p atbus-core --test \
                     simulation",
                    scenario.describe()
                ));
                if failures.len() >= 5 {
                    break;
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} seeds failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{count} seeds from {start}: {simulated:?} of simulated transfer");
}

#[test]
fn at_five_percent_loss_ten_mebibytes_cost_under_1_3x_the_bytes_and_3x_the_time() {
    let payload = Workload {
        streams: vec![Outgoing {
            stream_id: 1,
            sizes: vec![64 * 1024; 160],
        }],
    };
    let nothing = Workload { streams: vec![] };
    let link = |loss| {
        LinkProfile::perfect_datagram()
            .with_delay(Duration::from_millis(10))
            .with_bandwidth(10_000_000)
            .with_mtu(1232)
            .with_loss(loss)
    };
    let measure = |loss| match run(7, (&payload, &nothing), &[link(loss)], None, false) {
        Outcome::Done {
            elapsed,
            wire_bytes,
            stats,
            ..
        } => {
            eprintln!(
                "at {loss} loss: sender {:?}\nreceiver {:?}",
                stats[0], stats[1]
            );
            (elapsed, wire_bytes)
        }
        Outcome::Failed(problem) => panic!("transfer at {loss} loss failed: {problem}"),
    };
    let (free_time, free_bytes) = measure(0.0);
    let (lossy_time, lossy_bytes) = measure(0.05);
    let payload_bytes = payload.bytes() as f64;
    let byte_ratio = lossy_bytes as f64 / payload_bytes;
    let time_ratio = lossy_time.as_secs_f64() / free_time.as_secs_f64();
    eprintln!(
        "10 MiB over 10 MB/s, 10 ms: loss-free {free_time:?} and {:.3}x the payload on the wire; \
         5% loss {lossy_time:?} ({time_ratio:.2}x the time) and {byte_ratio:.3}x the payload",
        free_bytes as f64 / payload_bytes
    );
    assert!(
        byte_ratio < 1.3,
        "{byte_ratio:.3}x the payload on the wire at 5% loss"
    );
    assert!(
        time_ratio < 3.0,
        "{time_ratio:.2}x the loss-free time at 5% loss"
    );
}

#[test]
fn data_goes_over_the_connection_with_the_lowest_rtt_while_the_other_stays_warm() {
    let payload = Workload {
        streams: vec![Outgoing {
            stream_id: 1,
            sizes: vec![16 * 1024; 256],
        }],
    };
    let nothing = Workload { streams: vec![] };
    let link = |delay_ms| {
        LinkProfile::perfect_datagram()
            .with_delay(Duration::from_millis(delay_ms))
            .with_bandwidth(50_000_000)
            .with_mtu(1232)
    };
    // The slow link is the first one added: the choice is by RTT, not by order. Only the first
    // window goes before either link has an RTT sample.
    match run(3, (&payload, &nothing), &[link(40), link(5)], None, false) {
        Outcome::Done { link_bytes, .. } => {
            let (slow, fast) = (link_bytes[0], link_bytes[1]);
            assert!(
                fast > 10 * slow,
                "fast link {fast} bytes, slow link {slow} bytes"
            );
            assert!(slow > 0, "the slow link is pinged");
        }
        Outcome::Failed(problem) => panic!("{problem}"),
    }
}
