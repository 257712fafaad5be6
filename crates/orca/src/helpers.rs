//! One call per everyday job, for Rust users and the CLI alike: pack files
//! into an artifact, attach files to a manifest as a referrer, and walk
//! the referrers of a manifest as a tree.

use std::collections::BTreeMap;
use std::path::PathBuf;

use orca_core::artifact::{self, Artifact, Form, Packed};
use orca_core::referrers::Via;
use orca_core::{Descriptor, MediaType, Result, Selector, Store};

/// What to pack: files (each with its media type), the artifact type, and
/// optional config, subject and annotations.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Files {
    /// The artifact type.
    pub artifact_type: MediaType,
    /// The files, in order, with the media type of each.
    pub files: Vec<(PathBuf, MediaType)>,
    /// A config file and its media type (the empty config when `None`).
    pub config: Option<(PathBuf, MediaType)>,
    /// Manifest annotations.
    pub annotations: BTreeMap<String, String>,
    /// Which manifest form to store.
    pub form: Form,
}

impl Files {
    /// An artifact of `artifact_type` holding `files`.
    pub fn new(artifact_type: MediaType, files: Vec<(PathBuf, MediaType)>) -> Self {
        Files {
            artifact_type,
            files,
            config: None,
            annotations: BTreeMap::new(),
            form: Form::Auto,
        }
    }
}

/// Pushes the files and a manifest naming them, with `subject` as its
/// subject when given, tagged `tag` when given; says which form was stored.
pub async fn push_files(
    store: &Store,
    files: &Files,
    subject: Option<&Descriptor>,
    tag: Option<&str>,
) -> Result<Packed> {
    push_files_reported(store, files, subject, tag, None).await
}

/// [`push_files`], reporting each file's push to `progress` as a copy
/// reports its blobs.
pub async fn push_files_reported(
    store: &Store,
    files: &Files,
    subject: Option<&Descriptor>,
    tag: Option<&str>,
    progress: Option<&std::sync::Arc<dyn orca_core::copy::Progress>>,
) -> Result<Packed> {
    if let Some(progress) = progress {
        let sizes = files
            .files
            .iter()
            .filter_map(|(path, _)| std::fs::metadata(path).ok())
            // A directory's size is known once it is packed.
            .filter(std::fs::Metadata::is_file)
            .map(|m| m.len());
        let mut totals = orca_core::copy::Totals::default();
        totals.blobs = files.files.len() as u64;
        totals.manifests = 1;
        totals.bytes = sizes.sum();
        progress.event(&orca_core::copy::Event::Planned(totals));
    }
    let mut layers = Vec::new();
    for (path, media_type) in &files.files {
        // A directory goes as one tar layer, unpacked again by a pull.
        let layer = if path.is_dir() {
            artifact::push_directory_reported(store, path, Some(media_type.clone()), None, progress)
                .await?
        } else {
            artifact::push_file_reported(store, path, media_type.clone(), None, progress).await?
        };
        layers.push(layer);
    }
    let config = match &files.config {
        Some((path, media_type)) => Some(
            artifact::push_file(store, path, media_type.clone(), None)
                .await?
                .plain(),
        ),
        None => None,
    };
    let artifact = Artifact {
        config,
        subject: subject.map(Descriptor::plain),
        annotations: files.annotations.clone(),
        ..Artifact::new(files.artifact_type.clone(), layers)
    };
    artifact::pack(store, &artifact, files.form, tag).await
}

/// Attaches files to the manifest `subject` names, as a referrer (OCI 1.1
/// form, no tag); returns the referrer's descriptor.
pub async fn attach(store: &Store, subject: &Selector, files: &Files) -> Result<Packed> {
    let subject = store.resolve(subject).await?;
    let files = Files {
        form: Form::V1_1,
        ..files.clone()
    };
    push_files(store, &files, Some(&subject), None).await
}

/// A manifest and the referrers found under it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Referrer {
    /// The referrer's descriptor (with its artifact type and annotations).
    pub descriptor: Descriptor,
    /// Its own referrers, when the walk went that deep.
    pub referrers: Vec<Referrer>,
}

/// The referrers of a manifest, as a tree `depth` levels deep (at least 1).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Discovered {
    /// The subject.
    pub subject: Descriptor,
    /// Its referrers.
    pub referrers: Vec<Referrer>,
    /// Whether the Referrers API or the fallback tag answered (for the
    /// subject; `None` when nothing was asked).
    pub via: Option<Via>,
}

/// Lists the referrers of the manifest `subject` names, optionally only
/// those of `artifact_type`, and theirs, `depth` levels deep.
pub async fn discover(
    store: &Store,
    subject: &Selector,
    artifact_type: Option<&MediaType>,
    depth: usize,
) -> Result<Discovered> {
    let subject = store.resolve(subject).await?;
    let listing = store.referrers(&subject, artifact_type).await?;
    let mut referrers = Vec::new();
    for descriptor in listing.manifests {
        referrers.push(Referrer {
            referrers: below(store, &descriptor, artifact_type, depth.max(1) - 1).await?,
            descriptor,
        });
    }
    Ok(Discovered {
        subject,
        referrers,
        via: Some(listing.via),
    })
}

fn below<'a>(
    store: &'a Store,
    subject: &'a Descriptor,
    artifact_type: Option<&'a MediaType>,
    depth: usize,
) -> futures::future::BoxFuture<'a, Result<Vec<Referrer>>> {
    Box::pin(async move {
        if depth == 0 {
            return Ok(Vec::new());
        }
        let listing = store.referrers(subject, artifact_type).await?;
        let mut out = Vec::new();
        for descriptor in listing.manifests {
            out.push(Referrer {
                referrers: below(store, &descriptor, artifact_type, depth - 1).await?,
                descriptor,
            });
        }
        Ok(out)
    })
}

/// Copies what `source` names to `destination`, both target strings (see
/// [`crate::FORMS`]) — an export to an archive, an import from one, a
/// mirror between registries — tagging it with the destination's tag, or
/// else the source's; finishes an archive destination.
pub async fn copy_between(
    source: &str,
    destination: &str,
    open_options: &crate::OpenOptions,
    copy_options: &crate::CopyOptions,
) -> Result<crate::CopyReport> {
    let from = crate::open(source, crate::Access::Read, open_options).await?;
    let to = crate::open(destination, crate::Access::Write, open_options).await?;
    let root = from.root().await?;
    let tag = to.tag_for(&root);
    let report = crate::copy(
        from.store(),
        &root,
        to.store(),
        tag.as_deref(),
        copy_options,
    )
    .await?;
    to.finish().await?;
    Ok(report)
}

/// A size in bytes from text: a whole number with an optional unit
/// (`512MiB`, `20GiB`, `1GB`; `K`/`KiB` … `T`/`TiB` count in 1024s,
/// `KB` … `TB` in 1000s). The error says what is wrong.
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "TiB" | "T" => 1 << 40,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "unknown unit {other:?} (use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)"
            ));
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| "not a size (a whole number and a unit: 20GiB)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("3MiB"), Ok(3 << 20));
        assert_eq!(parse_size("20 GiB"), Ok(20 << 30));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert!(parse_size("1.5GiB").is_err());
        assert!(
            parse_size("12 parsecs")
                .expect_err("not a unit")
                .contains("unknown unit")
        );
        assert!(parse_size("99999999999TiB").is_err());
    }
}
