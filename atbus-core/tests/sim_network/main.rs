//! Tests of `atbus_core::sim`, the deterministic simulated network: each link condition does
//! what its profile says (delay, loss, duplication, reordering, bandwidth, queue limit, MTU,
//! stream chunking), kills and restores behave like reset sockets and dead paths, timeouts fire
//! at the simulated time asked for, and a run is a function of its seed.
//!
//! The nodes are `Toy`s: they send what a test queues or schedules, record what they receive,
//! optionally echo it back, and keep timers.

mod toy;

use std::time::Duration;

use atbus_core::engine::transmit::{ConnectionId, Transmit};
use atbus_core::sim::{Direction, LinkKind, LinkProfile, Network};

use toy::{Toy, datagram, ms, pair, send_now, send_paced, seq};

#[test]
fn perfect_datagram_delivers_each_once_in_order_after_the_delay() {
    let (mut net, link) = pair(1, LinkProfile::perfect_datagram().with_delay(ms(10)));
    send_now(&mut net, link.a, link.a_connection, 100, 64);
    assert!(net.run_for(ms(1000)));

    let b = net.node(link.b);
    assert_eq!(b.seqs(), (0..100).collect::<Vec<_>>());
    assert!(
        b.received
            .iter()
            .all(|(at, conn, _)| *at == ms(10) && *conn == link.b_connection)
    );
    let a = net.node(link.a);
    assert_eq!(
        a.seqs(),
        (0..100).collect::<Vec<_>>(),
        "the echoes come back in order"
    );
    assert!(
        a.received
            .iter()
            .all(|(at, conn, _)| *at == ms(20) && *conn == link.a_connection)
    );

    let stats = net.stats(link);
    assert_eq!((stats.a_to_b.sent, stats.a_to_b.delivered), (100, 100));
    assert_eq!(
        (stats.a_to_b.sent_bytes, stats.a_to_b.delivered_bytes),
        (6400, 6400)
    );
    assert_eq!(stats.total().not_delivered() + stats.total().duplicated, 0);
    assert_eq!(net.total_stats(), stats.total());
    assert_eq!(net.elapsed(), ms(1000));
    assert_eq!(net.now(), net.start() + ms(1000));
}

#[test]
fn loss_rate_matches_the_profile() {
    let (mut net, link) = pair(2, LinkProfile::lossy(0.1));
    net.node_mut(link.b).echo = false;
    send_now(&mut net, link.a, link.a_connection, 20_000, 32);
    net.run_for(ms(10));

    let stats = net.stats(link).a_to_b;
    let got = net.node(link.b).seqs();
    assert_eq!(got.len() as u64, stats.delivered);
    assert_eq!(stats.lost + stats.delivered, 20_000);
    // 10% of 20 000 is 2 000 with a standard deviation of about 42.
    assert!((1_800..=2_200).contains(&stats.lost), "lost {}", stats.lost);
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "no duplicates, no reordering"
    );
}

#[test]
fn duplication_happens_at_about_its_rate() {
    let profile = LinkProfile::perfect_datagram()
        .with_delay(ms(5))
        .with_jitter(ms(2))
        .with_duplicate(0.1);
    let (mut net, link) = pair(3, profile);
    net.node_mut(link.b).echo = false;
    send_now(&mut net, link.a, link.a_connection, 10_000, 16);
    net.run_for(ms(100));

    let stats = net.stats(link).a_to_b;
    assert!(
        (850..=1_150).contains(&stats.duplicated),
        "duplicated {}",
        stats.duplicated
    );
    let mut copies = vec![0u32; 10_000];
    for seq in net.node(link.b).seqs() {
        copies[seq as usize] += 1;
    }
    assert!(
        copies.iter().all(|&n| n == 1 || n == 2),
        "every datagram arrives once or twice"
    );
    let twice = copies.iter().filter(|&&n| n == 2).count() as u64;
    assert_eq!(twice, stats.duplicated);
    assert_eq!(stats.delivered, 10_000 + stats.duplicated);
}

