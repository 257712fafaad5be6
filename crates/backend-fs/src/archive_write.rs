//! [`ArchiveWriter`]: an `oci-archive` or `docker-archive` tar written as a
//! backend. Every pushed blob and manifest streams straight into a
//! temporary tar next to the destination (a push that arrives while
//! another is writing is spooled to its own temporary file and appended
//! after, so sources keep flowing); tags are kept in memory. Only
//! [`ArchiveWriter::finish`] writes `oci-layout`, `index.json` (and, for a
//! docker-archive, `manifest.json`) and renames the tar into place. An
//! archive dropped unfinished — a failed or cancelled copy — leaves no
//! file behind. A push whose body fails is cut back out of the tar.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::fs::{self, File};
use std::io::{Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use orca_core::layout;
use orca_core::model::ANNOTATION_REF_NAME;
use orca_core::{
    Backend, Body, Capabilities, Descriptor, Digest, Error, Index, ListPage, ListQuery, MediaType,
    Platform, PushOptions, RawManifest, Referrers, Result, Selector,
};

use crate::archive::Span;
use crate::backend::file_body;
use crate::docker_archive::{CONTAINERD_IMAGE_NAME, MANIFEST_JSON, SavedImage};
use crate::error::{FileError, IoContext};

const BLOCK: u64 = 512;

/// Which kind of archive to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ArchiveFormat {
    /// An OCI image layout in a tar (`oci-archive`).
    Oci,
    /// The `docker save` format (`docker-archive`), which also carries the
    /// OCI layout.
    Docker,
}

/// What the tar holds so far.
struct Written {
    span: Span,
    media_type: MediaType,
    /// For manifests: their children (config and layers, or members).
    names: Vec<Descriptor>,
}

#[derive(Default)]
struct State {
    content: HashMap<Digest, Written>,
    /// `(repository, tag)` → manifest.
    tags: BTreeMap<(Option<String>, String), Descriptor>,
    finished: bool,
}

/// The tar being written; `committed` is where the last whole entry ends.
struct Out {
    file: Arc<File>,
    committed: u64,
    /// Every write to the file holds this, and writes only while the
    /// number in it is its entry's: an entry whose push was cancelled may
    /// leave a write running on the blocking pool, and it must neither
    /// interleave with the next entry nor land after it.
    gate: Arc<Mutex<u64>>,
}

struct Inner {
    target: PathBuf,
    temp: PathBuf,
    format: ArchiveFormat,
    place: String,
    platform: Platform,
    durable: bool,
    out: tokio::sync::Mutex<Out>,
    state: Mutex<State>,
    spools: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Renamed away when finished; otherwise nothing is left behind.
        let _ = fs::remove_file(&self.temp);
    }
}

/// An image archive being written. Cheap to clone; all clones write the
/// same archive.
#[derive(Clone)]
pub struct ArchiveWriter {
    inner: Arc<Inner>,
    repository: Option<String>,
}

