//! OCI image layout rules shared by every backend that stores a layout
//! (a directory, a bucket prefix): file names, the `oci-layout` marker, and
//! `index.json` as the list of root manifests whose
//! `org.opencontainers.image.ref.name` annotations are the tags — and
//! [`Layout`], the one engine that keeps a layout in any
//! [`ObjectStorage`]: tags, delete and garbage collection live here once.

mod commit;
mod engine;
mod fence;
mod gc;
mod memory;
mod storage;

pub use engine::Layout;
#[cfg(any(test, feature = "conformance"))]
pub(crate) use fence::Foreign;
pub use gc::{GcOptions, GcReport};
pub use memory::MemoryStorage;
pub use storage::{Changed, Condition, Listed, ObjectStorage, Version};

use bytes::Bytes;

use crate::capabilities::Capabilities;
use crate::error::{Error, Result};
use crate::model::{
    ANNOTATION_REF_NAME, Descriptor, Digest, Document, Index, MediaType, RawManifest, Schema1,
};

/// The marker file at the root of a layout.
pub const OCI_LAYOUT_FILE: &str = "oci-layout";
/// The root index of a layout.
pub const INDEX_FILE: &str = "index.json";
/// The directory holding content, by algorithm then hex.
pub const BLOBS_DIR: &str = "blobs";
/// The layout version orca writes and reads.
pub const LAYOUT_VERSION: &str = "1.0.0";

/// What a layout offers, wherever it is stored: deleting, untagging,
/// paging tags and byte ranges natively, with tag changes made atomic by
/// the storage (a lock, a conditional write). No Referrers API or catalog:
/// a layout is one repository. (Mounting from another layout depends on
/// the storage; the engine adds it.)
pub fn capabilities() -> Capabilities {
    Capabilities {
        delete: true,
        untag: true,
        tag_list_pagination: true,
        fetch_range: true,
        tag_compare_and_swap: true,
        ..Capabilities::NONE
    }
}

/// Reads content stored under `digest` as a manifest, if it is one orca
/// can parse (used for digests `index.json` does not list, which a layout
/// stores without their media type).
pub fn as_manifest(digest: &Digest, bytes: Bytes) -> Option<(Descriptor, Document)> {
    // A layout's own content: schema 1 is read whoever may copy it.
    let raw = RawManifest::detect(bytes, Schema1::Allow).ok()?;
    let document = raw.parse_with(Schema1::Allow).ok()?;
    let mut descriptor = raw.descriptor();
    descriptor.digest = digest.clone();
    Some((descriptor, document))
}

/// The path of a blob relative to the layout root: `blobs/<alg>/<hex>`.
pub fn blob_path(digest: &Digest) -> String {
    format!("{BLOBS_DIR}/{}/{}", digest.algorithm(), digest.hex())
}

/// The bytes of the `oci-layout` marker orca writes.
pub fn marker() -> Bytes {
    Bytes::from(format!(r#"{{"imageLayoutVersion":"{LAYOUT_VERSION}"}}"#))
}

/// Checks an `oci-layout` marker; `file` names it in the error.
pub fn check_marker(bytes: &[u8], file: &str) -> Result<()> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Marker {
        image_layout_version: String,
    }
    let invalid = |reason: String| Error::InvalidInput {
        what: format!("layout marker {file}"),
        reason,
    };
    let marker: Marker = serde_json::from_slice(bytes).map_err(|e| {
        invalid(format!(
            "it is not a JSON object with an imageLayoutVersion string ({e})"
        ))
    })?;
    if marker.image_layout_version != LAYOUT_VERSION {
        return Err(invalid(format!(
            "imageLayoutVersion is {:?}, orca reads {LAYOUT_VERSION:?}",
            marker.image_layout_version
        )));
    }
    Ok(())
}

/// A layout's `index.json`: its root manifests, tagged or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutIndex {
    index: Index,
}

impl LayoutIndex {
    /// An empty index, as a new layout starts.
    pub fn new() -> Self {
        LayoutIndex {
            index: Index::new(),
        }
    }

