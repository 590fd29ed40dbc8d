//! Congestion control of one datagram connection, counted in units (about bytes) of stream data.
//!
//! Stream transports leave this to the kernel (TCP's own congestion control, or none needed in a
//! process); on UDP the engine is the only thing between an application writing as fast as it can
//! and a receiver's socket buffer overflowing, so a datagram connection sends new data only while
//! its units in flight stay below its congestion window.
//!
//! The window starts at ten datagrams and doubles every round trip (slow start) until a round
//! trip loses more than [`LOSS_THRESHOLD_PERCENT`] of its flights; it then halves, and from there
//! grows by an eighth per round trip and shrinks to 7/10 after each such lossy round. Losses below
//! the threshold are taken as noise, not congestion: links with random loss (radio, a busy
//! host's UDP) would otherwise hold a loss-driven window (NewReno, CUBIC) at a few datagrams,
//! while a buffer overflowing loses a large share of the round that overran it.
//!
//! The controller only sees what the send streams report: a flight put on the wire
//! ([`on_sent`](Congestion::on_sent)) and its fate ([`on_left`](Congestion::on_left)).

use std::time::Instant;

/// The initial window, in datagrams (RFC 9002 section 7.2).
const INITIAL_DATAGRAMS: u64 = 10;
/// The window never shrinks below this many datagrams.
const MINIMUM_DATAGRAMS: u64 = 4;
/// A round trip losing more than this share of the flights that left the books in it cuts the
/// window.
pub(crate) const LOSS_THRESHOLD_PERCENT: u64 = 10;
/// A round trip is judged once at least this many flights left the books in it: fewer say
/// little about the loss rate (one loss in ten is already the threshold).
const MIN_ROUND_FLIGHTS: u64 = 20;

/// How a flight left the books.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlightFate {
    /// The peer acknowledged it.
    Acked,
    /// It was declared lost: flights sent after it were acknowledged.
    Lost,
    /// It was declared lost because its retransmission timeout passed. That is ambiguous (a
    /// lost acknowledgement looks the same) and says nothing about the loss rate: like RFC 9002's
    /// probe timeout, it leaves the window alone.
    TimedOut,
    /// It was dropped without news of its delivery: its connection died, its messages expired or
    /// the peer restarted. It no longer counts as in flight, and says nothing about congestion.
    Forgotten,
}

/// A flight that left the books of a send stream, for its connection's controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FlightLeft {
    /// The connection it went out on.
    pub connection: super::transmit::ConnectionId,
    /// The units it carried.
    pub units: u64,
    /// When it went out.
    pub sent_at: Instant,
    /// What became of it.
    pub fate: FlightFate,
}

/// The congestion window of one datagram connection.
#[derive(Debug, Clone)]
pub(crate) struct Congestion {
    /// Units that may be in flight.
    window: u64,
    /// Whether the window still doubles every round trip.
    slow_start: bool,
    /// Units sent and not yet acknowledged, lost or forgotten.
    in_flight: u64,
    /// When the current round trip began: it ends when a flight sent since leaves the books.
    round_start: Instant,
    /// Flights acknowledged in the current round trip.
    round_acked: u64,
    /// Flights declared lost in the current round trip.
    round_lost: u64,
    /// The loss rate of the recent round trips, in percent, smoothed (each round weighs 1/4).
    loss_percent: u64,
    /// Whether the window, rather than the application, limits the sender: set when a send fills
    /// the window, cleared when one leaves it less than half used. Only then do acknowledgements
    /// grow it.
    window_limited: bool,
    /// The datagram payload, the unit of the window's bounds.
    datagram: u64,
}

impl Congestion {
    /// A controller for datagrams of `mtu` bytes, starting at `now`.
    pub fn new(mtu: usize, now: Instant) -> Self {
        let datagram = mtu.max(1) as u64;
        Self {
            window: INITIAL_DATAGRAMS * datagram,
            slow_start: true,
            in_flight: 0,
            round_start: now,
            round_acked: 0,
            round_lost: 0,
            loss_percent: 0,
            window_limited: false,
            datagram,
        }
    }

    /// Whether new data may go out: the units in flight are below the window.
    pub fn can_send(&self) -> bool {
        self.in_flight < self.window
    }

    /// The window, in units.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// Units in flight.
    pub fn in_flight(&self) -> u64 {
        self.in_flight
    }

    /// Notes `units` put on the wire.
    pub fn on_sent(&mut self, units: u64) {
        self.in_flight += units;
        if self.in_flight >= self.window {
            self.window_limited = true;
        } else if self.in_flight < self.window / 2 {
            self.window_limited = false;
        }
    }

    /// Takes the fate of a flight sent on this connection. Returns whether the window was cut.
    pub fn on_left(&mut self, left: &FlightLeft, now: Instant) -> bool {
        self.in_flight = self.in_flight.saturating_sub(left.units);
        match left.fate {
            FlightFate::Forgotten | FlightFate::TimedOut => return false,
            FlightFate::Acked => {
                self.round_acked += 1;
                if self.window_limited {
                    self.grow(left.units);
                }
            }
            FlightFate::Lost => self.round_lost += 1,
        }
        // A flight sent since the round began has come back (or is lost): the round is over,
        // once it has seen enough flights to be judged.
        if left.sent_at >= self.round_start
            && self.round_acked + self.round_lost >= MIN_ROUND_FLIGHTS
        {
            return self.end_round(now);
        }
        false
    }