impl ArchiveWriter {
    /// Starts an archive that will appear at `path` when finished,
    /// replacing whatever is there then.
    pub fn create(path: impl Into<PathBuf>, format: ArchiveFormat) -> Result<Self> {
        let target: PathBuf = path.into();
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Error::InvalidInput {
                what: format!("archive path {}", target.display()),
                reason: "it names no file".into(),
            })?;
        remove_stale(&target, &name);
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let temp = target.with_file_name(format!(
            ".{name}.orca-{}-{}.tmp",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        ));
        let place = format!(
            "{}:{}",
            match format {
                ArchiveFormat::Oci => "oci-archive",
                ArchiveFormat::Docker => "docker-archive",
            },
            target.display()
        );
        let file = File::options()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&temp)
            .at("create", &temp)
            .map_err(|e| e.into_core(&place, "create"))?;
        Ok(ArchiveWriter {
            inner: Arc::new(Inner {
                target,
                temp,
                format,
                place,
                platform: Platform::new("linux", "amd64"),
                durable: true,
                out: tokio::sync::Mutex::new(Out {
                    file: Arc::new(file),
                    committed: 0,
                    gate: Arc::new(Mutex::new(0)),
                }),
                state: Mutex::new(State::default()),
                spools: AtomicU64::new(0),
            }),
            repository: None,
        })
    }

    /// A view whose tags are `repository:tag` names (docker-archive
    /// `RepoTags`, and the containerd name annotation in `index.json`).
    pub fn repository(&self, repository: &str) -> Self {
        ArchiveWriter {
            inner: self.inner.clone(),
            repository: Some(repository.to_owned()),
        }
    }

    /// The destination path.
    pub fn path(&self) -> &Path {
        &self.inner.target
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Every change under the lock is a single insert or remove.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn file_error(&self, operation: &'static str, e: FileError) -> Error {
        e.into_core(&self.inner.place, operation)
    }

    fn joined(&self, operation: &'static str, e: tokio::task::JoinError) -> Error {
        Error::Backend {
            backend: self.inner.place.clone(),
            operation,
            source: Box::new(e),
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.state().finished {
            return Err(Error::InvalidInput {
                what: self.to_string(),
                reason: "the archive is already finished".into(),
            });
        }
        Ok(())
    }

    /// Streams `body` into the tar as entry `name`, directly when the tar
    /// is free and through a spool file when another push is writing, and
    /// records it (while the tar is still held, so `finish` sees every
    /// entry a push reported written).
    async fn write_entry(
        &self,
        name: &str,
        body: Body,
        record: impl FnOnce(Span) + Send,
    ) -> Result<()> {
        let body = match self.inner.out.try_lock() {
            Ok(mut out) => {
                self.check_open()?;
                let span = self.write_direct(&mut out, name, body).await?;
                record(span);
                return Ok(());
            }
            Err(_) => body,
        };
        let spool = self.inner.temp.with_extension(format!(
            "spool-{}",
            self.inner.spools.fetch_add(1, Ordering::Relaxed)
        ));
        let _remove = crate::files::RemoveOnDrop(Some(spool.clone()));
        let file = File::create(&spool)
            .at("create", &spool)
            .map_err(|e| self.file_error("push", e))?;
        let file = Arc::new(file);
        let size = body.len();
        self.pump(&file, &spool, body, None).await?;
        let spooled = File::open(&spool)
            .at("open", &spool)
            .map_err(|e| self.file_error("push", e))?;
        let body = file_body(spooled, size, self.to_string());
        let mut out = self.inner.out.lock().await;
        self.check_open()?;
        let span = self.write_direct(&mut out, name, body).await?;
        record(span);
        Ok(())
    }

    /// Writes the chunks of `body` to `file` at its current position; for
    /// the tar, through its gate as entry `epoch`.
    async fn pump(
        &self,
        file: &Arc<File>,
        path: &Path,
        mut body: Body,
        gate: Option<(&Arc<Mutex<u64>>, u64)>,
    ) -> Result<u64> {
        let mut written = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            written += chunk.len() as u64;
            let (file, path) = (file.clone(), path.to_owned());
            let gate = gate.map(|(g, epoch)| (g.clone(), epoch));
            tokio::task::spawn_blocking(move || {
                gated(gate.as_ref(), || {
                    (&*file).write_all(&chunk).at("write", &path)
                })
            })
            .await
            .map_err(|e| self.joined("push", e))?
            .map_err(|e| self.file_error("push", e))?;
        }
        Ok(written)
    }

    /// Writes one whole entry at the end of the committed tar; anything a
    /// cancelled or failed entry left after that point is cut off first.
    async fn write_direct(&self, out: &mut Out, name: &str, body: Body) -> Result<Span> {
        let start = out.committed;
        let size = body.len();
        let header = header(name, size)?;
        let file = out.file.clone();
        let temp = self.inner.temp.clone();
        let gate = out.gate.clone();
        // A new entry: earlier entries' late writes are shut out, and
        // whatever they left past the committed end is cut off.
        let epoch = tokio::task::spawn_blocking(move || -> std::result::Result<u64, FileError> {
            let mut current = gate.lock().unwrap_or_else(|p| p.into_inner());
            *current += 1;
            file.set_len(start).at("truncate", &temp)?;
            (&*file).seek(SeekFrom::Start(start)).at("seek", &temp)?;
            (&*file).write_all(&header).at("write", &temp)?;
            Ok(*current)
        })
        .await
        .map_err(|e| self.joined("push", e))?
        .map_err(|e| self.file_error("push", e))?;
        let offset = start + header_len(name);
        let written = self
            .pump(&out.file, &self.inner.temp, body, Some((&out.gate, epoch)))
            .await?;
        if written != size {
            return Err(Error::SizeMismatch {
                what: format!("archive entry {name}"),
                place: self.to_string(),
                expected: size,
                actual: written,
            });
        }
        let padding = (BLOCK - size % BLOCK) % BLOCK;
        if padding > 0 {
            let file = out.file.clone();
            let temp = self.inner.temp.clone();
            let gate = (out.gate.clone(), epoch);
            tokio::task::spawn_blocking(move || {
                gated(Some(&gate), || {
                    (&*file)
                        .write_all(&vec![0u8; padding as usize])
                        .at("write", &temp)
                })
            })
            .await
            .map_err(|e| self.joined("push", e))?
            .map_err(|e| self.file_error("push", e))?;
        }
        out.committed = offset + size + padding;
        Ok(Span { offset, size })
    }

    /// Finishes the archive: writes its index files and moves it into
    /// place. Every clone and view is finished with it.
    pub async fn finish(&self) -> Result<()> {
        let mut out = self.inner.out.lock().await;
        let (index, listing) = {
            let mut state = self.state();
            if state.finished {
                return Err(Error::InvalidInput {
                    what: self.to_string(),
                    reason: "the archive is already finished".into(),
                });
            }
            state.finished = true;
            (self.index(&state)?, self.listing(&state)?)
        };
        if let Some(listing) = listing {
            self.write_direct(&mut out, MANIFEST_JSON, Body::from_bytes(listing))
                .await?;
        }
        self.write_direct(
            &mut out,
            layout::OCI_LAYOUT_FILE,
            Body::from_bytes(layout::marker()),
        )
        .await?;
        self.write_direct(&mut out, layout::INDEX_FILE, Body::from_bytes(index))
            .await?;
        let file = out.file.clone();
        let (temp, target, durable) = (
            self.inner.temp.clone(),
            self.inner.target.clone(),
            self.inner.durable,
        );
        let end = out.committed;
        let gate = out.gate.clone();
        tokio::task::spawn_blocking(move || -> std::result::Result<(), FileError> {
            let mut current = gate.lock().unwrap_or_else(|p| p.into_inner());
            *current += 1;
            file.set_len(end).at("truncate", &temp)?;
            (&*file).seek(SeekFrom::Start(end)).at("seek", &temp)?;
            (&*file)
                .write_all(&[0u8; 2 * BLOCK as usize])
                .at("write", &temp)?;
            if durable {
                file.sync_all().at("sync", &temp)?;
            }
            fs::rename(&temp, &target).at("rename into place", &target)
        })
        .await
        .map_err(|e| self.joined("finish", e))?
        .map_err(|e| self.file_error("finish", e))
    }

    /// `index.json`: every tag, and every manifest nothing else names.
    fn index(&self, state: &State) -> Result<Bytes> {
        let mut index = Index::new();
        for ((repository, tag), descriptor) in &state.tags {
            let mut entry = descriptor.plain();
            entry
                .annotations
                .insert(ANNOTATION_REF_NAME.to_owned(), tag.clone());
            if let Some(repository) = repository {
                entry.annotations.insert(
                    CONTAINERD_IMAGE_NAME.to_owned(),
                    format!("{repository}:{tag}"),
                );
            }
            index.manifests.push(entry);
        }
        let tagged: HashSet<&Digest> = state.tags.values().map(|d| &d.digest).collect();
        let named: HashSet<&Digest> = state
            .content
            .values()
            .flat_map(|w| w.names.iter().map(|d| &d.digest))
            .collect();
        let mut roots: Vec<(&Digest, &Written)> = state
            .content
            .iter()
            .filter(|(d, w)| {
                w.media_type.is_manifest() && !tagged.contains(d) && !named.contains(d)
            })
            .collect();
        roots.sort_by_key(|(digest, _)| digest.to_string());
        for (digest, written) in roots {
            index.manifests.push(Descriptor::new(
                written.media_type.clone(),
                digest.clone(),
                written.span.size,
            ));
        }
        Ok(index.to_raw()?.bytes().clone())
    }

    /// `manifest.json` for a docker-archive: one entry per image (an
    /// index contributes its member for this machine's platform, or its
    /// first image).
    fn listing(&self, state: &State) -> Result<Option<Bytes>> {
        if self.inner.format != ArchiveFormat::Docker {
            return Ok(None);
        }
        let image_of = |descriptor: &Descriptor| -> Option<Digest> {
            let written = state.content.get(&descriptor.digest)?;
            if written.media_type.is_image_manifest() {
                return is_image(written).then(|| descriptor.digest.clone());
            }
            if !written.media_type.is_index() {
                return None;
            }
            let members = written.names.iter().filter(|m| {
                m.media_type.is_image_manifest()
                    && state.content.get(&m.digest).is_some_and(is_image)
            });
            let mut first = None;
            for member in members {
                if member
                    .platform
                    .as_ref()
                    .is_some_and(|p| self.inner.platform.matches(p))
                {
                    return Some(member.digest.clone());
                }
                first = first.or(Some(member.digest.clone()));
            }
            first
        };
        let mut images: Vec<(Digest, Vec<String>)> = Vec::new();
        for ((repository, tag), descriptor) in &state.tags {
            let Some(image) = image_of(descriptor) else {
                continue;
            };
            let name = repository.as_ref().map(|r| format!("{r}:{tag}"));
            match images.iter_mut().find(|(d, _)| *d == image) {
                Some((_, names)) => names.extend(name),
                None => images.push((image, name.into_iter().collect())),
            }
        }
        let mut saved = Vec::new();
        for (digest, names) in images {
            let Some(written) = state.content.get(&digest) else {
                continue;
            };
            let mut config = None;
            let mut layers = Vec::new();
            for (i, child) in written.names.iter().enumerate() {
                if i == 0 {
                    config = Some(layout::blob_path(&child.digest));
                } else if !child.media_type.is_manifest() {
                    layers.push(layout::blob_path(&child.digest));
                }
            }
            let Some(config) = config else { continue };
            saved.push(SavedImage {
                config,
                repo_tags: if names.is_empty() { None } else { Some(names) },
                layers,
            });
        }
        let bytes = serde_json::to_vec(&saved).map_err(|e| Error::InvalidInput {
            what: "manifest.json".into(),
            reason: e.to_string(),
        })?;
        Ok(Some(bytes.into()))
    }

    fn key(&self, tag: &str) -> (Option<String>, String) {
        (self.repository.clone(), tag.to_owned())
    }

    fn not_found(&self, what: String) -> Error {
        Error::NotFound {
            what,
            place: self.to_string(),
        }
    }
}

