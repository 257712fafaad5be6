//! Reading image tars safely, shared by both archive formats: one pass over
//! the headers (seeking past file data) records where each regular file's
//! bytes lie, so content is later served straight out of the tar by
//! offset. Entry paths are checked (no absolute paths, no `..`), links are
//! resolved inside the archive in linear time, and entries that have no
//! place in an image archive (devices, fifos, sparse files) are refused.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use orca_core::{Error, Result};

/// Longest chain of links followed.
const MAX_LINK_DEPTH: usize = 16;

/// The error for a malformed archive.
pub(crate) fn invalid(archive: &Path, reason: impl Into<String>) -> Error {
    Error::InvalidInput {
        what: format!("archive {}", archive.display()),
        reason: reason.into(),
    }
}

/// The error for a failed read of an archive.
pub(crate) fn io_error(archive: &Path, operation: &'static str, e: io::Error) -> Error {
    Error::Backend {
        backend: format!("archive {}", archive.display()),
        operation,
        source: Box::new(crate::error::FileError::new("read", archive, e)),
    }
}

/// A relative path inside the archive, normalised to `a/b/c`.
pub(crate) fn normalise(raw: &[u8], archive: &Path) -> Result<String> {
    let text = std::str::from_utf8(raw)
        .map_err(|_| invalid(archive, format!("entry {raw:?} is not a UTF-8 path")))?;
    if text.starts_with('/') {
        return Err(invalid(
            archive,
            format!("entry {text:?} has an absolute path"),
        ));
    }
    let mut parts = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(invalid(
                    archive,
                    format!("entry {text:?} has a `..` component, which could escape the archive"),
                ));
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// Resolves a link target relative to the link's directory, refusing
/// targets outside the archive.
fn resolve_link(entry: &str, target: &[u8], hard: bool, archive: &Path) -> Result<String> {
    let text = std::str::from_utf8(target)
        .map_err(|_| invalid(archive, format!("link {entry:?} has a non-UTF-8 target")))?;
    if text.starts_with('/') {
        return Err(invalid(
            archive,
            format!("link {entry:?} points at absolute path {text:?}"),
        ));
    }
    // Hard link targets are archive paths; symlink targets are relative
    // to the link's own directory.
    let mut parts: Vec<&str> = if hard {
        Vec::new()
    } else {
        let mut parts: Vec<&str> = entry.split('/').collect();
        parts.pop();
        parts
    };
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(invalid(
                        archive,
                        format!("link {entry:?} points at {text:?}, outside the archive"),
                    ));
                }
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// Where a regular file's bytes lie in the tar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    /// Offset of the first byte.
    pub(crate) offset: u64,
    /// Length in bytes.
    pub(crate) size: u64,
}

/// What one pass over an archive found: every regular file by path, links
/// included under their own names.
#[derive(Debug, Default)]
pub(crate) struct TarIndex {
    files: HashMap<String, Span>,
}

