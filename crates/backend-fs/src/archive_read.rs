//! [`Archive`]: an `oci-archive` or `docker-archive` tar read in place as a
//! (read-only) backend. Opening it reads the tar's headers once and
//! records where each file lies; blobs and manifests are then served
//! straight out of the tar by offset, and `Store` verifies them as they
//! pass. An archive with an OCI layout inside is read through its
//! `index.json` (docker-archives written by orca or Docker 25+ have one);
//! one with only `manifest.json` gets Docker schema 2 manifests made for
//! its images. A gzip-compressed tar is unpacked once into the temporary
//! directory first.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use orca_core::layout::{self, LayoutIndex};
use orca_core::model::ANNOTATION_REF_NAME;
use orca_core::{
    Backend, Body, Capabilities, Descriptor, Digest, Error, ListPage, ListQuery, MediaType,
    PushOptions, Referrers, Result, Selector,
};

use crate::archive::{Span, TarIndex, Unpacked, invalid, io_error, read_span};
use crate::backend::file_body;
use crate::docker_archive::{self, CONTAINERD_IMAGE_NAME, MANIFEST_JSON, split_name};

/// One image an archive names.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ArchiveImage {
    /// Its full `repository:tag` name, when the archive gives one
    /// (docker-archive `RepoTags`, or the containerd name annotation).
    pub name: Option<String>,
    /// Its tag, if any.
    pub tag: Option<String>,
    /// The manifest or index.
    pub descriptor: Descriptor,
}

impl ArchiveImage {
    /// Its repository: from its full name, or from a `REPO:TAG` tag (a
    /// bundle's name, which a plain tag cannot be: it has no `:`).
    pub fn repository(&self) -> Option<&str> {
        self.name
            .as_deref()
            .or_else(|| self.tag.as_deref().filter(|t| t.contains(':')))
            .map(|n| split_name(n).0)
    }

    /// Its full name split at the tag's colon, `(REPOSITORY, TAG)`, when
    /// the archive gives one (a name without a tag is `latest`).
    pub fn name_parts(&self) -> Option<(&str, &str)> {
        self.name.as_deref().map(split_name)
    }

    /// Its tag within its repository.
    fn short_tag(&self) -> Option<&str> {
        match self.tag.as_deref() {
            Some(tag) if tag.contains(':') => Some(split_name(tag).1),
            tag => tag,
        }
    }
}

struct Inner {
    unpacked: Unpacked,
    place: String,
    blobs: HashMap<Digest, Span>,
    synthetic: HashMap<Digest, Bytes>,
    images: Vec<ArchiveImage>,
    /// A docker-archive (`manifest.json`): its images are named whole.
    docker: bool,
}

/// An image archive opened for reading. Cheap to clone.
#[derive(Clone)]
pub struct Archive {
    inner: Arc<Inner>,
    repository: Option<String>,
}

