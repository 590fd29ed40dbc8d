//! Helpers shared by the `handshake` and `engine_input` targets; not a target itself, each of them
//! declares `mod common;`. Only what both use the same way lives here: the instant runs start at,
//! a codec with a given frame limit, short strings drawn from the input, and the digest folded
//! over what the endpoints give back. (Their `int64` helpers differ in the edge values they pick,
//! so each target keeps its own: the same input bytes must keep choosing the same values.)

use std::sync::OnceLock;
use std::time::Instant;

use arbitrary::{Result, Unstructured};
use atbus_proto::{CodecConfig, FrameCodec};

/// The instant every run starts at, captured once.
pub(crate) fn start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// The default codec but for its frame limit.
pub(crate) fn codec_with_limit(max_frame_length: usize) -> FrameCodec {
    let config = CodecConfig::default()
        .with_max_frame_length(max_frame_length)
        .expect("valid codec configuration");
    FrameCodec::new(config)
}

/// Up to 12 lowercase letters.
pub(crate) fn short_string(u: &mut Unstructured) -> Result<String> {
    let len = u.int_in_range(0..=12)?;
    (0..len)
        .map(|_| Ok(char::from(u.int_in_range(b'a'..=b'z')?)))
        .collect()
}

/// Folded over everything the endpoints give back, so none of it is optimised away.
#[derive(Clone, Copy, Default)]
pub(crate) struct Digest(u64);

impl Digest {
    pub(crate) fn mix(&mut self, value: u64) {
        self.0 = (self.0 ^ value).wrapping_mul(0x0000_0100_0000_01b3);
    }
}
