//! When a request is tried again: the retry settings with their jittered
//! exponential backoff, the statuses worth another attempt, and the wait a
//! server asks for (`Retry-After`).

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// Retry and pacing settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retry {
    pub(crate) attempts: u32,
    pub(crate) base: Duration,
    pub(crate) cap: Duration,
    /// The least time between two requests to the host (a rate limit of
    /// the caller's own), if any.
    pub(crate) pace: Option<Duration>,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 4,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(10),
            pace: None,
        }
    }
}

impl Retry {
    pub(super) fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(self.cap.max(Duration::from_secs(60)));
        }
        let exp = self.base.saturating_mul(1u32 << attempt.min(10));
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        // Full jitter: anywhere between half and all of the exponential step.
        let jitter = exp.mul_f64(0.5 + f64::from(nanos % 1000) / 2000.0);
        jitter.min(self.cap)
    }
}

/// The wait a server asks for, in whole seconds.
pub(super) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Whether a status is worth another attempt.
pub(super) fn transient(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::BAD_GATEWAY
        || status == StatusCode::SERVICE_UNAVAILABLE
        || status == StatusCode::GATEWAY_TIMEOUT
        || status == StatusCode::INTERNAL_SERVER_ERROR
}
