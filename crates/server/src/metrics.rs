//! What the server counts, served at `/metrics` in Prometheus' text
//! format: requests by route and status, bytes in and out, upload sessions
//! this process started and ended, request latency histograms by route,
//! and garbage collection runs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Default)]
struct Latency {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The server's counters.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    latency: Mutex<BTreeMap<&'static str, Latency>>,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    sessions_started: AtomicU64,
    sessions_ended: AtomicU64,
    gc_runs: AtomicU64,
    gc_failures: AtomicU64,
}

impl Metrics {
    /// One request answered.
    pub(crate) fn request(
        &self,
        route: &'static str,
        status: u16,
        took: Duration,
        bytes_in: u64,
        bytes_out: u64,
    ) {
        if let Ok(mut requests) = self.requests.lock() {
            *requests.entry((route, status)).or_default() += 1;
        }
        if let Ok(mut latency) = self.latency.lock() {
            let entry = latency.entry(route).or_default();
            let seconds = took.as_secs_f64();
            for (i, bound) in BUCKETS.iter().enumerate() {
                if seconds <= *bound {
                    entry.counts[i] += 1;
                }
            }
            entry.count += 1;
            entry.sum += seconds;
        }
        self.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
    }

    /// An upload session started here.
    pub(crate) fn session_started(&self) {
        self.sessions_started.fetch_add(1, Ordering::Relaxed);
    }

    /// An upload session ended here (completed or cancelled).
    pub(crate) fn session_ended(&self) {
        self.sessions_ended.fetch_add(1, Ordering::Relaxed);
    }

    /// A garbage collection of one repository ran.
    pub(crate) fn gc_run(&self, ok: bool) {
        self.gc_runs.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.gc_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP orca_requests_total Requests answered, by route and status."
        );
        let _ = writeln!(out, "# TYPE orca_requests_total counter");
        if let Ok(requests) = self.requests.lock() {
            for ((route, status), count) in requests.iter() {
                let _ = writeln!(
                    out,
                    "orca_requests_total{{route=\"{route}\",status=\"{status}\"}} {count}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP orca_request_seconds Time to answer a request (to its headers), by route."
        );
        let _ = writeln!(out, "# TYPE orca_request_seconds histogram");
        if let Ok(latency) = self.latency.lock() {
            for (route, histogram) in latency.iter() {
                for (i, bound) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "orca_request_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {}",
                        histogram.counts[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "orca_request_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                    histogram.count
                );
                let _ = writeln!(
                    out,
                    "orca_request_seconds_sum{{route=\"{route}\"}} {}",
                    histogram.sum
                );
                let _ = writeln!(
                    out,
                    "orca_request_seconds_count{{route=\"{route}\"}} {}",
                    histogram.count
                );
            }
        }
        let counters = [
            (
                "orca_received_bytes_total",
                "Bytes of request bodies declared.",
                &self.bytes_in,
            ),
            (
                "orca_sent_bytes_total",
                "Bytes of answer bodies declared.",
                &self.bytes_out,
            ),
            (
                "orca_upload_sessions_started_total",
                "Upload sessions this process started.",
                &self.sessions_started,
            ),
            (
                "orca_upload_sessions_ended_total",
                "Upload sessions this process completed or cancelled.",
                &self.sessions_ended,
            ),
            (
                "orca_gc_runs_total",
                "Garbage collections of one repository.",
                &self.gc_runs,
            ),
            (
                "orca_gc_failures_total",
                "Garbage collections that failed.",
                &self.gc_failures,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        let open = self
            .sessions_started
            .load(Ordering::Relaxed)
            .saturating_sub(self.sessions_ended.load(Ordering::Relaxed));
        let _ = writeln!(
            out,
            "# HELP orca_upload_sessions_open Upload sessions this process started and has not seen end."
        );
        let _ = writeln!(out, "# TYPE orca_upload_sessions_open gauge");
        let _ = writeln!(out, "orca_upload_sessions_open {open}");
        out
    }
}

/// Writes one metric family to `out`: its `HELP` and `TYPE` lines, then a
/// sample per `(labels, value)` (`labels` as `key="value"`, or empty).
pub(crate) fn family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: impl IntoIterator<Item = (String, u64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}
