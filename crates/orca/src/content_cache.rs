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
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use orca_core::{Descriptor, Digest, Digester, Error, Result};

mod cached;

/// How much of a file one read brings.
const CHUNK: usize = 1 << 20;

/// A fill left in `tmp/` this long belongs to no running process.
const STALE_FILL: Duration = Duration::from_secs(3600);

/// The name of a new fill of `digest` in `tmp/`: `HEX-PID-NANOS`.
fn fill_name(digest: &Digest) -> String {
    format!(
        "{}-{}-{}",
        digest.hex(),
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )
}

/// Whether `name`, in `tmp/`, is one [`fill_name`] gives: nothing else
/// there is the cache's to remove.
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
        let fill = tmp.join(fill_name(&digest));
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
