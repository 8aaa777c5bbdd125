//! How many parts a transfer downloads at once: the configured number for a
//! near source, more for a far one.
//!
//! A connection delivers about its window per round trip, so a source twice
//! as far away gives each connection half the rate; the read-only limit of
//! such a path is reached only with more connections (measured through a
//! delay line, 512 MiB: at 150 ms, 8 parts in flight reached 0.85× of what 8
//! parallel ranged reads got and 16 reached 1.16×; at 50 ms 8 were already
//! within 10 %; docs/benchmarks.md, "Far origin"). Fewer bytes per request
//! did not matter: 64 MiB parts were no faster than 16 MiB ones. So the
//! download slots grow with the measured wait for a ranged GET's answer (a
//! round trip plus the origin's think time): one configured set per
//! [`NEAR_WAIT`] of it, up to [`MAX_WIDENING`] sets, and never more part
//! buffers than half the memory budget holds. The wait is the shortest one
//! seen after the first set of requests: those (and the probe) open their
//! connections and wait for that too, and a slow answer says more about the
//! origin's load than its distance.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Each this much of request wait (rounded) is worth one configured set of
/// download slots: up to ~110 ms the configured slots suffice.
pub(crate) const NEAR_WAIT: Duration = Duration::from_millis(75);

/// At most this many times the configured download slots.
pub(crate) const MAX_WIDENING: usize = 4;

/// The shortest wait for a ranged GET's answer in a transfer, not counting
/// the first `skip` requests (they opened connections).
#[derive(Debug)]
pub(crate) struct RequestWait {
    skip: u64,
    seen: AtomicU64,
    micros: AtomicU64,
}

impl RequestWait {
    pub(crate) fn new(skip: usize) -> Self {
        Self {
            skip: skip as u64,
            seen: AtomicU64::new(0),
            micros: AtomicU64::new(u64::MAX),
        }
    }

    pub(crate) fn observe(&self, wait: Duration) {
        if self.seen.fetch_add(1, Ordering::Relaxed) < self.skip {
            return;
        }
        let micros = u64::try_from(wait.as_micros()).unwrap_or(u64::MAX);
        self.micros.fetch_min(micros, Ordering::Relaxed);
    }

    pub(crate) fn shortest(&self) -> Option<Duration> {
        match self.micros.load(Ordering::Relaxed) {
            u64::MAX => None,
            micros => Some(Duration::from_micros(micros)),
        }
    }
}

/// Download slots for a transfer configured with `base`, whose requests
/// waited `wait` at the shortest, with parts of `part_size` bytes under a
/// memory budget of `budget` bytes (shared by every transfer of the engine).
pub(crate) fn downloads_for(
    base: usize,
    wait: Option<Duration>,
    part_size: u64,
    budget: usize,
    max: usize,
) -> usize {
    let Some(wait) = wait else {
        return base;
    };
    let sets = (wait.as_secs_f64() / NEAR_WAIT.as_secs_f64()).round();
    let sets = (sets as usize).clamp(1, MAX_WIDENING);
    let memory = usize::try_from((budget as u64 / 2) / part_size.max(1)).unwrap_or(usize::MAX);
    (base * sets).min(max).min(memory).max(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: usize = 1 << 30;

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    #[test]
    fn slots_follow_the_measured_wait_within_the_limits() {
        // (configured, shortest wait, part size, budget, slot limit) → slots
        let cases = [
            // A near or unmeasured source gets the configured slots.
            ((8, None, 16 * MIB, GIB, 64), 8),
            ((8, ms(0), 16 * MIB, GIB, 64), 8),
            ((8, ms(50), 16 * MIB, GIB, 64), 8),
            ((8, ms(75), 16 * MIB, GIB, 64), 8),
            // One more set per ~75 ms of wait, up to four sets.
            ((8, ms(110), 16 * MIB, GIB, 64), 8),
            ((8, ms(115), 16 * MIB, GIB, 64), 16),
            ((8, ms(150), 16 * MIB, GIB, 64), 16),
            ((8, ms(160), 16 * MIB, GIB, 64), 16),
            ((8, ms(200), 16 * MIB, GIB, 64), 24),
            ((8, ms(2000), 16 * MIB, GIB, 64), 32),
            // Never past the slot limit...
            ((8, ms(2000), 16 * MIB, GIB, 20), 20),
            // ...or half the memory budget (256 MiB, 16 MiB parts: 8 buffers)...
            ((4, ms(2000), 16 * MIB, GIB / 4, 64), 8),
            // ...and never below what was configured.
            ((8, ms(2000), 64 * MIB, GIB / 4, 64), 8),
        ];
        for ((base, wait, part, budget, max), slots) in cases {
            assert_eq!(
                downloads_for(base, wait, part, budget, max),
                slots,
                "{base} configured, wait {wait:?}, parts {part}, budget {budget}, limit {max}"
            );
        }
    }

    #[test]
    fn the_shortest_wait_after_the_first_requests_is_kept() {
        let wait = RequestWait::new(2);
        wait.observe(Duration::from_millis(10));
        wait.observe(Duration::from_millis(20));
        assert_eq!(wait.shortest(), None, "the first two opened connections");
        wait.observe(Duration::from_millis(160));
        wait.observe(Duration::from_millis(151));
        wait.observe(Duration::from_millis(900));
        assert_eq!(wait.shortest(), Some(Duration::from_millis(151)));
    }
}
