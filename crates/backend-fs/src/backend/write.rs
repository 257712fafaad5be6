//! Writing a blob into a layout: streamed on a writer thread into the
//! blob's locked partial file (kept when a push is interrupted, continued
//! and re-hashed by a later one) or a private temporary file, then
//! renamed into place once the content checked out.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::StreamExt;
use orca_core::{Body, Descriptor, Digester, Error, Result};
use tokio::sync::mpsc;

use super::{CHUNK, Directory, QUEUE};
use crate::error::{FileError, IoContext};
use crate::files::{Flusher, RemoveOnDrop};

impl Directory {
    /// Streams the body into a file in `ingest/` on a writer thread (so
    /// hashing and writing overlap), then renames it into place if the
    /// body ended cleanly.
    ///
    /// The file is the blob's partial file (`ingest/partial-<alg>-<hex>`),
    /// locked while written, so an interrupted push — a cancelled future,
    /// a killed process, a source that failed — leaves what arrived for a
    /// later push to continue from `offset`; a continued push re-hashes
    /// what was there and checks the whole digest before publishing.
    /// Content found wrong is removed. When another push holds the
    /// partial file, a private temporary file (removed however the push
    /// ends) is used instead.
    pub(super) async fn write_blob(
        &self,
        descriptor: &Descriptor,
        mut body: Body,
        offset: u64,
    ) -> Result<()> {
        let layout = self.files.clone();
        let target = layout.blob_path(&descriptor.digest);
        let partial = layout.partial_path(&descriptor.digest);
        let temp = layout.temp_path("blob");
        let place = layout.place.clone();
        // A private temporary file is removed however the push ends —
        // error, mismatch or cancellation, even one that comes before the
        // writer thread has created it — unless it was renamed into place:
        // the thread owns its guard and hands it back. The partial file is
        // kept unless its content is wrong.
        let (sender, mut receiver) = mpsc::channel::<Bytes>(QUEUE);
        let digest = descriptor.digest.clone();
        let (durable, descriptor_size) = (layout.durable, descriptor.size);
        type Written = (File, PathBuf, Option<Digester>, RemoveOnDrop);
        let writer = tokio::task::spawn_blocking(move || -> Result<Written> {
            let file_error = |e: FileError| e.into_core(&place, "push");
            if let Some(dir) = partial.parent() {
                fs::create_dir_all(dir)
                    .at("create", dir)
                    .map_err(file_error)?;
            }
            let (mut file, path, guard) = match open_partial(&partial).map_err(file_error)? {
                Some(file) => (file, partial, RemoveOnDrop(None)),
                None if offset > 0 => {
                    return Err(Error::Conflict {
                        what: format!("resumed push of {digest}: another push holds it"),
                        place,
                    });
                }
                None => {
                    let guard = RemoveOnDrop(Some(temp.clone()));
                    let file = File::create(&temp)
                        .at("create", &temp)
                        .map_err(file_error)?;
                    (file, temp, guard)
                }
            };
            let mut digester = None;
            if offset > 0 {
                let held = file
                    .metadata()
                    .at("inspect", &path)
                    .map_err(file_error)?
                    .len();
                if held != offset {
                    return Err(Error::Conflict {
                        what: format!("resumed push of {digest} at byte {offset} (holding {held})"),
                        place,
                    });
                }
                digester =
                    Some(hash_rest(&mut file, &path, digest.algorithm()).map_err(file_error)?);
            } else {
                file.set_len(0).at("truncate", &path).map_err(file_error)?;
            }
            let mut flusher = durable
                .then(|| Flusher::start(&file, descriptor_size))
                .flatten();
            while let Some(chunk) = receiver.blocking_recv() {
                file.write_all(&chunk)
                    .at("write", &path)
                    .map_err(file_error)?;
                if let Some(hashing) = &mut digester {
                    hashing.update(&chunk);
                }
                if let Some(flusher) = &mut flusher {
                    flusher.wrote(chunk.len());
                }
            }
            if let Some(flusher) = flusher {
                flusher.finish().at("sync", &path).map_err(file_error)?;
            }
            Ok((file, path, digester, guard))
        });

        let failure = pump(&mut body, sender).await;
        let written = writer.await.map_err(|e| Error::Backend {
            backend: layout.place.clone(),
            operation: "push",
            source: Box::new(e),
        })?;
        let (file, path, digester, mut guard) = match (failure, written) {
            (_, Err(e)) => return Err(e),
            (Some(e), Ok((_, path, _, _))) => {
                if matches!(e, Error::DigestMismatch { .. } | Error::SizeMismatch { .. }) {
                    let _ = fs::remove_file(&path);
                }
                return Err(e);
            }
            (None, Ok(done)) => done,
        };
        if let Some(digester) = digester {
            let actual = digester.finish();
            let size = file.metadata().map(|m| m.len()).unwrap_or(0);
            if actual != descriptor.digest || size != descriptor.size {
                let _ = fs::remove_file(&path);
                return Err(Error::DigestMismatch {
                    what: format!("resumed blob {}", descriptor.digest),
                    place: layout.place.clone(),
                    expected: descriptor.digest.clone(),
                    actual,
                });
            }
        }
        let layout2 = layout.clone();
        let moved = path.clone();
        tokio::task::spawn_blocking(move || -> std::result::Result<(), FileError> {
            if durable {
                file.sync_all().at("sync", &moved)?;
            }
            if let Some(dir) = target.parent() {
                layout2.create_dir(dir)?;
            }
            // Renamed while still locked, so no other push starts over
            // the file between the rename and the unlock.
            fs::rename(&moved, &target).at("rename into place", &target)?;
            drop(file);
            layout2.sync_dir(&target)
        })
        .await
        .map_err(|e| Error::Backend {
            backend: layout.place.clone(),
            operation: "push",
            source: Box::new(e),
        })?
        .map_err(|e| layout.file_error("push", e))?;
        guard.0 = None;
        Ok(())
    }
}

