//! How a layout commits a tag: the compare-and-swap of `index.json` that
//! points it, refused while a collection's fence names what it tags, and
//! the check afterwards that what it tagged is still stored (taken back if
//! not). Once a collection has run, the graph under the tagged manifest is
//! walked and checked too (see `gc`).
//!
//! Tags that arrive together are written together (a group commit): each
//! waits in the layout's queue while a write is in flight, and the next
//! write applies every one waiting, each with its own fence check, in one
//! compare-and-swap. A sync of thousands of images into a bundle writes
//! its `index.json` once per batch, not once per tag. The write runs as a
//! task of its own, so a caller that goes away does not stop the others';
//! when the storage fails a batched write, each tag is committed alone and
//! gets its own error.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use super::engine::{Layout, MAX_ATTEMPTS, backoff};
use super::fence;
use super::storage::{Condition, ObjectStorage};
use super::{INDEX_FILE, LayoutIndex};
use crate::capabilities::Capabilities;
use crate::error::{Error, Result};
use crate::model::{Descriptor, Digest, MediaType, RawManifest};

/// Turns of the scheduler a writer waits for commits that keep arriving.
const GATHER_TURNS: usize = 8;

/// A change to `index.json`: applied to the index read, it says whether
/// it changed anything (an error leaves the index as it was).
pub(super) type Change = Box<dyn FnMut(&mut LayoutIndex) -> Result<bool> + Send>;

/// The tags waiting for the next write of a layout's `index.json`.
#[derive(Default)]
pub(super) struct Queue {
    pending: Vec<Job>,
    /// Whether a writer task is running (it takes what is pending).
    writing: bool,
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("pending", &self.pending.len())
            .field("writing", &self.writing)
            .finish()
    }
}

/// One commit waiting in the queue.
struct Job {
    tag: Option<String>,
    /// What the tag will name; `None` for an untag.
    new: Option<Descriptor>,
    /// What the tag named before, whose graph need not be walked again.
    old: Option<Digest>,
    /// Whether the graph under `new` is walked once a collection has run.
    checked: bool,
    walked: Option<Vec<Digest>>,
    change: Change,
    done: Option<oneshot::Sender<Outcome>>,
}

/// How a queued commit ended.
enum Outcome {
    /// Written: what the tag named before, and the graph walked.
    Written(Box<Option<Descriptor>>, Option<Vec<Digest>>),
    /// Refused on its own (a fence, its change, its graph).
    Failed(Error),
    /// The batch's read or write failed: commit it alone, for its own
    /// error.
    Alone(Box<Job>),
}

impl Job {
    fn end(mut self, outcome: impl FnOnce(Job) -> Outcome) {
        if let Some(done) = self.done.take() {
            // A caller that went away needs no answer.
            let _ = done.send(outcome(self));
        }
    }
}

/// Drops what is queued should the writer task end abnormally (its
/// callers then get an error instead of waiting forever), and lets the
/// next commit start a writer.
struct Writer(Arc<Mutex<Queue>>);

impl Drop for Writer {
    fn drop(&mut self) {
        let mut queue = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        queue.writing = false;
        queue.pending.clear();
    }
}

