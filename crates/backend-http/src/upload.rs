//! Uploads: manifests by `PUT` (in `manifest`); blobs by `POST` + one streamed `PATCH` +
//! `PUT ?digest=`, or, for large blobs, `POST` + `PATCH` per chunk + `PUT`,
//! always following the newest `Location`. A failed upload is cancelled at
//! its newest `Location`, so no session stays open at the registry; so is
//! one whose push is dropped, through `orca_core::cleanup`.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use orca_core::{Body, Descriptor, Error, Result};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, StatusCode};

use crate::client::Request;
use crate::repository::{RegistryBackend, location, urlencode};
use crate::sessions::Record;

mod chunked;
mod manifest;

pub(crate) use chunked::open_session;
use chunked::{Chunks, push_chunked, session_held};
pub(crate) use manifest::{put_manifest, put_tagged};

const OCI_CHUNK_MIN_LENGTH: &str = "oci-chunk-min-length";
/// The largest chunk orca holds in memory, whatever minimum a registry asks.
const MAX_CHUNK: u64 = 64 * 1024 * 1024;
/// Attempts at one chunk whose sending failed in an unknown way.
const CHUNK_ATTEMPTS: u32 = 4;

/// Starts an upload session; returns its location and the registry's
/// minimum chunk size, if it said one.
async fn start(backend: &RegistryBackend, query: &str) -> Result<Started> {
    let request = Request::new(
        Method::POST,
        backend.path(&format!("blobs/uploads/{query}")),
    )
    .header(CONTENT_LENGTH, "0");
    let response = backend
        .client
        .send(&request, &backend.scope(true), "push")
        .await?;
    let status = response.status();
    if status != StatusCode::ACCEPTED && status != StatusCode::CREATED {
        return Err(backend
            .fail(response, "push", "upload session".into())
            .await);
    }
    let min_chunk = response
        .headers()
        .get(OCI_CHUNK_MIN_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let url = location(&backend.client, &response).ok_or_else(|| Error::Backend {
        backend: backend.place.clone(),
        operation: "push",
        source: "the registry started an upload without a Location".into(),
    })?;
    Ok((status, url, min_chunk))
}

/// Cancels an upload session, best effort.
async fn cancel(backend: &RegistryBackend, url: &str) {
    let request = Request::new(Method::DELETE, url);
    let _ = backend
        .client
        .send(&request, &backend.scope(true), "cancel upload")
        .await;
}

fn with_query(url: &str, key: &str, value: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{key}={}", urlencode(value))
}

/// Pushes a blob, monolithic or chunked; with `offset` above zero,
/// continues the chunked upload a remembered session holds (the registry
/// checks the whole digest when it completes). A failed upload is
/// cancelled at its newest `Location` and forgotten; one whose future is
/// dropped stays remembered, to be continued.
pub(crate) async fn push_blob(
    backend: &RegistryBackend,
    descriptor: &Descriptor,
    body: Body,
    offset: u64,
) -> Result<()> {
    // The session is this push's alone while it runs: another push of
    // the same blob neither continues nor cancels it (nor this one
    // theirs); a push that cannot claim it goes without remembering.
    let claim = backend
        .options
        .sessions
        .as_ref()
        .and_then(|s| s.claim(&backend.place, &descriptor.digest));
    let sessions = backend
        .options
        .sessions
        .as_ref()
        .filter(|_| claim.is_some());
    let (mut url, chunked, size) = if offset > 0 {
        let held = match sessions {
            Some(sessions) => session_held(backend, descriptor, sessions).await?,
            None => None,
        };
        let Some(url) = held.filter(|(_, held)| *held == offset).map(|(url, _)| url) else {
            return Err(Error::Conflict {
                what: format!("resumed upload of {} at byte {offset}", descriptor.digest),
                place: backend.place.clone(),
            });
        };
        (url, true, backend.options.chunk_size)
    } else {
        // Started by a task of its own: a push dropped while the `POST` is
        // under way still learns the session's `Location` and cancels it.
        let starter = backend.clone();
        let mut starting = Starting {
            backend: backend.clone(),
            digest: descriptor.digest.to_string(),
            task: Some(tokio::spawn(async move { start(&starter, "").await })),
        };
        let (_, url, min_chunk) = starting.wait().await?;
        // `OCI-Chunk-Min-Length` binds chunked uploads only: it never
        // forces chunking, and a minimum above what orca buffers per chunk
        // sends the blob in one request instead.
        let min_chunk = min_chunk.unwrap_or(0);
        let chunked = descriptor.size > backend.options.chunk_threshold && min_chunk <= MAX_CHUNK;
        (url, chunked, backend.options.chunk_size.max(min_chunk))
    };
    // Dropped unfinished (a sibling transfer failed, the copy was
    // cancelled), the session is cancelled in the background — unless it
    // is remembered, to be continued.
    let mut abandon = Abandon {
        backend: backend.clone(),
        url: url.clone(),
        armed: !(chunked && sessions.is_some()),
        digest: descriptor.digest.to_string(),
        kept: chunked && sessions.is_some(),
        inflight: None,
    };
    let outcome = if chunked {
        if let Some(sessions) = sessions {
            let record = Record {
                location: url.clone(),
                offset,
            };
            let _ = sessions.save(&backend.place, &descriptor.digest, &record);
        }
        let chunks = Chunks {
            size,
            offset,
            sessions,
        };
        push_chunked(backend, descriptor, body, &mut abandon.url, chunks).await
    } else {
        push_streamed(backend, descriptor, body, &mut abandon).await
    };
    abandon.armed = false;
    abandon.kept = false;
    url = abandon.url.clone();
    if outcome.is_err() {
        cancel(backend, &url).await;
    }
    // A continued upload the registry refuses (what the session held was
    // not the start of this blob) is a conflict: the caller sends the
    // whole blob instead.
    let outcome = match outcome {
        Err(Error::Rejected { message, .. }) if offset > 0 => Err(Error::Conflict {
            what: format!(
                "continued upload of {} (the registry refused it: {message})",
                descriptor.digest
            ),
            place: backend.place.clone(),
        }),
        other => other,
    };
    if let Some(sessions) = sessions.filter(|_| chunked) {
        sessions.forget(&backend.place, &descriptor.digest);
    }
    outcome
}

/// Cancels an upload session whose push was dropped before it ended (a
/// sibling transfer failed, the copy was cancelled, the command was
/// interrupted): the clean-up is handed to `orca_core::cleanup`, which a
/// program about to exit waits for. A streamed `PATCH` in flight is ended
/// where it is first (a chunked request ends cleanly, so the registry
/// answers with the session's newest `Location`, where it can cancel it).
/// A session remembered for a later push to continue is kept, and said so.
struct Abandon {
    backend: RegistryBackend,
    /// The session's newest `Location`.
    url: String,
    armed: bool,
    /// The digest being pushed, for what is said.
    digest: String,
    /// Kept for a later push to continue (a recorded chunked upload).
    kept: bool,
    /// The streamed `PATCH` in flight: how to end its body, and the task
    /// that sends it.
    inflight: Option<Inflight>,
}

/// An upload session being started (its `POST` sent by a task of its
/// own); dropped before it is known, the session is cancelled once the
/// `POST` answers.
struct Starting {
    backend: RegistryBackend,
    digest: String,
    task: Option<tokio::task::JoinHandle<Result<Started>>>,
}

/// What starting an upload answered: the status, the session's `Location`
/// and the registry's minimum chunk length, if it names one.
type Started = (StatusCode, String, Option<u64>);

impl Drop for Starting {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else {
            return;
        };
        let backend = self.backend.clone();
        let what = format!(
            "cancelling the upload session of {} on {}",
            self.digest, backend.place
        );
        orca_core::cleanup::spawn(what, async move {
            if let Ok(Ok((_, url, _))) = task.await {
                cancel(&backend, &url).await;
            }
        });
    }
}