/// Runs `write` holding the tar's gate, and only while the gate still
/// belongs to entry `epoch` (a write of a cancelled entry that runs late
/// does nothing). Without a gate (a spool file), just runs it.
fn gated(
    gate: Option<&(Arc<Mutex<u64>>, u64)>,
    write: impl FnOnce() -> std::result::Result<(), FileError>,
) -> std::result::Result<(), FileError> {
    match gate {
        None => write(),
        Some((gate, epoch)) => {
            let current = gate.lock().unwrap_or_else(|p| p.into_inner());
            if *current == *epoch { write() } else { Ok(()) }
        }
    }
}

/// Whether a written image manifest is an image `docker load` can read:
/// artifacts (signatures, SBOMs) have other configs.
fn is_image(written: &Written) -> bool {
    written.names.first().is_some_and(|config| {
        let essence = config.media_type.essence();
        essence == MediaType::DOCKER_CONFIG.as_str() || essence == MediaType::OCI_CONFIG.as_str()
    })
}

/// Removes the temporary files of archives at `target` that processes no
/// longer running left (killed before they could clean up). A process is
/// known to be gone only where `/proc` tells; elsewhere nothing is removed.
fn remove_stale(target: &Path, name: &str) {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return;
    }
    let Some(dir) = target.parent() else { return };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!(".{name}.orca-");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(rest) = file.to_str().and_then(|f| f.strip_prefix(&prefix)) else {
            continue;
        };
        let pid = rest.split(['-', '.']).next().unwrap_or_default();
        if !pid.is_empty() && pid.chars().all(|c| c.is_ascii_digit()) && !proc.join(pid).exists() {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// The bytes a header takes: a ustar header, plus a PAX header carrying
/// the path when it does not fit (sha512 blob names do not).
fn header_len(name: &str) -> u64 {
    if name.len() <= 100 {
        BLOCK
    } else {
        let record = pax_record(name).len() as u64;
        BLOCK + record.div_ceil(BLOCK) * BLOCK + BLOCK
    }
}

fn pax_record(name: &str) -> String {
    let body = format!(" path={name}\n");
    // The record's length counts its own digits.
    let mut len = body.len() + 1;
    while len.to_string().len() + body.len() != len {
        len = len.to_string().len() + body.len();
    }
    format!("{len}{body}")
}

fn ustar(name: &[u8], size: u64, kind: tar::EntryType) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    let field = &mut header.as_old_mut().name;
    let n = name.len().min(field.len());
    field[..n].copy_from_slice(&name[..n]);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(kind);
    header.set_cksum();
    header
}

