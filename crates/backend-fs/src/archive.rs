//! Reading layout tars safely, shared by the oci-archive and docker-archive
//! importers: entry paths are checked (no absolute paths, no `..`), links
//! are followed only inside the archive, files are streamed (never held
//! whole), and everything lands in a staging area that is published into
//! the layout only once all of it is verified.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use orca_core::layout::LayoutIndex;
use orca_core::{Algorithm, Descriptor, Digest, Digester, Error, Result};

use crate::error::IoContext;
use crate::files::Layout;

/// Metadata files are read into memory up to this size.
const METADATA_LIMIT: u64 = 4 * 1024 * 1024;
/// Longest chain of links followed.
const MAX_LINK_DEPTH: usize = 16;

/// The error for a malformed archive.
pub(crate) fn invalid(archive: &Path, reason: impl Into<String>) -> Error {
    Error::InvalidInput {
        what: format!("archive {}", archive.display()),
        reason: reason.into(),
    }
}

fn io_error(archive: &Path, action: &'static str, e: io::Error) -> Error {
    Error::Backend {
        backend: format!("archive {}", archive.display()),
        operation: "import",
        source: Box::new(crate::error::FileError::new(action, archive, e)),
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
        entry.split('/').collect()
    };
    if !hard {
        parts.pop();
    }
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

/// What a first pass over an archive found.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// Regular files and their sizes.
    pub(crate) files: BTreeMap<String, u64>,
    /// Links, resolved to the regular file they end at.
    pub(crate) links: HashMap<String, String>,
    /// The small metadata files asked for, by path.
    pub(crate) metadata: HashMap<String, Vec<u8>>,
}

impl Scan {
    /// The regular file `path` ends at (itself, or a link's target).
    pub(crate) fn file(&self, path: &str) -> Option<&str> {
        if self.files.contains_key(path) {
            return Some(self.files.get_key_value(path)?.0);
        }
        self.links.get(path).map(String::as_str)
    }
}

/// First pass: checks every entry and reads the metadata files named in
/// `wanted` (for example `index.json`, `manifest.json`).
pub(crate) fn scan(archive: &Path, wanted: &[&str]) -> Result<Scan> {
    let file = File::open(archive).map_err(|e| io_error(archive, "open", e))?;
    let mut tar = tar::Archive::new(file);
    let mut scan = Scan::default();
    let mut raw_links: Vec<(String, String)> = Vec::new();
    let entries = tar.entries().map_err(|e| io_error(archive, "read", e))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| invalid(archive, format!("it is not a readable tar ({e})")))?;
        let path = normalise(&entry.path_bytes(), archive)?;
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| invalid(archive, format!("link {path:?} has no target")))?;
            let target = resolve_link(&path, &target, kind.is_hard_link(), archive)?;
            raw_links.push((path, target));
            continue;
        }
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            return Err(invalid(
                archive,
                format!("entry {path:?} is a {kind:?}, which has no place in an image archive"),
            ));
        }
        let size = entry.size();
        if wanted.contains(&path.as_str()) {
            if size > METADATA_LIMIT {
                return Err(invalid(
                    archive,
                    format!("{path} is {size} bytes, more than the {METADATA_LIMIT} allowed"),
                ));
            }
            let mut bytes = Vec::with_capacity(size as usize);
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| invalid(archive, format!("{path} cannot be read ({e})")))?;
            scan.metadata.insert(path.clone(), bytes);
        }
        scan.files.insert(path, size);
    }
    for (link, first) in raw_links.iter() {
        let mut target = first.clone();
        let mut depth = 0;
        while !scan.files.contains_key(&target) {
            let next = raw_links
                .iter()
                .find(|(l, _)| *l == target)
                .map(|(_, t)| t.clone());
            depth += 1;
            match next {
                Some(next) if depth < MAX_LINK_DEPTH => target = next,
                _ => {
                    return Err(invalid(
                        archive,
                        format!("link {link:?} does not lead to a file in the archive"),
                    ));
                }
            }
        }
        scan.links.insert(link.clone(), target);
    }
    Ok(scan)
}

/// Second pass: streams the regular files named in `wanted` to `visit`,
/// once each, in archive order.
pub(crate) fn stream_files(
    archive: &Path,
    wanted: &HashMap<String, ()>,
    mut visit: impl FnMut(&str, &mut dyn Read) -> Result<()>,
) -> Result<()> {
    let file = File::open(archive).map_err(|e| io_error(archive, "open", e))?;
    let mut tar = tar::Archive::new(file);
    let entries = tar.entries().map_err(|e| io_error(archive, "read", e))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| invalid(archive, format!("it is not a readable tar ({e})")))?;
        let path = normalise(&entry.path_bytes(), archive)?;
        if wanted.contains_key(&path) && entry.header().entry_type().is_file() {
            visit(&path, &mut entry)?;
        }
    }
    Ok(())
}

/// Rewrites a file on its way into staging (for example, compresses it).
pub(crate) type Transform<'a> = dyn FnMut(&mut dyn Read, &mut dyn Write) -> io::Result<()> + 'a;

/// A staging area inside the layout's `ingest/` directory: content lands
/// here first and moves into `blobs/` only when the whole import is good.
/// Dropping it removes whatever was not published.
pub(crate) struct Staging<'a> {
    layout: &'a Layout,
    dir: PathBuf,
    /// Staged blobs and their sizes.
    pub(crate) blobs: BTreeMap<Digest, u64>,
}

