//! Time limits that follow progress, not the clock, for requests with a
//! body: an upload fails when its body has not moved for the idle time
//! (the server stopped reading, the link died), or when no response head
//! came within the response time after the body ended — never because it
//! took long. reqwest's own `read_timeout` cannot do this: it runs from
//! the start of the request, through the whole upload.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::{RequestBuilder, Response};

/// The two limits of a request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// How long the body may sit unsent, and a response body unread.
    pub(crate) idle: Duration,
    /// How long the response head may take once the request is sent.
    pub(crate) response: Duration,
}

/// Why a watched request did not get its response.
#[derive(Debug)]
pub(crate) enum Gave {
    /// The body did not move for this long.
    Stalled(Duration),
    /// No response head this long after the body ended.
    NoAnswer(Duration),
    /// The request failed on its own.
    Failed(reqwest::Error),
}

impl std::fmt::Display for Gave {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Gave::Stalled(idle) => write!(
                f,
                "the upload made no progress for {} s (the connection stalled)",
                idle.as_secs_f64()
            ),
            Gave::NoAnswer(wait) => {
                write!(f, "no answer within {} s", wait.as_secs_f64())
            }
            Gave::Failed(e) => write!(f, "{e}"),
        }
    }
}

/// Where a body stands: nanoseconds since the start at its last movement,
/// and when it ended (0 until it does).
struct Progress {
    start: Instant,
    moved: AtomicU64,
    ended: AtomicU64,
}

impl Progress {
    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Sends `builder` with `body` (of `len` bytes, when known) streamed as
/// its body, under `limits`.
pub(crate) async fn send<S, E>(
    builder: RequestBuilder,
    body: S,
    len: Option<u64>,
    limits: Limits,
) -> std::result::Result<Response, Gave>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    let progress = Arc::new(Progress {
        start: Instant::now(),
        moved: AtomicU64::new(0),
        ended: AtomicU64::new(0),
    });
    let seen = progress.clone();
    let ended = progress.clone();
    let mut sent = 0u64;
    let body = body
        .inspect(move |chunk| {
            let now = seen.now();
            seen.moved.store(now, Ordering::Relaxed);
            if let Ok(chunk) = chunk {
                sent += chunk.len() as u64;
                // All of it handed over: the wait for the answer begins,
                // whether or not the sender asks for the end.
                if len.is_some_and(|len| sent >= len) {
                    seen.ended.store(now.max(1), Ordering::Relaxed);
                }
            }
        })
        .chain(futures::stream::poll_fn(move |_| {
            ended.ended.store(ended.now().max(1), Ordering::Relaxed);
            std::task::Poll::Ready(None)
        }));
    let sending = builder.body(reqwest::Body::wrap_stream(body)).send();
    tokio::pin!(sending);
    let tick = (limits.idle.min(limits.response) / 4).max(Duration::from_millis(5));
    let mut ticks = tokio::time::interval(tick);
    loop {
        tokio::select! {
            sent = &mut sending => return sent.map_err(Gave::Failed),
            _ = ticks.tick() => {
                let now = progress.now();
                let ended = progress.ended.load(Ordering::Relaxed);
                if ended > 0 {
                    if Duration::from_nanos(now.saturating_sub(ended)) > limits.response {
                        return Err(Gave::NoAnswer(limits.response));
                    }
                } else {
                    let moved = progress.moved.load(Ordering::Relaxed);
                    if Duration::from_nanos(now.saturating_sub(moved)) > limits.idle {
                        return Err(Gave::Stalled(limits.idle));
                    }
                }
            }
        }
    }
}

/// Splits in-memory bytes into a stream of slices, so their sending shows
/// as progress.
pub(crate) fn slices(
    bytes: Bytes,
) -> impl Stream<Item = std::result::Result<Bytes, std::io::Error>> + Send + 'static {
    const SLICE: usize = 64 * 1024;
    let count = bytes.len().div_ceil(SLICE);
    futures::stream::iter((0..count).map(move |i| {
        let end = ((i + 1) * SLICE).min(bytes.len());
        Ok(bytes.slice(i * SLICE..end))
    }))
}