    /// Parses `index.json` bytes; `file` names the file in errors. Anything
    /// that is not an image index is refused, never guessed at.
    pub fn parse(bytes: &[u8], file: &str) -> Result<Self> {
        let raw = RawManifest::new(MediaType::OCI_INDEX, Bytes::copy_from_slice(bytes));
        match raw.parse() {
            Ok(Document::Index(index)) => Ok(LayoutIndex { index: *index }),
            Ok(Document::Manifest(_) | Document::Artifact(_) | Document::Schema1(_)) => {
                Err(Error::InvalidManifest {
                    what: file.to_owned(),
                    reason: "it is a manifest, not an image index".into(),
                    source: None,
                })
            }
            Err(Error::InvalidManifest { reason, source, .. }) => Err(Error::InvalidManifest {
                what: file.to_owned(),
                reason,
                source,
            }),
            Err(other) => Err(other),
        }
    }

    /// The bytes to write, deterministic for the same content.
    pub fn to_bytes(&self) -> Result<Bytes> {
        Ok(self.index.to_raw()?.bytes().clone())
    }

    /// The root entries.
    pub fn entries(&self) -> &[Descriptor] {
        &self.index.manifests
    }

    /// The manifest a tag points at (the last entry with that name wins, as
    /// other tools read it).
    pub fn resolve_tag(&self, tag: &str) -> Option<&Descriptor> {
        self.index
            .manifests
            .iter()
            .rev()
            .find(|d| ref_name(d) == Some(tag))
    }

    /// The descriptor a tag resolves to: the entry without its
    /// annotations, keeping its platform.
    pub fn tagged(&self, tag: &str) -> Option<Descriptor> {
        let entry = self.resolve_tag(tag)?;
        let mut descriptor = entry.plain();
        descriptor.platform = entry.platform.clone();
        Some(descriptor)
    }

    /// A root entry with this digest.
    pub fn find(&self, digest: &Digest) -> Option<&Descriptor> {
        self.index.manifests.iter().find(|d| &d.digest == digest)
    }

    /// Every tag, sorted, without duplicates.
    pub fn tags(&self) -> Vec<String> {
        let mut tags: Vec<String> = self
            .index
            .manifests
            .iter()
            .filter_map(ref_name)
            .map(str::to_owned)
            .collect();
        tags.sort();
        tags.dedup();
        tags
    }

    /// Points `tag` at `descriptor`: entries carrying the tag are dropped
    /// and one entry (media type, digest, size, platform and the tag) added.
    /// An untagged entry of the same manifest goes: the tag lists it now.
    pub fn set_tag(&mut self, descriptor: &Descriptor, tag: &str) {
        self.remove_untagged(&descriptor.digest);
        let mut entry = descriptor.plain();
        entry.platform = descriptor.platform.clone();
        entry
            .annotations
            .insert(ANNOTATION_REF_NAME.to_owned(), tag.to_owned());
        self.put(entry);
    }

    /// Adds an entry as it is (from another layout's index). An entry with
    /// a tag replaces the entries carrying that tag; an untagged entry is
    /// added unless the same untagged entry is already there.
    pub fn put(&mut self, entry: Descriptor) {
        match ref_name(&entry) {
            Some(tag) => {
                let tag = tag.to_owned();
                self.index.manifests.retain(|d| ref_name(d) != Some(&tag));
            }
            None if self.index.manifests.contains(&entry) => return,
            None => {}
        }
        self.index.manifests.push(entry);
    }

    /// Compare-and-swap of `tag`: points it at `new` (removes it when
    /// `None`) if it points at `expected` now (is absent when `None`);
    /// otherwise `Error::Conflict` naming `place`, with nothing changed.
    pub fn swap_tag(
        &mut self,
        tag: &str,
        expected: Option<&Digest>,
        new: Option<&Descriptor>,
        place: &str,
    ) -> Result<()> {
        if self.resolve_tag(tag).map(|d| &d.digest) != expected {
            return Err(Error::Conflict {
                what: format!("tag {tag}"),
                place: place.to_owned(),
            });
        }
        match new {
            Some(descriptor) => self.set_tag(descriptor, tag),
            None => {
                self.remove_tag(tag);
            }
        }
        Ok(())
    }

