//! Staged objects that grow in place and become blobs by a rename: an
//! upload's bytes are written once, whatever number of requests carried
//! them. Each append holds the object's file lock while it writes, so two
//! writers at one offset cannot both land; publishing takes the same lock,
//! hashes the file, and links it into place only if it is the blob.

use std::fs::{self, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::time::SystemTime;

use bytes::Bytes;
use futures::stream::BoxStream;
use orca_core::{Descriptor, Error, Result};
use tokio::sync::mpsc;

use super::write::{hash_rest, pump, still_at};
use super::{Directory, QUEUE};
use crate::error::{FileError, IoContext};

impl Directory {
    /// [`orca_core::layout::ObjectStorage::append`] on a file: locked,
    /// checked to hold `offset` bytes, written on a blocking thread.
    pub(super) async fn append_object(
        &self,
        key: &str,
        offset: u64,
        mut body: BoxStream<'static, Result<Bytes>>,
    ) -> Result<u64> {
        let path = self.files.root.join(key);
        let place = self.files.place.clone();
        let durable = self.files.durable;
        let what = format!("bytes from {offset} of {key}");
        let (sender, mut receiver) = mpsc::channel::<Bytes>(QUEUE);
        let writer = tokio::task::spawn_blocking(move || -> Result<u64> {
            let file_error = |e: FileError| e.into_core(&place, "append");
            let conflict = |why: String| Error::Conflict {
                what: format!("{what}: {why}"),
                place: place.clone(),
            };
            if offset == 0
                && let Some(dir) = path.parent()
            {
                fs::create_dir_all(dir)
                    .at("create", dir)
                    .map_err(file_error)?;
            }
            let opened = OpenOptions::new()
                .read(true)
                .write(true)
                .create(offset == 0)
                .truncate(false)
                .open(&path);
            let mut file = match opened {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(conflict("it holds nothing".into()));
                }
                Err(e) => return Err(file_error(FileError::new("open", &path, e))),
            };
            if file.try_lock().is_err() || !still_at(&file, &path) {
                return Err(conflict("another request is writing it".into()));
            }
            let held = file
                .metadata()
                .at("inspect", &path)
                .map_err(file_error)?
                .len();
            if held != offset {
                return Err(conflict(format!("it holds {held} bytes")));
            }
            file.seek(SeekFrom::Start(offset))
                .at("seek", &path)
                .map_err(file_error)?;
            let mut size = offset;
            while let Some(chunk) = receiver.blocking_recv() {
                file.write_all(&chunk)
                    .at("write", &path)
                    .map_err(file_error)?;
                size += chunk.len() as u64;
            }
            if durable {
                file.sync_data().at("sync", &path).map_err(file_error)?;
            }
            Ok(size)
        });
        let failure = pump(&mut body, sender).await;
        let written = writer.await.map_err(|e| Error::Backend {
            backend: self.files.place.clone(),
            operation: "append",
            source: Box::new(e),
        })?;
        match (written, failure) {
            (Err(e), _) | (Ok(_), Some(e)) => Err(e),
            (Ok(size), None) => Ok(size),
        }
    }

    /// [`orca_core::layout::ObjectStorage::publish`] on a file: locked,
    /// hashed, dated now (the collector's grace counts from here), and
    /// hard-linked into place (a blob already there stays as it is).
    pub(super) async fn publish_object(&self, key: &str, descriptor: &Descriptor) -> Result<bool> {
        let path = self.files.root.join(key);
        let descriptor = descriptor.clone();
        let key = key.to_owned();
        self.blocking("publish", move |files| {
            let file_error = |e: FileError| files.file_error("publish", e);
            let mut file = match OpenOptions::new().read(true).write(true).open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(file_error(FileError::new("open", &path, e))),
            };
            if file.try_lock().is_err() || !still_at(&file, &path) {
                return Err(Error::Conflict {
                    what: format!(
                        "{key}, published as {}: another request is writing it",
                        descriptor.digest
                    ),
                    place: files.place.clone(),
                });
            }
            let size = file
                .metadata()
                .at("inspect", &path)
                .map_err(file_error)?
                .len();
            if size != descriptor.size {
                return Err(Error::SizeMismatch {
                    what: format!("{key}, published as {}", descriptor.digest),
                    place: files.place.clone(),
                    expected: descriptor.size,
                    actual: size,
                });
            }
            let actual = hash_rest(&mut file, &path, descriptor.digest.algorithm())
                .map_err(file_error)?
                .finish();
            if actual != descriptor.digest {
                return Err(Error::DigestMismatch {
                    what: format!("{key}, published as a blob"),
                    place: files.place.clone(),
                    expected: descriptor.digest.clone(),
                    actual,
                });
            }
            file.set_modified(SystemTime::now())
                .at("date", &path)
                .map_err(file_error)?;
            if files.durable {
                file.sync_all().at("sync", &path).map_err(file_error)?;
            }
            let target = files.blob_path(&descriptor.digest);
            if let Some(dir) = target.parent() {
                files.create_dir(dir).map_err(file_error)?;
            }
            match fs::hard_link(&path, &target) {
                Ok(()) => files.sync_dir(&target).map_err(file_error)?,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(file_error(FileError::new("link into place", &target, e))),
            }
            // Removed while still locked: no append starts on it after.
            fs::remove_file(&path)
                .at("remove", &path)
                .map_err(file_error)?;
            drop(file);
            Ok(true)
        })
        .await
    }
}
