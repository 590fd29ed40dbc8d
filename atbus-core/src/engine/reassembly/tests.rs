//! Unit tests of reassembly: duplicates, containment, overlap, budget, window, end and reset.

use super::*;
use crate::engine::message::MessageMeta;
use atbus_proto::protocol::AtbusCloseReason;
use proptest::prelude::*;

const BIG: usize = 1 << 30;

fn meta(packet_type: i32) -> MessageMeta {
    MessageMeta {
        packet_type,
        ..Default::default()
    }
}

/// The pieces of `messages` laid out from offset 0, each message cut into fragments of at most
/// `cut` data bytes; the first fragment of message `i` has packet type `i`.
fn cut_messages(messages: &[&[u8]], cut: usize) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut offset = 0u64;
    for (index, message) in messages.iter().enumerate() {
        let chunks: Vec<&[u8]> = if message.is_empty() {
            vec![&[][..]]
        } else {
            message.chunks(cut.max(1)).collect()
        };
        let last = chunks.len() - 1;
        for (position, chunk) in chunks.into_iter().enumerate() {
            let piece = Piece {
                start: offset,
                data: Bytes::copy_from_slice(chunk),
                end: if position == last {
                    PieceEnd::Message
                } else {
                    PieceEnd::None
                },
                meta: (position == 0).then(|| meta(index as i32)),
            };
            offset = piece.end_offset();
            pieces.push(piece);
        }
    }
    pieces
}

fn drain(reassembler: &mut Reassembler) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| reassembler.pop_message())
        .map(|message| message.data.to_vec())
        .collect()
}

fn stream_end(start: u64) -> Piece {
    Piece {
        start,
        data: Bytes::new(),
        end: PieceEnd::Stream(CloseReasonData {
            code: AtbusCloseReason::Shutdown as i32,
            message: "done".into(),
        }),
        meta: None,
    }
}

#[test]
fn a_message_in_one_fragment_is_delivered_without_copying() {
    let mut reassembler = Reassembler::new(BIG, u64::MAX);
    let piece = cut_messages(&[b"hello"], 100).remove(0);
    let pointer = piece.data.as_ptr();
    assert_eq!(reassembler.insert(piece), Inserted::New);
    let message = reassembler.pop_message().expect("message");
    assert_eq!(&message.data[..], b"hello");
    assert_eq!(message.data.as_ptr(), pointer);
    assert_eq!(message.meta, meta(0));
    assert_eq!(
        reassembler.acknowledge_offset(),
        6,
        "five bytes and the end unit"
    );
    assert_eq!(reassembler.held(), 0);
}

#[test]
fn fragments_out_of_order_become_one_message_once_all_are_in() {
    let mut reassembler = Reassembler::new(BIG, u64::MAX);
    let mut pieces = cut_messages(&[b"hello, world"], 5);
    assert_eq!(pieces.len(), 3);
    let last = pieces.pop().unwrap();
    assert_eq!(reassembler.insert(last), Inserted::New);
    assert!(reassembler.pop_message().is_none());
    assert!(reassembler.has_gap());
    assert_eq!(reassembler.acknowledge_offset(), 0);
    assert_eq!(reassembler.received_max_offset(), 13);
    for piece in pieces.into_iter().rev() {
        reassembler.insert(piece);
    }
    assert!(!reassembler.has_gap());
    assert_eq!(drain(&mut reassembler), vec![b"hello, world".to_vec()]);
}

#[test]
fn received_ranges_report_what_is_held_above_the_gap_merged_and_limited() {
    let mut reassembler = Reassembler::new(BIG, u64::MAX);
    // Each 4-byte message in two pieces: [0,2) [2,5), [5,7) [7,10), [10,12) [12,15), ...
    let pieces = cut_messages(&[b"aaaa", b"bbbb", b"cccc", b"dddd"], 2);
    for index in [2, 3, 5, 7] {
        reassembler.insert(pieces[index].clone());
    }
    assert_eq!(reassembler.received_ranges(8), vec![5..10, 12..15, 17..20]);
    assert_eq!(reassembler.received_ranges(2), vec![5..10, 12..15]);
    assert_eq!(reassembler.acknowledge_offset(), 0);
    assert_eq!(reassembler.received_max_offset(), 20);
}