/// The header bytes of an entry.
fn header(name: &str, size: u64) -> Result<Vec<u8>> {
    if name.is_empty() || name.starts_with('/') || name.split('/').any(|p| p == "..") {
        return Err(Error::InvalidInput {
            what: format!("archive entry {name:?}"),
            reason: "it is not a relative path inside the archive".into(),
        });
    }
    let mut bytes = Vec::new();
    if name.len() > 100 {
        let record = pax_record(name);
        let pax = ustar(
            b"././@PaxHeader",
            record.len() as u64,
            tar::EntryType::XHeader,
        );
        bytes.extend_from_slice(pax.as_bytes());
        bytes.extend_from_slice(record.as_bytes());
        let padding = (BLOCK - record.len() as u64 % BLOCK) % BLOCK;
        bytes.extend(std::iter::repeat_n(0u8, padding as usize));
    }
    bytes.extend_from_slice(ustar(name.as_bytes(), size, tar::EntryType::Regular).as_bytes());
    Ok(bytes)
}

impl fmt::Display for ArchiveWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.place)?;
        match &self.repository {
            Some(repository) => write!(f, ":{repository}"),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for ArchiveWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArchiveWriter")
            .field("place", &self.inner.place)
            .field("repository", &self.repository)
            .finish()
    }
}