#[test]
fn reordering_happens_at_about_its_rate() {
    let profile = LinkProfile::perfect_datagram()
        .with_delay(ms(10))
        .with_reorder(0.1);
    let (mut net, link) = pair(4, profile);
    net.node_mut(link.b).echo = false;
    send_paced(&mut net, link.a, link.a_connection, 2_000, ms(1));
    net.run_for(Duration::from_secs(5));

    let stats = net.stats(link).a_to_b;
    // 10% of 2 000 is 200 with a standard deviation of about 13.
    assert!(
        (140..=260).contains(&stats.reordered),
        "reordered {}",
        stats.reordered
    );
    let got = net.node(link.b).seqs();
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (0..2_000).collect::<Vec<_>>(),
        "each delivered exactly once"
    );
    // A held-back datagram waits up to 20 ms more, so most are overtaken by the next ones.
    let mut highest = None;
    let mut late = 0;
    for &seq in &got {
        if highest.is_some_and(|h| seq < h) {
            late += 1;
        }
        highest = highest.max(Some(seq));
    }
    assert!(
        late <= stats.reordered && late * 10 >= stats.reordered * 8,
        "late {late}"
    );
}

#[test]
fn bandwidth_spaces_deliveries_by_serialization_time() {
    // 1000 bytes at 100 000 B/s take 10 ms on the wire, then 5 ms of propagation.
    let profile = LinkProfile::perfect_datagram()
        .with_delay(ms(5))
        .with_bandwidth(100_000);
    let (mut net, link) = pair(5, profile);
    net.node_mut(link.b).echo = false;
    send_now(&mut net, link.a, link.a_connection, 10, 1000);
    net.run_for(Duration::from_secs(1));

    let times: Vec<Duration> = net.node(link.b).received.iter().map(|r| r.0).collect();
    let expected: Vec<Duration> = (1..=10).map(|i| ms(5 + 10 * i)).collect();
    assert_eq!(times, expected);
    assert_eq!(net.node(link.b).seqs(), (0..10).collect::<Vec<_>>());
}

#[test]
fn queue_limit_drops_datagrams_that_do_not_fit() {
    let profile = LinkProfile::perfect_datagram()
        .with_bandwidth(100_000)
        .with_queue_limit(2_500);
    let (mut net, link) = pair(6, profile);
    net.node_mut(link.b).echo = false;
    // The first is serialized at once; two more wait (2000 bytes); the rest do not fit.
    send_now(&mut net, link.a, link.a_connection, 10, 1000);
    net.run_for(ms(100));
    assert_eq!(net.node(link.b).seqs(), [0, 1, 2]);
    assert_eq!(net.stats(link).a_to_b.dropped_queue, 7);

    // Once the queue has drained the link takes datagrams again.
    send_now(&mut net, link.a, link.a_connection, 1, 1000);
    net.run_for(ms(100));
    assert_eq!(net.node(link.b).received.len(), 4);
    assert_eq!(net.total_stats().dropped_queue, 7);
}

