//! Round-trip time of one connection, from timepoint echoes and pongs, and the retransmission
//! timeout derived from it (RFC 9002 section 5, RFC 6298).

use std::time::Duration;

/// Smoothed RTT, its variation and the minimum, from samples.
#[derive(Debug, Clone)]
pub(crate) struct RttEstimator {
    /// The most recent sample.
    latest: Duration,
    /// Exponentially smoothed RTT; `None` until the first sample.
    smoothed: Option<Duration>,
    /// Mean deviation of the samples.
    variation: Duration,
    /// The smallest sample seen.
    min: Duration,
    /// Used before the first sample.
    initial: Duration,
}

/// Timer granularity: the retransmission timeout never comes closer than this to the RTT.
const GRANULARITY: Duration = Duration::from_millis(1);

impl RttEstimator {
    /// An estimator that assumes `initial` until a sample arrives.
    pub fn new(initial: Duration) -> Self {
        Self {
            latest: initial,
            smoothed: None,
            variation: initial / 2,
            min: initial,
            initial,
        }
    }

    /// Takes a sample: the time from sending to acknowledgement, less the delay the peer reported
    /// holding the acknowledgement (when that leaves at least the minimum RTT).
    pub fn update(&mut self, sample: Duration, ack_delay: Duration) {
        self.latest = sample;
        let Some(smoothed) = self.smoothed else {
            self.smoothed = Some(sample);
            self.variation = sample / 2;
            self.min = sample;
            return;
        };
        self.min = self.min.min(sample);
        let adjusted = if sample >= self.min + ack_delay {
            sample - ack_delay
        } else {
            sample
        };
        let deviation = smoothed.abs_diff(adjusted);
        self.variation = (self.variation * 3 + deviation) / 4;
        self.smoothed = Some((smoothed * 7 + adjusted) / 8);
    }

    /// The smoothed RTT, or the initial guess before any sample.
    pub fn smoothed(&self) -> Duration {
        self.smoothed.unwrap_or(self.initial)
    }

    /// Whether a sample has been taken.
    pub fn has_sample(&self) -> bool {
        self.smoothed.is_some()
    }

    /// The retransmission timeout before backoff: smoothed RTT plus four variations.
    pub fn rto(&self) -> Duration {
        self.smoothed() + (self.variation * 4).max(GRANULARITY)
    }

    /// How long after a later packet was acknowledged an earlier one counts as lost rather than
    /// reordered: 9/8 of the larger of the smoothed and latest RTT (RFC 9002 section 6.1.2).
    pub fn loss_delay(&self) -> Duration {
        (self.smoothed().max(self.latest) * 9 / 8).max(GRANULARITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_first_sample_sets_smoothed_rtt_and_half_of_it_as_variation() {
        let mut rtt = RttEstimator::new(333 * MS);
        assert!(!rtt.has_sample());
        assert_eq!(rtt.smoothed(), 333 * MS);
        rtt.update(100 * MS, Duration::ZERO);
        assert_eq!(rtt.smoothed(), 100 * MS);
        assert_eq!(rtt.rto(), 100 * MS + 4 * 50 * MS);
    }

    #[test]
    fn steady_samples_converge_and_the_timeout_shrinks_towards_the_rtt() {
        let mut rtt = RttEstimator::new(333 * MS);
        for _ in 0..50 {
            rtt.update(20 * MS, Duration::ZERO);
        }
        assert_eq!(rtt.smoothed(), 20 * MS);
        assert!(rtt.rto() < 22 * MS, "{:?}", rtt.rto());
        assert!(rtt.rto() >= 20 * MS + GRANULARITY);
    }

    #[test]
    fn ack_delay_is_subtracted_unless_that_goes_below_the_minimum() {
        let mut rtt = RttEstimator::new(333 * MS);
        rtt.update(10 * MS, Duration::ZERO);
        rtt.update(30 * MS, 15 * MS);
        // 30 - 15 = 15 ≥ min 10: adjusted sample 15 → 10 * 7/8 + 15/8.
        assert_eq!(rtt.smoothed(), (70 * MS + 15 * MS) / 8);
        let before = rtt.smoothed();
        rtt.update(12 * MS, 10 * MS);
        // 12 - 10 = 2 < min 10: the delay is not trusted, the raw sample counts.
        assert_eq!(rtt.smoothed(), (before * 7 + 12 * MS) / 8);
    }

    #[test]
    fn a_jump_in_rtt_widens_the_timeout_through_the_variation() {
        let mut rtt = RttEstimator::new(333 * MS);
        for _ in 0..20 {
            rtt.update(10 * MS, Duration::ZERO);
        }
        let calm = rtt.rto();
        rtt.update(200 * MS, Duration::ZERO);
        assert!(rtt.rto() > calm + 100 * MS, "{:?}", rtt.rto());
        assert!(rtt.loss_delay() >= 200 * MS * 9 / 8);
    }
}
