//! A content cache on the client's side (`--cache DIR`, `ORCA_CACHE`):
//! blobs read from a registry are kept in a directory and read from it
//! the next time, by any orca process on the machine (CI runners share
//! one). It remembers, as moby's content store does, which repositories
//! each blob came from, and serves a blob to a repository only when that
//! repository is known to hold it: otherwise one `HEAD` asks the
//! registry first, so a cache never hands out what the registry would
//! refuse.
//!
//! On disk: `blobs/ALG/HEX` (the content, its modification time the last
//! use), `sources/ALG/HEX` (one `host/repository` per line, appended) and
//! `tmp/` (fills in progress, renamed into `blobs/` once verified). An
//! entry is hashed again before each use: a corrupt one is dropped and
//! fetched anew. Concurrent processes are safe: fills write their own
//! temporary files and renames are atomic; a reader keeps reading an
//! entry that is pruned under it.

use std::io::{Read as _, Write as _};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use orca_core::{
    Backend, Body, Capabilities, Descriptor, Digest, Digester, Error, ListPage, ListQuery,
    MediaType, PushOptions, Referrers, Result, Selector, async_trait,
};

/// How much of a file one read brings.
const CHUNK: usize = 1 << 20;

/// A fill left in `tmp/` this long belongs to no running process.
const STALE_FILL: Duration = Duration::from_secs(3600);

/// Whether `name`, in `tmp/`, is one a fill gives its file
/// (`HEX-PID-NANOS`): nothing else there is the cache's to remove.
fn is_fill_name(name: &str) -> bool {
    let mut parts = name.split('-');
    let (Some(hex), Some(pid), Some(nanos), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    !hex.is_empty()
        && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        && digits(pid)
        && digits(nanos)
}

/// A content cache directory.
#[derive(Clone, Debug)]
pub struct ContentCache {
    dir: PathBuf,
}

/// One cached blob, as [`ContentCache::entries`] lists it.
#[derive(Clone, Debug)]
pub struct CacheEntry {
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last used (written or read).
    pub used: SystemTime,
    /// The `host/repository` names known to hold it.
    pub sources: Vec<String>,
}

/// What [`ContentCache::prune`] removed.
#[derive(Clone, Debug, Default)]
pub struct Pruned {
    /// Entries removed.
    pub entries: usize,
    /// Their bytes.
    pub bytes: u64,
}

fn failed(doing: String, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Failed {
        doing,
        source: Box::new(e),
    }
}

/// Runs file work off the async threads.
async fn blocking<T: Send + 'static>(
    doing: String,
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(failed(doing, e)),
        Err(e) => Err(failed(doing, e)),
    }
}

