//! Arbitrary bytes into the incremental frame decoder, cut into arbitrary chunks.
//!
//! Proves that `FrameCodec::decode` never panics on hostile input and does not depend on how the
//! stream is cut: fed chunk by chunk it yields the same frames, the same final outcome (the same
//! error, or incomplete asking for the same `needed`) and leaves the same bytes as when fed the
//! whole stream at once, and `decode_bytes` agrees with both. Every call also keeps the documented
//! contract: `Incomplete` consumes nothing and asks for `needed > 0` bytes, a lower bound that is
//! exact once the header is in; a frame's `wire_len` is what it consumed and matches its header;
//! header errors consume nothing, checksum and protobuf errors consume exactly the bad frame. Every
//! decoded message re-encodes to a frame that decodes to the same message and encodes to the same
//! bytes again.
//!
//! Input: the first byte picks the chunk sizes (a tiny PRNG), the rest is the byte stream.
#![no_main]

use std::hint::black_box;
use std::sync::OnceLock;

use atbus_proto::{
    CHECKSUM_LEN, CodecConfig, DecodeError, Decoded, EncodeError, Frame, FrameCodec,
    MAX_VARINT_LEN, PROTOCOL_VERSION,
};
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;

/// Small, so that the fuzzer reaches the limit.
const MAX_FRAME_LENGTH: usize = 64 * 1024;

/// The current version, and others with one- and two-byte varints.
const ACCEPTED_VERSIONS: [u64; 3] = [PROTOCOL_VERSION, 2, 300];

fn codec() -> &'static FrameCodec {
    static CODEC: OnceLock<FrameCodec> = OnceLock::new();
    CODEC.get_or_init(|| {
        let config = CodecConfig::default()
            .with_max_frame_length(MAX_FRAME_LENGTH)
            .and_then(|config| config.with_accepted_versions(ACCEPTED_VERSIONS))
            .expect("valid fuzzing configuration");
        FrameCodec::new(config)
    })
}

/// How a decoding run stopped.
#[derive(Debug, PartialEq)]
enum End {
    /// All the bytes were given and the decoder wants more.
    Incomplete { needed: usize },
    /// The first error, and how many bytes the failing call consumed.
    Error { error: DecodeError, consumed: usize },
}

/// Everything a decoding run produced.
#[derive(Debug, PartialEq)]
struct Run {
    frames: Vec<Frame>,
    end: End,
    /// The stream's bytes after the end: left in the buffer, or never fed to it.
    rest: Vec<u8>,
}

/// A buffer the codec can decode from: `BytesMut` with `decode`, `Bytes` with `decode_bytes`.
trait Input: std::ops::Deref<Target = [u8]> {
    fn step(&mut self, codec: &FrameCodec) -> Result<Decoded, DecodeError>;
}

impl Input for BytesMut {
    fn step(&mut self, codec: &FrameCodec) -> Result<Decoded, DecodeError> {
        codec.decode(self)
    }
}

impl Input for Bytes {
    fn step(&mut self, codec: &FrameCodec) -> Result<Decoded, DecodeError> {
        codec.decode_bytes(self)
    }
}

/// A frame header read independently of the codec.
#[derive(Debug, Clone, Copy)]
struct Header {
    version: u64,
    body_len: u64,
    len: usize,
}

/// The varint at the front of `buf` and its length, if it is whole and at most 10 bytes.
fn varint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (index, &byte) in buf.iter().take(MAX_VARINT_LEN).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Some((value, index + 1));
        }
    }
    None
}

impl Header {
    /// The whole frame this header announces.
    fn frame_len(self) -> u64 {
        (self.len as u64)
            .saturating_add(self.body_len)
            .saturating_add(CHECKSUM_LEN as u64)
    }
}

fn header(buf: &[u8]) -> Option<Header> {
    let (version, version_len) = varint(buf)?;
    let (body_len, length_len) = varint(&buf[version_len..])?;
    Some(Header {
        version,
        body_len,
        len: version_len + length_len,
    })
}

