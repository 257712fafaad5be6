//! Open blob upload sessions remembered on disk, so that a chunked upload
//! a killed or cancelled process left behind is continued by the next one
//! instead of starting over. A record names the session's newest
//! `Location` and the bytes the registry has acknowledged; it is written
//! after every chunk and removed when the upload completes or is
//! cancelled. Only chunked uploads leave records: a monolithic `PUT` has
//! nothing to continue.

use std::fs;
use std::io;
use std::path::PathBuf;

use orca_core::Digest;
use serde::{Deserialize, Serialize};

/// Where the records live.
#[derive(Debug, Clone)]
pub(crate) struct Sessions {
    dir: PathBuf,
}

/// One open session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    /// The newest `Location` the registry gave.
    pub(crate) location: String,
    /// Bytes the registry acknowledged.
    pub(crate) offset: u64,
}

impl Sessions {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Sessions { dir }
    }

    fn path(&self, place: &str, digest: &Digest) -> PathBuf {
        let key = Digest::sha256(format!("{place}\n{digest}").as_bytes());
        self.dir.join(format!("{}.json", key.hex()))
    }

    /// Remembers the session of `digest`'s upload to `place`.
    /// The record holds the session's newest Location, whose signed state
    /// lets anyone continue the upload: it is readable by its owner only,
    /// written to a new file (never through a planted link), made durable
    /// and renamed into place.
    pub(crate) fn save(&self, place: &str, digest: &Digest, record: &Record) -> io::Result<()> {
        use std::io::Write;
        fs::create_dir_all(&self.dir)?;
        let path = self.path(place, digest);
        static SAVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let temp = path.with_extension(format!(
            "tmp.{}.{}",
            std::process::id(),
            SAVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let bytes = serde_json::to_vec(record).map_err(io::Error::other)?;
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let written = options.open(&temp).and_then(|mut file| {
            file.write_all(&bytes)?;
            file.sync_all()
        });
        if let Err(e) = written.and_then(|()| fs::rename(&temp, &path)) {
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        // The rename itself is made durable with the directory.
        fs::File::open(&self.dir).and_then(|dir| dir.sync_all())
    }

    /// The session of `digest`'s upload to `place`, if one was left.
    pub(crate) fn load(&self, place: &str, digest: &Digest) -> Option<Record> {
        let bytes = fs::read(self.path(place, digest)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Claims the session of `digest`'s upload to `place` for this push
    /// (an exclusive lock held as long as the returned file is open);
    /// `None` when another push — in this process or another — holds it.
    /// Only the holder may save, continue, cancel or forget the session.
    pub(crate) fn claim(&self, place: &str, digest: &Digest) -> Option<fs::File> {
        fs::create_dir_all(&self.dir).ok()?;
        let path = self.path(place, digest).with_extension("lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .ok()?;
        file.try_lock().ok()?;
        Some(file)
    }

    /// Forgets the session (done or cancelled).
    pub(crate) fn forget(&self, place: &str, digest: &Digest) {
        let _ = fs::remove_file(self.path(place, digest));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_are_keyed_by_place_and_digest() {
        let dir = std::env::temp_dir().join(format!("orca-sessions-{}", std::process::id()));
        let sessions = Sessions::new(dir.clone());
        let digest = Digest::sha256(b"blob");
        let record = Record {
            location: "http://127.0.0.1/v2/a/blobs/uploads/x?_state=y".into(),
            offset: 42,
        };
        sessions
            .save("127.0.0.1/a", &digest, &record)
            .expect("save");
        assert_eq!(sessions.load("127.0.0.1/a", &digest), Some(record.clone()));
        assert_eq!(sessions.load("127.0.0.1/b", &digest), None);
        // Backends review m10: the record (a signed upload Location) is
        // readable by its owner only, and saving it again works.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(sessions.path("127.0.0.1/a", &digest))
                .expect("record")
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "readable by others: {mode:o}");
        }
        sessions
            .save("127.0.0.1/a", &digest, &record)
            .expect("save again");
        sessions.forget("127.0.0.1/a", &digest);
        assert_eq!(sessions.load("127.0.0.1/a", &digest), None);
        let _ = fs::remove_dir_all(dir);
    }
}
