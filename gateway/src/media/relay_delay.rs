//! How long callgate holds a relayed packet: from its arrival in the worker's socket (the
//! kernel's receive timestamp, so time queued in the socket while the worker was busy
//! counts) to the end of the handling of its batch, when what it produced has been sent.
//! This is the latency callgate adds to the audio, and the first figure to rise when a
//! media worker runs out of CPU. Worker-owned counts, published with the other counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the histogram's buckets, in seconds (`le` of
/// `callgate_media_relay_delay_seconds`); an overflow bucket follows.
pub const BOUNDS_SECONDS: [f64; 11] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
];
const BOUNDS_NANOS: [u64; 11] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
];
const BUCKETS: usize = BOUNDS_NANOS.len() + 1;

/// A histogram of relay delays (per-bucket counts, not cumulative).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RelayDelay {
    /// Packets per bucket of [`BOUNDS_SECONDS`], the last one above them all.
    pub buckets: [u64; BUCKETS],
    /// Sum of the delays, in nanoseconds.
    pub sum_nanos: u64,
    /// Packets observed.
    pub count: u64,
}

impl RelayDelay {
    /// Books one packet held for `delay`.
    pub fn observe(&mut self, delay: Duration) {
        let nanos = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_NANOS
            .iter()
            .position(|&bound| nanos <= bound)
            .unwrap_or(BOUNDS_NANOS.len());
        self.buckets[bucket] += 1;
        self.sum_nanos = self.sum_nanos.saturating_add(nanos);
        self.count += 1;
    }

    /// Adds another worker's counts.
    pub fn add(&mut self, other: &RelayDelay) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine += theirs;
        }
        self.sum_nanos = self.sum_nanos.saturating_add(other.sum_nanos);
        self.count += other.count;
    }

    /// `(upper bound in seconds, count)` per bucket as prometheus-client encodes a
    /// histogram, the overflow bucket's bound `f64::MAX` (`+Inf`).
    pub fn prometheus_buckets(&self) -> Vec<(f64, u64)> {
        BOUNDS_SECONDS
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(self.buckets)
            .collect()
    }
}

/// A worker's [`RelayDelay`] as last published (read at scrape time).
#[derive(Debug, Default)]
pub(super) struct PublishedDelay {
    buckets: [AtomicU64; BUCKETS],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl PublishedDelay {
    /// Publishes the worker's counts.
    pub fn store(&self, delay: &RelayDelay) {
        for (slot, value) in self.buckets.iter().zip(delay.buckets) {
            slot.store(value, Ordering::Relaxed);
        }
        self.sum_nanos.store(delay.sum_nanos, Ordering::Relaxed);
        self.count.store(delay.count, Ordering::Relaxed);
    }

    /// The counts last published.
    pub fn load(&self) -> RelayDelay {
        let mut delay = RelayDelay::default();
        for (value, slot) in delay.buckets.iter_mut().zip(&self.buckets) {
            *value = slot.load(Ordering::Relaxed);
        }
        delay.sum_nanos = self.sum_nanos.load(Ordering::Relaxed);
        delay.count = self.count.load(Ordering::Relaxed);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_land_in_the_bucket_of_their_upper_bound() {
        let mut delay = RelayDelay::default();
        delay.observe(Duration::from_micros(40));
        delay.observe(Duration::from_micros(100));
        delay.observe(Duration::from_micros(101));
        delay.observe(Duration::from_millis(3));
        delay.observe(Duration::from_secs(2));
        assert_eq!(delay.buckets[0], 2, "40 µs and exactly 100 µs");
        assert_eq!(delay.buckets[1], 1, "101 µs");
        assert_eq!(delay.buckets[5], 1, "3 ms is within 5 ms");
        assert_eq!(delay.buckets[BUCKETS - 1], 1, "2 s overflows");
        assert_eq!(delay.count, 5);
        assert_eq!(
            delay.sum_nanos,
            40_000 + 100_000 + 101_000 + 3_000_000 + 2_000_000_000
        );
        let buckets = delay.prometheus_buckets();
        assert_eq!(buckets.len(), BUCKETS);
        assert_eq!(buckets[0], (0.000_1, 2));
        assert_eq!(buckets[BUCKETS - 1], (f64::MAX, 1));
    }

    #[test]
    fn workers_add_up_and_publish_what_they_counted() {
        let mut one = RelayDelay::default();
        one.observe(Duration::from_micros(300));
        let mut two = RelayDelay::default();
        two.observe(Duration::from_micros(300));
        two.observe(Duration::from_millis(20));
        one.add(&two);
        assert_eq!(one.count, 3);
        assert_eq!(one.buckets[2], 2);
        assert_eq!(one.buckets[7], 1);
        let published = PublishedDelay::default();
        published.store(&one);
        assert_eq!(published.load(), one);
    }

    #[test]
    fn bounds_agree() {
        for (seconds, nanos) in BOUNDS_SECONDS.iter().zip(BOUNDS_NANOS) {
            assert_eq!((seconds * 1e9).round() as u64, nanos);
        }
    }
}