#[test]
fn stream_delivers_the_byte_stream_intact_in_order_despite_chunking_and_jitter() {
    // Loss, duplication and reordering are ignored on a stream link.
    let profile = LinkProfile::perfect_stream()
        .with_delay(ms(5))
        .with_jitter(ms(4))
        .with_loss(0.5)
        .with_duplicate(0.5)
        .with_reorder(0.5);
    let (mut net, link) = pair(7, profile);
    net.node_mut(link.b).echo = false;
    // 600 writes of 1..=300 bytes, in bursts of three every 0.5 ms.
    let mut sent = Vec::new();
    let mut sent_at = Vec::new(); // send time of each byte
    let start = net.now();
    for i in 0..600u32 {
        let len = (i as usize * 37) % 300 + 1;
        let data: Vec<u8> = (0..len).map(|j| (i as usize * 7 + j) as u8).collect();
        let at = start + Duration::from_micros(500) * (i / 3);
        sent.extend_from_slice(&data);
        sent_at.extend(std::iter::repeat_n(at - start, len));
        let transmit = Transmit {
            connection: link.a_connection,
            data: data.into(),
        };
        net.node_mut(link.a).script.push_back((at, transmit));
    }
    net.run_for(Duration::from_secs(1));

    let received = &net.node(link.b).received;
    let bytes: Vec<u8> = received
        .iter()
        .flat_map(|(_, _, d)| d.iter().copied())
        .collect();
    assert_eq!(bytes, sent, "the stream arrives intact and in order");
    assert!(
        received.windows(2).all(|w| w[0].0 <= w[1].0),
        "reads in time order"
    );
    assert!(
        received
            .iter()
            .all(|(_, conn, d)| *conn == link.b_connection && !d.is_empty())
    );
    // Every byte arrives between delay and delay + jitter after it was sent (a later write
    // never overtakes an earlier one, so an arrival can only be pushed up to the previous one).
    let mut offset = 0;
    for (at, _, data) in received {
        let (first, last) = (sent_at[offset], sent_at[offset + data.len() - 1]);
        assert!(
            *at >= last + ms(5) && *at <= first + ms(9),
            "chunk at {at:?}"
        );
        offset += data.len();
    }
    // Reads neither match the writes one to one: some writes were split, some coalesced.
    let write_ends: Vec<usize> = (0..600)
        .scan(0, |end, i| {
            *end += (i * 37) % 300 + 1;
            Some(*end)
        })
        .collect();
    let read_ends: Vec<usize> = received
        .iter()
        .scan(0, |end, (_, _, d)| {
            *end += d.len();
            Some(*end)
        })
        .collect();
    assert!(
        read_ends.iter().any(|e| !write_ends.contains(e)),
        "some write was split"
    );
    assert!(
        write_ends.iter().any(|e| !read_ends.contains(e)),
        "some writes were coalesced"
    );

    let stats = net.stats(link).a_to_b;
    assert_eq!((stats.sent, stats.sent_bytes), (600, sent.len() as u64));
    assert_eq!(stats.delivered_bytes, stats.sent_bytes);
    assert_eq!(stats.delivered, received.len() as u64);
    assert_eq!(
        stats.not_delivered() + stats.duplicated + stats.reordered,
        0
    );
}

#[test]
fn stream_with_bandwidth_and_queue_limit_never_drops() {
    let profile = LinkProfile::perfect_stream()
        .with_delay(ms(5))
        .with_bandwidth(10_000)
        .with_queue_limit(100)
        .with_mtu(10);
    let (mut net, link) = pair(8, profile);
    net.node_mut(link.b).echo = false;
    send_now(&mut net, link.a, link.a_connection, 50, 1000);
    net.run_for(Duration::from_secs(10));

    let received = &net.node(link.b).received;
    let total: usize = received.iter().map(|(_, _, d)| d.len()).sum();
    assert_eq!(total, 50_000);
    // 50 000 bytes at 10 000 B/s: the last byte leaves after 5 s.
    assert_eq!(received.last().unwrap().0, Duration::from_secs(5) + ms(5));
    assert_eq!(net.stats(link).a_to_b.not_delivered(), 0);
}

#[test]
fn kill_with_notify_resets_both_ends_and_loses_what_is_in_flight() {
    for kind in [LinkKind::Datagram, LinkKind::Stream] {
        let (mut net, link) = pair(
            9,
            LinkProfile::perfect_datagram()
                .with_kind(kind)
                .with_delay(ms(10)),
        );
        send_now(&mut net, link.a, link.a_connection, 5, 100);
        net.run_for(ms(5));
        net.kill(link, true);
        assert!(!net.is_up(link));
        assert_eq!(
            net.node(link.a).lost,
            [(ms(5), link.a_connection)],
            "{kind:?}"
        );
        assert_eq!(
            net.node(link.b).lost,
            [(ms(5), link.b_connection)],
            "{kind:?}"
        );

        send_now(&mut net, link.a, link.a_connection, 1, 100);
        net.run_for(ms(100));
        assert!(net.node(link.b).received.is_empty(), "{kind:?}");
        let stats = net.stats(link).a_to_b;
        assert_eq!(
            (stats.sent, stats.dropped_down, stats.delivered),
            (6, 6, 0),
            "{kind:?}"
        );
    }
}

#[test]
fn kill_without_notify_is_silence() {
    let (mut net, link) = pair(10, LinkProfile::perfect_datagram().with_delay(ms(10)));
    send_now(&mut net, link.a, link.a_connection, 3, 100);
    net.run_for(ms(15)); // b got them at 10 ms; the echoes are in flight
    net.kill(link, false);
    net.run_for(ms(100));

    assert_eq!(net.node(link.b).received.len(), 3);
    assert!(
        net.node(link.a).received.is_empty(),
        "the echoes died with the link"
    );
    assert!(net.node(link.a).lost.is_empty() && net.node(link.b).lost.is_empty());
    assert_eq!(net.stats(link).b_to_a.dropped_down, 3);
}

