//! Blobs: `GET`/`HEAD` (with byte ranges), `DELETE`, and every upload
//! form of the spec — monolithic `POST ?digest=`, `POST` then `PUT`,
//! streamed and chunked `PATCH`es (a chunk out of order is `416`), the
//! session's status, its cancellation, and mounts from another repository
//! (by the store's own mount where it has one, else streamed through).
//! Nothing becomes visible before the store verified it.

use axum::body::Body as HttpBody;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use orca::{Descriptor, Digest, MediaType};

use crate::errors::{Answer, ApiError};
use crate::routes::query_value;
use crate::{Shared, header_text, sessions, value};

/// A blob's descriptor (blobs carry no media type of their own here).
pub(crate) fn blob(digest: &Digest, size: u64) -> Descriptor {
    Descriptor::new(
        MediaType::new("application/octet-stream"),
        digest.clone(),
        size,
    )
}

pub(crate) fn parse_digest(text: &str) -> Result<Digest, ApiError> {
    Digest::parse(text).map_err(|e| ApiError::digest_invalid(format!("{text:?}: {e}")))
}

/// The repository, which must exist.
pub(crate) async fn existing(state: &Shared, name: &str) -> Result<orca::Repository, ApiError> {
    if !state.root.exists(name).await? {
        return Err(ApiError::name_unknown(name));
    }
    Ok(state.root.repository(name).await?)
}

/// A request body as a store body of `len` bytes.
fn body_of(body: HttpBody, len: u64) -> orca::Body {
    let stream = body.into_data_stream().map_err(|e| orca::Error::Failed {
        doing: "reading the request body".into(),
        source: Box::new(e),
    });
    orca::Body::new(len, stream)
}

/// The request's `Content-Length`, when it says one.
fn content_length(request: &Parts) -> Result<Option<u64>, ApiError> {
    match header_text(request, header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|_| ApiError::size_invalid(format!("Content-Length {text:?} is no number"))),
    }
}

/// A `Content-Range: START-END` of an upload chunk.
fn content_range(request: &Parts) -> Result<Option<(u64, u64)>, ApiError> {
    let Some(text) = header_text(request, header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let range = text
        .trim()
        .trim_start_matches("bytes ")
        .trim_start_matches("bytes=");
    let parsed = range.split_once('-').and_then(|(a, b)| {
        Some((
            a.trim().parse().ok()?,
            b.split('/').next()?.trim().parse().ok()?,
        ))
    });
    match parsed {
        Some((start, end)) if end >= start => Ok(Some((start, end))),
        _ => Err(ApiError::range_not_satisfiable(
            0,
            format!("Content-Range {text:?} is not START-END"),
        )),
    }
}

fn created(name: &str, digest: &Digest) -> Response {
    (
        StatusCode::CREATED,
        [
            (
                header::LOCATION,
                value(&format!("/v2/{name}/blobs/{digest}")),
            ),
            (
                header::HeaderName::from_static("docker-content-digest"),
                value(&digest.to_string()),
            ),
            (header::CONTENT_LENGTH, value("0")),
        ],
    )
        .into_response()
}

fn session(status: StatusCode, name: &str, id: &str, offset: u64) -> Response {
    (
        status,
        [
            (
                header::LOCATION,
                value(&format!("/v2/{name}/blobs/uploads/{id}")),
            ),
            (
                header::RANGE,
                value(&format!("0-{}", offset.saturating_sub(1))),
            ),
            (
                header::HeaderName::from_static("docker-upload-uuid"),
                value(id),
            ),
            (header::CONTENT_LENGTH, value("0")),
        ],
    )
        .into_response()
}

/// `GET`/`HEAD /v2/<name>/blobs/<digest>`, with `Range: bytes=A-B`.
pub(crate) async fn get(state: &Shared, name: &str, digest: &str, request: &Parts) -> Answer {
    let digest = parse_digest(digest)?;
    let repository = existing(state, name).await?;
    let store = &repository.store;
    let size = store
        .stat(&blob(&digest, 0))
        .await?
        .ok_or_else(|| ApiError::blob_unknown(&digest))?;
    let descriptor = blob(&digest, size);
    let head = request.method == axum::http::Method::HEAD;
    let range = match header_text(request, header::RANGE) {
        Some(text) => Some(byte_range(text, size).ok_or_else(|| {
            ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "SIZE_INVALID",
                format!("range {text:?} is not within the blob's {size} bytes"),
            )
            .with_header(header::CONTENT_RANGE, value(&format!("bytes */{size}")))
        })?),
        None => None,
    };
    let (status, length, body) = match range {
        Some((start, end)) => {
            let body = if head {
                HttpBody::empty()
            } else {
                HttpBody::from_stream(
                    store
                        .fetch_range(&descriptor, start..end + 1)
                        .await?
                        .into_stream(),
                )
            };
            (StatusCode::PARTIAL_CONTENT, end + 1 - start, body)
        }
        None => {
            // Checked when it was written; served as stored, its length
            // checked, as a range is: the client hashes what it reads (every
            // client does), and a second hash here would halve the CPU
            // left for serving.
            let body = if head {
                HttpBody::empty()
            } else if size == 0 {
                HttpBody::from_stream(store.fetch(&descriptor).await?.into_stream())
            } else {
                HttpBody::from_stream(store.fetch_range(&descriptor, 0..size).await?.into_stream())
            };
            (StatusCode::OK, size, body)
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, value(&length.to_string()));
    headers.insert(header::CONTENT_TYPE, value("application/octet-stream"));
    headers.insert(header::ACCEPT_RANGES, value("bytes"));
    headers.insert("docker-content-digest", value(&digest.to_string()));
    if let Some((start, end)) = range {
        headers.insert(
            header::CONTENT_RANGE,
            value(&format!("bytes {start}-{end}/{size}")),
        );
    }
    Ok(response)
}

/// `bytes=A-B`, `bytes=A-` or `bytes=-N` within `size`, as inclusive ends.
fn byte_range(text: &str, size: u64) -> Option<(u64, u64)> {
    let spec = text.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || size == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().ok()?;
            (size.checked_sub(n.min(size))?, size - 1)
        }
        (start, "") => (start.parse().ok()?, size - 1),
        (start, end) => (start.parse().ok()?, end.parse::<u64>().ok()?.min(size - 1)),
    };
    (start <= end && start < size).then_some((start, end))
}

