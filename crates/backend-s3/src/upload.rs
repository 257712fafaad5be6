//! Blobs into a bucket, staged so that nothing appears at a blob's key
//! until its body ended cleanly: a small body is collected and sent in one
//! `PUT`; a large one goes as a multipart upload, its parts sent
//! concurrently, completed only at the end and aborted on any error.
//!
//! An upload a killed process leaves open is invisible to listings and
//! billed until aborted, so each one is recorded under `ingest/` (its
//! upload id, named after the blob) while it runs; garbage collection
//! aborts the uploads whose records are old.

use std::collections::VecDeque;
use std::time::Duration;

use futures::StreamExt;
use futures::TryStreamExt;
use object_store::multipart::PartId;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayloadMut};
use orca_core::layout::blob_path;
use orca_core::{Body, Descriptor, Digest, Error, Result};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;

use crate::backend::{BUDGET_UNIT, Bucket};
use crate::error::convert;

/// Where records of running multipart uploads live.
pub(crate) const STAGING: &str = "ingest";

/// Part uploads in flight, aborted when dropped (an upload that failed or
/// was cancelled sends no more parts).
struct Parts(VecDeque<JoinHandle<Result<PartId>>>);

impl Drop for Parts {
    fn drop(&mut self) {
        for part in &self.0 {
            part.abort();
        }
    }
}

/// A multipart upload under way; dropped while `bucket` is still set, it
/// is aborted in the background.
struct OpenUpload {
    bucket: Option<Bucket>,
    key: Path,
    id: String,
    record: Path,
}

impl Drop for OpenUpload {
    fn drop(&mut self) {
        let Some(bucket) = self.bucket.take() else {
            return;
        };
        let (key, id, record) = (self.key.clone(), self.id.clone(), self.record.clone());
        let what = format!(
            "aborting the multipart upload of {key} in {}",
            bucket.place()
        );
        orca_core::cleanup::spawn(what, async move {
            bucket.abort_upload(&key, &id, &record).await;
        });
    }
}

/// A multipart upload being created; dropped before its id is known, it
/// is aborted once the creation answers.
struct Creating {
    bucket: Bucket,
    key: Path,
    task: Option<JoinHandle<object_store::Result<String>>>,
}

impl Creating {
    /// Waits for the upload's id; from then on, dropping this does nothing.
    async fn wait(&mut self) -> Result<String> {
        let Some(task) = self.task.as_mut() else {
            return Err(Error::Backend {
                backend: self.bucket.place().to_owned(),
                operation: "push",
                source: format!("the upload of {} was already created", self.key).into(),
            });
        };
        let created = task.await;
        self.task = None;
        let created = created.map_err(|e| Error::Backend {
            backend: self.bucket.place().to_owned(),
            operation: "push",
            source: format!("creating the upload of {} stopped: {e}", self.key).into(),
        })?;
        created.map_err(self.bucket.err("push", &self.key))
    }
}

impl Drop for Creating {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else {
            return;
        };
        let (bucket, key) = (self.bucket.clone(), self.key.clone());
        let what = format!(
            "aborting the multipart upload of {key} in {}",
            bucket.place()
        );
        orca_core::cleanup::spawn(what, async move {
            if let Ok(Ok(id)) = task.await {
                let _ = bucket.multipart.abort_multipart(&key, &id).await;
            }
        });
    }
}

impl Bucket {
    /// Streams a body to its blob key (see the module documentation).
    pub(crate) async fn upload(&self, descriptor: &Descriptor, mut body: Body) -> Result<()> {
        let key = self.key(&blob_path(&descriptor.digest));
        if body.len() <= self.part_size as u64 {
            let _held = self.hold(body.len() as usize, &key).await?;
            let mut payload = PutPayloadMut::new();
            while let Some(chunk) = body.next().await {
                payload.push(chunk?);
            }
            return self
                .writes
                .put(&key, payload.freeze())
                .await
                .map(drop)
                .map_err(self.err("push", &key));
        }
        // Created by a task of its own: a push dropped while it is under
        // way still learns the upload's id and aborts it.
        let (multipart, path) = (self.multipart.clone(), key.clone());
        let mut creating = Creating {
            bucket: self.clone(),
            key: key.clone(),
            task: Some(tokio::spawn(async move {
                multipart.create_multipart(&path).await
            })),
        };
        let id = creating.wait().await?;
        let record = self.key(&format!(
            "{STAGING}/upload-{}-{}-{}",
            descriptor.digest.algorithm(),
            descriptor.digest.hex(),
            nonce()
        ));
        // Dropped before it ends (a cancelled copy, an interrupted command),
        // the upload is aborted by `orca_core::cleanup` (the record goes
        // once the upload is gone).
        let mut open = OpenUpload {
            bucket: Some(self.clone()),
            key: key.clone(),
            id: id.clone(),
            record: record.clone(),
        };
        let mut outcome = self
            .store
            .put(&record, id.clone().into())
            .await
            .map(drop)
            .map_err(self.err("push", &record));
        if outcome.is_ok() {
            outcome = match self.send_parts(&key, &id, body).await {
                Ok(parts) => self
                    .multipart
                    .complete_multipart(&key, &id, parts)
                    .await
                    .map(drop)
                    .map_err(self.err("push", &key)),
                Err(e) => Err(e),
            };
        }
        open.bucket = None;
        // Abandon a failed upload so no object ever appears at the key.
        if outcome.is_ok() {
            let _ = self.store.delete(&record).await;
        } else {
            self.abort_upload(&key, &id, &record).await;
        }
        outcome
    }