#[test]
fn restore_delivers_again_on_the_same_connections() {
    let (mut net, link) = pair(11, LinkProfile::perfect_datagram().with_delay(ms(10)));
    net.kill(link, false);
    send_now(&mut net, link.a, link.a_connection, 2, 100);
    net.run_for(ms(50));
    net.restore(link);
    assert!(net.is_up(link));
    send_now(&mut net, link.a, link.a_connection, 2, 100);
    net.run_for(ms(50));

    let b = net.node(link.b);
    assert_eq!(
        b.received.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(),
        [(ms(60), link.b_connection); 2]
    );
    assert_eq!(
        net.node(link.a).received.len(),
        2,
        "the echoes come back too"
    );
    assert_eq!(net.node(link.a).received[0].1, link.a_connection);
    assert_eq!(net.stats(link).a_to_b.dropped_down, 2);
}

#[test]
fn timeouts_fire_at_the_requested_simulated_time() {
    let mut net: Network<Toy> = Network::new(12);
    let node = net.add_node(Toy::new(net.start()));
    let start = net.start();
    for at in [ms(7), ms(7), ms(1000), ms(2500)] {
        net.node_mut(node).set_timer(start + at);
    }
    assert_eq!(net.next_event_time(), Some(start + ms(7)));
    assert!(net.run_for(Duration::from_secs(10)));
    assert_eq!(net.node(node).fired, [ms(7), ms(1000), ms(2500)]);
    assert_eq!(net.elapsed(), Duration::from_secs(10));

    // Nothing pending: step reports it and time stays put.
    assert_eq!(net.next_event_time(), None);
    assert!(!net.step());
    assert_eq!(net.elapsed(), Duration::from_secs(10));

    // A deadline already past fires at once.
    net.node_mut(node).set_timer(start + ms(3));
    assert!(net.step());
    assert_eq!(net.node(node).fired.last(), Some(&Duration::from_secs(10)));
}

/// What a run did: (arrival, sequence number) of each datagram, (arrival, length) of each stream
/// read at the receiver, and the network's trace digest.
#[derive(Debug, PartialEq)]
struct Trace {
    datagrams: Vec<(Duration, u32)>,
    stream_reads: Vec<(Duration, usize)>,
    digest: u64,
}

/// A run under every datagram impairment plus a stream link.
fn impaired_run(seed: u64) -> Trace {
    let mut net = Network::new(seed);
    let a = net.add_node(Toy::new(net.start()));
    let b = net.add_node(Toy::new(net.start()));
    net.node_mut(b).echo = true;
    let profile = LinkProfile::lossy(0.2)
        .with_delay(ms(10))
        .with_jitter(ms(3))
        .with_duplicate(0.05)
        .with_reorder(0.05)
        .with_bandwidth(1_000_000)
        .with_queue_limit(5_000);
    let datagrams = net.connect(a, b, profile);
    let stream = net.connect(a, b, LinkProfile::perfect_stream().with_jitter(ms(2)));
    send_paced(
        &mut net,
        a,
        datagrams.a_connection,
        500,
        Duration::from_micros(300),
    );
    send_now(&mut net, a, stream.a_connection, 200, 50);
    net.run_for(Duration::from_secs(2));

    let toy = net.node(b);
    let on = |connection| toy.received.iter().filter(move |r| r.1 == connection);
    let trace = Trace {
        datagrams: on(datagrams.b_connection)
            .map(|r| (r.0, seq(&r.2)))
            .collect(),
        stream_reads: on(stream.b_connection).map(|r| (r.0, r.2.len())).collect(),
        digest: net.trace_digest(),
    };
    assert!(net.stats(datagrams).total().lost > 0, "the run is lossy");
    trace
}

#[test]
fn same_seed_gives_the_same_run() {
    let first = impaired_run(13);
    assert!(!first.datagrams.is_empty() && !first.stream_reads.is_empty());
    assert_eq!(first, impaired_run(13));
}

