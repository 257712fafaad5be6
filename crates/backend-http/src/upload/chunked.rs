//! Chunked uploads and remembered sessions: a blob sent a chunk at a
//! time, each chunk recorded so an interrupted upload can be continued,
//! and, after a failure whose effect is unknown, the session asked where
//! it stands before anything is sent again.

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use orca_core::{Body, Descriptor, Error, Result};
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use std::time::Duration;

use super::{CHUNK_ATTEMPTS, cancel, complete};
use crate::client::Request;
use crate::repository::{RegistryBackend, location};
use crate::sessions::Record;

/// The remembered session of `descriptor`'s upload, if the registry still
/// has it: its newest `Location` and the bytes it holds. A session the
/// registry no longer knows, or that disagrees with the record, is
/// forgotten.
pub(crate) async fn open_session(
    backend: &RegistryBackend,
    descriptor: &Descriptor,
) -> Result<Option<(String, u64)>> {
    let Some(sessions) = backend.options.sessions.as_ref() else {
        return Ok(None);
    };
    // A session another push is running is not ours to judge.
    let Some(_claim) = sessions.claim(&backend.place, &descriptor.digest) else {
        return Ok(None);
    };
    session_held(backend, descriptor, sessions).await
}

/// [`open_session`] for a caller that holds the claim.
pub(super) async fn session_held(
    backend: &RegistryBackend,
    descriptor: &Descriptor,
    sessions: &crate::sessions::Sessions,
) -> Result<Option<(String, u64)>> {
    let Some(record) = sessions.load(&backend.place, &descriptor.digest) else {
        return Ok(None);
    };
    let held = session_status(backend, &record.location).await;
    match held {
        Some((url, held)) if held == record.offset && held > 0 => Ok(Some((url, held))),
        _ => {
            cancel(backend, &record.location).await;
            sessions.forget(&backend.place, &descriptor.digest);
            Ok(None)
        }
    }
}

/// How a chunked upload goes: chunk size, where it starts, and where its
/// session is remembered (when this push holds the claim).
pub(super) struct Chunks<'a> {
    pub(super) size: u64,
    pub(super) offset: u64,
    pub(super) sessions: Option<&'a crate::sessions::Sessions>,
}

/// Sends `body` (the content from the start offset on) in chunks of
/// the chunk size, then completes the upload. `url` always holds the newest
/// `Location`, for the caller to cancel on failure.
pub(super) async fn push_chunked(
    backend: &RegistryBackend,
    descriptor: &Descriptor,
    mut body: Body,
    url: &mut String,
    chunks: Chunks<'_>,
) -> Result<()> {
    let Chunks {
        size: chunk_size,
        mut offset,
        sessions,
    } = chunks;
    let chunk_size = usize::try_from(chunk_size).unwrap_or(usize::MAX);
    let mut buffer = BytesMut::with_capacity(chunk_size.min(64 * 1024 * 1024));
    let mut ended = false;
    loop {
        // Fill one chunk (the body's chunks may be larger or smaller), so a
        // source that stalls or fails does so between requests.
        while buffer.len() < chunk_size && !ended {
            match body.next().await {
                Some(chunk) => buffer.extend_from_slice(&chunk?),
                None => ended = true,
            }
        }
        if buffer.is_empty() {
            break;
        }
        let part = buffer.split_to(buffer.len().min(chunk_size)).freeze();
        let end = offset + part.len() as u64 - 1;
        send_chunk(backend, descriptor, url, part, offset).await?;
        offset = end + 1;
        if let Some(sessions) = sessions {
            let record = Record {
                location: url.clone(),
                offset,
            };
            let _ = sessions.save(&backend.place, &descriptor.digest, &record);
        }
    }
    complete(backend, descriptor, url).await
}

/// Sends one chunk starting at byte `offset`, leaving the newest
/// `Location` in `url`. After a failure whose effect is unknown (a 5xx, a
/// connection lost before the answer) the session is asked where it
/// stands: a chunk it took is not sent again, one it did not take is sent
/// again to the newest `Location`, never to a stale one.
async fn send_chunk(
    backend: &RegistryBackend,
    descriptor: &Descriptor,
    url: &mut String,
    part: Bytes,
    offset: u64,
) -> Result<()> {
    let end = offset + part.len() as u64;
    let what = || format!("blob {} (chunk at {offset})", descriptor.digest);
    // What is still to send: the session may keep part of a chunk whose
    // request broke off, and then only the rest goes again.
    let (mut start, mut data) = (offset, part);
    let mut tries = 0;
    loop {
        let request = Request::new(Method::PATCH, url.clone())
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_RANGE, format!("{start}-{}", end - 1))
            .header(CONTENT_LENGTH, data.len().to_string())
            .body(data.clone())
            .once();
        let failure = match backend
            .client
            .send(&request, &backend.scope(true), "push")
            .await
        {
            Ok(response) if response.status() == StatusCode::ACCEPTED => {
                // Every answer carries a new Location (with signed state).
                if let Some(newest) = location(&backend.client, &response) {
                    *url = newest;
                }
                return Ok(());
            }
            Ok(response) if !response.status().is_server_error() => {
                return Err(backend.fail(response, "push", what()).await);
            }
            Ok(response) => backend.fail(response, "push", what()).await,
            Err(e) => e,
        };
        tries += 1;
        if tries >= CHUNK_ATTEMPTS {
            return Err(failure);
        }
        tokio::time::sleep(Duration::from_millis(100 << tries)).await;
        let Some((newest, held)) = session_status(backend, url).await else {
            return Err(failure);
        };
        *url = newest;
        if held == end {
            return Ok(());
        }
        if held < start || held > end {
            return Err(Error::Backend {
                backend: backend.place.clone(),
                operation: "push",
                source: format!(
                    "after a failed chunk at byte {start}, the upload session holds {held} bytes"
                )
                .into(),
            });
        }
        let kept = usize::try_from(held - start).unwrap_or(data.len());
        data = data.slice(kept..);
        start = held;
    }
}

/// Where an upload session stands: its newest `Location` and the bytes it
/// holds, from `GET` on the session.
async fn session_status(backend: &RegistryBackend, url: &str) -> Option<(String, u64)> {
    let request = Request::new(Method::GET, url);
    let response = backend
        .client
        .send(&request, &backend.scope(true), "upload status")
        .await
        .ok()
        .filter(|r| r.status() == StatusCode::NO_CONTENT)?;
    let held = match response
        .headers()
        .get(reqwest::header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("0-"))
    {
        // "0-0" stands for no bytes (and, ambiguously, for one).
        Some("0") | None => 0,
        Some(last) => last.parse::<u64>().ok()?.checked_add(1)?,
    };
    let newest = location(&backend.client, &response).unwrap_or_else(|| url.to_owned());
    Some((newest, held))
}
