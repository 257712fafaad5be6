//! Artifacts: files (each a blob with a media type and an
//! `org.opencontainers.image.title`), an optional config and an optional
//! subject, packed into a manifest and pushed — in the OCI 1.1 form
//! (`artifactType`, the empty `{}` config) or the OCI 1.0 form (the config
//! media type names the artifact). `Auto` tries 1.1 and falls back to 1.0
//! when the target refuses it with a client error other than an auth
//! failure, as Docker Compose does. Pulling writes the files back by title
//! and refuses titles that would leave the output directory.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use futures::StreamExt;

use crate::body::Body;
use crate::error::{Error, Result};
use crate::model::{
    ANNOTATION_CREATED, ANNOTATION_TITLE, Descriptor, Digester, Document, Manifest, MediaType,
    RawManifest, Selector,
};
use crate::store::Store;

/// Bytes read from a file at a time.
const CHUNK: usize = 1024 * 1024;

/// Which manifest form to store an artifact in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Form {
    /// OCI 1.1 first, OCI 1.0 if the target refuses it.
    #[default]
    Auto,
    /// OCI 1.0: no `artifactType`; the config media type names the artifact.
    V1_0,
    /// OCI 1.1: `artifactType`, and the empty config unless one is given.
    V1_1,
}

/// An artifact to pack: its type, its files (already pushed, see
/// [`push_file`]), and optionally a config, a subject and annotations.
#[derive(Clone, Debug)]
pub struct Artifact {
    /// The artifact type.
    pub artifact_type: MediaType,
    /// The files, as layers, in order.
    pub files: Vec<Descriptor>,
    /// A config blob (already pushed); the empty config when `None`.
    pub config: Option<Descriptor>,
    /// The manifest this artifact refers to (OCI 1.1 form only).
    pub subject: Option<Descriptor>,
    /// Manifest annotations; the creation time is added unless present.
    pub annotations: BTreeMap<String, String>,
}

impl Artifact {
    /// An artifact of `artifact_type` holding `files`.
    pub fn new(artifact_type: MediaType, files: Vec<Descriptor>) -> Self {
        Artifact {
            artifact_type,
            files,
            config: None,
            subject: None,
            annotations: BTreeMap::new(),
        }
    }
}

/// What [`pack`] stored.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Packed {
    /// The manifest's descriptor.
    pub descriptor: Descriptor,
    /// The form stored: [`Form::V1_1`] or [`Form::V1_0`].
    pub form: Form,
}

/// The current time as RFC 3339 in UTC, seconds precision.
fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The manifest for `artifact` in `form` (1.0 or 1.1).
fn manifest(artifact: &Artifact, form: Form, empty: &Descriptor) -> Result<RawManifest> {
    let v1_0 = form == Form::V1_0;
    let config = match (&artifact.config, v1_0) {
        (Some(config), _) => config.clone(),
        (None, false) => empty.clone(),
        (None, true) => {
            let mut named = empty.clone();
            named.media_type = artifact.artifact_type.clone();
            named
        }
    };
    let layers = if artifact.files.is_empty() && !v1_0 {
        vec![empty.clone()]
    } else {
        artifact.files.clone()
    };
    let mut manifest = Manifest::new(config, layers);
    if !v1_0 {
        manifest.artifact_type = Some(artifact.artifact_type.clone());
        manifest.subject = artifact.subject.clone();
    }
    manifest.annotations = artifact.annotations.clone();
    manifest
        .annotations
        .entry(ANNOTATION_CREATED.to_owned())
        .or_insert_with(now_rfc3339);
    manifest.to_raw()
}

/// Whether a refusal of the 1.1 form should be retried as 1.0: a client
/// error that is not about authentication (401, 403 and 407 are
/// `Unauthorized` and `Denied`; 429 is retried by the transport instead).
fn refused_form(error: &Error) -> bool {
    matches!(
        error,
        Error::Rejected { .. }
            | Error::InvalidManifest { .. }
            | Error::Unsupported { .. }
            | Error::NotFound { .. }
            | Error::Conflict { .. }
            | Error::LimitExceeded { .. }
    )
}

