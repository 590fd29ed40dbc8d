//! Values drawn from the input: integers (often edge values), offsets near a base, short lists,
//! data (from the input, or long runs of one byte so that few input bytes make large messages),
//! message metadata and close reasons.

use arbitrary::{Result, Unstructured};
use atbus_core::engine::{CloseCode, CloseReason, MessageMeta};
use atbus_proto::protocol::{AtbusCloseReason, CloseReasonData, PacketOptions};
use bytes::Bytes;

use crate::common::short_string;

/// An `i64`, often an edge value.
pub(crate) fn int64(u: &mut Unstructured) -> Result<i64> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 => *u.choose(&[0, 1, -1, i64::MIN, i64::MAX, i64::MAX - 1, 1 << 62])?,
        1 => i64::from(u.arbitrary::<u8>()?),
        _ => u.arbitrary()?,
    })
}

/// `base` moved by a small amount either way, never below 0.
pub(crate) fn near(u: &mut Unstructured, base: u64) -> Result<u64> {
    let delta = u64::from(u.int_in_range(0..=300u16)?);
    Ok(if u.arbitrary()? {
        base.saturating_add(delta)
    } else {
        base.saturating_sub(delta)
    })
}

/// Up to `max` items from `item`.
pub(crate) fn some<T>(
    u: &mut Unstructured,
    max: usize,
    mut item: impl FnMut(&mut Unstructured) -> Result<T>,
) -> Result<Vec<T>> {
    let len = u.int_in_range(0..=max)?;
    (0..len).map(|_| item(u)).collect()
}

/// Data bytes: taken from the input, or a long run of one byte (large messages from few input
/// bytes).
pub(crate) fn data(u: &mut Unstructured) -> Result<Bytes> {
    Ok(match u.int_in_range(0..=7u8)? {
        0 => Bytes::new(),
        1 => {
            let len = u.int_in_range(0..=70 * 1024)?;
            Bytes::from(vec![u.arbitrary::<u8>()?; len])
        }
        2 => {
            let len = u.int_in_range(0..=4096)?;
            Bytes::from(vec![u.arbitrary::<u8>()?; len])
        }
        _ => {
            let len = u.int_in_range(0..=64)?;
            Bytes::copy_from_slice(u.bytes(len.min(u.len()))?)
        }
    })
}

/// Type, options and labels of a message: mostly none, sometimes too large to fit a fragment.
pub(crate) fn meta(u: &mut Unstructured) -> Result<MessageMeta> {
    if u.ratio(3, 4)? {
        return Ok(MessageMeta::default());
    }
    let options = if u.arbitrary()? {
        Some(PacketOptions {
            request_id: int64(u)?,
            reply_to: int64(u)?,
            custom: some(u, 3, |u| {
                let len = u.int_in_range(0..=40)?;
                Ok((short_string(u)?, Bytes::from(vec![0x5a; len])))
            })?
            .into_iter()
            .collect(),
        })
    } else {
        None
    };
    Ok(MessageMeta {
        packet_type: *u.choose(&[0, 1, 2, 101, 1000, -1, i32::MAX])?,
        options,
        labels: some(u, 3, |u| Ok((short_string(u)?, short_string(u)?)))?
            .into_iter()
            .collect(),
    })
}

/// A close reason for the engine's API (`finish`, `close_connection`).
pub(crate) fn api_close_reason(u: &mut Unstructured) -> Result<CloseReason> {
    let reason = close_reason(u)?;
    Ok(CloseReason::new(
        CloseCode::from_wire(reason.code),
        reason.message,
    ))
}

pub(crate) fn close_reason(u: &mut Unstructured) -> Result<CloseReasonData> {
    Ok(CloseReasonData {
        code: *u.choose(&[
            AtbusCloseReason::Unknown as i32,
            AtbusCloseReason::Shutdown as i32,
            AtbusCloseReason::PeerReset as i32,
            77,
            -1,
        ])?,
        message: short_string(u)?,
    })
}