impl Archive {
    /// Opens the archive at `path`: checks every entry (no traversal,
    /// links only inside, no devices) and finds its images. Blocking: it
    /// reads the tar's headers, and hashes compressed layers of a
    /// docker-archive that has no OCI layout.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let source: PathBuf = path.into();
        let unpacked = Unpacked::open(&source)?;
        let tar = TarIndex::scan(&unpacked.path).map_err(|e| rename(e, &unpacked.path, &source))?;
        let read = &unpacked.path;
        let docker = tar.get(MANIFEST_JSON).is_some();
        let place = format!(
            "{}:{}",
            if docker {
                "docker-archive"
            } else {
                "oci-archive"
            },
            source.display()
        );
        let (blobs, synthetic, images) = if tar.get(layout::OCI_LAYOUT_FILE).is_some() {
            read_layout(read, &tar)
        } else if docker {
            docker_archive::synthesize(read, &tar).map(|s| {
                let images = s
                    .images
                    .into_iter()
                    .map(|(name, descriptor)| ArchiveImage {
                        tag: name.as_deref().map(|n| split_name(n).1.to_owned()),
                        name,
                        descriptor,
                    })
                    .collect();
                (s.blobs, s.manifests, images)
            })
        } else {
            Err(invalid(
                read,
                "it has neither an oci-layout file nor a manifest.json, so it is not an image archive",
            ))
        }
        .map_err(|e| rename(e, read, &source))?;
        Ok(Archive {
            inner: Arc::new(Inner {
                unpacked,
                place,
                blobs,
                synthetic,
                images,
                docker,
            }),
            repository: None,
        })
    }

    /// The images the archive names, as listed (`index.json` entries or
    /// `manifest.json` names).
    pub fn images(&self) -> &[ArchiveImage] {
        &self.inner.images
    }

    /// A view of the archive whose tags are those of images named
    /// `repository:tag` (so two repositories may both have `latest`).
    pub fn repository(&self, repository: &str) -> Self {
        Archive {
            inner: self.inner.clone(),
            repository: Some(repository.to_owned()),
        }
    }

    /// An image's tag as this view names it: within the repository for a
    /// repository's view; otherwise as listed, or, in a docker-archive, by
    /// its whole `REPO:TAG` name (as `docker load` names it, and as a
    /// bundle's names read).
    fn tag_of<'a>(&self, image: &'a ArchiveImage) -> Option<&'a str> {
        match &self.repository {
            Some(_) => image.short_tag(),
            None if self.inner.docker => image.name.as_deref().or(image.tag.as_deref()),
            None => image.tag.as_deref(),
        }
    }

    fn visible(&self) -> impl Iterator<Item = &ArchiveImage> {
        self.inner.images.iter().filter(|i| match &self.repository {
            None => true,
            Some(wanted) => i.repository() == Some(wanted.as_str()),
        })
    }

    fn not_found(&self, what: String) -> Error {
        Error::NotFound {
            what,
            place: self.to_string(),
        }
    }

    fn read_only(&self, operation: &'static str) -> Error {
        Error::Unsupported {
            operation,
            place: format!("{} (an archive opened for reading)", self),
        }
    }

    /// Streams the bytes of `span` out of the tar.
    async fn serve(&self, span: Span, operation: &'static str) -> Result<Body> {
        let this = self.clone();
        let file = tokio::task::spawn_blocking(move || this.open_at(span, operation))
            .await
            .map_err(|e| Error::Backend {
                backend: self.to_string(),
                operation,
                source: Box::new(e),
            })??;
        Ok(file_body(file, span.size, self.to_string()))
    }

    fn open_at(&self, span: Span, operation: &'static str) -> Result<File> {
        let path = &self.inner.unpacked.path;
        let mut file = File::open(path).map_err(|e| io_error(path, operation, e))?;
        file.seek(SeekFrom::Start(span.offset))
            .map_err(|e| io_error(path, operation, e))?;
        Ok(file)
    }
}

/// Errors about the unpacked copy name the archive the user gave.
fn rename(e: Error, read: &Path, source: &Path) -> Error {
    match e {
        Error::InvalidInput { what, reason } if read != source => Error::InvalidInput {
            what: what.replace(&read.display().to_string(), &source.display().to_string()),
            reason,
        },
        other => other,
    }
}

type Found = (
    HashMap<Digest, Span>,
    HashMap<Digest, Bytes>,
    Vec<ArchiveImage>,
);

