//! Blob fills of the pull-through cache: a blob missing from the cache
//! is fetched once and streamed to the client while the store verifies
//! and keeps it; requests that come meanwhile follow the fill; a blob
//! another repository of the namespace holds is mounted after one
//! upstream `HEAD` instead of fetched.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body as HttpBody;
use axum::http::request::Parts;
use axum::http::{Method, header};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use orca::layout::{Condition, ObjectStorage};
use orca::{Descriptor, Digest, Store};
use tokio::sync::watch;

use super::{Cache, Upstream, received, upstream_store};
use crate::errors::{Answer, ApiError};
use crate::{Shared, blobs, value};

impl Cache {
    /// A blob: from the cache, or streamed from upstream while it is
    /// stored (one fill per blob in this process).
    pub(super) async fn blob(
        &self,
        state: &Arc<Shared>,
        upstream: &Upstream,
        remote: &str,
        name: &str,
        digest: &str,
        request: &Parts,
    ) -> Answer {
        let digest = blobs::parse_digest(digest)?;
        match blobs::get(state, name, &digest.to_string(), request).await {
            Err(e) if e.code == "BLOB_UNKNOWN" || e.code == "NAME_UNKNOWN" => {}
            answer => {
                self.count("hit");
                return answer;
            }
        }
        let repository = state.root.repository(name).await?;
        let probe = blobs::blob(&digest, 0);
        let origin = upstream_store(upstream, remote).await?;
        if request.method == Method::HEAD {
            let size = origin
                .stat(&probe)
                .await
                .map_err(|e| self.unreachable(name, e))?
                .ok_or_else(|| ApiError::blob_unknown(&digest))?;
            return Ok(blob_head(&digest, size));
        }
        // One fill per blob in this process: the first request claims it
        // before it asks upstream anything; the others follow it (reading
        // the store's staging as it grows, where the store shows it) or
        // wait for it, and are served from the store.
        let key = (name.to_owned(), digest.clone());
        let staged = repository
            .storage
            .read_partial(&probe, 0, 0)
            .await
            .ok()
            .flatten()
            .is_some();
        let claim = {
            let mut fills = self.fills.lock().unwrap_or_else(PoisonError::into_inner);
            match fills.get(&key) {
                Some(running) => Err(running.clone()),
                None => {
                    let (finished, done) = watch::channel(false);
                    let (sized, size) = watch::channel(None);
                    let running = Running {
                        done,
                        size,
                        tail: !staged,
                    };
                    fills.insert(key.clone(), running);
                    Ok(Claim {
                        fills: self.fills.clone(),
                        key,
                        finished,
                        sized,
                    })
                }
            }
        };
        let claim = match claim {
            Ok(claim) => claim,
            Err(mut running) => {
                let whole =
                    request.method == Method::GET && !request.headers.contains_key(header::RANGE);
                if whole
                    && running.tail
                    && let Some(response) = follow(&repository, &digest, running.clone()).await
                {
                    self.count("followed");
                    return Ok(response);
                }
                let _ = running.done.wait_for(|finished| *finished).await;
                return blobs::get(state, name, &digest.to_string(), request).await;
            }
        };
        if repository.store.stat(&probe).await?.is_some() {
            // A fill ended between the first look and the claim.
            drop(claim);
            return blobs::get(state, name, &digest.to_string(), request).await;
        }
        let size = origin
            .stat(&probe)
            .await
            .map_err(|e| self.unreachable(name, e))?
            .ok_or_else(|| ApiError::blob_unknown(&digest))?;
        // Upstream says this repository holds it: where another
        // repository of the namespace holds it already, a mount.
        let mounted = self
            .mount_held(state, upstream, name, &repository, &digest)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(repository = %name, %digest, error = %e.message, "mounting from another cached repository failed: fetching");
                false
            });
        if mounted {
            drop(claim);
            return blobs::get(state, name, &digest.to_string(), request).await;
        }
        let _ = claim.sized.send(Some(size));
        let descriptor = blobs::blob(&digest, size);
        // Fetched as one range: the store verifies the digest as it
        // writes, once, instead of the fetch and the store both hashing.
        let body = origin
            .fetch_range(&descriptor, 0..size)
            .await
            .map_err(|e| self.unreachable(name, e))?;
        self.count("miss");
        let ranged = request.headers.contains_key(header::RANGE);
        let mut done = claim.finished.subscribe();
        let filled = Filled {
            state: state.clone(),
            namespace: upstream.namespace.clone(),
            store: repository.store.clone(),
        };
        let client = self.fill(claim, filled, descriptor, body, !ranged);
        match client {
            Some(stream) => {
                let mut response = Response::new(HttpBody::from_stream(stream));
                let headers = response.headers_mut();
                headers.insert(header::CONTENT_LENGTH, value(&size.to_string()));
                headers.insert(header::CONTENT_TYPE, value("application/octet-stream"));
                headers.insert("docker-content-digest", value(&digest.to_string()));
                Ok(response)
            }
            None => {
                // A range: the whole blob is cached first, then the range
                // is served from the store.
                let _ = done.wait_for(|finished| *finished).await;
                blobs::get(state, name, &digest.to_string(), request).await
            }
        }
    }

    /// Mounts `digest` into repository `name` (of `repository`) from
    /// another repository of `upstream`'s namespace recorded as holding
    /// it; whether it did. Records found stale (the blob collected or
    /// evicted there since) are dropped.
    async fn mount_held(
        &self,
        state: &Shared,
        upstream: &Upstream,
        name: &str,
        repository: &orca::Repository,
        digest: &Digest,
    ) -> Result<bool, ApiError> {
        let holders = state.root.records(&upstream.namespace).await?;
        let prefix = holders_prefix(digest);
        for listed in holders.list(&prefix).await? {
            let Some(other) = listed.key.strip_prefix(&prefix) else {
                continue;
            };
            let other = other.replace('+', "/");
            if other == name {
                continue;
            }
            let held = state.root.exists(&other).await?
                && state
                    .root
                    .repository(&other)
                    .await?
                    .store
                    .stat(&blobs::blob(digest, 0))
                    .await?
                    .is_some();
            if !held {
                let _ = holders.delete(&listed.key).await;
                continue;
            }
            if blobs::mounted(state, repository, digest, Some(other)).await? {
                self.count("mounted");
                blobs::share(state, name, digest).await;
                record_holder(holders.as_ref(), digest, name).await;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Runs the fill `claim` holds: `descriptor` from upstream's `body`
    /// into `store`, which verifies it; with `streamed`, the bytes also go
    /// to the returned stream for the client, which may leave without
    /// stopping the fill. The client's last bytes wait for the store's
    /// verdict: a body that breaks off or does not hash to the digest
    /// fails both and stores nothing.
    fn fill(
        &self,
        claim: Claim,
        filled: Filled,
        descriptor: Descriptor,
        body: orca::Body,
        streamed: bool,
    ) -> Option<futures::stream::BoxStream<'static, Result<Bytes, std::io::Error>>> {
        // Chunks travel in batches of what upstream had ready, so the tee
        // costs little per byte; a few batches each way, so a slow client
        // slows the fill as a slow disk would.
        let (to_client, for_client) = tokio::sync::mpsc::channel::<Batch>(FILL_DEPTH);
        let (to_store, for_store) = tokio::sync::mpsc::channel::<Batch>(FILL_DEPTH);
        let size = descriptor.size;
        let store = filled.store.clone();
        // What the store read: a push that finds the blob already stored
        // (another replica published it meanwhile) reads none, and then
        // its `Ok` says nothing about the bytes the client got.
        let consumed = Arc::new(AtomicU64::new(0));
        let read = consumed.clone();
        let push = tokio::spawn(async move {
            let stream = received(for_store)
                .flat_map(futures::stream::iter)
                .map(move |chunk| {
                    if let Ok(bytes) = &chunk {
                        read.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    }
                    chunk.map_err(|e| orca::Error::Failed {
                        doing: "fetching from the upstream".into(),
                        source: Box::new(e),
                    })
                });
            store.push(&descriptor, orca::Body::new(size, stream)).await
        });
        let counted = self.upstream_bytes.clone();
        tokio::spawn(async move {
            let mut upstream = body.into_stream().ready_chunks(FILL_BATCH);
            let mut client = streamed.then_some(to_client);
            let (mut sent, mut held) = (0u64, None);
            let mut broken = false;
            while let Some(ready) = upstream.next().await {
                let mut batch: Batch = Vec::with_capacity(ready.len());
                for chunk in ready {
                    match chunk {
                        Ok(bytes) => batch.push(Ok(bytes)),
                        Err(e) => {
                            batch.push(Err(std::io::Error::other(e.to_string())));
                            broken = true;
                            break;
                        }
                    }
                }
                let len: u64 = batch
                    .iter()
                    .map(|chunk| chunk.as_ref().map_or(0, |b| b.len() as u64))
                    .sum();
                counted.fetch_add(len, Ordering::Relaxed);
                sent += len;
                let stored = to_store.send(copy(&batch)).await.is_ok();
                if sent >= size && !broken {
                    // The last bytes: the client gets them once the store
                    // has checked the digest.
                    held = Some(batch);
                } else if let Some(sender) = &client {
                    // A client that stops reading is let go, so it never
                    // holds the fill (and those who follow it) for long.
                    let sending = tokio::time::timeout(CLIENT_LAG, sender.send(batch));
                    if !matches!(sending.await, Ok(Ok(()))) {
                        client = None;
                    }
                }
                if broken || !stored {
                    break;
                }
            }
            drop(to_store);
            let (repository, digest) = (&claim.key.0, &claim.key.1);
            let verdict = match push.await {
                Ok(Ok(())) if consumed.load(Ordering::Relaxed) < size => {
                    // Stored by someone else: these bytes were not checked.
                    filled.held(repository, digest).await;
                    Err("the blob was stored meanwhile by another writer; ask again".to_owned())
                }
                Ok(Ok(())) => {
                    filled.held(repository, digest).await;
                    Ok(())
                }
                Ok(Err(e)) => {
                    tracing::warn!(%repository, %digest, error = %e, "a pull-through fill failed: nothing cached");
                    Err(e.to_string())
                }
                Err(e) => {
                    tracing::warn!(%repository, %digest, error = %e, "a pull-through fill stopped");
                    Err(e.to_string())
                }
            };
            // Those waiting for the fill go on at once.
            drop(claim);
            if let Some(sender) = client {
                let last = match (verdict, held) {
                    (Ok(()), Some(batch)) => batch,
                    (Ok(()), None) => Vec::new(),
                    (Err(e), _) => vec![Err(std::io::Error::other(e))],
                };
                let _ = tokio::time::timeout(CLIENT_LAG, sender.send(last)).await;
            }
        });
        streamed.then(|| received(for_client).flat_map(futures::stream::iter).boxed())
    }
}

/// Blob fills running in this process, by repository and digest: a
/// receiver that turns `true` when the fill ended (stored or not).
pub(super) type Fills = Arc<Mutex<HashMap<(String, Digest), Running>>>;

/// A blob fill running in this process, as the requests that wait for it
/// see it.
#[derive(Clone, Debug)]
pub(super) struct Running {
    /// Turns `true` when the fill ended (stored or not).
    done: watch::Receiver<bool>,
    /// The blob's size, once upstream said it.
    size: watch::Receiver<Option<u64>>,
    /// Whether the store's staging of the blob is this fill's alone (none
    /// was there when it began), so followers may read it as it grows.
    tail: bool,
}

/// Where a namespace records which of its repositories hold blobs: one
/// empty object per blob and repository, `holders/ALG/HEX/REPO` (`/` in
/// the name as `+`), in the root's records for the namespace.
const HOLDERS: &str = "holders";

/// The prefix of the records of who holds `digest`.
fn holders_prefix(digest: &Digest) -> String {
    format!("{HOLDERS}/{}/{}/", digest.algorithm(), digest.hex())
}

/// Records that repository `name` holds `digest`; a failure costs only a
/// later mount.
async fn record_holder(holders: &dyn ObjectStorage, digest: &Digest, name: &str) {
    let key = format!("{}{}", holders_prefix(digest), name.replace('/', "+"));
    match holders.write(&key, Bytes::new(), Condition::Absent).await {
        Ok(()) | Err(orca::Error::Conflict { .. }) => {}
        Err(e) => {
            tracing::warn!(repository = %name, %digest, error = %e, "recording a cached blob's holder failed")
        }
    }
}

/// Where a blob fill stores, and what it tells when it is stored.
struct Filled {
    state: Arc<Shared>,
    namespace: String,
    store: Store,
}

impl Filled {
    /// The blob is stored in `repository`: shared across the root and
    /// recorded as held there.
    async fn held(&self, repository: &str, digest: &Digest) {
        blobs::share(&self.state, repository, digest).await;
        match self.state.root.records(&self.namespace).await {
            Ok(holders) => record_holder(holders.as_ref(), digest, repository).await,
            Err(e) => {
                tracing::warn!(namespace = %self.namespace, error = %e, "opening the namespace's records failed")
            }
        }
    }
}

/// Chunks of a blob fill that travel together.
type Batch = Vec<Result<Bytes, std::io::Error>>;

/// How many chunks upstream had ready travel as one batch, at most.
const FILL_BATCH: usize = 64;

/// How many batches wait for the store, and for the client, at most.
const FILL_DEPTH: usize = 16;

/// How long a fill waits for its client to take the next batch before it
/// lets the client go and fills on without it.
const CLIENT_LAG: Duration = Duration::from_secs(10);

/// A batch again (an error is repeated by its text).
fn copy(batch: &Batch) -> Batch {
    batch
        .iter()
        .map(|chunk| match chunk {
            Ok(bytes) => Ok(bytes.clone()),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        })
        .collect()
}

/// A blob fill this request runs: registered under `key` until dropped,
/// when it is forgotten and its waiters are told it ended.
struct Claim {
    fills: Fills,
    key: (String, Digest),
    finished: watch::Sender<bool>,
    sized: watch::Sender<Option<u64>>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.fills
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
        let _ = self.finished.send(true);
    }
}