#[test]
fn duplicates_are_dropped_and_each_message_is_delivered_once() {
    let mut reassembler = Reassembler::new(BIG, u64::MAX);
    let pieces = cut_messages(&[b"one", b"two"], 2);
    for piece in &pieces {
        assert_eq!(reassembler.insert(piece.clone()), Inserted::New);
    }
    let held = reassembler.held();
    for piece in &pieces {
        assert_eq!(reassembler.insert(piece.clone()), Inserted::Duplicate);
    }
    assert_eq!(reassembler.held(), held, "duplicates take no memory");
    assert_eq!(
        drain(&mut reassembler),
        vec![b"one".to_vec(), b"two".to_vec()]
    );
    for piece in pieces {
        assert_eq!(
            reassembler.insert(piece),
            Inserted::Duplicate,
            "after delivery"
        );
    }
    assert!(reassembler.pop_message().is_none());
}

#[test]
fn a_range_contained_in_a_held_one_is_ignored() {
    let mut reassembler = Reassembler::new(BIG, u64::MAX);
    let whole = cut_messages(&[b"abcdefgh"], 100);
    let small = cut_messages(&[b"abcdefgh"], 3);
    reassembler.insert(whole[0].clone());
    assert_eq!(reassembler.insert(small[1].clone()), Inserted::Duplicate);
    assert_eq!(drain(&mut reassembler), vec![b"abcdefgh".to_vec()]);
}

#[test]
fn a_range_containing_held_ones_fills_only_the_gaps_around_them() {
    let mut reassembler = Reassembler::new(BIG, u64::MAX);
    let small = cut_messages(&[b"abcdefgh"], 3);
    reassembler.insert(small[1].clone());
    let whole = cut_messages(&[b"abcdefgh"], 100);
    assert_eq!(reassembler.insert(whole[0].clone()), Inserted::New);
    let message = reassembler.pop_message().expect("message");
    assert_eq!(&message.data[..], b"abcdefgh");
    assert_eq!(
        message.meta,
        meta(0),
        "metadata of the first fragment survives"
    );
    assert_eq!(reassembler.held(), 0);
}

#[test]
fn overlapping_ranges_are_merged() {
    let mut reassembler = Reassembler::new(BIG, u64::MAX);
    let by_three = cut_messages(&[b"abcdefghij"], 3); // [0,3) [3,6) [6,9) [9,11)
    let by_four = cut_messages(&[b"abcdefghij"], 4); // [0,4) [4,8) [8,11)
    reassembler.insert(by_four[1].clone());
    reassembler.insert(by_three[1].clone()); // overlaps [4,8) on 4..6
    reassembler.insert(by_three[2].clone()); // overlaps on 6..8
    reassembler.insert(by_four[2].clone());
    assert!(reassembler.pop_message().is_none(), "the start is missing");
    reassembler.insert(by_three[0].clone());
    assert_eq!(drain(&mut reassembler), vec![b"abcdefghij".to_vec()]);
}

#[test]
fn zero_length_messages_take_one_unit_each() {
    let mut reassembler = Reassembler::new(BIG, u64::MAX);
    let pieces = cut_messages(&[b"", b"x", b""], 10);
    assert_eq!(pieces.len(), 3);
    assert_eq!(pieces[2].start, 3);
    for piece in pieces.iter().rev() {
        reassembler.insert(piece.clone());
    }
    assert_eq!(
        drain(&mut reassembler),
        vec![b"".to_vec(), b"x".to_vec(), b"".to_vec()]
    );
    assert_eq!(reassembler.acknowledge_offset(), 4);
    assert_eq!(reassembler.insert(pieces[0].clone()), Inserted::Duplicate);
}

#[test]
fn data_beyond_the_budget_is_refused_and_accepted_once_taken() {
    let pieces = cut_messages(&[&[1; 100], &[2; 100]], 100);
    let mut reassembler = Reassembler::new(100 + PIECE_OVERHEAD, u64::MAX);
    assert_eq!(reassembler.insert(pieces[1].clone()), Inserted::New);
    assert_eq!(reassembler.insert(pieces[0].clone()), Inserted::OverBudget);
    assert_eq!(
        reassembler.acknowledge_offset(),
        0,
        "a refused piece is not acknowledged"
    );
    assert!(reassembler.pop_message().is_none());
    // In order, each message fits once the one before was taken.
    let mut reassembler = Reassembler::new(100 + PIECE_OVERHEAD, u64::MAX);
    assert_eq!(reassembler.insert(pieces[0].clone()), Inserted::New);
    assert_eq!(reassembler.insert(pieces[1].clone()), Inserted::OverBudget);
    assert_eq!(drain(&mut reassembler).len(), 1);
    assert_eq!(reassembler.insert(pieces[1].clone()), Inserted::New);
    assert_eq!(drain(&mut reassembler).len(), 1);
}