/// Pushes the artifact's manifest (its files and config must be present),
/// tagged when `tag` is given, in `form`; says which form was stored.
/// The 1.0 form cannot carry a subject: an explicit 1.0 with a subject is
/// refused, and `Auto` does not fall back when there is one.
pub async fn pack(
    store: &Store,
    artifact: &Artifact,
    form: Form,
    tag: Option<&str>,
) -> Result<Packed> {
    if form == Form::V1_0 && artifact.subject.is_some() {
        return Err(Error::InvalidInput {
            what: format!("artifact of type {}", artifact.artifact_type),
            reason: "the OCI 1.0 form cannot carry a subject; use 1.1 or auto".into(),
        });
    }
    // The empty `{}` blob is pushed only when a form uses it: as the 1.1
    // config, as the 1.0 config, or as the layer of a file-less artifact.
    let empty = Descriptor::of(MediaType::OCI_EMPTY, b"{}");
    if artifact.config.is_none() || artifact.files.is_empty() {
        store.push_bytes(MediaType::OCI_EMPTY, &b"{}"[..]).await?;
    }
    let first = if form == Form::V1_0 {
        Form::V1_0
    } else {
        Form::V1_1
    };
    let raw = manifest(artifact, first, &empty)?;
    match store.push_manifest(&raw, tag).await {
        Ok(descriptor) => Ok(Packed {
            descriptor,
            form: first,
        }),
        Err(e) if form == Form::Auto && artifact.subject.is_none() && refused_form(&e) => {
            let raw = manifest(artifact, Form::V1_0, &empty)?;
            let descriptor = store.push_manifest(&raw, tag).await?;
            Ok(Packed {
                descriptor,
                form: Form::V1_0,
            })
        }
        Err(e) => Err(e),
    }
}

/// Reads a file in chunks on the blocking pool, as a stream.
fn file_stream(file: std::fs::File) -> futures::stream::BoxStream<'static, Result<Bytes>> {
    let path_error = |e: std::io::Error| Error::InvalidInput {
        what: "file".into(),
        reason: e.to_string(),
    };
    futures::stream::unfold(Some(file), move |state| async move {
        let mut file = state?;
        let read = tokio::task::spawn_blocking(move || {
            let mut buffer = vec![0u8; CHUNK];
            let n = file.read(&mut buffer)?;
            buffer.truncate(n);
            Ok::<_, std::io::Error>((file, buffer))
        })
        .await;
        match read {
            Ok(Ok((_, buffer))) if buffer.is_empty() => None,
            Ok(Ok((file, buffer))) => Some((Ok(Bytes::from(buffer)), Some(file))),
            Ok(Err(e)) => Some((Err(path_error(e)), None)),
            Err(e) => Some((Err(path_error(std::io::Error::other(e))), None)),
        }
    })
    .boxed()
}

/// Pushes the file at `path` as a blob of `media_type`, titled `title`
/// (the file name when `None`). The file is read twice (to hash, then to
/// push), streamed both times.
pub async fn push_file(
    store: &Store,
    path: &Path,
    media_type: MediaType,
    title: Option<&str>,
) -> Result<Descriptor> {
    push_file_reported(store, path, media_type, title, None).await
}

/// [`push_file`], reporting the push to `progress` (`Started`, its bytes,
/// then `Copied`, or `Present` when the store has it) as a copy does.
pub async fn push_file_reported(
    store: &Store,
    path: &Path,
    media_type: MediaType,
    title: Option<&str>,
    progress: Option<&std::sync::Arc<dyn crate::copy::Progress>>,
) -> Result<Descriptor> {
    let io = |e: std::io::Error| Error::InvalidInput {
        what: format!("file {}", path.display()),
        reason: e.to_string(),
    };
    let title = match title {
        Some(t) => t.to_owned(),
        None => path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| io(std::io::Error::other("it has no file name")))?
            .to_owned(),
    };
    check_title(&title)?;
    let open = || std::fs::File::open(path).map_err(io);
    let mut digester = Digester::new(crate::model::Algorithm::Sha256);
    let mut size = 0u64;
    let mut chunks = file_stream(open()?);
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        size += chunk.len() as u64;
        digester.update(&chunk);
    }
    let mut descriptor = Descriptor::new(media_type, digester.finish(), size);
    let body = Body::new(size, file_stream(open()?));
    match progress {
        Some(progress) if store.exists(&descriptor).await? => {
            progress.event(&crate::copy::Event::Present(descriptor.clone()));
        }
        Some(progress) => {
            progress.event(&crate::copy::Event::Started(descriptor.clone()));
            let body = crate::copy::reported(body, &descriptor, progress.clone());
            store.push(&descriptor, body).await?;
            progress.event(&crate::copy::Event::Copied(descriptor.clone()));
        }
        None => store.push(&descriptor, body).await?,
    }
    descriptor
        .annotations
        .insert(ANNOTATION_TITLE.to_owned(), title);
    Ok(descriptor)
}