/// How often a follower looks at how far a fill got, at most.
const FOLLOW_EVERY: Duration = Duration::from_millis(20);

/// Serves blob `digest` of `repository` while another request's fill
/// stores it: the bytes the store's staging holds as they arrive, the
/// last ones from the published blob once the fill verified it (a fill
/// that fails fails this answer too). `None` when the fill ended before
/// it said the size: the caller serves what the store holds.
async fn follow(
    repository: &orca::Repository,
    digest: &Digest,
    mut running: Running,
) -> Option<Response> {
    let size = tokio::select! {
        sized = running.size.wait_for(Option::is_some) => (*sized.ok()?)?,
        _ = running.done.wait_for(|finished| *finished) => return None,
    };
    let descriptor = blobs::blob(digest, size);
    // Everything but the last byte may come from the staging (where the
    // store shows none, everything comes from the blob once published).
    let staged_until = size.saturating_sub(1);
    let (to_client, for_client) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let (storage, store) = (repository.storage.clone(), repository.store.clone());
    let named = digest.to_string();
    let digest = digest.clone();
    tokio::spawn(async move {
        // What this answer sent is hashed as it goes: the staging it read
        // may be another writer's, so its last byte goes only if the
        // whole hashes to the digest.
        let mut hashed = orca::Digester::new(digest.algorithm());
        let mut at = 0u64;
        loop {
            let ended = *running.done.borrow();
            if at < staged_until
                && let Ok(Some(body)) = storage.read_partial(&descriptor, at, staged_until).await
                && !body.is_empty()
            {
                let mut chunks = body.into_stream();
                while let Some(chunk) = chunks.next().await {
                    let Ok(bytes) = chunk else { break };
                    at += bytes.len() as u64;
                    hashed.update(&bytes);
                    if to_client.send(Ok(bytes)).await.is_err() {
                        return;
                    }
                }
                continue;
            }
            if ended {
                break;
            }
            let _ = tokio::time::timeout(FOLLOW_EVERY, running.done.changed()).await;
        }
        // The fill ended: the rest from the blob it published, if it did,
        // the last chunk once the whole answer hashed right.
        let rest = match store.fetch_range(&descriptor, at..size).await {
            Ok(body) => body,
            Err(e) => {
                let failed = format!("the fill this answer followed failed: {e}");
                let _ = to_client.send(Err(std::io::Error::other(failed))).await;
                return;
            }
        };
        let mut chunks = rest.into_stream();
        let mut last: Option<Bytes> = None;
        while let Some(chunk) = chunks.next().await {
            match chunk {
                Ok(bytes) => {
                    hashed.update(&bytes);
                    if let Some(previous) = last.replace(bytes)
                        && to_client.send(Ok(previous)).await.is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    let _ = to_client
                        .send(Err(std::io::Error::other(e.to_string())))
                        .await;
                    return;
                }
            }
        }
        let end = if hashed.finish() == digest {
            last.map(Ok)
        } else {
            tracing::warn!(%digest, "a followed fill's staging did not hash right: the answer is cut");
            Some(Err(std::io::Error::other(
                "the bytes read while the blob was filled were not the blob's",
            )))
        };
        if let Some(end) = end {
            let _ = to_client.send(end).await;
        }
    });
    let mut response = Response::new(HttpBody::from_stream(received(for_client)));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, value(&size.to_string()));
    headers.insert(header::CONTENT_TYPE, value("application/octet-stream"));
    headers.insert("docker-content-digest", value(&named));
    Some(response)
}

/// The answer to a `HEAD` of a blob of `size` bytes.
fn blob_head(digest: &Digest, size: u64) -> Response {
    let mut response = Response::new(HttpBody::empty());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, value(&size.to_string()));
    headers.insert(header::CONTENT_TYPE, value("application/octet-stream"));
    headers.insert("docker-content-digest", value(&digest.to_string()));
    response
}