/// Reads the OCI layout inside an archive.
fn read_layout(archive: &Path, tar: &TarIndex) -> Result<Found> {
    let name = |file: &str| format!("{}:{file}", archive.display());
    let marker = tar
        .get(layout::OCI_LAYOUT_FILE)
        .ok_or_else(|| invalid(archive, "it has no oci-layout file"))?;
    let marker = read_span(archive, marker, 64 * 1024, layout::OCI_LAYOUT_FILE)?;
    layout::check_marker(&marker, &name(layout::OCI_LAYOUT_FILE))?;
    let index = tar
        .get(layout::INDEX_FILE)
        .ok_or_else(|| invalid(archive, "it has no index.json"))?;
    let index = read_span(
        archive,
        index,
        orca_core::capabilities::DEFAULT_MAX_MANIFEST_SIZE,
        layout::INDEX_FILE,
    )?;
    let index = LayoutIndex::parse(&index, &name(layout::INDEX_FILE))?;
    let mut blobs = HashMap::new();
    for (path, span) in tar.paths() {
        let Some(rest) = path.strip_prefix("blobs/") else {
            continue;
        };
        let digest = rest
            .split_once('/')
            .and_then(|(alg, hex)| Digest::parse(&format!("{alg}:{hex}")).ok())
            .ok_or_else(|| {
                invalid(
                    archive,
                    format!("entry {path:?} under blobs/ is not named by a digest"),
                )
            })?;
        blobs.insert(digest, span);
    }
    let images = index
        .entries()
        .map(|entry| {
            let name = entry.annotations.get(CONTAINERD_IMAGE_NAME).cloned();
            // A ref.name that is the whole image name (`REPO:TAG`, as
            // orca writes a tag several repositories share) holds the tag
            // after the repository.
            let tag = match (entry.annotations.get(ANNOTATION_REF_NAME), name.as_deref()) {
                (Some(reference), Some(name)) if reference == name => {
                    Some(split_name(name).1.to_owned())
                }
                (Some(reference), _) => Some(reference.clone()),
                (None, name) => name.map(|n| split_name(n).1.to_owned()),
            };
            let mut descriptor = entry.plain();
            descriptor.platform = entry.platform.clone();
            ArchiveImage {
                name,
                tag,
                descriptor,
            }
        })
        .collect();
    Ok((blobs, HashMap::new(), images))
}

impl fmt::Display for Archive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.place)?;
        match &self.repository {
            Some(repository) => write!(f, ":{repository}"),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for Archive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Archive")
            .field("place", &self.inner.place)
            .field("repository", &self.repository)
            .field("images", &self.inner.images.len())
            .finish()
    }
}

#[async_trait]
impl Backend for Archive {
    fn capabilities(&self) -> Capabilities {
        let mut capabilities = Capabilities::NONE;
        capabilities.fetch_range = true;
        capabilities.catalog = true;
        capabilities
    }

    async fn exists(&self, descriptor: &Descriptor) -> Result<bool> {
        Ok(self.inner.synthetic.contains_key(&descriptor.digest)
            || self.inner.blobs.contains_key(&descriptor.digest))
    }

    async fn stat(&self, descriptor: &Descriptor) -> Result<Option<u64>> {
        Ok(match self.inner.synthetic.get(&descriptor.digest) {
            Some(bytes) => Some(bytes.len() as u64),
            None => self
                .inner
                .blobs
                .get(&descriptor.digest)
                .map(|span| span.size),
        })
    }

    async fn fetch(&self, descriptor: &Descriptor) -> Result<Body> {
        if let Some(bytes) = self.inner.synthetic.get(&descriptor.digest) {
            return Ok(Body::from_bytes(bytes.clone()));
        }
        let span = self
            .inner
            .blobs
            .get(&descriptor.digest)
            .copied()
            .ok_or_else(|| self.not_found(format!("content {}", descriptor.digest)))?;
        self.serve(span, "fetch").await
    }

    async fn push(&self, _: &Descriptor, _: Body, _: &PushOptions) -> Result<()> {
        Err(self.read_only("push"))
    }

    async fn partial(&self, _: &Descriptor) -> Result<u64> {
        Ok(0)
    }

    async fn delete(&self, _: &Descriptor) -> Result<()> {
        Err(self.read_only("delete"))
    }

