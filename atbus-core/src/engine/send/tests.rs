//! Unit tests of the send side: cutting, acknowledgement, loss detection and retransmission.

// One received range is the common case of an acknowledgement.
#![allow(clippy::single_range_in_vec_init)]

use super::*;
use crate::engine::reassembly::Reassembler;
use atbus_proto::protocol::AtbusCloseReason;
use proptest::prelude::*;

const A: ConnectionId = ConnectionId(1);
const B: ConnectionId = ConnectionId(2);
const MS: Duration = Duration::from_millis(1);

/// The time messages are queued at in these tests.
fn t0() -> Instant {
    static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *T0.get_or_init(Instant::now)
}

fn typed(packet_type: i32) -> MessageMeta {
    MessageMeta {
        packet_type,
        ..Default::default()
    }
}

fn shutdown() -> CloseReasonData {
    CloseReasonData {
        code: AtbusCloseReason::Shutdown as i32,
        message: String::new(),
    }
}

fn all_pieces(stream: &mut SendStream, max_data: usize, now: Instant) -> Vec<Piece> {
    std::iter::from_fn(|| stream.take_piece(max_data, A, now)).collect()
}

#[test]
fn a_message_is_cut_to_the_room_given_and_only_the_last_piece_ends_it() {
    let mut stream = SendStream::new(u64::MAX);
    let now = Instant::now();
    assert_eq!(
        stream.push(Bytes::from_static(b"hello, world"), typed(101), t0()),
        Some(0)
    );
    let pieces = all_pieces(&mut stream, 5, now);
    let spans: Vec<_> = pieces.iter().map(|p| (p.start, p.end_offset())).collect();
    assert_eq!(spans, vec![(0, 5), (5, 10), (10, 13)]);
    assert_eq!(pieces[0].meta, Some(typed(101)));
    assert!(pieces[1..].iter().all(|piece| piece.meta.is_none()));
    assert_eq!(pieces[0].end, PieceEnd::None);
    assert_eq!(pieces[1].end, PieceEnd::None);
    assert_eq!(pieces[2].end, PieceEnd::Message);
    assert_eq!(&pieces[2].data[..], b"ld");
    assert!(!stream.has_pending());
    assert_eq!(stream.flights().count(), 3);
}

#[test]
fn small_messages_come_out_one_piece_each_and_zero_length_ones_take_one_unit() {
    let mut stream = SendStream::new(u64::MAX);
    let now = Instant::now();
    assert_eq!(
        stream.push(Bytes::from_static(b"a"), typed(0), t0()),
        Some(0)
    );
    assert_eq!(stream.push(Bytes::new(), typed(1), t0()), Some(2));
    assert_eq!(
        stream.push(Bytes::from_static(b"bc"), typed(2), t0()),
        Some(3)
    );
    let pieces = all_pieces(&mut stream, 100, now);
    let spans: Vec<_> = pieces.iter().map(|p| (p.start, p.end_offset())).collect();
    assert_eq!(spans, vec![(0, 2), (2, 3), (3, 6)]);
    assert!(pieces[1].data.is_empty());
    assert_eq!(pieces[1].end, PieceEnd::Message);
    assert_eq!(stream.unacked_units(), 6);
}

#[test]
fn no_room_for_a_byte_gives_no_piece() {
    let mut stream = SendStream::new(u64::MAX);
    stream.push(Bytes::from_static(b"x"), MessageMeta::default(), t0());
    assert!(stream.take_piece(0, A, Instant::now()).is_none());
    assert!(stream.has_pending());
}

#[test]
fn acknowledgement_releases_the_queued_bytes() {
    let mut stream = SendStream::new(u64::MAX);
    let now = Instant::now();
    stream.push(Bytes::from(vec![1; 100]), MessageMeta::default(), t0());
    stream.push(Bytes::from(vec![2; 50]), MessageMeta::default(), t0());
    all_pieces(&mut stream, 1000, now);
    assert_eq!(stream.queued_bytes(), 150);
    assert_eq!(stream.on_ack(101, &[]), Ok(101));
    assert_eq!(stream.queued_bytes(), 50);
    assert_eq!(stream.flights().count(), 1);
    assert_eq!(
        stream.on_ack(50, &[]),
        Ok(0),
        "a stale acknowledgement changes nothing"
    );
    assert_eq!(stream.on_ack(152, &[]), Ok(51));
    assert!(stream.is_idle());
    assert_eq!(stream.queued_bytes(), 0);
}

#[test]
fn acknowledging_units_never_sent_is_an_error() {
    let mut stream = SendStream::new(u64::MAX);
    stream.push(Bytes::from(vec![1; 10]), MessageMeta::default(), t0());
    stream.take_piece(4, A, Instant::now());
    assert_eq!(
        stream.on_ack(5, &[]),
        Err(AckBeyondSent {
            acknowledged: 5,
            sent: 4
        })
    );
    assert!(stream.on_ack(0, &[2..9]).is_err());
    assert_eq!(stream.acked(), 0);
}