impl<S: ObjectStorage> Layout<S> {
    /// Points `tag` at `new` by `change` (a compare-and-swap of
    /// `index.json`, batched with the other commits waiting), then checks
    /// what it tagged is still there.
    ///
    /// Refused while a collection's fence names `new`. Once a collection
    /// has run since this process first looked at the layout, the graph
    /// under `new` (what `old`, the manifest the tag named, did not
    /// already name) is walked first: refused if a fence names any of it,
    /// and checked again after writing, so a blob a collection removed
    /// while this push ran fails the tag instead of leaving it broken.
    /// Without `checked` (a sparse manifest: a pull-through cache fetches
    /// its blobs on demand) only `new` itself is.
    pub(super) async fn commit(
        &self,
        operation: &'static str,
        tag: Option<&str>,
        new: &Descriptor,
        old: Option<&Digest>,
        checked: bool,
        change: impl FnMut(&mut LayoutIndex) -> Result<bool> + Send + 'static,
    ) -> Result<()> {
        if !self.has(&new.digest).await? {
            return Err(self.not_found(format!("manifest {}", new.digest)));
        }
        self.ready().await?;
        let (done, answer) = oneshot::channel();
        self.enqueue(Job {
            tag: tag.map(str::to_owned),
            new: Some(new.clone()),
            old: old.cloned(),
            checked,
            walked: None,
            change: Box::new(change),
            done: Some(done),
        });
        let (previous, walked) = match answer.await {
            Ok(Outcome::Written(previous, walked)) => (*previous, walked),
            Ok(Outcome::Failed(e)) => return Err(e),
            Ok(Outcome::Alone(mut job)) => self.commit_alone(operation, &mut job).await?,
            Err(_) => {
                return Err(Error::Conflict {
                    what: format!("{INDEX_FILE} ({operation}): its writer stopped"),
                    place: self.place(),
                });
            }
        };
        let missing = match &walked {
            Some(walked) => self.first_missing(walked).await?,
            None => None,
        };
        let err = match missing {
            Some(gone) => self.collected(&gone, new, "removed"),
            None if self.has(&new.digest).await? => return Ok(()),
            None => self.not_found(format!("manifest {}", new.digest)),
        };
        // Take the tag back to what it named, if it is still ours (an
        // untagged entry is taken away).
        self.update_index(operation, |index| {
            let Some(tag) = tag else {
                let removed = index.remove_untagged(&new.digest);
                return Ok((removed, ()));
            };
            if index.resolve_tag(tag).map(|d| &d.digest) != Some(&new.digest) {
                return Ok((false, ()));
            }
            match &previous {
                Some(entry) => index.put(entry.clone()),
                None => {
                    index.remove_tag(tag);
                }
            }
            Ok((true, ()))
        })
        .await?;
        Err(err)
    }