/// The state of one decoding run across calls.
struct Decoder<'a> {
    codec: &'a FrameCodec,
    frames: Vec<Frame>,
    /// The `(buffered, needed)` of every `Incomplete` since the last frame left the front.
    asks: Vec<(usize, usize)>,
}

impl<'a> Decoder<'a> {
    fn new(codec: &'a FrameCodec) -> Self {
        Self {
            codec,
            frames: Vec::new(),
            asks: Vec::new(),
        }
    }

    /// Checks the earlier `Incomplete` answers at this front against the `total` bytes the frame
    /// (or the bad frame) that just left it took: each asked for no more than was missing.
    fn settle_asks(&mut self, total: usize) {
        for &(buffered, needed) in &self.asks {
            assert!(
                buffered + needed <= total,
                "Incomplete asked for {needed} more bytes with {buffered} in, but the frame took \
                 {total}"
            );
        }
        self.asks.clear();
    }

    /// Decodes from `buf` until it is incomplete or fails, checking every call.
    fn drain<B: Input>(&mut self, buf: &mut B) -> End {
        loop {
            let buffered = buf.len();
            let header = header(buf);
            match buf.step(self.codec) {
                Ok(Decoded::Incomplete { needed }) => {
                    assert!(needed > 0, "Incomplete must ask for at least one byte");
                    assert_eq!(buf.len(), buffered, "Incomplete must consume nothing");
                    if let Some(header) = header {
                        // The header is in, so only the body and CRC can be missing.
                        let total = header.frame_len();
                        assert_eq!(
                            (buffered + needed) as u64,
                            total,
                            "exact `needed` once the header is in"
                        );
                    }
                    self.asks.push((buffered, needed));
                    return End::Incomplete { needed };
                }
                Ok(Decoded::Frame(frame)) => {
                    let consumed = buffered - buf.len();
                    assert_eq!(
                        frame.wire_len, consumed,
                        "wire_len is what the frame consumed"
                    );
                    let header = header.expect("a decoded frame has a whole header");
                    assert_eq!(frame.version, header.version);
                    assert!(ACCEPTED_VERSIONS.contains(&frame.version));
                    assert!(header.body_len <= MAX_FRAME_LENGTH as u64);
                    assert_eq!(consumed as u64, header.frame_len());
                    self.settle_asks(consumed);
                    self.frames.push(frame);
                }
                Err(error) => {
                    let consumed = buffered - buf.len();
                    match &error {
                        DecodeError::UnsupportedVersion { version } => {
                            assert!(!ACCEPTED_VERSIONS.contains(version));
                            assert_eq!(consumed, 0, "header errors consume nothing");
                        }
                        DecodeError::FrameTooLong { length, max } => {
                            assert_eq!(*max, MAX_FRAME_LENGTH);
                            assert!(*length > MAX_FRAME_LENGTH as u64);
                            let header = header.expect("the length is checked once it is read");
                            assert_eq!(*length, header.body_len);
                            assert_eq!(consumed, 0, "header errors consume nothing");
                        }
                        DecodeError::VarintTooLong { .. } | DecodeError::VarintOverflow { .. } => {
                            assert_eq!(consumed, 0, "header errors consume nothing");
                        }
                        DecodeError::ChecksumMismatch { expected, actual } => {
                            assert_ne!(expected, actual);
                            let header = header.expect("a checksum is checked after the header");
                            self.settle_asks(consumed);
                            assert_eq!(
                                consumed as u64,
                                header.frame_len(),
                                "a checksum error consumes exactly the bad frame"
                            );
                        }
                        DecodeError::InvalidMessage(_) => {
                            let header = header.expect("a body is decoded after the header");
                            self.settle_asks(consumed);
                            assert_eq!(
                                consumed as u64,
                                header.frame_len(),
                                "a protobuf error consumes exactly the bad frame"
                            );
                        }
                    }
                    return End::Error { error, consumed };
                }
            }
        }
    }
}