#[test]
fn a_flight_overtaken_by_three_acknowledged_ones_is_resent_without_copying() {
    let mut stream = SendStream::new(u64::MAX);
    let now = Instant::now();
    let data = Bytes::from(vec![7; 50]);
    stream.push(data.clone(), MessageMeta::default(), t0());
    let pieces = all_pieces(&mut stream, 10, now); // [0,10) [10,20) ... [40,51)
    assert_eq!(pieces.len(), 5);
    // The first piece is lost; the peer reports the rest received.
    stream.on_ack(0, &[10..51]).unwrap();
    assert_eq!(stream.flights().count(), 1);
    assert_eq!(stream.detect_lost(now, 100 * MS), 1);
    let resent = stream.take_piece(10, B, now).expect("resent");
    assert_eq!((resent.start, resent.end_offset()), (0, 10));
    assert_eq!(
        resent.data.as_ptr(),
        data.as_ptr(),
        "a slice of the queued bytes"
    );
    assert!(
        stream.take_piece(10, B, now).is_none(),
        "the rest was received"
    );
    stream.on_ack(51, &[]).unwrap();
    assert!(stream.is_idle());
}

#[test]
fn a_flight_overtaken_by_one_is_lost_only_after_the_loss_delay() {
    let mut stream = SendStream::new(u64::MAX);
    let start = Instant::now();
    stream.push(Bytes::from(vec![7; 20]), MessageMeta::default(), t0());
    stream.take_piece(10, A, start);
    stream.take_piece(10, A, start + MS);
    stream.on_ack(0, &[10..21]).unwrap();
    let delay = 30 * MS;
    assert_eq!(
        stream.detect_lost(start + 10 * MS, delay),
        0,
        "maybe reordered"
    );
    assert_eq!(stream.loss_time(delay), Some(start + delay));
    assert_eq!(stream.detect_lost(start + delay, delay), 1);
    assert!(stream.has_pending());
    assert_eq!(stream.loss_time(delay), None);
}

#[test]
fn the_retransmission_timeout_resends_the_oldest_flight_as_a_probe() {
    let mut stream = SendStream::new(u64::MAX);
    let start = Instant::now();
    stream.push(Bytes::from(vec![7; 20]), MessageMeta::default(), t0());
    stream.take_piece(10, A, start);
    stream.take_piece(10, A, start + 5 * MS);
    let rto = 100 * MS;
    assert_eq!(stream.timeout_at(rto), Some(start + rto));
    assert_eq!(stream.on_timeout(start + rto, rto), 1);
    assert_eq!(stream.timeout_at(rto), Some(start + 5 * MS + rto));
    let resent = stream.take_piece(10, A, start + rto).unwrap();
    assert_eq!(resent.start, 0);
    assert_eq!(stream.timeout_at(rto), Some(start + 5 * MS + rto));
}

#[test]
fn the_flights_of_a_dead_connection_are_resent_on_another() {
    let mut stream = SendStream::new(u64::MAX);
    let now = Instant::now();
    stream.push(Bytes::from(vec![7; 30]), MessageMeta::default(), t0());
    stream.take_piece(10, A, now);
    stream.take_piece(10, B, now);
    stream.take_piece(10, A, now);
    assert_eq!(stream.on_connection_lost(A), 2);
    let resent: Vec<_> = all_pieces(&mut stream, 10, now)
        .iter()
        .map(|p| (p.start, p.end_offset()))
        .collect();
    assert_eq!(resent, vec![(0, 10), (20, 31)]);
}

#[test]
fn ranges_the_peer_reported_received_are_not_resent() {
    let mut stream = SendStream::new(u64::MAX);
    let now = Instant::now();
    stream.push(Bytes::from(vec![7; 30]), MessageMeta::default(), t0());
    stream.take_piece(30, A, now); // one flight [0, 31)
    stream.on_ack(0, &[10..20]).unwrap(); // the peer holds the middle, from another copy
    assert_eq!(stream.on_timeout(now + 10 * MS, MS), 1);
    let resent: Vec<_> = all_pieces(&mut stream, 100, now)
        .iter()
        .map(|p| (p.start, p.end_offset()))
        .collect();
    assert_eq!(resent, vec![(0, 10), (20, 31)]);
}

#[test]
fn the_stream_end_is_one_unit_after_the_last_message_and_nothing_follows_it() {
    let mut stream = SendStream::new(u64::MAX);
    let now = Instant::now();
    stream.push(Bytes::from_static(b"bye"), MessageMeta::default(), t0());
    assert_eq!(stream.finish(shutdown(), t0()), Some(4));
    assert_eq!(
        stream.push(Bytes::from_static(b"late"), MessageMeta::default(), t0()),
        None
    );
    assert_eq!(stream.finish(shutdown(), t0()), None);
    let pieces = all_pieces(&mut stream, 100, now);
    assert_eq!(pieces.len(), 2);
    assert_eq!(pieces[1].start, 4);
    assert_eq!(pieces[1].end, PieceEnd::Stream(shutdown()));
    assert!(!stream.is_finished_and_acked());
    stream.on_ack(5, &[]).unwrap();
    assert!(stream.is_finished_and_acked());
}