#[async_trait]
impl Backend for ArchiveWriter {
    fn capabilities(&self) -> Capabilities {
        let mut capabilities = Capabilities::NONE;
        capabilities.untag = true;
        capabilities.tag_compare_and_swap = true;
        capabilities.fetch_range = true;
        capabilities
    }

    async fn exists(&self, descriptor: &Descriptor) -> Result<bool> {
        Ok(self.state().content.contains_key(&descriptor.digest))
    }

    async fn fetch(&self, descriptor: &Descriptor) -> Result<Body> {
        self.fetch_range(descriptor, 0..descriptor.size).await
    }

    async fn push(&self, descriptor: &Descriptor, body: Body, options: &PushOptions) -> Result<()> {
        self.check_open()?;
        if !self.exists(descriptor).await? {
            let manifest = descriptor.media_type.is_manifest();
            let (body, names) = if manifest {
                // Manifests are small (Store capped them): read them to
                // learn what they name.
                let bytes = body.bytes(Capabilities::NONE.max_manifest_size).await?;
                let document =
                    RawManifest::new(descriptor.media_type.clone(), bytes.clone()).parse()?;
                // Children only: a referrer's subject is not part of it, and
                // an image that only referrers name is still a root.
                let names = document.children().into_iter().cloned().collect();
                (Body::from_bytes(bytes), names)
            } else {
                (body, Vec::new())
            };
            let media_type = descriptor.media_type.clone();
            let digest = descriptor.digest.clone();
            self.write_entry(&layout::blob_path(&descriptor.digest), body, |span| {
                self.state().content.insert(
                    digest,
                    Written {
                        span,
                        media_type,
                        names,
                    },
                );
            })
            .await?;
        }
        if let Some(tag) = &options.tag {
            self.tag(descriptor, tag).await?;
        }
        Ok(())
    }

    async fn partial(&self, _: &Descriptor) -> Result<u64> {
        Ok(0)
    }

    async fn delete(&self, _: &Descriptor) -> Result<()> {
        Err(Error::Unsupported {
            operation: "delete",
            place: self.to_string(),
        })
    }

    async fn resolve(&self, selector: &Selector) -> Result<Descriptor> {
        let state = self.state();
        match selector {
            Selector::Tag(tag) => state
                .tags
                .get(&self.key(tag))
                .map(Descriptor::plain)
                .ok_or_else(|| self.not_found(format!("tag {tag}"))),
            Selector::Digest(digest) => state
                .content
                .get(digest)
                .filter(|w| w.media_type.is_manifest())
                .map(|w| Descriptor::new(w.media_type.clone(), digest.clone(), w.span.size))
                .ok_or_else(|| self.not_found(format!("manifest {digest}"))),
        }
    }