impl ContentCache {
    /// The cache in `dir` (created when first written).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ContentCache { dir: dir.into() }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir
            .join("blobs")
            .join(digest.algorithm().to_string())
            .join(digest.hex())
    }

    fn sources_path(&self, digest: &Digest) -> PathBuf {
        self.dir
            .join("sources")
            .join(digest.algorithm().to_string())
            .join(digest.hex())
    }

    /// The repositories known to hold `digest`.
    fn sources(&self, digest: &Digest) -> Vec<String> {
        std::fs::read_to_string(self.sources_path(digest))
            .map(|text| text.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// Records that `source` holds `digest` (one appended line: safe
    /// beside other processes appending).
    fn add_source(&self, digest: &Digest, source: &str) -> std::io::Result<()> {
        let path = self.sources_path(digest);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        file.write_all(format!("{source}\n").as_bytes())
    }

    /// Whether the entry of `descriptor` is there and hashes to its
    /// digest; a corrupt one is removed. Marks it used.
    fn check(&self, descriptor: &Descriptor) -> std::io::Result<bool> {
        let path = self.blob_path(&descriptor.digest);
        let mut file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let mut digester = Digester::new(descriptor.digest.algorithm());
        let mut buffer = vec![0; CHUNK];
        let mut size = 0u64;
        loop {
            let read = file.read(&mut buffer)?;
            if read == 0 {
                break;
            }
            size += read as u64;
            digester.update(&buffer[..read]);
        }
        if digester.finish() != descriptor.digest
            || (descriptor.size > 0 && size != descriptor.size)
        {
            tracing::warn!(path = %path.display(), "a corrupt cache entry: dropped, fetching it again");
            let _ = std::fs::remove_file(&path);
            return Ok(false);
        }
        let _ = file.set_modified(SystemTime::now());
        Ok(true)
    }

    /// Every entry, with its size, last use and sources.
    pub fn entries(&self) -> Result<Vec<CacheEntry>> {
        let mut entries = Vec::new();
        let blobs = self.dir.join("blobs");
        let algorithms = match std::fs::read_dir(&blobs) {
            Ok(found) => found,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(entries),
            Err(e) => return Err(failed(format!("listing {}", blobs.display()), e)),
        };
        for algorithm in algorithms.flatten() {
            let Ok(files) = std::fs::read_dir(algorithm.path()) else {
                continue;
            };
            for file in files.flatten() {
                let name = format!(
                    "{}:{}",
                    algorithm.file_name().to_string_lossy(),
                    file.file_name().to_string_lossy()
                );
                let (Ok(digest), Ok(meta)) = (Digest::parse(&name), file.metadata()) else {
                    continue;
                };
                entries.push(CacheEntry {
                    sources: self.sources(&digest),
                    digest,
                    size: meta.len(),
                    used: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                });
            }
        }
        entries.sort_by_cached_key(|e| e.digest.to_string());
        Ok(entries)
    }

    /// Removes entries: all of them with `all`, else those unused for
    /// `older_than`, then the least recently used until the rest take at
    /// most `max_bytes`. Fills left behind by processes that ended go
    /// too. A process reading an entry removed under it reads on.
    pub fn prune(
        &self,
        all: bool,
        older_than: Option<Duration>,
        max_bytes: Option<u64>,
    ) -> Result<Pruned> {
        self.check_own()?;
        let mut entries = self.entries()?;
        entries.sort_by_key(|e| e.used);
        let now = SystemTime::now();
        let mut total: u64 = entries.iter().map(|e| e.size).sum();
        let mut pruned = Pruned::default();
        for entry in entries {
            let old = older_than.is_some_and(|age| {
                now.duration_since(entry.used)
                    .is_ok_and(|unused| unused >= age)
            });
            let over = max_bytes.is_some_and(|max| total > max);
            if !(all || old || over) {
                continue;
            }
            match std::fs::remove_file(self.blob_path(&entry.digest)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(failed(format!("removing {}", entry.digest), e)),
            }
            let _ = std::fs::remove_file(self.sources_path(&entry.digest));
            total -= entry.size;
            pruned.entries += 1;
            pruned.bytes += entry.size;
        }
        if let Ok(fills) = std::fs::read_dir(self.dir.join("tmp")) {
            for fill in fills.flatten() {
                let ours = fill.file_name().to_str().is_some_and(is_fill_name);
                let stale = ours
                    && fill
                        .metadata()
                        .and_then(|m| m.modified())
                        .is_ok_and(|at| now.duration_since(at).is_ok_and(|age| age >= STALE_FILL));
                if stale {
                    let _ = std::fs::remove_file(fill.path());
                }
            }
        }
        Ok(pruned)
    }

    /// Refuses a directory holding more than a cache's own places
    /// (`blobs/`, `sources/`, `tmp/`): pruning it would remove what others
    /// keep there (an image layout's blobs, a project's `tmp/`).
    fn check_own(&self) -> Result<()> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(failed(format!("listing {}", self.dir.display()), e)),
        };
        let mut others: Vec<String> = entries
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| !matches!(name.as_str(), "blobs" | "sources" | "tmp"))
            .collect();
        if others.is_empty() {
            return Ok(());
        }
        others.sort();
        others.truncate(3);
        Err(Error::InvalidInput {
            what: format!("content cache {}", self.dir.display()),
            reason: format!(
                "it holds {} besides a cache's blobs/, sources/ and tmp/, so it is not pruned: name the directory only orca's cache uses",
                others.join(", ")
            ),
        })
    }

    /// A registry repository's backend read through this cache; `source`
    /// names the repository (`host/repository`).
    pub(crate) fn over(&self, origin: Arc<dyn Backend>, source: String) -> Cached {
        Cached {
            origin,
            cache: self.clone(),
            source,
        }
    }
}

/// A registry repository whose blobs are read through a [`ContentCache`];
/// everything else goes to the registry.
#[derive(Debug)]
pub(crate) struct Cached {
    origin: Arc<dyn Backend>,
    cache: ContentCache,
    source: String,
}

impl std::fmt::Display for Cached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.origin.fmt(f)
    }
}