/// `DELETE /v2/<name>/blobs/<digest>`.
pub(crate) async fn delete(state: &Shared, name: &str, digest: &str) -> Answer {
    let digest = parse_digest(digest)?;
    let repository = existing(state, name).await?;
    let size = repository
        .store
        .stat(&blob(&digest, 0))
        .await?
        .ok_or_else(|| ApiError::blob_unknown(&digest))?;
    repository.store.delete(&blob(&digest, size)).await?;
    Ok((StatusCode::ACCEPTED, [(header::CONTENT_LENGTH, "0")]).into_response())
}

/// `POST /v2/<name>/blobs/uploads/`: a mount, a monolithic upload, or a
/// new session.
pub(crate) async fn start(state: &Shared, name: &str, request: &Parts, body: HttpBody) -> Answer {
    let query = request.uri.query();
    let repository = state.root.create(name).await?;
    // No mount into a pull-through namespace: what it holds comes from
    // upstream (or is uploaded with a referrer); the client uploads.
    let pulled_through = state.cache.as_ref().is_some_and(|c| c.pulls_through(name));
    if let Some(mount) = query_value(query, "mount").filter(|_| !pulled_through) {
        let digest = parse_digest(&mount)?;
        if mounted(state, &repository, &digest, query_value(query, "from")).await? {
            share(state, name, &digest).await;
            return Ok(created(name, &digest));
        }
    } else if let Some(digest) = query_value(query, "digest") {
        let digest = parse_digest(&digest)?;
        let len = content_length(request)?;
        return match len {
            Some(len) => {
                repository
                    .store
                    .push(&blob(&digest, len), body_of(body, len))
                    .await?;
                share(state, name, &digest).await;
                Ok(created(name, &digest))
            }
            None => {
                let id = sessions::create(repository.storage.as_ref()).await?;
                let stream = body.into_data_stream();
                sessions::append(
                    repository.storage.as_ref(),
                    &id,
                    0,
                    stream,
                    state.limits.blob,
                )
                .await?;
                complete(state, name, &repository, &id, &digest).await
            }
        };
    }
    let id = sessions::create(repository.storage.as_ref()).await?;
    state.metrics.session_started();
    Ok(session(StatusCode::ACCEPTED, name, &id, 0))
}

/// How many repositories an anonymous mount looks in for the blob.
const ANONYMOUS_MOUNT_LOOKS: usize = 64;

/// Mounts `digest` into `repository` from repository `from` (or finds it
/// there already); `false` when it is not to be had and the client must
/// upload it.
pub(crate) async fn mounted(
    state: &Shared,
    repository: &orca::Repository,
    digest: &Digest,
    from: Option<String>,
) -> Result<bool, ApiError> {
    if repository.store.stat(&blob(digest, 0)).await?.is_some() {
        return Ok(true);
    }
    let Some(from) = from else {
        // An anonymous mount: from any repository of the root that holds
        // the blob (the first few the catalog lists). Not where access is
        // checked: it would tell what other repositories hold.
        if !state.auth.is_open() {
            return Ok(false);
        }
        let (first, _) = state
            .root
            .repositories_page(None, Some(ANONYMOUS_MOUNT_LOOKS))
            .await?;
        for other in first {
            let source = state.root.repository(&other).await?;
            if source.store.stat(&blob(digest, 0)).await?.is_some() {
                return Box::pin(mounted(state, repository, digest, Some(other))).await;
            }
        }
        return Ok(false);
    };
    if orca::model::reference::validate_repository(&from).is_err()
        || !state.root.exists(&from).await?
    {
        return Ok(false);
    }
    let source = state.root.repository(&from).await?;
    let Some(size) = source.store.stat(&blob(digest, 0)).await? else {
        return Ok(false);
    };
    let descriptor = blob(digest, size);
    let linked = !source.location.is_empty()
        && repository.store.capabilities().mount
        && repository
            .store
            .mount(&descriptor, &source.location)
            .await
            .unwrap_or(false);
    if !linked {
        // No link between the two: the bytes go through, verified.
        let body = source.store.fetch(&descriptor).await?;
        repository.store.push(&descriptor, body).await?;
    }
    Ok(true)
}

