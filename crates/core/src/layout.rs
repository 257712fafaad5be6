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
mod index;
mod memory;
mod storage;

pub use engine::Layout;
#[cfg(any(test, feature = "conformance"))]
pub(crate) use fence::Foreign;
pub use gc::{GcOptions, GcReport};
pub use index::LayoutIndex;
pub use memory::MemoryStorage;
pub use storage::{Changed, Condition, Level, Listed, ObjectStorage, Version};

use bytes::Bytes;

use crate::capabilities::Capabilities;
use crate::error::{Error, Result};
use crate::model::{ANNOTATION_REF_NAME, Descriptor, Digest, Document, RawManifest, Schema1};

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