impl Starting {
    /// Waits for the `POST`'s answer; from then on, dropping this does
    /// nothing (the caller guards the session).
    async fn wait(&mut self) -> Result<Started> {
        let stopped = |reason: String| Error::Backend {
            backend: self.backend.place.clone(),
            operation: "push",
            source: format!("starting the upload of {}: {reason}", self.digest).into(),
        };
        let Some(task) = self.task.as_mut() else {
            return Err(stopped("already started".into()));
        };
        let started = task.await;
        self.task = None;
        started.map_err(|e| stopped(e.to_string()))?
    }
}

/// A streamed `PATCH` sent by a task of its own, so that an abandoned push
/// can end its body cleanly and still read the answer.
struct Inflight {
    stop: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<Result<reqwest::Response>>,
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if self.kept {
            orca_core::cleanup::keep(format!(
                "the upload session of {} on {}, recorded for a re-run to continue",
                self.digest, self.backend.place
            ));
            return;
        }
        if !self.armed {
            return;
        }
        let (backend, mut url) = (self.backend.clone(), std::mem::take(&mut self.url));
        let inflight = self.inflight.take();
        let what = format!(
            "cancelling the upload session of {} on {}",
            self.digest, backend.place
        );
        orca_core::cleanup::spawn(what, async move {
            if let Some(Inflight { stop, task }) = inflight {
                stop.notify_one();
                if let Ok(Ok(response)) = task.await
                    && response.status() == StatusCode::ACCEPTED
                    && let Some(newest) = location(&backend.client, &response)
                {
                    url = newest;
                }
            }
            cancel(&backend, &url).await;
        });
    }
}