proptest! {
    /// The send side and the receive side together, over a channel that drops pieces: whatever
    /// is lost is found (received ranges, thresholds, timeouts) and resent, until every message
    /// has arrived once, in order, and the sender holds nothing.
    #[test]
    fn with_losses_every_message_arrives_once_and_the_sender_ends_idle(
        messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..20),
        max_data in 1usize..120,
        drops in proptest::collection::vec(any::<bool>(), 64),
    ) {
        let mut sender = SendStream::new(u64::MAX);
        let mut receiver = Reassembler::new(1 << 30, u64::MAX);
        for message in &messages {
            sender.push(Bytes::from(message.clone()), MessageMeta::default(), t0());
        }
        sender.finish(CloseReasonData::default(), t0());
        let start = Instant::now();
        let rto = 50 * MS;
        let mut delivered = Vec::new();
        let mut sends = 0usize;
        for round in 0..2000u32 {
            let now = start + MS * round;
            while let Some(piece) = sender.take_piece(max_data, A, now) {
                let dropped = drops[sends % drops.len()] && sends % 5 != 0;
                sends += 1;
                if !dropped {
                    receiver.insert(piece);
                }
            }
            while let Some(message) = receiver.pop_message() {
                delivered.push(message.data.to_vec());
            }
            let ranges = receiver.received_ranges(16);
            sender.on_ack(receiver.acknowledge_offset(), &ranges).unwrap();
            sender.detect_lost(now, 5 * MS);
            sender.on_timeout(now, rto);
            if sender.is_finished_and_acked() {
                break;
            }
        }
        prop_assert!(sender.is_finished_and_acked(), "stalled after {} sends", sends);
        prop_assert!(receiver.pop_finished().is_some());
        prop_assert_eq!(delivered, messages);
        prop_assert_eq!(sender.queued_bytes(), 0);
        prop_assert_eq!(sender.flights().count(), 0);
    }
}

#[test]
fn new_data_stops_at_the_peers_window_and_resumes_when_it_grows() {
    let mut stream = SendStream::new(10);
    let now = Instant::now();
    stream.push(Bytes::from(vec![1; 9]), MessageMeta::default(), t0()); // units [0, 10)
    stream.push(Bytes::from(vec![2; 5]), MessageMeta::default(), t0()); // units [10, 16)
    let pieces = all_pieces(&mut stream, 100, now);
    assert_eq!(pieces.len(), 1);
    assert_eq!(
        pieces[0].end_offset(),
        10,
        "the first message and its end fit exactly"
    );
    assert!(!stream.has_pending());
    stream.on_ack(10, &[]).unwrap();
    assert!(stream.window_blocked(), "data waits, nothing in flight");
    stream.note_blocked(now);
    assert_eq!(stream.probe_at(MS), Some(now + MS));
    // The first announcement replaces the assumption even when smaller; later ones only grow it.
    assert!(!stream.update_window(5));
    assert!(stream.update_window(15));
    assert!(!stream.update_window(12));
    let piece = stream
        .take_piece(100, A, now)
        .expect("a piece inside the window");
    assert_eq!((piece.start, piece.end_offset()), (10, 14));
    assert_eq!(
        piece.end,
        PieceEnd::None,
        "the end unit would be outside: one byte short"
    );
    assert!(stream.update_window(16));
    let piece = stream.take_piece(100, A, now).expect("the rest");
    assert_eq!((piece.start, piece.end_offset()), (14, 16));
    assert_eq!(piece.end, PieceEnd::Message);
}

#[test]
fn expired_messages_are_abandoned_and_announced_until_acknowledged() {
    let mut stream = SendStream::new(u64::MAX);
    let start = t0();
    stream.push(Bytes::from(vec![1; 10]), MessageMeta::default(), start);
    stream.push(
        Bytes::from(vec![2; 10]),
        MessageMeta::default(),
        start + 50 * MS,
    );
    stream.finish(shutdown(), start + 60 * MS);
    all_pieces(&mut stream, 100, start); // everything in flight, nothing acknowledged
    let timeout = 100 * MS;
    assert_eq!(stream.expiry_at(timeout), Some(start + timeout));
    assert_eq!(stream.expire(start + 99 * MS, timeout), None);
    assert_eq!(stream.expire(start + timeout, timeout), Some((1, 11)));
    assert_eq!(stream.queued_bytes(), 10);
    assert_eq!(stream.reset_due(start + timeout), Some(11));
    stream.reset_sent(start + timeout, 20 * MS);
    assert_eq!(stream.reset_due(start + timeout + MS), None);
    assert_eq!(stream.reset_at(), Some(start + timeout + 20 * MS));
    // The second message expires too; the end of the stream never does.
    assert_eq!(stream.expire(start + 10 * timeout, timeout), Some((1, 11)));
    assert_eq!(stream.expire(start + 10 * timeout, timeout), None);
    assert_eq!(stream.reset_due(start + 10 * timeout), Some(22));
    stream.on_ack(22, &[]).unwrap();
    assert_eq!(
        stream.reset_at(),
        None,
        "acknowledged: no more announcements"
    );
    stream.on_ack(23, &[]).unwrap();
    assert!(stream.is_finished_and_acked());
}
