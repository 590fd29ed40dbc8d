//! Tracing for reproducers: with `HANDSHAKE_TRACE` set, `trace!` prints every input, transmit
//! and event, and `describe` renders the frames of some bytes in short. Declared first, with
//! `#[macro_use]`, so that every other module can use `trace!`.

use std::sync::OnceLock;

use atbus_proto::Decoded;
use bytes::Bytes;

use crate::wire::{codec, handshake_of};

/// Whether to print what happens (set `HANDSHAKE_TRACE=1` to follow a reproducer).
pub(crate) fn tracing() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("HANDSHAKE_TRACE").is_some())
}

macro_rules! trace {
    ($($arg:tt)*) => {
        if $crate::trace::tracing() {
            eprintln!($($arg)*);
        }
    };
}

/// The frames of `data`, in short, for the trace.
pub(crate) fn describe(data: &Bytes) -> String {
    let mut rest = data.clone();
    let mut out = Vec::new();
    while !rest.is_empty() {
        let frame = match codec().decode_bytes(&mut rest) {
            Ok(Decoded::Frame(frame)) => frame,
            Ok(Decoded::Incomplete { .. }) => {
                out.push(format!("incomplete({})", rest.len()));
                break;
            }
            Err(error) => {
                out.push(format!("error({error})"));
                break;
            }
        };
        let message = frame.message;
        let what = match handshake_of(&message) {
            Some(Ok(body)) => format!("{body:?}"),
            Some(Err(())) => "bad handshake".to_string(),
            None => format!("{:?}", message.body),
        };
        out.push(format!(
            "[{} bytes, head {:?}: {what}]",
            frame.wire_len, message.head
        ));
    }
    out.join(" ")
}