/// Sends the whole body in one streamed `PATCH` (chunked transfer
/// encoding), then completes the upload with an empty `PUT ?digest=`.
/// When the body fails (a digest mismatch found at its end, the source cut
/// off) or the push is abandoned, the request ends cleanly where it stands
/// instead of breaking off: the registry then answers `202` with the
/// session's newest `Location`, whose signed state matches what it holds,
/// and the session can be cancelled there. (An aborted request leaves a
/// session whose state no longer matches its data, which distribution 2.8
/// cannot cancel; a single `PUT` with the body leaves the same.) The newest
/// `Location` ends in `abandon.url`.
async fn push_streamed(
    backend: &RegistryBackend,
    descriptor: &Descriptor,
    body: Body,
    abandon: &mut Abandon,
) -> Result<()> {
    // A body that fails before its first byte (a copy abandoned while
    // this transfer waited) sends nothing at all.
    let len = body.len();
    let mut stream = body.into_stream();
    let first = match stream.next().await {
        Some(Err(e)) => return Err(e),
        first => first,
    };
    let body = Body::new(len, futures::stream::iter(first).chain(stream));
    let failure = Arc::new(Mutex::new(None));
    let stop = Arc::new(tokio::sync::Notify::new());
    let stream = ending(body, failure.clone(), stop.clone());
    let (sender, url, scope) = (backend.clone(), abandon.url.clone(), backend.scope(true));
    let task = tokio::spawn(async move {
        sender
            .client
            .send_stream(
                Method::PATCH,
                &url,
                vec![(CONTENT_TYPE, "application/octet-stream".into())],
                stream,
                None,
                &scope,
                "push",
            )
            .await
    });
    let inflight = abandon.inflight.insert(Inflight { stop, task });
    let sent = (&mut inflight.task).await;
    abandon.inflight = None;
    let sent = sent.map_err(|e| Error::Backend {
        backend: backend.place.clone(),
        operation: "push",
        source: format!("the upload of {} stopped: {e}", descriptor.digest).into(),
    })?;
    if let Ok(response) = &sent
        && response.status() == StatusCode::ACCEPTED
        && let Some(newest) = location(&backend.client, response)
    {
        abandon.url = newest;
    }
    if let Some(e) = failure.lock().ok().and_then(|mut f| f.take()) {
        return Err(e);
    }
    let response = sent?;
    if response.status() != StatusCode::ACCEPTED {
        let what = format!("blob {}", descriptor.digest);
        return Err(backend.fail(response, "push", what).await);
    }
    complete(backend, descriptor, &abandon.url).await
}