/// Refuses a title that is empty, absolute, or would climb out of the
/// output directory.
fn check_title(title: &str) -> Result<()> {
    let bad = |reason: &str| Error::InvalidInput {
        what: format!("file title {title:?}"),
        reason: reason.to_owned(),
    };
    if title.is_empty() || title.contains('\0') {
        return Err(bad("it is empty or contains NUL"));
    }
    let path = Path::new(title);
    for component in path.components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err(bad("it climbs out of the output directory")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(bad("it is an absolute path"));
            }
        }
    }
    if path.components().all(|c| c == Component::CurDir) {
        return Err(bad("it names no file"));
    }
    Ok(())
}

/// Pulls the files of the artifact `selector` names into `out`, by title,
/// and returns their paths. Every title is checked before anything is
/// written; files land whole (written beside, then renamed) and verified.
/// Layers without a title are skipped, as oras does. A file of the same
/// name already in `out` is kept: the pull is refused before anything is
/// written (see [`pull_files_with`] to replace it).
pub async fn pull_files(store: &Store, selector: &Selector, out: &Path) -> Result<Vec<PathBuf>> {
    pull_files_with(store, selector, out, false, None).await
}

/// [`pull_files`], replacing files of the same names when `overwrite`
/// says so, and reporting the transfers to `progress` as a copy does
/// (`Planned`, then `Started`, bytes and `Copied` per file).
pub async fn pull_files_with(
    store: &Store,
    selector: &Selector,
    out: &Path,
    overwrite: bool,
    progress: Option<std::sync::Arc<dyn crate::copy::Progress>>,
) -> Result<Vec<PathBuf>> {
    let (_, raw) = store.fetch_manifest(selector).await?;
    let Document::Manifest(manifest) = raw.parse()? else {
        return Err(Error::InvalidManifest {
            what: format!("artifact {selector}"),
            reason: "it is an index, not a manifest with files".into(),
            source: None,
        });
    };
    let mut seen = HashSet::new();
    let mut files = Vec::new();
    for layer in &manifest.layers {
        let Some(title) = layer.annotations.get(ANNOTATION_TITLE) else {
            continue;
        };
        check_title(title)?;
        // `a`, `./a` and `a/` are one file.
        let relative: PathBuf = Path::new(title)
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        if !seen.insert(relative.clone()) {
            return Err(Error::InvalidManifest {
                what: format!("artifact {selector}"),
                reason: format!("two files are titled {title:?}"),
                source: None,
            });
        }
        files.push((layer.clone(), relative));
    }
    let root = std::fs::canonicalize(out).map_err(|e| io_error(out, e))?;
    if !overwrite {
        // What is there already stays: refused before anything is written.
        for (_, relative) in &files {
            let at = root.join(relative);
            if std::fs::symlink_metadata(&at).is_ok() {
                return Err(Error::AlreadyExists {
                    what: format!("file {}", relative.display()),
                    place: out.display().to_string(),
                });
            }
        }
    }
    if let Some(progress) = &progress {
        progress.event(&crate::copy::Event::Planned(crate::copy::Totals {
            blobs: files.len() as u64,
            manifests: 0,
            bytes: files.iter().map(|(layer, _)| layer.size).sum(),
        }));
    }
    let mut written = Vec::new();
    for (layer, relative) in files {
        let parent = inside(&root, relative.parent().unwrap_or(Path::new("")))?;
        let name = relative.file_name().map(PathBuf::from).unwrap_or_default();
        let (temp, file) = temporary(&parent, &layer.digest)?;
        // Removed however the pull ends short of the rename: an error, or
        // the pull dropped (an interrupted command).
        let mut unfinished = RemoveOnDrop(Some(temp.clone()));
        if let Some(progress) = &progress {
            progress.event(&crate::copy::Event::Started(layer.clone()));
        }
        write_file(store, &layer, file, &temp, progress.as_ref()).await?;
        if let Some(progress) = &progress {
            progress.event(&crate::copy::Event::Copied(layer.clone()));
        }
        let target = parent.join(name);
        std::fs::rename(&temp, &target).map_err(|e| io_error(&target, e))?;
        unfinished.0 = None;
        written.push(target);
    }
    Ok(written)
}