    /// Aborts a multipart upload and removes its record. The record goes
    /// only once the upload is gone: if the abort fails, it stays for the
    /// collector to abort later (an open upload is billed).
    async fn abort_upload(&self, key: &Path, id: &str, record: &Path) {
        let gone = matches!(
            self.multipart.abort_multipart(key, &id.to_owned()).await,
            Ok(()) | Err(object_store::Error::NotFound { .. })
        );
        if gone {
            let _ = self.store.delete(record).await;
        }
    }

    /// Takes `bytes` of the handle's upload memory budget, waiting for
    /// other uploads to give theirs back.
    async fn hold(&self, bytes: usize, key: &Path) -> Result<OwnedSemaphorePermit> {
        let units = u32::try_from(bytes.div_ceil(BUDGET_UNIT).max(1)).unwrap_or(u32::MAX);
        self.budget
            .clone()
            .acquire_many_owned(units)
            .await
            .map_err(|e| {
                convert(
                    self.place(),
                    "push",
                    format!("parts of {key}"),
                    object_store::Error::Generic {
                        store: "S3",
                        source: Box::new(e),
                    },
                )
            })
    }

    /// Cuts the body into parts and sends them while the body keeps
    /// streaming. A part holds its share of the handle's budget from the
    /// moment it starts filling until it is sent, so memory stays within
    /// the budget whatever the number of uploads. Chunks are gathered,
    /// never copied.
    async fn send_parts(&self, key: &Path, id: &str, mut body: Body) -> Result<Vec<PartId>> {
        let mut inflight = Parts(VecDeque::new());
        let mut done = Vec::new();
        let mut filling: Option<(PutPayloadMut, OwnedSemaphorePermit)> = None;
        let mut next = 0;
        loop {
            let chunk = body.next().await.transpose()?;
            let last = chunk.is_none();
            let mut chunk = chunk.unwrap_or_default();
            while !chunk.is_empty() || (last && filling.is_some()) {
                let (part, _) = match &mut filling {
                    Some(part) => part,
                    None => filling
                        .insert((PutPayloadMut::new(), self.hold(self.part_size, key).await?)),
                };
                let take = (self.part_size - part.content_length()).min(chunk.len());
                if take > 0 {
                    part.push(chunk.split_to(take));
                }
                if part.content_length() < self.part_size && !last {
                    break;
                }
                let Some((part, permit)) = filling.take() else {
                    break;
                };
                if inflight.0.len() >= self.concurrency
                    && let Some(sent) = inflight.0.pop_front()
                {
                    done.push(self.joined(sent, key).await?);
                }
                let (multipart, path, id, index) =
                    (self.multipart.clone(), key.clone(), id.to_owned(), next);
                let place = self.place().to_owned();
                inflight.0.push_back(tokio::spawn(async move {
                    let sent = multipart
                        .put_part(&path, &id, index, part.freeze())
                        .await
                        .map_err(|e| convert(&place, "push", format!("part {index} of {path}"), e));
                    drop(permit);
                    sent
                }));
                next += 1;
            }
            if last {
                break;
            }
        }
        while let Some(part) = inflight.0.pop_front() {
            done.push(self.joined(part, key).await?);
        }
        Ok(done)
    }

    async fn joined(&self, part: JoinHandle<Result<PartId>>, key: &Path) -> Result<PartId> {
        part.await.map_err(|e| Error::Backend {
            backend: self.place().to_owned(),
            operation: "push",
            source: format!("a part upload of {key} stopped: {e}").into(),
        })?
    }

    /// Aborts the multipart uploads whose records are older than `age`
    /// (their processes died), and removes the records.
    pub(crate) async fn abort_stale_uploads(&self, age: Duration) -> Result<usize> {
        let dir = self.key(STAGING);
        let records: Vec<_> = self
            .store
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(self.err("gc", &dir))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut aborted = 0;
        for record in records {
            // Only this layout's records, directly in its staging: a
            // layout nested below (a repository `app/ingest` beside `app`)
            // keeps its own there.
            if record.location.prefix_match(&dir).map(Iterator::count) != Some(1) {
                continue;
            }
            let elapsed = now.saturating_sub(record.last_modified.timestamp());
            if elapsed < age.as_secs() as i64 {
                continue;
            }
            let Some(digest) = record
                .location
                .filename()
                .and_then(|name| name.strip_prefix("upload-"))
                .and_then(|rest| {
                    let mut parts = rest.splitn(3, '-');
                    let (algorithm, hex) = (parts.next()?, parts.next()?);
                    Digest::parse(&format!("{algorithm}:{hex}")).ok()
                })
            else {
                continue;
            };
            let id = match self.store.get(&record.location).await {
                Ok(found) => found
                    .bytes()
                    .await
                    .map_err(self.err("gc", &record.location))?,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => {
                    return Err(convert(
                        self.place(),
                        "gc",
                        format!("object {}", record.location),
                        e,
                    ));
                }
            };
            let id = String::from_utf8_lossy(&id).into_owned();
            let key = self.key(&blob_path(&digest));
            match self.multipart.abort_multipart(&key, &id).await {
                // An upload that completed or was aborted already is gone.
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => {
                    return Err(convert(
                        self.place(),
                        "gc",
                        format!("upload {id} of {key}"),
                        e,
                    ));
                }
            }
            self.store
                .delete(&record.location)
                .await
                .map_err(self.err("gc", &record.location))?;
            aborted += 1;
        }
        Ok(aborted)
    }
}

/// A name part no other upload of the same blob shares.
pub(crate) fn nonce() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}.{}.{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
