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
/// gzip-compressed one — a copy unpacked once into a private file of the
/// temporary directory (created new, readable by its owner only), removed
/// when dropped.
#[derive(Debug)]
pub(crate) struct Unpacked {
    /// The plain tar to read.
    pub(crate) path: PathBuf,
    temporary: bool,
}

/// The most a gzip-compressed archive may expand to: this many times its
/// compressed size…
const MAX_EXPANSION: u64 = 50;
/// …or this much, whichever is more (real archives of compressed layers
/// barely shrink; a decompression bomb expands a thousandfold).
const MIN_UNPACK_LIMIT: u64 = 1 << 30;

impl Unpacked {
    /// Unpacks `archive` when it is gzip-compressed, refusing to expand
    /// past the limit (see [`MAX_EXPANSION`]).
    pub(crate) fn open(archive: &Path) -> Result<Self> {
        let size = std::fs::metadata(archive)
            .map_err(|e| io_error(archive, "open", e))?
            .len();
        Self::open_limited(
            archive,
            size.saturating_mul(MAX_EXPANSION).max(MIN_UNPACK_LIMIT),
        )
    }

    /// [`Unpacked::open`] with the expansion limited to `limit` bytes.
    pub(crate) fn open_limited(archive: &Path, limit: u64) -> Result<Self> {
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
        // A new file (never one planted under a guessable name), 0600.
        let temp = tempfile::Builder::new()
            .prefix("orca-unpacked-")
            .suffix(".tar")
            .tempfile()
            .map_err(|e| io_error(&std::env::temp_dir(), "unpack", e))?;
        let decoder = flate2::read::MultiGzDecoder::new(io::BufReader::new(file));
        let mut out = temp.as_file();
        let copied = io::copy(&mut decoder.take(limit.saturating_add(1)), &mut out)
            .map_err(|e| invalid(archive, format!("its gzip compression is damaged ({e})")))?;
        if copied > limit {
            // `temp` removes the file as it goes.
            return Err(Error::LimitExceeded {
                what: format!(
                    "the unpacked size of {} (gzip-compressed; more than {MAX_EXPANSION} times its size)",
                    archive.display()
                ),
                limit,
            });
        }
        let path = temp
            .into_temp_path()
            .keep()
            .map_err(|e| io_error(archive, "unpack", e.error))?;
        Ok(Unpacked {
            path,
            temporary: true,
        })
    }
}

impl Drop for Unpacked {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A gzip file of `members` copies of one member holding `mib` MiB of
    /// zeros: a small file that expands a thousandfold.
    fn bomb(path: &Path, mib: usize, members: usize) {
        let mut member = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        member.write_all(&vec![0u8; mib << 20]).expect("compress");
        let member = member.finish().expect("gzip");
        let mut file = File::create(path).expect("create");
        for _ in 0..members {
            file.write_all(&member).expect("write");
        }
    }

    /// Backends review M5: a decompression bomb is refused once it passes
    /// the limit, and leaves nothing behind.
    #[test]
    fn backends_m5_a_gzip_bomb_is_refused_and_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bomb.tar.gz");
        bomb(&path, 16, 4);
        let compressed = std::fs::metadata(&path).expect("size").len();
        assert!(compressed < 1 << 20, "{compressed}");
        let err = Unpacked::open_limited(&path, 32 << 20).expect_err("a bomb");
        assert!(matches!(err, Error::LimitExceeded { .. }), "{err}");
        assert!(err.to_string().contains("bomb.tar.gz"), "{err}");
        // Within the limit it unpacks, into a file only its owner reads.
        let unpacked = Unpacked::open_limited(&path, 64 << 20).expect("unpack");
        assert_eq!(
            std::fs::metadata(&unpacked.path).expect("size").len(),
            64 << 20
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&unpacked.path)
                .expect("mode")
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "readable by others: {mode:o}");
        }
        let kept = unpacked.path.clone();
        drop(unpacked);
        assert!(!kept.exists(), "the unpacked copy stayed");
    }
}
