//! Time as the control plane sees it: milliseconds since the Unix epoch, from a [`Clock`] that
//! tests replace with a [`ManualClock`] to move time forward (token expiry, LRU order).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since 1970-01-01 UTC.
pub type Millis = i64;

/// Where the control plane reads the time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Now, in milliseconds since the Unix epoch.
    fn now(&self) -> Millis;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as Millis)
    }
}

/// A clock that moves only when told to; clones share the time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock reading `start`.
    pub fn new(start: Millis) -> Self {
        Self(Arc::new(AtomicI64::new(start)))
    }

    /// Moves the time forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as Millis, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}

/// The last millisecond of the year 9999, the last RFC 3339 can write.
const LAST_WRITABLE: Millis = 253_402_300_799_999;

/// `time` for people: RFC 3339 in UTC, to the second (times after the year 9999 as
/// milliseconds).
pub fn format_time(time: Millis) -> String {
    if time > LAST_WRITABLE {
        return format!("{time} ms after 1970 (after the year 9999)");
    }
    let since = Duration::from_millis(time.max(0) as u64);
    humantime::format_rfc3339_seconds(UNIX_EPOCH + since).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced_and_clones_share_it() {
        let clock = ManualClock::new(1_000);
        let other = clock.clone();
        assert_eq!(clock.now(), 1_000);
        other.advance(Duration::from_secs(60));
        assert_eq!(clock.now(), 61_000);
    }

    #[test]
    fn times_print_as_rfc3339_utc() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(1_700_000_000_123), "2023-11-14T22:13:20Z");
        assert!(format_time(i64::MAX).contains("after the year 9999"));
    }
}