    async fn tag(&self, descriptor: &Descriptor, tag: &str) -> Result<()> {
        self.check_open()?;
        let mut state = self.state();
        if !state.content.contains_key(&descriptor.digest) {
            return Err(self.not_found(format!("manifest {}", descriptor.digest)));
        }
        state.tags.insert(self.key(tag), descriptor.plain());
        Ok(())
    }

    async fn untag(&self, tag: &str) -> Result<()> {
        self.check_open()?;
        match self.state().tags.remove(&self.key(tag)) {
            Some(_) => Ok(()),
            None => Err(self.not_found(format!("tag {tag}"))),
        }
    }

    async fn swap_tag(
        &self,
        tag: &str,
        expected: Option<&Digest>,
        new: Option<&Descriptor>,
    ) -> Result<()> {
        self.check_open()?;
        let key = self.key(tag);
        let mut state = self.state();
        let now = state.tags.get(&key).map(|d| &d.digest);
        if now != expected {
            return Err(Error::Conflict {
                what: format!("tag {tag}"),
                place: self.to_string(),
            });
        }
        match new {
            Some(new) => {
                if !state.content.contains_key(&new.digest) {
                    return Err(self.not_found(format!("manifest {}", new.digest)));
                }
                state.tags.insert(key, new.plain());
            }
            None => {
                state.tags.remove(&key);
            }
        }
        Ok(())
    }

    async fn tags(&self, query: &ListQuery) -> Result<ListPage> {
        let tags: Vec<String> = self
            .state()
            .tags
            .keys()
            .filter(|(repository, _)| *repository == self.repository)
            .map(|(_, tag)| tag.clone())
            .collect();
        Ok(ListPage::slice(&tags, query))
    }

    async fn referrers(&self, _: &Descriptor, _: Option<&MediaType>) -> Result<Referrers> {
        Err(Error::Unsupported {
            operation: "referrers",
            place: self.to_string(),
        })
    }

    async fn mount(&self, _: &Descriptor, _: &str) -> Result<bool> {
        Err(Error::Unsupported {
            operation: "mount",
            place: self.to_string(),
        })
    }

    async fn fetch_range(&self, descriptor: &Descriptor, range: Range<u64>) -> Result<Body> {
        let span = self
            .state()
            .content
            .get(&descriptor.digest)
            .map(|w| w.span)
            .ok_or_else(|| self.not_found(format!("content {}", descriptor.digest)))?;
        if range.start > range.end || range.end > span.size {
            return Err(Error::InvalidInput {
                what: format!("range {}..{}", range.start, range.end),
                reason: format!("{} has {} bytes", descriptor.digest, span.size),
            });
        }
        let temp = self.inner.temp.clone();
        let offset = span.offset + range.start;
        let file = tokio::task::spawn_blocking(move || -> std::result::Result<File, FileError> {
            let mut file = File::open(&temp).at("open", &temp)?;
            file.seek(SeekFrom::Start(offset)).at("seek", &temp)?;
            Ok(file)
        })
        .await
        .map_err(|e| self.joined("fetch", e))?
        .map_err(|e| self.file_error("fetch", e))?;
        Ok(file_body(file, range.end - range.start, self.to_string()))
    }

    async fn catalog(&self, _: &ListQuery) -> Result<ListPage> {
        Err(Error::Unsupported {
            operation: "catalog",
            place: self.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{header, header_len, pax_record};

    #[test]
    fn long_names_get_a_pax_header() {
        let short = "blobs/sha256/".to_owned() + &"a".repeat(64);
        assert_eq!(
            header(&short, 1).expect("header").len() as u64,
            header_len(&short)
        );
        let long = "blobs/sha512/".to_owned() + &"b".repeat(128);
        let bytes = header(&long, 1).expect("header");
        assert_eq!(bytes.len() as u64, header_len(&long));
        let record = pax_record(&long);
        let (len, _) = record.split_once(' ').expect("length");
        assert_eq!(len.parse::<usize>().expect("number"), record.len());
        // The tar crate reads the whole name back.
        let mut tar_bytes = bytes;
        tar_bytes.extend_from_slice(&[b'x'; 1]);
        tar_bytes.extend(std::iter::repeat_n(0u8, 511 + 1024));
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let entry = archive
            .entries()
            .expect("entries")
            .next()
            .expect("one")
            .expect("entry");
        assert_eq!(entry.path_bytes().as_ref(), long.as_bytes());
    }
}
