//! Content descriptors: what a piece of content is (media type), which bytes
//! it is (digest, size), and what is said about it (annotations, platform).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{Digest, MediaType, Platform};

/// The annotation naming a file in an artifact or a tag in an image layout.
pub const ANNOTATION_TITLE: &str = "org.opencontainers.image.title";
/// The annotation carrying a tag on an `index.json` entry of an image layout.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The annotation carrying a creation time (RFC 3339).
pub const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";

/// An OCI content descriptor.
///
/// Fields orca does not know are kept in [`Descriptor::extra`] and written
/// back unchanged; annotations are a sorted map so serialisation is
/// deterministic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: MediaType,
    /// Digest of the referenced bytes.
    pub digest: Digest,
    /// Size of the referenced bytes.
    pub size: u64,
    /// Other places the content may be fetched from (foreign layers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// Annotations, sorted by key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The content itself, base64-encoded, when embedded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Platform, for index entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Artifact type, for referrers and artifact index entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<MediaType>,
    /// Fields this version of orca does not know, kept as they were.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Descriptor {
    /// How messages name this content: `manifest sha256:…` or
    /// `blob sha256:…`.
    pub fn label(&self) -> String {
        let kind = if self.media_type.is_manifest() {
            "manifest"
        } else {
            "blob"
        };
        format!("{kind} {}", self.digest)
    }

    /// A descriptor with just media type, digest and size.
    pub fn new(media_type: MediaType, digest: Digest, size: u64) -> Self {
        Descriptor {
            media_type,
            digest,
            size,
            urls: Vec::new(),
            annotations: BTreeMap::new(),
            data: None,
            platform: None,
            artifact_type: None,
            extra: BTreeMap::new(),
        }
    }

    /// A SHA-256 descriptor of `data`.
    pub fn of(media_type: MediaType, data: &[u8]) -> Self {
        Descriptor::new(media_type, Digest::sha256(data), data.len() as u64)
    }

    /// The same content with only media type, digest and size: what
    /// identifies it, without what is said about it.
    pub fn plain(&self) -> Self {
        Descriptor::new(self.media_type.clone(), self.digest.clone(), self.size)
    }

    /// The `org.opencontainers.image.title` annotation, if any.
    pub fn title(&self) -> Option<&str> {
        self.annotations.get(ANNOTATION_TITLE).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_unknown_fields_and_sorts_annotations() {
        let json = r#"{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0,"annotations":{"b":"2","a":"1"},"x-future":[1,2]}"#;
        let d: Descriptor = serde_json::from_str(json).expect("parse");
        assert_eq!(d.extra.get("x-future"), Some(&serde_json::json!([1, 2])));
        let out = serde_json::to_string(&d).expect("serialise");
        assert!(out.contains(r#""annotations":{"a":"1","b":"2"}"#), "{out}");
        assert!(out.ends_with(r#""x-future":[1,2]}"#), "{out}");
    }

    #[test]
    fn bad_digest_in_descriptor_is_refused() {
        let json = r#"{"mediaType":"a/b","digest":"sha256:nothex","size":1}"#;
        let err = serde_json::from_str::<Descriptor>(json).expect_err("must fail");
        assert!(err.to_string().contains("invalid digest"), "{err}");
    }
}