/// Hashes what `file` holds from where it stands to its end.
pub(super) fn hash_rest(
    file: &mut File,
    path: &Path,
    algorithm: orca_core::Algorithm,
) -> std::result::Result<Digester, FileError> {
    let mut digester = Digester::new(algorithm);
    let mut buffer = vec![0u8; CHUNK];
    loop {
        let n = file.read(&mut buffer).at("read", path)?;
        if n == 0 {
            return Ok(digester);
        }
        digester.update(&buffer[..n]);
    }
}

/// Sends what `body` streams to a writer thread's `sender` until either
/// ends, then closes the channel; the body's error, if it failed. A writer
/// that stopped early reports its own error when joined.
pub(super) async fn pump<S>(body: &mut S, sender: mpsc::Sender<Bytes>) -> Option<Error>
where
    S: futures::Stream<Item = Result<Bytes>> + Unpin,
{
    while let Some(item) = body.next().await {
        match item {
            Ok(chunk) => {
                if sender.send(chunk).await.is_err() {
                    return None;
                }
            }
            Err(e) => return Some(e),
        }
    }
    None
}

/// Opens and locks the partial file at `path`, creating it if needed;
/// `None` when another push holds it. The lock is good only if the file
/// is still the one at `path` once locked: another push may have renamed
/// it into place between the open and the lock (it is then the published
/// blob, never to be written again).
fn open_partial(path: &Path) -> std::result::Result<Option<File>, FileError> {
    for _ in 0..3 {
        let mut options = fs::OpenOptions::new();
        options.create(true).truncate(false).read(true).write(true);
        // A symlink planted at the partial's name is never followed.
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NOFOLLOW);
        let file = match options.open(path) {
            Ok(file) => file,
            // Something planted a link at the name: it goes, not what it
            // points at, and the push goes on.
            Err(_) if is_link(path) => {
                fs::remove_file(path).at("remove a link at", path)?;
                continue;
            }
            Err(e) => return Err(FileError::new("open", path, e)),
        };
        match file.try_lock() {
            Ok(()) if still_at(&file, path) => return Ok(Some(file)),
            Ok(()) => continue,
            Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
            Err(std::fs::TryLockError::Error(e)) => return Err(FileError::new("lock", path, e)),
        }
    }
    Ok(None)
}

/// Whether `path` is a symbolic link.
fn is_link(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// Whether the open `file` is the file at `path` now.
#[cfg(unix)]
pub(super) fn still_at(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), fs::symlink_metadata(path)) {
        (Ok(open), Ok(named)) => open.ino() == named.ino() && open.dev() == named.dev(),
        _ => false,
    }
}

/// Elsewhere the question cannot be asked cheaply: never resume.
#[cfg(not(unix))]
pub(super) fn still_at(_: &File, _: &Path) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A push that opened the partial file just before another push
    /// renamed it into place must not take it for its own: it is the
    /// published blob now.
    #[cfg(unix)]
    #[test]
    fn a_partial_renamed_into_place_is_not_taken_again() {
        let dir = std::env::temp_dir().join(format!("orca-partial-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let partial = dir.join("partial");
        let published = dir.join("blob");
        fs::write(&partial, b"the whole blob").expect("write");
        let late = File::open(&partial).expect("opened before the rename");
        fs::rename(&partial, &published).expect("published");
        assert!(!still_at(&late, &partial));
        // Taking the partial name again creates a fresh file.
        let fresh = open_partial(&partial).expect("open").expect("not held");
        assert!(still_at(&fresh, &partial));
        assert_eq!(fresh.metadata().expect("meta").len(), 0);
        assert_eq!(fs::read(&published).expect("read"), b"the whole blob");
        let _ = fs::remove_dir_all(dir);
    }
}