/// `GET /v2/<name>/blobs/uploads/<id>`: where the session stands.
pub(crate) async fn status(state: &Shared, name: &str, id: &str) -> Answer {
    let repository = existing(state, name).await?;
    let (_, offset) = sessions::state(repository.storage.as_ref(), id).await?;
    Ok(session(StatusCode::NO_CONTENT, name, id, offset))
}

/// `PATCH /v2/<name>/blobs/uploads/<id>`: the next bytes, streamed or as
/// a chunk with `Content-Range`.
pub(crate) async fn patch(
    state: &Shared,
    name: &str,
    id: &str,
    request: &Parts,
    body: HttpBody,
) -> Answer {
    let repository = existing(state, name).await?;
    let storage = repository.storage.as_ref();
    let (_, offset) = sessions::state(storage, id).await?;
    check_chunk(request, offset)?;
    let stream = body.into_data_stream();
    let offset = sessions::append(storage, id, offset, stream, state.limits.blob).await?;
    Ok(session(StatusCode::ACCEPTED, name, id, offset))
}

/// A chunk's `Content-Range` must start where the session stands, and
/// agree with its `Content-Length`.
fn check_chunk(request: &Parts, offset: u64) -> Result<(), ApiError> {
    let Some((start, end)) = content_range(request)? else {
        return Ok(());
    };
    if start != offset {
        return Err(ApiError::range_not_satisfiable(
            offset,
            format!("the chunk starts at byte {start}, the upload stands at {offset}"),
        ));
    }
    if let Some(len) = content_length(request)?
        && len != end - start + 1
    {
        return Err(ApiError::range_not_satisfiable(
            offset,
            format!("Content-Range {start}-{end} does not match Content-Length {len}"),
        ));
    }
    Ok(())
}

/// `PUT /v2/<name>/blobs/uploads/<id>?digest=`: the last bytes, if any,
/// then the blob is published once the store verified it.
pub(crate) async fn finish(
    state: &Shared,
    name: &str,
    id: &str,
    request: &Parts,
    body: HttpBody,
) -> Answer {
    let Some(digest) = query_value(request.uri.query(), "digest") else {
        return Err(ApiError::digest_invalid(
            "the upload's PUT names no ?digest=",
        ));
    };
    let digest = parse_digest(&digest)?;
    let repository = existing(state, name).await?;
    let storage = repository.storage.as_ref();
    let (_, offset) = sessions::state(storage, id).await?;
    check_chunk(request, offset)?;
    let len = content_length(request)?;
    match len {
        // The whole blob in this one request: straight into the store.
        Some(len) if offset == 0 && len > 0 => {
            repository
                .store
                .push(&blob(&digest, len), body_of(body, len))
                .await?;
            sessions::remove(storage, id).await?;
            share(state, name, &digest).await;
            Ok(created(name, &digest))
        }
        Some(0) => {
            let done = complete(state, name, &repository, id, &digest).await?;
            state.metrics.session_ended();
            Ok(done)
        }
        _ => {
            let stream = body.into_data_stream();
            sessions::append(storage, id, offset, stream, state.limits.blob).await?;
            let done = complete(state, name, &repository, id, &digest).await?;
            state.metrics.session_ended();
            Ok(done)
        }
    }
}

/// Publishes what session `id` holds as `digest`, verified, and ends it.
async fn complete(
    state: &Shared,
    name: &str,
    repository: &orca::Repository,
    id: &str,
    digest: &Digest,
) -> Answer {
    let storage = repository.storage.as_ref();
    let (pieces, total) = sessions::state(storage, id).await?;
    let descriptor = blob(digest, total);
    if !sessions::publish(storage, id, &descriptor).await? {
        let body = sessions::read(repository.storage.clone(), pieces, total);
        repository.store.push(&descriptor, body).await?;
    }
    sessions::remove(storage, id).await?;
    share(state, name, digest).await;
    Ok(created(name, digest))
}

/// Stores blob `digest` of `name` once across the root (a directory's
/// repositories link one file); a failure costs only the sharing, and is
/// logged.
pub(crate) async fn share(state: &Shared, name: &str, digest: &Digest) {
    if let Err(e) = state.root.share(name, digest).await {
        tracing::warn!(repository = %name, %digest, error = %e, "sharing a blob failed");
    }
}

/// `DELETE /v2/<name>/blobs/uploads/<id>`.
pub(crate) async fn cancel(state: &Shared, name: &str, id: &str) -> Answer {
    let repository = existing(state, name).await?;
    let storage = repository.storage.as_ref();
    sessions::state(storage, id).await?;
    sessions::remove(storage, id).await?;
    state.metrics.session_ended();
    Ok((StatusCode::NO_CONTENT, [(header::CONTENT_LENGTH, "0")]).into_response())
}