impl Cached {
    /// The cached entry of `descriptor` as a body, when the cache holds it
    /// intact and this repository is known to hold it (asked once of the
    /// registry when not known yet).
    async fn cached(&self, descriptor: &Descriptor) -> Result<Option<Body>> {
        let cache = self.cache.clone();
        let wanted = descriptor.clone();
        let source = self.source.clone();
        let doing = format!("reading {} from the cache", descriptor.digest);
        let (intact, known) = blocking(doing, move || {
            let intact = cache.check(&wanted)?;
            let known = intact && cache.sources(&wanted.digest).contains(&source);
            Ok((intact, known))
        })
        .await?;
        if !intact {
            return Ok(None);
        }
        if !known {
            // Held for another repository: this one must hold it too.
            if self.origin.stat(descriptor).await?.is_none() {
                return Err(Error::NotFound {
                    what: descriptor.label(),
                    place: self.origin.to_string(),
                });
            }
            let _ = self.cache.add_source(&descriptor.digest, &self.source);
        }
        let path = self.cache.blob_path(&descriptor.digest);
        let doing = format!("opening {}", path.display());
        let (file, len) = blocking(doing, move || {
            let file = std::fs::File::open(&path)?;
            let len = file.metadata()?.len();
            Ok((file, len))
        })
        .await?;
        tracing::debug!(digest = %descriptor.digest, "read from the content cache");
        let place = format!("the content cache {}", self.cache.dir.display());
        Ok(Some(orca_backend_fs::file_body(file, len, place)))
    }