#[test]
fn data_beyond_the_window_is_out_of_range() {
    let pieces = cut_messages(&[&[1; 10], &[2; 10]], 100);
    let mut reassembler = Reassembler::new(BIG, 11);
    assert_eq!(reassembler.insert(pieces[1].clone()), Inserted::OutOfRange);
    assert_eq!(reassembler.insert(pieces[0].clone()), Inserted::New);
    drain(&mut reassembler);
    assert_eq!(reassembler.insert(pieces[1].clone()), Inserted::New);
}

#[test]
fn the_stream_end_is_reported_once_after_every_message() {
    let mut reassembler = Reassembler::new(BIG, u64::MAX);
    let pieces = cut_messages(&[b"last"], 2);
    assert_eq!(reassembler.insert(stream_end(5)), Inserted::New);
    assert!(reassembler.pop_finished().is_none());
    for piece in pieces {
        reassembler.insert(piece);
    }
    assert!(
        reassembler.pop_finished().is_none(),
        "a message is still to be taken"
    );
    assert_eq!(drain(&mut reassembler), vec![b"last".to_vec()]);
    let finished = reassembler.pop_finished().expect("finished");
    assert_eq!(finished.reason.code, AtbusCloseReason::Shutdown as i32);
    assert!(reassembler.pop_finished().is_none());
    assert_eq!(
        reassembler.acknowledge_offset(),
        6,
        "the end unit is acknowledged"
    );
}

#[test]
fn nothing_is_accepted_beyond_the_stream_end_nor_a_second_end() {
    let mut reassembler = Reassembler::new(BIG, u64::MAX);
    reassembler.insert(stream_end(5));
    let late = cut_messages(&[b"abcdef"], 100).remove(0);
    assert_eq!(reassembler.insert(late), Inserted::OutOfRange);
    assert_eq!(reassembler.insert(stream_end(8)), Inserted::OutOfRange);
    assert_eq!(reassembler.insert(stream_end(5)), Inserted::Duplicate);
}

#[test]
fn a_reset_drops_what_is_below_it_and_keeps_what_straddles_it() {
    let mut reassembler = Reassembler::new(BIG, u64::MAX);
    // "abc" [0,4), "defgh" [4,10), "ij" [10,13); "abc" never arrives.
    let pieces = cut_messages(&[b"abc", b"defgh", b"ij"], 100);
    reassembler.insert(pieces[1].clone());
    reassembler.insert(pieces[2].clone());
    assert!(reassembler.pop_message().is_none());
    assert_eq!(reassembler.reset_to(4), 4);
    assert_eq!(reassembler.acknowledge_offset(), 13);
    assert_eq!(
        drain(&mut reassembler),
        vec![b"defgh".to_vec(), b"ij".to_vec()]
    );
    assert_eq!(reassembler.reset_to(2), 0, "a late reset has no effect");
    assert_eq!(reassembler.held(), 0);
}

proptest! {
    #[test]
    fn any_cutting_duplication_and_order_delivers_every_message_once_in_order(
        messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..12),
        cuts in proptest::collection::vec(1usize..16, 1..4),
        order in proptest::collection::vec(any::<u64>(), 0..200),
    ) {
        let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        // The same data cut several ways, as if resent over connections with other MTUs.
        let mut pieces: Vec<Piece> = cuts.iter().flat_map(|&cut| cut_messages(&refs, cut)).collect();
        for (index, key) in order.iter().enumerate() {
            let len = pieces.len();
            pieces.swap(index % len, (*key as usize) % len);
        }
        let mut reassembler = Reassembler::new(BIG, u64::MAX);
        let mut delivered = Vec::new();
        for piece in pieces {
            reassembler.insert(piece);
            while let Some(message) = reassembler.pop_message() {
                prop_assert_eq!(message.meta.packet_type as usize, delivered.len());
                delivered.push(message.data.to_vec());
            }
        }
        prop_assert_eq!(delivered, messages);
        prop_assert_eq!(reassembler.held(), 0);
        prop_assert!(!reassembler.has_gap());
    }
}