    async fn resolve(&self, selector: &Selector) -> Result<Descriptor> {
        match selector {
            Selector::Tag(tag) => {
                let matches: Vec<&ArchiveImage> = self
                    .visible()
                    // A docker-archive's image is found by its whole name,
                    // or by its tag alone where that is not ambiguous.
                    .filter(|i| {
                        self.tag_of(i) == Some(tag.as_str())
                            || (self.repository.is_none() && i.tag.as_deref() == Some(tag.as_str()))
                    })
                    .collect();
                let digests: BTreeSet<&Digest> =
                    matches.iter().map(|i| &i.descriptor.digest).collect();
                match (matches.first(), digests.len()) {
                    (None, _) => Err(self.not_found(format!("tag {tag}"))),
                    (Some(image), 1) => Ok(image.descriptor.plain()),
                    _ => Err(Error::InvalidInput {
                        what: format!("tag {tag} in {self}"),
                        reason: format!(
                            "it names {} different images ({}); choose a repository",
                            digests.len(),
                            matches
                                .iter()
                                .filter_map(|i| i.name.as_deref())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    }),
                }
            }
            Selector::Digest(digest) => {
                if let Some(image) = self
                    .inner
                    .images
                    .iter()
                    .find(|i| &i.descriptor.digest == digest)
                {
                    return Ok(image.descriptor.plain());
                }
                if let Some(bytes) = self.inner.synthetic.get(digest) {
                    return Ok(Descriptor::new(
                        MediaType::DOCKER_MANIFEST,
                        digest.clone(),
                        bytes.len() as u64,
                    ));
                }
                let span = self
                    .inner
                    .blobs
                    .get(digest)
                    .copied()
                    .ok_or_else(|| self.not_found(format!("manifest {digest}")))?;
                let limit = Capabilities::NONE.max_manifest_size;
                if span.size > limit {
                    return Err(self.not_found(format!("manifest {digest}")));
                }
                let path = self.inner.unpacked.path.clone();
                let name = digest.to_string();
                let bytes =
                    tokio::task::spawn_blocking(move || read_span(&path, span, limit, &name))
                        .await
                        .map_err(|e| Error::Backend {
                            backend: self.to_string(),
                            operation: "resolve",
                            source: Box::new(e),
                        })??;
                layout::as_manifest(digest, bytes.into())
                    .map(|(descriptor, _)| descriptor)
                    .ok_or_else(|| self.not_found(format!("manifest {digest}")))
            }
        }
    }

    async fn tag(&self, _: &Descriptor, _: &str) -> Result<()> {
        Err(self.read_only("tag"))
    }

    async fn untag(&self, _: &str) -> Result<()> {
        Err(self.read_only("untag"))
    }

    async fn swap_tag(&self, _: &str, _: Option<&Digest>, _: Option<&Descriptor>) -> Result<()> {
        Err(self.read_only("swap_tag"))
    }

    async fn tags(&self, query: &ListQuery) -> Result<ListPage> {
        let tags: BTreeSet<String> = self
            .visible()
            .filter_map(|i| self.tag_of(i).map(str::to_owned))
            .collect();
        let tags: Vec<String> = tags.into_iter().collect();
        Ok(ListPage::slice(&tags, query))
    }

    async fn referrers(&self, _: &Descriptor, _: Option<&MediaType>) -> Result<Referrers> {
        Err(self.read_only("referrers"))
    }

    async fn mount(&self, _: &Descriptor, _: &str) -> Result<bool> {
        Err(self.read_only("mount"))
    }

    async fn fetch_range(&self, descriptor: &Descriptor, range: Range<u64>) -> Result<Body> {
        if let Some(bytes) = self.inner.synthetic.get(&descriptor.digest) {
            let end = usize::try_from(range.end)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            let start = usize::try_from(range.start).unwrap_or(usize::MAX).min(end);
            return Ok(Body::from_bytes(bytes.slice(start..end)));
        }
        let span = self
            .inner
            .blobs
            .get(&descriptor.digest)
            .copied()
            .ok_or_else(|| self.not_found(format!("content {}", descriptor.digest)))?;
        if range.start > range.end || range.end > span.size {
            return Err(Error::InvalidInput {
                what: format!("range {}..{}", range.start, range.end),
                reason: format!("{} has {} bytes", descriptor.digest, span.size),
            });
        }
        let part = Span {
            offset: span.offset + range.start,
            size: range.end - range.start,
        };
        self.serve(part, "fetch_range").await
    }

    async fn catalog(&self, query: &ListQuery) -> Result<ListPage> {
        let names: BTreeSet<String> = self
            .inner
            .images
            .iter()
            .filter_map(|i| i.repository().map(str::to_owned))
            .collect();
        let names: Vec<String> = names.into_iter().collect();
        Ok(ListPage::slice(&names, query))
    }
}