/// Removes the file it names when dropped, unless told otherwise.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A new temporary file in `dir` for `digest`, of this pull's own: a file
/// (or a planted link) already at a name is never followed or overwritten,
/// and one a killed pull left behind never blocks this one.
fn temporary(dir: &Path, digest: &crate::model::Digest) -> Result<(PathBuf, std::fs::File)> {
    static PULLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let hex = digest.hex();
    for _ in 0..64 {
        let temp = dir.join(format!(
            ".orca-pull-{}-{}-{}",
            &hex[..16.min(hex.len())],
            std::process::id(),
            PULLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
        {
            Ok(file) => return Ok((temp, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error(&temp, e)),
        }
    }
    Err(Error::Conflict {
        what: "a temporary file for the pull: 64 names were taken".into(),
        place: dir.display().to_string(),
    })
}

/// Streams `layer` into `file`, the new file at `temp`, durably: a thread
/// writes one chunk while the next is fetched and hashed.
async fn write_file(
    store: &Store,
    layer: &Descriptor,
    mut file: std::fs::File,
    temp: &Path,
    progress: Option<&std::sync::Arc<dyn crate::copy::Progress>>,
) -> Result<()> {
    let mut body = store.fetch(layer).await?;
    if let Some(progress) = progress {
        body = crate::copy::reported(body, layer, progress.clone());
    }
    let (chunks, mut arriving) = tokio::sync::mpsc::channel::<Bytes>(8);
    let path = temp.to_owned();
    let writer = tokio::task::spawn_blocking(move || {
        while let Some(chunk) = arriving.blocking_recv() {
            file.write_all(&chunk).map_err(|e| io_error(&path, e))?;
        }
        file.sync_all().map_err(|e| io_error(&path, e))
    });
    let mut failure = None;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(chunk) => {
                if chunks.send(chunk).await.is_err() {
                    // The writer stopped; it tells why below.
                    break;
                }
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    drop(chunks);
    let written = writer.await.map_err(|e| Error::Backend {
        backend: temp.display().to_string(),
        operation: "write",
        source: Box::new(e),
    })?;
    match failure {
        Some(e) => Err(e),
        None => written,
    }
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::InvalidInput {
        what: format!("output {}", path.display()),
        reason: e.to_string(),
    }
}

/// The directory `relative` under `root` (canonical), created one level at
/// a time; a symbolic link on the way must stay inside `root`, and is
/// checked before anything is created beyond it.
fn inside(root: &Path, relative: &Path) -> Result<PathBuf> {
    let mut current = root.to_path_buf();
    for component in relative.components() {
        current.push(component);
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let real = std::fs::canonicalize(&current).map_err(|e| io_error(&current, e))?;
                if !real.starts_with(root) || !real.is_dir() {
                    return Err(Error::InvalidInput {
                        what: format!("output {}", current.display()),
                        reason: "a link there leads outside the output directory".into(),
                    });
                }
                current = real;
            }
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(io_error(&current, std::io::Error::other("not a directory")));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&current).map_err(|e| io_error(&current, e))?;
            }
            Err(e) => return Err(io_error(&current, e)),
        }
    }
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_that_escape_are_refused() {
        for bad in ["", "../x", "a/../../x", "/etc/passwd", ".", "a\0b"] {
            assert!(check_title(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["a.txt", "dir/a.txt", "./a", "a..b"] {
            assert!(check_title(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn links_out_of_the_output_directory_are_refused_before_creating() {
        let base = std::env::temp_dir().join(format!("orca-inside-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let (root, outside) = (base.join("out"), base.join("outside"));
        std::fs::create_dir_all(&root).expect("mkdir");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::os::unix::fs::symlink(&outside, root.join("link")).expect("symlink");
        let root = std::fs::canonicalize(&root).expect("canonical");
        assert!(inside(&root, Path::new("link/x")).is_err());
        assert!(!outside.join("x").exists(), "created outside");
        let made = inside(&root, Path::new("a/b")).expect("inside");
        assert!(made.is_dir() && made.starts_with(&root));
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn creation_time_is_rfc3339() {
        let now = now_rfc3339();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.starts_with("20") && now.ends_with('Z'), "{now}");
        assert_eq!(&now[4..5], "-");
        assert_eq!(&now[10..11], "T");
    }
}