    fn grow(&mut self, units: u64) {
        self.window += if self.slow_start { units } else { units / 8 };
    }

    /// Closes the round trip; cuts the window if the recent loss rate is over the threshold.
    fn end_round(&mut self, now: Instant) -> bool {
        let total = self.round_acked + self.round_lost;
        let round_percent = self.round_lost * 100 / total.max(1);
        self.loss_percent = (self.loss_percent * 3 + round_percent) / 4;
        self.round_start = now;
        self.round_acked = 0;
        self.round_lost = 0;
        if self.loss_percent <= LOSS_THRESHOLD_PERCENT {
            return false;
        }
        // The cut answers the losses so far: the next one needs fresh evidence.
        self.loss_percent = 0;
        let cut = match self.slow_start {
            true => self.window / 2,
            false => self.window * 7 / 10,
        };
        self.slow_start = false;
        self.window = cut.max(MINIMUM_DATAGRAMS * self.datagram);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::transmit::ConnectionId;
    use std::time::Duration;

    fn left(units: u64, sent_at: Instant, fate: FlightFate) -> FlightLeft {
        FlightLeft {
            connection: ConnectionId(1),
            units,
            sent_at,
            fate,
        }
    }

    #[test]
    fn slow_start_doubles_the_window_each_round_trip_while_it_is_full() {
        let now = Instant::now();
        let mut cc = Congestion::new(1000, now);
        assert_eq!(cc.window(), 10_000);
        cc.on_sent(10_000);
        assert!(!cc.can_send());
        for _ in 0..10 {
            cc.on_left(&left(1000, now, FlightFate::Acked), now);
        }
        assert_eq!(cc.window(), 20_000);
        assert_eq!(cc.in_flight(), 0);
        assert!(cc.can_send());
    }

    #[test]
    fn an_idle_sender_does_not_grow_the_window() {
        let now = Instant::now();
        let mut cc = Congestion::new(1000, now);
        for _ in 0..100 {
            cc.on_sent(100);
            cc.on_left(&left(100, now, FlightFate::Acked), now);
        }
        assert_eq!(cc.window(), 10_000);
    }

    /// Sends a full window at `at` and has `lost` of its twenty flights lost, the rest
    /// acknowledged, a millisecond later. Returns whether the window was cut.
    fn round(cc: &mut Congestion, at: Instant, lost: u64) -> bool {
        let flight = cc.window() / 20;
        cc.on_sent(flight * 20);
        let back = at + Duration::from_millis(1);
        let mut cut = false;
        for i in 0..20 {
            let fate = if i < lost {
                FlightFate::Lost
            } else {
                FlightFate::Acked
            };
            cut |= cc.on_left(&left(flight, at, fate), back);
        }
        cut
    }

    #[test]
    fn losses_at_the_threshold_are_noise_and_slow_start_goes_on() {
        let mut now = Instant::now();
        let mut cc = Congestion::new(1000, now);
        for _ in 0..8 {
            now += Duration::from_millis(2);
            // Two flights in twenty: 10 %, not more than the threshold.
            assert!(!round(&mut cc, now, 2));
        }
        assert!(cc.window() > 10_000 * 100, "{}", cc.window());
    }

    #[test]
    fn a_lossy_round_halves_slow_start_then_clean_rounds_add_an_eighth_and_lossy_ones_cut_to_seven_tenths()
     {
        let mut now = Instant::now();
        let mut cc = Congestion::new(1000, now);
        now += Duration::from_millis(2);
        assert!(!round(&mut cc, now, 0));
        // Half of a round lost: the smoothed rate (50 % / 4) passes the threshold.
        let before = cc.window();
        now += Duration::from_millis(2);
        assert!(round(&mut cc, now, 10));
        let flight = before / 20;
        assert_eq!(cc.window(), (before + 10 * flight) / 2);
        let before = cc.window();
        now += Duration::from_millis(2);
        assert!(!round(&mut cc, now, 0));
        assert_eq!(cc.window(), before + 20 * (before / 20 / 8));
        let before = cc.window();
        now += Duration::from_millis(2);
        assert!(round(&mut cc, now, 10));
        let flight = before / 20;
        assert_eq!(cc.window(), (before + 10 * (flight / 8)) * 7 / 10);
    }

    #[test]
    fn flights_lost_to_the_retransmission_timeout_leave_the_window_alone() {
        let now = Instant::now();
        let mut cc = Congestion::new(1000, now);
        cc.on_sent(20_000);
        let later = now + Duration::from_millis(50);
        for _ in 0..20 {
            assert!(!cc.on_left(&left(1000, later, FlightFate::TimedOut), later));
        }
        assert_eq!((cc.window(), cc.in_flight()), (10_000, 0));
    }

    #[test]
    fn the_window_never_shrinks_below_four_datagrams_and_forgotten_flights_only_leave() {
        let mut now = Instant::now();
        let mut cc = Congestion::new(1000, now);
        for _ in 0..20 {
            now += Duration::from_millis(2);
            round(&mut cc, now, 10);
        }
        assert_eq!(cc.window(), 4000);
        cc.on_sent(5000);
        assert!(!cc.can_send());
        assert!(!cc.on_left(&left(5000, now, FlightFate::Forgotten), now));
        assert_eq!((cc.window(), cc.in_flight()), (4000, 0));
    }
}
