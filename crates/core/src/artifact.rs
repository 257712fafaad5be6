//! Artifacts: files (each a blob with a media type and an
//! `org.opencontainers.image.title`), an optional config and an optional
//! subject, packed into a manifest and pushed — in the OCI 1.1 form
//! (`artifactType`, the empty `{}` config) or the OCI 1.0 form (the config
//! media type names the artifact). `Auto` tries 1.1 and falls back to 1.0
//! when the target refuses it with a client error other than an auth
//! failure, as Docker Compose does. Pulling writes the files back by title
//! and refuses titles that would leave the output directory.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path};

use bytes::Bytes;
use futures::StreamExt;

use crate::body::Body;
use crate::error::{Error, Result};
use crate::model::{
    ANNOTATION_CREATED, ANNOTATION_TITLE, Descriptor, Digester, Manifest, MediaType, RawManifest,
};
use crate::store::Store;

mod directory;
mod pull;

pub use pull::{pull_files, pull_files_with};

pub use directory::{
    ANNOTATION_CONTENT_DIGEST, ANNOTATION_UNPACK, DIRECTORY_MEDIA_TYPE, push_directory_reported,
};

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
    let descriptor = Descriptor::new(media_type, digester.finish(), size);
    push_hashed(store, path, descriptor, title, progress).await
}

/// Pushes the file at `path`, whose digest and size `descriptor` already
/// says (read once more, streamed, verified by the store), titled
/// `title` (checked by the caller), reporting to `progress`.
pub(crate) async fn push_hashed(
    store: &Store,
    path: &Path,
    mut descriptor: Descriptor,
    title: String,
    progress: Option<&std::sync::Arc<dyn crate::copy::Progress>>,
) -> Result<Descriptor> {
    let file = std::fs::File::open(path).map_err(|e| Error::InvalidInput {
        what: format!("file {}", path.display()),
        reason: e.to_string(),
    })?;
    let body = Body::new(descriptor.size, file_stream(file));
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
    fn creation_time_is_rfc3339() {
        let now = now_rfc3339();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.starts_with("20") && now.ends_with('Z'), "{now}");
        assert_eq!(&now[4..5], "-");
        assert_eq!(&now[10..11], "T");
    }
}
