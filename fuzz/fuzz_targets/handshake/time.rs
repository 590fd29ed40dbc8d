//! Time passing: the operation that picks how far (a step, the edges of the timestamp window, the
//! end of an authenticated hello's window, the handshake timeout, `poll_timeout`), and the move
//! itself, which checks that the timers settle and that no handshake outlives its timeout.

use std::time::{Duration, Instant};

use arbitrary::{Result, Unstructured};

use crate::common::start;
use crate::world::Harness;
use crate::{BASE_UNIX_MS, MAX_CLIENTS, MAX_ELAPSED, MAX_SETTLE_ROUNDS};

impl Harness {
    /// Lets time pass to `to` (kept within the horizon and never backwards), for the server and
    /// the clients.
    pub(crate) fn advance_to(&mut self, u: &mut Unstructured, to: Instant) -> Result<()> {
        self.now = to.min(start() + MAX_ELAPSED).max(self.now);
        self.server.handle_timeout(self.now);
        self.drain();
        for round in 0.. {
            match self.server.poll_timeout() {
                Some(at) if at <= self.now => {
                    assert!(
                        round < MAX_SETTLE_ROUNDS,
                        "poll_timeout stays at {:?} (now {:?}) after {round} calls of \
                         handle_timeout",
                        at.saturating_duration_since(start()),
                        self.now - start()
                    );
                    self.server.handle_timeout(self.now);
                    self.drain();
                }
                _ => break,
            }
        }
        for conn in self.conns.values() {
            if conn.authenticated.is_none() {
                assert!(
                    conn.accepted_at + self.handshake_timeout > self.now,
                    "a handshake accepted at {:?} is still pending at {:?}, past the handshake \
                     timeout of {:?}",
                    conn.accepted_at - start(),
                    self.now - start(),
                    self.handshake_timeout
                );
            }
        }
        for index in 0..MAX_CLIENTS {
            if let Some(client) = self.clients[index].as_mut() {
                client.endpoint.handle_timeout(self.now);
                let deliver = u.ratio(3, 4)?;
                self.drain_client(u, index, deliver)?;
            }
        }
        self.drain();
        Ok(())
    }

    pub(crate) fn advance(&mut self, u: &mut Unstructured) -> Result<()> {
        let to = match u.int_in_range(0..=10u8)? {
            0 => self.now + Duration::from_millis(u.int_in_range(0..=100)?),
            1 => self.now + Duration::from_millis(u.int_in_range(0..=5000)?),
            2 => self.now + Duration::from_secs(u.int_in_range(0..=120)?),
            3 => self.now + self.window,
            4 => self.now + self.window + Duration::from_millis(1),
            5 => self.now + self.window.saturating_sub(Duration::from_millis(1)),
            6 => self.now + self.handshake_timeout,
            8 if !self.authenticated_timestamps.is_empty() => {
                // To the end of the window of a hello authenticated (its nonce may be forgotten
                // from then on), or just past it.
                let timestamp = *u.choose(&self.authenticated_timestamps)?;
                let end = timestamp.saturating_add(self.window_ms()) - BASE_UNIX_MS;
                let end = u64::try_from(end).unwrap_or(0) + u64::from(u.int_in_range(0..=1u8)?);
                start() + Duration::from_millis(end.min(MAX_ELAPSED.as_millis() as u64))
            }
            7 => {
                // To just past the deadline of the oldest pending handshake.
                let oldest = self
                    .conns
                    .values()
                    .filter(|conn| conn.authenticated.is_none())
                    .map(|conn| conn.accepted_at)
                    .min()
                    .unwrap_or(self.now);
                oldest + self.handshake_timeout + Duration::from_millis(u.int_in_range(0..=1)?)
            }
            _ => self.server.poll_timeout().unwrap_or(self.now),
        };
        self.advance_to(u, to)
    }
}