#[test]
fn different_seeds_give_different_runs_under_loss() {
    let (first, other) = (impaired_run(13), impaired_run(14));
    assert_ne!(first.datagrams, other.datagrams);
    assert_ne!(
        first.stream_reads, other.stream_reads,
        "stream reads are cut differently"
    );
    assert_ne!(first.digest, other.digest);
}

#[test]
fn mtu_drops_are_counted() {
    let (mut net, link) = pair(15, LinkProfile::perfect_datagram().with_mtu(1200));
    net.node_mut(link.b).echo = false;
    let (a, conn) = (link.a, link.a_connection);
    net.node_mut(a).outbox.extend([
        datagram(conn, 0, 1200),
        datagram(conn, 1, 1201),
        datagram(conn, 2, 10),
    ]);
    net.poll_node(a);
    net.run_for(ms(1));
    assert_eq!(net.node(link.b).seqs(), [0, 2]);
    assert_eq!(net.stats(link).a_to_b.dropped_mtu, 1);
    assert_eq!(net.total_stats().dropped_mtu, 1);
}

#[test]
fn unknown_connection_is_counted_not_a_panic() {
    let (mut net, link) = pair(16, LinkProfile::perfect_datagram());
    let bogus = ConnectionId(link.a_connection.0 + 100);
    net.node_mut(link.a)
        .outbox
        .push_back(datagram(bogus, 0, 10));
    net.node_mut(link.a)
        .outbox
        .push_back(datagram(link.a_connection, 1, 10));
    net.run_for(ms(1));

    assert_eq!(
        net.node(link.b).seqs(),
        [1],
        "the good one still goes through"
    );
    let total = net.total_stats();
    assert_eq!(
        (total.sent, total.dropped_unroutable),
        (3, 1),
        "two sent by a, one echo"
    );
    assert_eq!(
        net.stats(link).total().dropped_unroutable,
        0,
        "no link is blamed"
    );
}

#[test]
fn set_profile_changes_one_direction_mid_run() {
    let (mut net, link) = pair(17, LinkProfile::perfect_datagram().with_delay(ms(1)));
    net.set_profile(link, Direction::BToA, LinkProfile::lossy(1.0));
    send_now(&mut net, link.a, link.a_connection, 10, 10);
    net.run_for(ms(10));
    assert_eq!(net.node(link.b).received.len(), 10);
    assert!(net.node(link.a).received.is_empty(), "every echo lost");
    assert_eq!(net.stats(link).b_to_a.lost, 10);

    net.set_profile(
        link,
        Direction::Both,
        LinkProfile::perfect_datagram().with_delay(ms(2)),
    );
    send_now(&mut net, link.a, link.a_connection, 1, 10);
    net.run_for(ms(10));
    assert_eq!(net.node(link.a).received.last().map(|r| r.0), Some(ms(14)));
}

#[test]
fn run_while_reports_whether_the_condition_became_false() {
    let (mut net, link) = pair(18, LinkProfile::perfect_datagram().with_delay(ms(10)));
    let b = link.b;
    send_paced(&mut net, link.a, link.a_connection, 20, ms(1));
    let limit = net.start() + Duration::from_secs(1);
    assert!(net.run_while(|net| net.node(b).received.len() < 10, limit));
    assert_eq!(
        net.elapsed(),
        ms(19),
        "stopped when the tenth datagram arrived"
    );

    // A condition that never becomes false: the run stops at the limit and says so.
    assert!(!net.run_while(|net| net.node(b).received.len() < 1_000, limit));
    assert_eq!(net.now(), limit);
    assert_eq!(net.node(b).received.len(), 20);
}

#[test]
fn zero_delay_livelock_is_detected() {
    let (mut net, link) = pair(19, LinkProfile::perfect_datagram());
    net.node_mut(link.a).echo = true;
    net.set_instant_step_limit(1_000);
    send_now(&mut net, link.a, link.a_connection, 1, 10);
    assert!(!net.run_for(ms(10)), "time never advances");
    assert_eq!(net.elapsed(), Duration::ZERO);
    let limit = net.now() + ms(10);
    assert!(!net.run_while(|_| true, limit));
}