impl<'a> Staging<'a> {
    pub(crate) fn new(layout: &'a Layout) -> Result<Self> {
        layout.ensure()?;
        let dir = layout.temp_path("import");
        fs::create_dir_all(&dir)
            .at("create", &dir)
            .map_err(|e| layout.file_error("import", e))?;
        Ok(Staging {
            layout,
            dir,
            blobs: BTreeMap::new(),
        })
    }

    /// Streams `reader` (through `transform`, if given, e.g. a compressor)
    /// into the staging area, hashing what is written, and returns its
    /// digest and size. Callers compare the digest with what they expect.
    pub(crate) fn stage(
        &mut self,
        reader: &mut dyn Read,
        algorithm: Algorithm,
        transform: Option<&mut Transform<'_>>,
    ) -> Result<(Digest, u64)> {
        let temp = self.dir.join(format!("staged-{}", self.blobs.len()));
        let file = File::create(&temp)
            .at("create", &temp)
            .map_err(|e| self.layout.file_error("import", e))?;
        let mut writer = HashingWriter {
            inner: io::BufWriter::with_capacity(1024 * 1024, file),
            digester: Digester::new(algorithm),
            written: 0,
        };
        let copied = match transform {
            Some(transform) => transform(reader, &mut writer),
            None => io::copy(reader, &mut writer).map(drop),
        };
        copied
            .and_then(|()| writer.inner.flush())
            .at("write", &temp)
            .map_err(|e| self.layout.file_error("import", e))?;
        let digest = writer.digester.finish();
        let size = writer.written;
        let staged = self.dir.join(digest.to_string().replace(':', "-"));
        fs::rename(&temp, &staged)
            .at("rename", &staged)
            .map_err(|e| self.layout.file_error("import", e))?;
        self.blobs.insert(digest.clone(), size);
        Ok((digest, size))
    }

    /// Stages small bytes (a manifest orca made).
    pub(crate) fn stage_bytes(&mut self, bytes: &[u8]) -> Result<(Digest, u64)> {
        self.stage(&mut &bytes[..], Algorithm::Sha256, None)
    }

    /// Reads a staged blob (for manifests, which are small).
    pub(crate) fn read(&self, digest: &Digest, limit: u64) -> Result<Option<Vec<u8>>> {
        let path = self.dir.join(digest.to_string().replace(':', "-"));
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(f) => f
                .take(limit)
                .read_to_end(&mut bytes)
                .at("read", &path)
                .map_err(|e| self.layout.file_error("import", e))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(self
                    .layout
                    .file_error("import", crate::error::FileError::new("open", &path, e)));
            }
        };
        Ok(Some(bytes))
    }

    /// Moves every staged blob into `blobs/` (keeping blobs already there),
    /// then applies `change` to `index.json` under the layout lock.
    pub(crate) fn publish(self, change: impl FnOnce(&mut LayoutIndex)) -> Result<()> {
        let layout = self.layout;
        for digest in self.blobs.keys() {
            let from = self.dir.join(digest.to_string().replace(':', "-"));
            let to = layout.blob_path(digest);
            let moved = (|| {
                if to.exists() {
                    return Ok(());
                }
                if let Some(dir) = to.parent() {
                    fs::create_dir_all(dir).at("create", dir)?;
                }
                if layout.durable {
                    File::open(&from)
                        .and_then(|f| f.sync_all())
                        .at("sync", &from)?;
                }
                fs::rename(&from, &to).at("rename into place", &to)?;
                layout.sync_dir(&to)
            })();
            moved.map_err(|e| layout.file_error("import", e))?;
        }
        layout.update_index("import", |index| {
            let before = index.clone();
            change(index);
            Ok((*index != before, ()))
        })
    }
}

impl Drop for Staging<'_> {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

struct HashingWriter<W: Write> {
    inner: W,
    digester: Digester,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.digester.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Checks that every descriptor reachable from `roots` through staged
/// manifests names a staged blob of the same size (blobs with `urls` may
/// be absent: they live elsewhere).
pub(crate) fn check_sizes(
    staging: &Staging<'_>,
    roots: &[Descriptor],
    archive: &Path,
) -> Result<()> {
    let mut queue: Vec<Descriptor> = roots.to_vec();
    let mut seen = std::collections::HashSet::new();
    while let Some(descriptor) = queue.pop() {
        if !seen.insert(descriptor.digest.clone()) {
            continue;
        }
        let Some(&size) = staging.blobs.get(&descriptor.digest) else {
            if descriptor.urls.is_empty() {
                return Err(invalid(
                    archive,
                    format!(
                        "{} {} is named but not in the archive",
                        descriptor.media_type, descriptor.digest
                    ),
                ));
            }
            continue;
        };
        if size != descriptor.size {
            return Err(invalid(
                archive,
                format!(
                    "blob {} is {size} bytes but its descriptor says {}",
                    descriptor.digest, descriptor.size
                ),
            ));
        }
        if descriptor.media_type.is_manifest() {
            let bytes = staging
                .read(
                    &descriptor.digest,
                    orca_core::capabilities::DEFAULT_MAX_MANIFEST_SIZE,
                )?
                .unwrap_or_default();
            let raw = orca_core::RawManifest::new(descriptor.media_type.clone(), bytes);
            let document = raw.parse()?;
            queue.extend(document.children().into_iter().cloned());
        }
    }
    Ok(())
}