    /// Lists `descriptor` as a root without a tag (as skopeo and oras
    /// record a copy by digest), unless an entry lists it already; whether
    /// one was added.
    pub fn list_untagged(&mut self, descriptor: &Descriptor) -> bool {
        if self.find(&descriptor.digest).is_some() {
            return false;
        }
        let mut entry = descriptor.plain();
        entry.platform = descriptor.platform.clone();
        self.index.manifests.push(entry);
        true
    }

    /// Removes the untagged entries of `digest`; whether there were any.
    pub fn remove_untagged(&mut self, digest: &Digest) -> bool {
        let before = self.index.manifests.len();
        self.index
            .manifests
            .retain(|d| &d.digest != digest || ref_name(d).is_some());
        before != self.index.manifests.len()
    }

    /// Removes `tag`; `false` when no entry carried it.
    pub fn remove_tag(&mut self, tag: &str) -> bool {
        let before = self.index.manifests.len();
        self.index.manifests.retain(|d| ref_name(d) != Some(tag));
        before != self.index.manifests.len()
    }

    /// Removes every entry for `digest`; `false` when there was none.
    pub fn remove_digest(&mut self, digest: &Digest) -> bool {
        let before = self.index.manifests.len();
        self.index.manifests.retain(|d| &d.digest != digest);
        before != self.index.manifests.len()
    }
}

impl Default for LayoutIndex {
    fn default() -> Self {
        LayoutIndex::new()
    }
}

/// The tag an `index.json` entry carries, if any.
pub(crate) fn ref_name(descriptor: &Descriptor) -> Option<&str> {
    descriptor
        .annotations
        .get(ANNOTATION_REF_NAME)
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(n: u8) -> Descriptor {
        Descriptor::of(MediaType::OCI_MANIFEST, &[n])
    }

    #[test]
    fn tags_move_and_coexist() {
        let mut index = LayoutIndex::new();
        index.set_tag(&manifest(1), "a");
        index.set_tag(&manifest(1), "b");
        index.set_tag(&manifest(2), "a");
        assert_eq!(index.tags(), ["a", "b"]);
        assert_eq!(
            index.resolve_tag("a").map(|d| &d.digest),
            Some(&manifest(2).digest)
        );
        assert_eq!(
            index.resolve_tag("b").map(|d| &d.digest),
            Some(&manifest(1).digest)
        );
        assert!(index.remove_tag("a"));
        assert!(!index.remove_tag("a"));
        assert!(index.remove_digest(&manifest(1).digest));
        assert!(index.entries().is_empty());
    }

    #[test]
    fn round_trips_and_refuses_non_indexes() {
        let mut index = LayoutIndex::new();
        index.set_tag(&manifest(1), "v1");
        let bytes = index.to_bytes().expect("bytes");
        assert_eq!(
            LayoutIndex::parse(&bytes, "index.json").expect("parse"),
            index
        );
        for (text, expected) in [
            ("not json", "invalid index.json: it is not valid JSON"),
            (
                r#"{"schemaVersion":2,"config":{"mediaType":"a/b","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[]}"#,
                "invalid index.json: the document is a application/vnd.oci.image.manifest.v1+json",
            ),
            (
                r#"{"schemaVersion":2,"manifests":[{"digest":"sha256:00"}]}"#,
                "invalid index.json: it is not a valid index",
            ),
        ] {
            let err = LayoutIndex::parse(text.as_bytes(), "index.json").expect_err(text);
            assert!(err.to_string().starts_with(expected), "{text}: {err}");
        }
    }

    #[test]
    fn markers() {
        check_marker(&marker(), "oci-layout").expect("own marker");
        let err = check_marker(br#"{"imageLayoutVersion":"2.0.0"}"#, "x/oci-layout")
            .expect_err("version");
        assert!(
            err.to_string().contains("x/oci-layout") && err.to_string().contains("2.0.0"),
            "{err}"
        );
        assert!(check_marker(b"[]", "oci-layout").is_err());
    }
}