    /// Fetches `descriptor` from the registry, keeping a copy as it
    /// streams; the copy is published once the last byte hashed right.
    async fn filled(&self, descriptor: &Descriptor) -> Result<Body> {
        let body = self.origin.fetch(descriptor).await?;
        let tmp = self.cache.dir.join("tmp");
        let temp = tmp.join(format!(
            "{}-{}-{}",
            descriptor.digest.hex(),
            std::process::id(),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let opened = {
            let (tmp, temp) = (tmp.clone(), temp.clone());
            blocking(format!("creating {}", temp.display()), move || {
                std::fs::create_dir_all(&tmp)?;
                std::fs::File::create(&temp)
            })
            .await
        };
        let file = match opened {
            Ok(file) => file,
            Err(e) => {
                // No cache to write: the registry's bytes all the same.
                tracing::warn!(error = %e, "the content cache cannot be written");
                return Ok(body);
            }
        };
        let (to_writer, from_stream) = tokio::sync::mpsc::channel::<Fill>(16);
        let (done, published) = tokio::sync::oneshot::channel::<()>();
        let writer = Writer {
            cache: self.cache.clone(),
            descriptor: descriptor.clone(),
            source: self.source.clone(),
            temp,
        };
        std::thread::spawn(move || writer.run(file, from_stream, done));
        let len = body.len();
        let state = (body.into_stream(), Some(to_writer), Some(published));
        let stream =
            futures::stream::unfold(state, |(mut chunks, mut writer, published)| async move {
                match chunks.next().await {
                    Some(Ok(bytes)) => {
                        if let Some(sender) = &writer
                            && sender.send(Fill::Bytes(bytes.clone())).await.is_err()
                        {
                            writer = None;
                        }
                        Some((Ok(bytes), (chunks, writer, published)))
                    }
                    Some(Err(e)) => Some((Err(e), (chunks, None, None))),
                    None => {
                        // The end: the copy is published before the body ends,
                        // so the next process finds it.
                        if let Some(sender) = writer.take()
                            && sender.send(Fill::End).await.is_ok()
                            && let Some(published) = published
                        {
                            let _ = published.await;
                        }
                        None
                    }
                }
            });
        Ok(Body::new(len, stream))
    }
}

/// What a fill's writer thread is sent.
enum Fill {
    /// The next bytes.
    Bytes(Bytes),
    /// The body ended: publish if the bytes hash right.
    End,
}

/// Writes one fill into its temporary file, on a thread of its own.
struct Writer {
    cache: ContentCache,
    descriptor: Descriptor,
    source: String,
    temp: PathBuf,
}

impl Writer {
    fn run(
        self,
        mut file: std::fs::File,
        mut chunks: tokio::sync::mpsc::Receiver<Fill>,
        done: tokio::sync::oneshot::Sender<()>,
    ) {
        let mut digester = Digester::new(self.descriptor.digest.algorithm());
        let mut size = 0u64;
        let mut ended = false;
        while let Some(fill) = chunks.blocking_recv() {
            match fill {
                Fill::Bytes(bytes) => {
                    digester.update(&bytes);
                    size += bytes.len() as u64;
                    if file.write_all(&bytes).is_err() {
                        break;
                    }
                }
                Fill::End => {
                    ended = true;
                    break;
                }
            }
        }
        drop(file);
        // Published only whole and right; otherwise (the reader stopped,
        // the bytes were wrong) nothing is kept.
        let right = ended
            && digester.finish() == self.descriptor.digest
            && (self.descriptor.size == 0 || size == self.descriptor.size);
        let published = right && {
            let target = self.cache.blob_path(&self.descriptor.digest);
            target
                .parent()
                .is_some_and(|parent| std::fs::create_dir_all(parent).is_ok())
                && std::fs::rename(&self.temp, &target).is_ok()
        };
        if published {
            let _ = self.cache.add_source(&self.descriptor.digest, &self.source);
        } else {
            let _ = std::fs::remove_file(&self.temp);
        }
        let _ = done.send(());
    }
}

#[async_trait]
impl Backend for Cached {
    fn capabilities(&self) -> Capabilities {
        self.origin.capabilities()
    }

    async fn exists(&self, descriptor: &Descriptor) -> Result<bool> {
        self.origin.exists(descriptor).await
    }

    async fn stat(&self, descriptor: &Descriptor) -> Result<Option<u64>> {
        self.origin.stat(descriptor).await
    }

    async fn fetch(&self, descriptor: &Descriptor) -> Result<Body> {
        if descriptor.media_type.is_manifest() {
            // Manifests are small and a tag's may change: the registry's.
            return self.origin.fetch(descriptor).await;
        }
        match self.cached(descriptor).await {
            Ok(Some(body)) => return Ok(body),
            Ok(None) => {}
            Err(e) if e.is_not_found() => return Err(e),
            Err(e) => {
                tracing::warn!(digest = %descriptor.digest, error = %e, "the content cache failed; reading the registry");
            }
        }
        self.filled(descriptor).await
    }

    async fn push(&self, descriptor: &Descriptor, body: Body, options: &PushOptions) -> Result<()> {
        self.origin.push(descriptor, body, options).await
    }

    async fn partial(&self, descriptor: &Descriptor) -> Result<u64> {
        self.origin.partial(descriptor).await
    }

    async fn delete(&self, descriptor: &Descriptor) -> Result<()> {
        self.origin.delete(descriptor).await
    }

    async fn resolve(&self, selector: &Selector) -> Result<Descriptor> {
        self.origin.resolve(selector).await
    }

    async fn fetch_tagged(&self, tag: &str) -> Result<(Descriptor, Body)> {
        self.origin.fetch_tagged(tag).await
    }

    async fn tag(&self, descriptor: &Descriptor, tag: &str) -> Result<()> {
        self.origin.tag(descriptor, tag).await
    }

    async fn untag(&self, tag: &str) -> Result<()> {
        self.origin.untag(tag).await
    }

    async fn swap_tag(
        &self,
        tag: &str,
        expected: Option<&Digest>,
        new: Option<&Descriptor>,
    ) -> Result<()> {
        self.origin.swap_tag(tag, expected, new).await
    }

    async fn tags(&self, query: &ListQuery) -> Result<ListPage> {
        self.origin.tags(query).await
    }

    async fn referrers(
        &self,
        subject: &Descriptor,
        artifact_type: Option<&MediaType>,
    ) -> Result<Referrers> {
        self.origin.referrers(subject, artifact_type).await
    }

    async fn mount(&self, descriptor: &Descriptor, from: &str) -> Result<bool> {
        self.origin.mount(descriptor, from).await
    }

    async fn fetch_range(&self, descriptor: &Descriptor, range: Range<u64>) -> Result<Body> {
        self.origin.fetch_range(descriptor, range).await
    }

    async fn catalog(&self, query: &ListQuery) -> Result<ListPage> {
        self.origin.catalog(query).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pruning removes only what the cache made: stale fills by their
    /// names, entries by their digests; a directory holding anything else
    /// is refused whole.
    #[test]
    fn pruning_removes_only_what_the_cache_made() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let cache = ContentCache::new(dir.path());
        let digest = Digest::sha256(b"entry");
        let blob = cache.blob_path(&digest);
        std::fs::create_dir_all(blob.parent().expect("parent")).expect("dir");
        std::fs::write(&blob, b"entry").expect("entry");
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).expect("tmp");
        let fill = tmp.join(format!("{}-12-345", digest.hex()));
        let theirs = tmp.join("notes.txt");
        let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1);
        for path in [&fill, &theirs] {
            std::fs::write(path, b"x").expect("write");
            std::fs::File::options()
                .write(true)
                .open(path)
                .and_then(|file| file.set_modified(old))
                .expect("age");
        }
        let project = dir.path().join("Gemfile");
        std::fs::write(&project, b"source").expect("write");
        let refused = cache.prune(true, None, None);
        assert!(
            matches!(&refused, Err(Error::InvalidInput { reason, .. }) if reason.contains("Gemfile")),
            "{refused:?}"
        );
        assert!(blob.exists() && fill.exists() && theirs.exists());
        std::fs::remove_file(&project).expect("remove");
        let pruned = cache.prune(true, None, None).expect("prune");
        assert_eq!(pruned.entries, 1);
        assert!(!blob.exists() && !fill.exists());
        assert!(theirs.exists(), "a file the cache did not make was removed");
    }
}