/// Decodes the whole stream given at once.
fn whole<B: Input>(mut buf: B) -> Run {
    let mut decoder = Decoder::new(codec());
    let end = decoder.drain(&mut buf);
    Run {
        frames: decoder.frames,
        end,
        rest: buf.to_vec(),
    }
}

/// Chunk sizes from a xorshift32 PRNG, up to a maximum the seed picks.
struct Chunks {
    state: u32,
    max: usize,
}

impl Chunks {
    fn new(seed: u8) -> Self {
        const MAX_CHUNK: [usize; 8] = [1, 2, 3, 5, 8, 21, 256, 4096];
        Self {
            state: (u32::from(seed >> 3) + 1).wrapping_mul(0x9e37_79b9) | 1,
            max: MAX_CHUNK[usize::from(seed & 7)],
        }
    }

    fn next_len(&mut self) -> usize {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 17;
        self.state ^= self.state << 5;
        1 + self.state as usize % self.max
    }
}

/// Decodes the stream as it arrives in chunks, calling the decoder before the first one too.
fn chunked(stream: &[u8], mut chunks: Chunks) -> Run {
    let mut decoder = Decoder::new(codec());
    let mut buf = BytesMut::new();
    let mut end = decoder.drain(&mut buf);
    let mut fed = 0;
    while fed < stream.len() && matches!(end, End::Incomplete { .. }) {
        let len = chunks.next_len().min(stream.len() - fed);
        buf.extend_from_slice(&stream[fed..fed + len]);
        fed += len;
        end = decoder.drain(&mut buf);
    }
    let mut rest = buf.to_vec();
    rest.extend_from_slice(&stream[fed..]);
    Run {
        frames: decoder.frames,
        end,
        rest,
    }
}

/// Encodes a decoded frame's message again and decodes that.
fn check_reencode(codec: &FrameCodec, frame: &Frame) {
    let message = &frame.message;
    let mut wire = BytesMut::new();
    let written = match codec.encode(message, &mut wire) {
        Ok(written) => written,
        Err(EncodeError::FrameTooLong { length, max }) => {
            // A body near the limit may grow: an int32 read from a 5-byte varint is written back
            // sign-extended in 10 bytes.
            assert_eq!(max, MAX_FRAME_LENGTH);
            assert!(length > max);
            assert!(wire.is_empty(), "a refused frame writes nothing");
            return;
        }
    };
    assert_eq!(written, wire.len());
    assert_eq!(written, codec.encoded_len(message));
    let encoded = wire.clone().freeze();
    let again = match codec.decode(&mut wire) {
        Ok(Decoded::Frame(again)) => again,
        other => panic!("re-encoded frame does not decode: {other:?}"),
    };
    assert!(wire.is_empty());
    assert_eq!(again.version, codec.config().version());
    assert_eq!(again.wire_len, written);
    assert_eq!(
        &again.message, message,
        "re-encoded message decodes differently"
    );
    let mut twice = BytesMut::new();
    codec
        .encode(&again.message, &mut twice)
        .expect("the same message encoded once");
    assert_eq!(twice.freeze(), encoded, "encoding is not deterministic");
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let at_once = whole(BytesMut::from(stream));
    let at_once_bytes = whole(Bytes::copy_from_slice(stream));
    assert_eq!(at_once, at_once_bytes, "decode and decode_bytes disagree");
    let in_chunks = chunked(stream, Chunks::new(seed));
    assert_eq!(at_once, in_chunks, "the result depends on the chunking");

    let frames_len: usize = at_once.frames.iter().map(|frame| frame.wire_len).sum();
    let consumed_by_end = match at_once.end {
        End::Error { consumed, .. } => consumed,
        End::Incomplete { .. } => 0,
    };
    assert_eq!(
        frames_len + consumed_by_end + at_once.rest.len(),
        stream.len()
    );

    for frame in &at_once.frames {
        check_reencode(codec(), frame);
    }
    black_box(at_once);
    black_box(in_chunks);
});
