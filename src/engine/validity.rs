//! Drift and validity (the Redlock paper, section "Is the algorithm asynchronous?").

use std::time::Duration;

/// Clock drift allowance for a lock of `ttl_ms`: `round(drift_factor * ttl) + 2` ms.
pub fn drift_ms(ttl_ms: u64, drift_factor: f64) -> u64 {
    (drift_factor * ttl_ms as f64).round() as u64 + 2
}

/// Remaining validity in ms: `ttl - elapsed - drift`, negative when none is left. The
/// elapsed time is rounded up to whole ms, so that an expiration counted from it (whole
/// ms, as `Date.now()`, rounded down) is never late.
pub fn validity_ms(ttl_ms: u64, elapsed: Duration, drift_factor: f64) -> i64 {
    let elapsed_ms = elapsed.as_nanos().div_ceil(1_000_000).min(i64::MAX as u128) as i64;
    (ttl_ms as i64)
        .saturating_sub(elapsed_ms)
        .saturating_sub(drift_ms(ttl_ms, drift_factor) as i64)
}

/// How long an attempt may wait for votes before it cannot yield a valid lock.
pub fn attempt_window(ttl_ms: u64, drift_factor: f64) -> Duration {
    Duration::from_millis(ttl_ms.saturating_sub(drift_ms(ttl_ms, drift_factor)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_is_rounded_plus_two() {
        assert_eq!(drift_ms(10_000, 0.01), 102);
        assert_eq!(drift_ms(150, 0.01), 4); // 1.5 rounds to 2
        assert_eq!(drift_ms(149, 0.01), 3); // 1.49 rounds to 1
        assert_eq!(drift_ms(1, 0.01), 2);
        assert_eq!(drift_ms(1000, 0.0), 2);
    }

    #[test]
    fn validity_edges() {
        let ms = Duration::from_millis;
        assert_eq!(validity_ms(10_000, ms(0), 0.01), 9_898);
        assert_eq!(validity_ms(10_000, ms(9_897), 0.01), 1);
        assert_eq!(validity_ms(10_000, ms(9_898), 0.01), 0);
        assert_eq!(validity_ms(10_000, ms(9_899), 0.01), -1);
        // Part of a ms counts as a whole one.
        let us = Duration::from_micros;
        assert_eq!(validity_ms(10_000, us(9_896_200), 0.01), 1);
        assert_eq!(validity_ms(10_000, us(9_897_001), 0.01), 0);
        assert_eq!(
            validity_ms(3, us(300), 0.01),
            0,
            "a 3 ms lock 0.3 ms in: none left"
        );
        // A ttl smaller than the drift has no validity even at once.
        assert_eq!(validity_ms(2, ms(0), 0.01), 0);
        assert_eq!(validity_ms(1, ms(0), 0.01), -1);
        // Huge elapsed times saturate instead of wrapping.
        assert!(validity_ms(5, Duration::from_secs(u64::MAX), 0.01) < 0);
    }

    #[test]
    fn window_matches_validity_zero() {
        let w = attempt_window(10_000, 0.01);
        assert_eq!(validity_ms(10_000, w, 0.01), 0);
        assert_eq!(attempt_window(1, 0.01), Duration::ZERO);
    }
}