/// The body as the request's stream, which ends early and cleanly when the
/// body fails (the error is kept in `failure`) or `stop` is notified (the
/// push was abandoned): the request then completes with what was sent.
/// An error after the body's last bytes is seen before them (one item is
/// read ahead), so a body found wrong at its end is never sent whole.
fn ending(
    body: Body,
    failure: Arc<Mutex<Option<Error>>>,
    stop: Arc<tokio::sync::Notify>,
) -> impl futures::Stream<Item = Result<Bytes>> + Send + 'static {
    struct State {
        stream: futures::stream::BoxStream<'static, Result<Bytes>>,
        held: Option<Bytes>,
        done: bool,
    }
    let state = State {
        stream: body.into_stream(),
        held: None,
        done: false,
    };
    futures::stream::unfold(state, move |mut state| {
        let (failure, stop) = (failure.clone(), stop.clone());
        async move {
            while !state.done {
                let next = tokio::select! {
                    biased;
                    () = stop.notified() => {
                        state.held = None;
                        state.done = true;
                        break;
                    }
                    next = state.stream.next() => next,
                };
                match next {
                    Some(Ok(chunk)) => {
                        if let Some(previous) = state.held.replace(chunk) {
                            return Some((Ok(previous), state));
                        }
                    }
                    None => state.done = true,
                    Some(Err(e)) => {
                        if let Ok(mut slot) = failure.lock() {
                            *slot = Some(e);
                        }
                        // What was read ahead is not sent either.
                        state.held = None;
                        state.done = true;
                    }
                }
            }
            state.held.take().map(|last| (Ok(last), state))
        }
    })
}

/// Mounts a blob from another repository of the same registry; a registry
/// that answers with an upload session instead declined, and the session
/// is cancelled.
pub(crate) async fn mount(
    backend: &RegistryBackend,
    descriptor: &Descriptor,
    from: &str,
) -> Result<bool> {
    let query = format!(
        "?mount={}&from={}",
        urlencode(&descriptor.digest.to_string()),
        urlencode(from)
    );
    // The token must also allow pulling from the source repository.
    let scope = format!("{} repository:{from}:pull", backend.scope(true));
    let request = Request::new(
        Method::POST,
        backend.path(&format!("blobs/uploads/{query}")),
    )
    .header(CONTENT_LENGTH, "0");
    let response = backend.client.send(&request, &scope, "mount").await?;
    match response.status() {
        StatusCode::CREATED => Ok(true),
        StatusCode::ACCEPTED => {
            if let Some(url) = location(&backend.client, &response) {
                cancel(backend, &url).await;
            }
            Ok(false)
        }
        _ => Err(backend
            .fail(response, "mount", format!("blob {}", descriptor.digest))
            .await),
    }
}

/// Completes an upload whose bytes the session holds: an empty `PUT`
/// naming the digest, which the registry checks.
async fn complete(backend: &RegistryBackend, descriptor: &Descriptor, url: &str) -> Result<()> {
    let request = Request::new(
        Method::PUT,
        with_query(url, "digest", &descriptor.digest.to_string()),
    )
    .header(CONTENT_LENGTH, "0");
    let response = backend
        .client
        .send(&request, &backend.scope(true), "push")
        .await?;
    committed(backend, descriptor, response).await
}

/// The answer to the request that completes a blob upload.
async fn committed(
    backend: &RegistryBackend,
    descriptor: &Descriptor,
    response: reqwest::Response,
) -> Result<()> {
    if response.status().is_success() {
        Ok(())
    } else {
        Err(backend
            .fail(response, "push", format!("blob {}", descriptor.digest))
            .await)
    }
}