impl TarIndex {
    /// Scans the tar at `archive`.
    pub(crate) fn scan(archive: &Path) -> Result<Self> {
        let file = File::open(archive).map_err(|e| io_error(archive, "open", e))?;
        let mut tar = tar::Archive::new(file);
        let mut files = HashMap::new();
        let mut links: HashMap<String, String> = HashMap::new();
        let entries = tar
            .entries_with_seek()
            .map_err(|e| io_error(archive, "scan", e))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| invalid(archive, format!("it is not a readable tar ({e})")))?;
            let kind = entry.header().entry_type();
            // PAX global headers (written by `git archive`) describe the
            // archive, not a file.
            if kind == tar::EntryType::XGlobalHeader || kind.is_dir() {
                continue;
            }
            let path = normalise(&entry.path_bytes(), archive)?;
            if kind.is_symlink() || kind.is_hard_link() {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| invalid(archive, format!("link {path:?} has no target")))?;
                let target = resolve_link(&path, &target, kind.is_hard_link(), archive)?;
                links.insert(path, target);
                continue;
            }
            if !(kind.is_file() || kind == tar::EntryType::Continuous) {
                return Err(invalid(
                    archive,
                    format!("entry {path:?} is a {kind:?}, which has no place in an image archive"),
                ));
            }
            let span = Span {
                offset: entry.raw_file_position(),
                size: entry.size(),
            };
            links.remove(&path);
            files.insert(path, span);
        }
        // Each link is followed to the file it ends at; a chain is walked
        // at most MAX_LINK_DEPTH steps, so the whole pass is linear.
        let mut resolved = HashMap::new();
        for (link, first) in &links {
            let mut target = first;
            let mut depth = 0;
            let span = loop {
                if let Some(span) = files.get(target) {
                    break *span;
                }
                depth += 1;
                match links.get(target) {
                    Some(next) if depth < MAX_LINK_DEPTH => target = next,
                    _ => {
                        return Err(invalid(
                            archive,
                            format!("link {link:?} does not lead to a file in the archive"),
                        ));
                    }
                }
            };
            resolved.insert(link.clone(), span);
        }
        files.extend(resolved);
        Ok(TarIndex { files })
    }

    /// Where `path` lies (a file or a link to one).
    pub(crate) fn get(&self, path: &str) -> Option<Span> {
        self.files.get(path).copied()
    }

    /// Every path, in no order.
    pub(crate) fn paths(&self) -> impl Iterator<Item = (&str, Span)> {
        self.files.iter().map(|(p, s)| (p.as_str(), *s))
    }
}

/// Reads a small file out of the archive, refusing one over `limit`.
pub(crate) fn read_span(archive: &Path, span: Span, limit: u64, name: &str) -> Result<Vec<u8>> {
    if span.size > limit {
        return Err(invalid(
            archive,
            format!(
                "{name} is {} bytes, more than the {limit} allowed",
                span.size
            ),
        ));
    }
    let mut file = File::open(archive).map_err(|e| io_error(archive, "open", e))?;
    file.seek(SeekFrom::Start(span.offset))
        .map_err(|e| io_error(archive, "read", e))?;
    let mut bytes = Vec::with_capacity(span.size as usize);
    file.take(span.size)
        .read_to_end(&mut bytes)
        .map_err(|e| io_error(archive, "read", e))?;
    if bytes.len() as u64 != span.size {
        return Err(invalid(archive, format!("{name} is cut short")));
    }
    Ok(bytes)
}

/// A readable file behind an archive: the archive itself, or — for a
/// gzip-compressed one — a copy unpacked once into the temporary
/// directory, removed when dropped.
#[derive(Debug)]
pub(crate) struct Unpacked {
    /// The plain tar to read.
    pub(crate) path: PathBuf,
    temporary: bool,
}

impl Unpacked {
    /// Unpacks `archive` when it is gzip-compressed.
    pub(crate) fn open(archive: &Path) -> Result<Self> {
        let mut file = File::open(archive).map_err(|e| io_error(archive, "open", e))?;
        let mut magic = [0u8; 2];
        let n = file
            .read(&mut magic)
            .map_err(|e| io_error(archive, "read", e))?;
        if n < 2 || magic != [0x1f, 0x8b] {
            return Ok(Unpacked {
                path: archive.to_owned(),
                temporary: false,
            });
        }
        file.seek(SeekFrom::Start(0))
            .map_err(|e| io_error(archive, "read", e))?;
        let path = std::env::temp_dir().join(format!(
            "orca-unpacked-{}-{}.tar",
            std::process::id(),
            UNPACKED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let unpacked = Unpacked {
            path: path.clone(),
            temporary: true,
        };
        let mut out = File::create(&path).map_err(|e| io_error(&path, "unpack", e))?;
        let mut decoder = flate2::read::MultiGzDecoder::new(io::BufReader::new(file));
        io::copy(&mut decoder, &mut out)
            .map_err(|e| invalid(archive, format!("its gzip compression is damaged ({e})")))?;
        Ok(unpacked)
    }
}

static UNPACKED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Drop for Unpacked {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
