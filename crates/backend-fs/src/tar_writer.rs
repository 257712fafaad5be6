//! Writing a tar archive from async code: headers are built here, bytes go
//! to a writer thread, and the archive appears at its path (by rename) only
//! when it is complete.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::StreamExt;
use orca_core::{Body, Error, Result};
use tokio::sync::mpsc;

use crate::error::{FileError, IoContext};
use crate::files::RemoveOnDrop;

const BLOCK: usize = 512;

/// A tar archive being written to a temporary file next to its target.
pub(crate) struct TarWriter {
    target: PathBuf,
    temp: PathBuf,
    sender: Option<mpsc::Sender<Bytes>>,
    writer: tokio::task::JoinHandle<std::result::Result<File, FileError>>,
    cleanup: RemoveOnDrop,
}

impl TarWriter {
    /// Starts writing the archive that will appear at `target`.
    pub(crate) fn create(target: &Path) -> Self {
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "archive".into());
        let temp = target.with_file_name(format!(".{name}.orca-{}.tmp", std::process::id()));
        let (sender, mut receiver) = mpsc::channel::<Bytes>(8);
        let path = temp.clone();
        let writer = tokio::task::spawn_blocking(move || {
            let file = File::create(&path).at("create", &path)?;
            let mut out = std::io::BufWriter::with_capacity(1024 * 1024, file);
            while let Some(bytes) = receiver.blocking_recv() {
                out.write_all(&bytes).at("write", &path)?;
            }
            out.into_inner()
                .map_err(|e| FileError::new("write", &path, e.into_error()))
        });
        TarWriter {
            target: target.to_owned(),
            cleanup: RemoveOnDrop(Some(temp.clone())),
            temp,
            sender: Some(sender),
            writer,
        }
    }

    fn place(&self) -> String {
        format!("archive {}", self.target.display())
    }

    async fn send(&mut self, bytes: Bytes) -> Result<()> {
        let sent = match &self.sender {
            Some(sender) => sender.send(bytes).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The writer thread stopped: report why.
        self.sender = None;
        let failure = match (&mut self.writer).await {
            Ok(Err(e)) => Box::new(e) as orca_core::error::BoxError,
            Ok(Ok(_)) => "the writer stopped early".into(),
            Err(e) => Box::new(e),
        };
        Err(Error::Backend {
            backend: self.place(),
            operation: "write archive",
            source: failure,
        })
    }

    fn header(&self, name: &str, size: u64) -> Result<Bytes> {
        let mut header = tar::Header::new_ustar();
        header.set_path(name).map_err(|e| Error::InvalidInput {
            what: format!("archive entry {name}"),
            reason: e.to_string(),
        })?;
        header.set_size(size);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        Ok(Bytes::copy_from_slice(header.as_bytes()))
    }

    /// Adds a file whose bytes come from `body` (verified by whoever made it).
    pub(crate) async fn file(&mut self, name: &str, mut body: Body) -> Result<()> {
        let size = body.len();
        let header = self.header(name, size)?;
        self.send(header).await?;
        while let Some(chunk) = body.next().await {
            self.send(chunk?).await?;
        }
        let padding = (BLOCK - (size % BLOCK as u64) as usize) % BLOCK;
        if padding > 0 {
            self.send(Bytes::from(vec![0u8; padding])).await?;
        }
        Ok(())
    }

    /// Adds a file held in memory.
    pub(crate) async fn bytes(&mut self, name: &str, bytes: Bytes) -> Result<()> {
        self.file(name, Body::from_bytes(bytes)).await
    }

    /// Ends the archive and moves it into place.
    pub(crate) async fn finish(mut self, durable: bool) -> Result<()> {
        self.send(Bytes::from(vec![0u8; 2 * BLOCK])).await?;
        self.sender = None;
        let place = self.place();
        let joined = (&mut self.writer).await.map_err(|e| Error::Backend {
            backend: place.clone(),
            operation: "write archive",
            source: Box::new(e),
        })?;
        let file = joined.map_err(|e| Error::Backend {
            backend: place.clone(),
            operation: "write archive",
            source: Box::new(e),
        })?;
        let (temp, target) = (self.temp.clone(), self.target.clone());
        tokio::task::spawn_blocking(move || {
            if durable {
                file.sync_all().at("sync", &temp)?;
            }
            fs::rename(&temp, &target).at("rename into place", &target)
        })
        .await
        .map_err(|e| Error::Backend {
            backend: place.clone(),
            operation: "write archive",
            source: Box::new(e),
        })?
        .map_err(|e| Error::Backend {
            backend: place,
            operation: "write archive",
            source: Box::new(e),
        })?;
        self.cleanup.0 = None;
        Ok(())
    }
}