    /// Removes `tag` in the next batched write of `index.json`; whether
    /// it was there.
    pub(super) async fn untag_batched(&self, tag: &str) -> Result<bool> {
        self.ready().await?;
        let removed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (done, answer) = oneshot::channel();
        let (name, seen) = (tag.to_owned(), removed.clone());
        self.enqueue(Job {
            tag: Some(tag.to_owned()),
            new: None,
            old: None,
            checked: false,
            walked: None,
            change: Box::new(move |index| {
                let gone = index.remove_tag(&name);
                seen.store(gone, std::sync::atomic::Ordering::Relaxed);
                Ok(gone)
            }),
            done: Some(done),
        });
        match answer.await {
            Ok(Outcome::Written(..)) => {}
            Ok(Outcome::Failed(e)) => return Err(e),
            Ok(Outcome::Alone(mut job)) => {
                self.commit_alone("untag", &mut job).await?;
            }
            Err(_) => {
                return Err(Error::Conflict {
                    what: format!("{INDEX_FILE} (untag): its writer stopped"),
                    place: self.place(),
                });
            }
        }
        Ok(removed.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Queues `job`, starting the writer task unless one runs.
    fn enqueue(&self, job: Job) {
        let start = {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.pending.push(job);
            !std::mem::replace(&mut queue.writing, true)
        };
        if start {
            let layout = self.clone();
            tokio::spawn(async move { layout.write_queued().await });
        }
    }

    /// The writer task: writes what is queued, batch after batch, until
    /// nothing is.
    async fn write_queued(self) {
        let writer = Writer(self.queue.clone());
        loop {
            // Commits that arrive together join one batch: wait while
            // more keep coming (a few turns of the scheduler at most).
            let mut queued = 0;
            for _ in 0..GATHER_TURNS {
                tokio::task::yield_now().await;
                let now = self
                    .queue
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .pending
                    .len();
                if now == queued {
                    break;
                }
                queued = now;
            }
            let jobs = {
                let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                if queue.pending.is_empty() {
                    queue.writing = false;
                    std::mem::forget(writer);
                    return;
                }
                std::mem::take(&mut queue.pending)
            };
            self.write_batch(jobs).await;
        }
    }

    /// Applies every job to one read of `index.json` and writes it once,
    /// again while another writer won the race.
    async fn write_batch(&self, mut jobs: Vec<Job>) {
        for attempt in 0..MAX_ATTEMPTS {
            let Ok((index, version)) = self.read_index_kept(false).await else {
                jobs.into_iter()
                    .for_each(|job| job.end(|j| Outcome::Alone(Box::new(j))));
                return;
            };
            if fence::collected_since_first_look(&self.place, &index) {
                let mut walked = Vec::with_capacity(jobs.len());
                for mut job in jobs {
                    let unwalked = job
                        .new
                        .as_ref()
                        .filter(|_| job.checked && job.walked.is_none());
                    if let Some(new) = unwalked {
                        match self.graph(new, job.old.as_ref()).await {
                            Ok(graph) => job.walked = Some(graph),
                            Err(e) => {
                                job.end(|_| Outcome::Failed(e));
                                continue;
                            }
                        }
                    }
                    walked.push(job);
                }
                jobs = walked;
            }
            // Read once: no fence up is an empty set.
            let fenced = index.fenced();
            let mut index = Arc::unwrap_or_clone(index);
            let mut changed = index.drop_dead_fences();
            let mut applied = Vec::with_capacity(jobs.len());
            for mut job in jobs {
                if let Some(new) = &job.new {
                    let mut named = std::iter::once(&new.digest).chain(job.walked.iter().flatten());
                    if let Some(doomed) = named.find(|d| fenced.contains(*d)) {
                        let err = self.collected(doomed, new, "is removing");
                        job.end(|_| Outcome::Failed(err));
                        continue;
                    }
                }
                let previous = job
                    .tag
                    .as_deref()
                    .and_then(|tag| index.resolve_tag(tag).cloned());
                match (job.change)(&mut index) {
                    Ok(change) => {
                        changed |= change;
                        applied.push((job, previous));
                    }
                    Err(e) => job.end(|_| Outcome::Failed(e)),
                }
            }
            if applied.is_empty() {
                return;
            }
            let written = match (changed, version) {
                (false, Some(_)) => Ok(true),
                (_, version) => {
                    let condition = match version {
                        Some(version) => Condition::Matches(version),
                        None => Condition::Absent,
                    };
                    self.write_index(index, condition).await
                }
            };
            match written {
                Ok(true) => {
                    for (job, previous) in applied {
                        job.end(|j| Outcome::Written(Box::new(previous), j.walked));
                    }
                    return;
                }
                Ok(false) => {
                    jobs = applied.into_iter().map(|(job, _)| job).collect();
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(_) => {
                    for (job, _) in applied {
                        job.end(|j| Outcome::Alone(Box::new(j)));
                    }
                    return;
                }
            }
        }
        for job in jobs {
            let err = Error::Conflict {
                what: format!("{INDEX_FILE} (tag) after {MAX_ATTEMPTS} attempts"),
                place: self.place(),
            };
            job.end(|_| Outcome::Failed(err));
        }
    }

    /// Commits one job by itself: the compare-and-swap loop, for the
    /// storage's own error when a batch could not be written. What the
    /// tag named before, and the graph walked.
    async fn commit_alone(
        &self,
        operation: &'static str,
        job: &mut Job,
    ) -> Result<(Option<Descriptor>, Option<Vec<Digest>>)> {
        let Job {
            tag,
            new,
            old,
            checked,
            walked,
            change,
            ..
        } = job;
        let mut previous = None;
        for attempt in 0..MAX_ATTEMPTS {
            let (index, version) = self.read_index_kept(false).await?;
            if let Some(new) = new.as_ref().filter(|_| *checked && walked.is_none())
                && fence::collected_since_first_look(&self.place, &index)
            {
                *walked = Some(self.graph(new, old.as_ref()).await?);
            }
            let mut apply = |index: &mut LayoutIndex| {
                if let Some(new) = new.as_ref() {
                    // Read once: no fence up is an empty set.
                    let fenced = index.fenced();
                    let named = std::iter::once(&new.digest).chain(walked.iter().flatten());
                    if let Some(doomed) = named.into_iter().find(|d| fenced.contains(*d)) {
                        return Err(self.collected(doomed, new, "is removing"));
                    }
                }
                previous = tag
                    .as_deref()
                    .and_then(|tag| index.resolve_tag(tag).cloned());
                let dropped = index.drop_dead_fences();
                Ok((change(index)? || dropped, ()))
            };
            match self
                .try_swap(Arc::unwrap_or_clone(index), version, &mut apply)
                .await?
            {
                Some(()) => return Ok((previous, walked.take())),
                None => tokio::time::sleep(backoff(attempt)).await,
            }
        }
        Err(Error::Conflict {
            what: format!("{INDEX_FILE} ({operation}) after {MAX_ATTEMPTS} attempts"),
            place: self.place(),
        })
    }

    /// The error for a tag of `manifest` whose graph holds `blob`, which a
    /// garbage collection `did` ("is removing", "removed").
    fn collected(&self, blob: &Digest, manifest: &Descriptor, did: &str) -> Error {
        let what = if blob == &manifest.digest {
            format!("manifest {blob}")
        } else {
            format!("blob {blob} under manifest {}", manifest.digest)
        };
        Error::Conflict {
            what: format!(
                "{what}: a garbage collection {did} it while this push ran; push the image again"
            ),
            place: self.place(),
        }
    }

    /// Every stored blob in the graph under `root` (itself included) that
    /// `old`'s graph does not already hold at its top: configs, layers and
    /// the manifests an index names. A manifest an index names that is
    /// absent is left out (a copy of some platforms only); a missing config
    /// or layer of an image, unless an external one (with URLs), is an
    /// error.
    async fn graph(&self, root: &Descriptor, old: Option<&Digest>) -> Result<Vec<Digest>> {
        let limit = Capabilities::NONE.max_manifest_size;
        let children = |bytes, media_type: &MediaType| -> Result<Vec<Descriptor>> {
            let document = RawManifest::new(media_type.clone(), bytes)
                .parse_with(crate::model::Schema1::Allow)?;
            Ok(document.children().into_iter().cloned().collect())
        };
        let mut known = std::collections::HashSet::new();
        if let Some(old) = old
            && old != &root.digest
            && let Some(bytes) = self.read_blob(old, limit).await?
            && let Some((descriptor, _)) = super::as_manifest(old, bytes.clone())
        {
            known.extend(
                children(bytes, &descriptor.media_type)?
                    .into_iter()
                    .map(|d| d.digest),
            );
        }
        let mut found = vec![root.digest.clone()];
        let mut seen: std::collections::HashSet<Digest> = found.iter().cloned().collect();
        let mut queue = vec![root.clone()];
        while let Some(manifest) = queue.pop() {
            let Some(bytes) = self.read_blob(&manifest.digest, limit).await? else {
                continue;
            };
            for child in children(bytes, &manifest.media_type)? {
                if known.contains(&child.digest) || !seen.insert(child.digest.clone()) {
                    continue;
                }
                let present = self.has(&child.digest).await?;
                if child.media_type.is_manifest() {
                    if present {
                        found.push(child.digest.clone());
                        queue.push(child);
                    }
                } else if present {
                    found.push(child.digest.clone());
                } else if child.urls.is_empty() {
                    return Err(self.not_found(format!(
                        "blob {} under manifest {} (a garbage collection has run here since this push began: push the image again)",
                        child.digest, manifest.digest
                    )));
                }
            }
        }
        Ok(found)
    }

    /// The first of `digests` no longer stored.
    async fn first_missing(&self, digests: &[Digest]) -> Result<Option<Digest>> {
        for digest in digests {
            if !self.has(digest).await? {
                return Ok(Some(digest.clone()));
            }
        }
        Ok(None)
    }
}
