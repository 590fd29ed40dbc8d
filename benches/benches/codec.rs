//! Frame codec throughput: encode and decode of whole frames of 64 B to 65000 B, next to a
//! `memcpy` of the same number of bytes measured in the same run.
//!
//! `cargo bench -p atbus-benches --bench codec` prints criterion's figures per size (bytes/s),
//! then a table with frames/s and each codec figure as a ratio of memcpy, which is what to compare
//! across runs and machines.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, SystemTime};

use atbus_benches::report::nanoseconds;
use atbus_proto::protocol::frame_message::Body;
use atbus_proto::protocol::{FrameMessage, MessageHead, PacketData};
use atbus_proto::{Decoded, FrameCodec};
use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput};

/// Whole-frame sizes on the wire, in bytes.
const SIZES: [usize; 8] = [64, 128, 256, 400, 1024, 4096, 16000, 65000];

/// The benchmark groups, in the order of the summary's columns.
const GROUPS: [&str; 3] = ["memcpy", "encode", "decode"];

/// A data packet frame whose encoding takes exactly `wire_len` bytes.
fn packet_of_wire_len(codec: &FrameCodec, wire_len: usize) -> FrameMessage {
    let packet = |name_len: usize, content_len: usize| FrameMessage {
        head: Some(MessageHead {
            source: "s".repeat(name_len),
            destination: "node-b".into(),
            ..Default::default()
        }),
        body: Some(Body::Packet(PacketData {
            stream_id: 1,
            stream_offset: 1 << 20,
            content: Bytes::from(vec![0x5a; content_len]),
            flags: 0,
            padding_size: 0,
            timepoint_microseconds: 1_700_000_000_000_000,
        })),
    };
    // Varint length prefixes grow by a byte at 128 and 16384, so try a few name lengths around
    // every content length to land on the exact size.
    (0..wire_len)
        .rev()
        .flat_map(|content_len| (1..4).map(move |name_len| (name_len, content_len)))
        .map(|(name_len, content_len)| packet(name_len, content_len))
        .find(|message| codec.encoded_len(message) == wire_len)
        .unwrap_or_else(|| panic!("no packet frame of exactly {wire_len} bytes"))
}

fn bench_codec(criterion: &mut Criterion) {
    let codec = FrameCodec::default();
    for group_name in GROUPS {
        let mut group = criterion.benchmark_group(group_name);
        for size in SIZES {
            group.throughput(Throughput::Bytes(size as u64));
            let message = packet_of_wire_len(&codec, size);
            let mut wire = BytesMut::new();
            codec.encode(&message, &mut wire).expect("encode");
            let wire = wire.freeze();
            match group_name {
                "memcpy" => {
                    let mut dst = vec![0u8; size];
                    group.bench_function(BenchmarkId::from_parameter(size), |b| {
                        b.iter(|| dst.copy_from_slice(black_box(&wire[..])));
                    });
                }
                "encode" => {
                    let mut dst = BytesMut::with_capacity(size);
                    group.bench_function(BenchmarkId::from_parameter(size), |b| {
                        b.iter(|| {
                            dst.clear();
                            codec.encode(black_box(&message), &mut dst).expect("encode")
                        });
                    });
                }
                _ => {
                    group.bench_function(BenchmarkId::from_parameter(size), |b| {
                        b.iter(|| {
                            let mut src = black_box(&wire).clone();
                            match codec.decode_bytes(&mut src).expect("decode") {
                                Decoded::Frame(frame) => frame,
                                Decoded::Incomplete { .. } => unreachable!("whole frame given"),
                            }
                        });
                    });
                }
            }
        }
        group.finish();
    }
}

/// Prints frames/s, GB/s and the ratio to memcpy for every size measured since `start`.
fn print_summary(directory: &Path, start: SystemTime) {
    println!();
    println!(
        "size (B) | memcpy GB/s | encode GB/s  Mframes/s  ×memcpy | decode GB/s  Mframes/s  ×memcpy"
    );
    for size in SIZES {
        let Some([memcpy, encode, decode]) = GROUPS
            .map(|group| nanoseconds(directory, group, size, start))
            .into_iter()
            .collect::<Option<Vec<f64>>>()
            .and_then(|times| <[f64; 3]>::try_from(times).ok())
        else {
            continue;
        };
        let gbps = |ns: f64| size as f64 / ns;
        let mfps = |ns: f64| 1e3 / ns;
        println!(
            "{size:>8} | {:>11.2} | {:>11.2} {:>10.2} {:>8.3} | {:>11.2} {:>10.2} {:>8.3}",
            gbps(memcpy),
            gbps(encode),
            mfps(encode),
            memcpy / encode,
            gbps(decode),
            mfps(decode),
            memcpy / decode,
        );
    }
}

fn main() {
    atbus_benches::report::run(Duration::from_secs(2), bench_codec, print_summary);
}
