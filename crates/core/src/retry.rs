//! The small rules of waiting that every compare-and-swap loop in core
//! shares: how many times to try, how long to pause between tries, and
//! the clock stamps are read from.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Compare-and-swap attempts before an update gives up with a conflict
/// (with the pauses below, some twenty seconds of losing races).
pub(crate) const CAS_ATTEMPTS: u32 = 200;

/// The pause before attempt `attempt + 1` of a compare-and-swap: doubling
/// from 5 ms, capped at half a second, with jitter so that writers that
/// collided do not collide again.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let base = 5u64 << attempt.min(6);
    let seed = u64::from(unix_nanos() as u32) ^ u64::from(std::process::id());
    let jitter = seed.wrapping_mul(2_654_435_761) % base.max(1);
    Duration::from_millis(base + jitter).min(Duration::from_millis(500))
}

/// Nanoseconds since the epoch, by this machine's clock (0 before it).
pub(crate) fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Seconds since the epoch, by this machine's clock (0 before it).
pub(crate) fn unix_secs() -> u64 {
    u64::try_from(unix_nanos() / 1_000_000_000).unwrap_or(u64::MAX)
}
