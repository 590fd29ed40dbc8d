//! The input decoded into operations: `step` picks one (raw bytes, a built handshake frame, a
//! real client connecting, a pump, a replay, time passing, a new connection, an administrative
//! act) and the smaller ones live here, with the helpers that draw bytes and integers from the
//! input.

use std::time::Duration;

use arbitrary::{Result, Unstructured};
use atbus_core::engine::{CloseReason, ConnectionId};
use bytes::Bytes;

use crate::ISSUED_NAME;
use crate::common::short_string;
use crate::world::Harness;

pub(crate) fn input_bytes(u: &mut Unstructured, max: usize) -> Result<Bytes> {
    let len = u.int_in_range(0..=max)?;
    Ok(Bytes::copy_from_slice(u.bytes(len.min(u.len()))?))
}

/// An `i64`, often an edge value.
pub(crate) fn int64(u: &mut Unstructured) -> Result<i64> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 => *u.choose(&[0, 1, -1, i64::MIN, i64::MAX, 65536, 1232])?,
        1 => i64::from(u.arbitrary::<u8>()?),
        _ => u.arbitrary()?,
    })
}

impl Harness {
    /// A client's flight played again, mostly on a fresh connection.
    pub(crate) fn replay(&mut self, u: &mut Unstructured) -> Result<()> {
        let flight = if !self.authenticated_inputs.is_empty() && u.arbitrary()? {
            u.choose(&self.authenticated_inputs)?.clone()
        } else if !self.recorded.is_empty() {
            u.choose(&self.recorded)?.clone()
        } else {
            return Ok(());
        };
        let id = self.target(u, Some(flight.kind))?;
        self.deliver(u, id, flight.data)
    }

    pub(crate) fn raw(&mut self, u: &mut Unstructured) -> Result<()> {
        let id = self.target(u, None)?;
        let bytes = input_bytes(u, 256)?;
        self.deliver(u, id, bytes)
    }

    /// Issues (or re-issues) the identity of `issued-1`, or another.
    pub(crate) fn issue(&mut self, u: &mut Unstructured) -> Result<()> {
        let name = if u.ratio(7, 8)? {
            ISSUED_NAME.to_string()
        } else {
            u.choose(&["client-a", "anon-x", "", "issued-2"])?
                .to_string()
        };
        let stream_id = i64::from(u.int_in_range(0..=3u8)?) - i64::from(u.ratio(1, 16)?);
        let lifetime = *u.choose(&[
            Duration::from_secs(3600),
            Duration::from_secs(3600),
            Duration::from_secs(1),
            Duration::ZERO,
        ])?;
        match self
            .server
            .issue_identity(self.now, &name, stream_id, lifetime)
        {
            Ok(identity) if name == ISSUED_NAME => {
                if let Some((_, old)) = self.issued.replace((identity.stream_id, identity.token)) {
                    Self::keep(&mut self.old_issued_tokens, old, 4);
                }
            }
            Ok(identity) => self.mix(identity.stream_id as u64),
            Err(error) => self.mix(error.to_string().len() as u64),
        }
        Ok(())
    }

    pub(crate) fn admin(&mut self, u: &mut Unstructured) -> Result<()> {
        match u.int_in_range(0..=3u8)? {
            0 => self.issue(u)?,
            1 => {
                let revoked = self.server.revoke_identity(self.now, ISSUED_NAME);
                self.mix(u64::from(revoked));
            }
            _ => {
                let ids: Vec<ConnectionId> = self.conns.keys().copied().collect();
                let Some(&id) = u.choose(&ids).ok() else {
                    return Ok(());
                };
                if u.arbitrary()? {
                    self.server.connection_lost(self.now, id);
                } else {
                    let reason = CloseReason::shutdown(short_string(u)?);
                    self.server.close_connection(id, reason);
                }
            }
        }
        Ok(())
    }

    /// Runs one operation chosen by the input.
    pub(crate) fn step(&mut self, u: &mut Unstructured) -> Result<()> {
        let op = u.int_in_range(0..=19u8)?;
        trace!("-- operation {op}");
        match op {
            0 => self.raw(u)?,
            1..=5 => self.send_built(u)?,
            6..=8 => self.connect(u)?,
            9..=11 => self.pump(u)?,
            12 | 13 => self.replay(u)?,
            14..=16 => self.advance(u)?,
            17 => {
                let kind = Self::kind(u)?;
                self.open(u, kind)?;
            }
            _ => self.admin(u)?,
        }
        Ok(())
    }
}
