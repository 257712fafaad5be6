//! Media types: an open string type with constants for the OCI and Docker
//! types orca treats specially (manifests, indexes, configs, layers).

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A media type such as `application/vnd.oci.image.manifest.v1+json`.
///
/// Comparison is on the exact string; [`MediaType::essence`] drops parameters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MediaType(Cow<'static, str>);

impl MediaType {
    /// OCI image manifest.
    pub const OCI_MANIFEST: MediaType =
        MediaType::from_static("application/vnd.oci.image.manifest.v1+json");
    /// OCI image index.
    pub const OCI_INDEX: MediaType =
        MediaType::from_static("application/vnd.oci.image.index.v1+json");
    /// OCI image configuration.
    pub const OCI_CONFIG: MediaType =
        MediaType::from_static("application/vnd.oci.image.config.v1+json");
    /// OCI uncompressed tar layer.
    pub const OCI_LAYER_TAR: MediaType =
        MediaType::from_static("application/vnd.oci.image.layer.v1.tar");
    /// OCI gzip-compressed tar layer.
    pub const OCI_LAYER_TAR_GZIP: MediaType =
        MediaType::from_static("application/vnd.oci.image.layer.v1.tar+gzip");
    /// OCI zstd-compressed tar layer.
    pub const OCI_LAYER_TAR_ZSTD: MediaType =
        MediaType::from_static("application/vnd.oci.image.layer.v1.tar+zstd");
    /// The empty JSON document `{}` used as config and layer placeholder (OCI 1.1).
    pub const OCI_EMPTY: MediaType = MediaType::from_static("application/vnd.oci.empty.v1+json");
    /// Docker image manifest, schema 2.
    pub const DOCKER_MANIFEST: MediaType =
        MediaType::from_static("application/vnd.docker.distribution.manifest.v2+json");
    /// Docker manifest list.
    pub const DOCKER_MANIFEST_LIST: MediaType =
        MediaType::from_static("application/vnd.docker.distribution.manifest.list.v2+json");
    /// Docker image manifest, schema 1 (deprecated): refused unless schema 1
    /// is allowed ([`crate::model::allow_schema1`]), then copied verbatim.
    pub const DOCKER_SCHEMA1: MediaType =
        MediaType::from_static("application/vnd.docker.distribution.manifest.v1+json");
    /// Docker image manifest, signed schema 1 (deprecated): as
    /// [`MediaType::DOCKER_SCHEMA1`], named by the digest of its payload.
    pub const DOCKER_SCHEMA1_SIGNED: MediaType =
        MediaType::from_static("application/vnd.docker.distribution.manifest.v1+prettyjws");
    /// Docker image configuration.
    pub const DOCKER_CONFIG: MediaType =
        MediaType::from_static("application/vnd.docker.container.image.v1+json");
    /// Docker gzip-compressed tar layer.
    pub const DOCKER_LAYER_GZIP: MediaType =
        MediaType::from_static("application/vnd.docker.image.rootfs.diff.tar.gzip");
    /// Docker foreign (non-distributable) layer.
    pub const DOCKER_FOREIGN_LAYER: MediaType =
        MediaType::from_static("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip");
    /// The withdrawn OCI artifact manifest (never written by orca).
    pub const OCI_ARTIFACT_MANIFEST: MediaType =
        MediaType::from_static("application/vnd.oci.artifact.manifest.v1+json");
    /// Generic binary content.
    pub const OCTET_STREAM: MediaType = MediaType::from_static("application/octet-stream");

    /// A media type from a static string (usable in constants).
    pub const fn from_static(s: &'static str) -> Self {
        MediaType(Cow::Borrowed(s))
    }

    /// A media type from any string; no validation beyond what the
    /// documents carrying it impose.
    pub fn new(s: impl Into<String>) -> Self {
        MediaType(Cow::Owned(s.into()))
    }

    /// The full string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The type without parameters (`type/subtype`), trimmed.
    pub fn essence(&self) -> &str {
        self.0.split(';').next().unwrap_or_default().trim()
    }

    /// An image manifest (OCI or Docker schema 2).
    pub fn is_image_manifest(&self) -> bool {
        let e = self.essence();
        e == Self::OCI_MANIFEST.as_str() || e == Self::DOCKER_MANIFEST.as_str()
    }

    /// An index (OCI index or Docker manifest list).
    pub fn is_index(&self) -> bool {
        let e = self.essence();
        e == Self::OCI_INDEX.as_str() || e == Self::DOCKER_MANIFEST_LIST.as_str()
    }

    /// Docker schema 1 (plain or signed).
    pub fn is_schema1(&self) -> bool {
        let e = self.essence();
        e == Self::DOCKER_SCHEMA1.as_str() || e == Self::DOCKER_SCHEMA1_SIGNED.as_str()
    }

    /// Anything stored as a manifest rather than a blob: image manifests,
    /// indexes, schema 1 and the withdrawn artifact manifest.
    pub fn is_manifest(&self) -> bool {
        self.is_image_manifest()
            || self.is_index()
            || self.is_schema1()
            || self.essence() == Self::OCI_ARTIFACT_MANIFEST.as_str()
    }

    /// A Docker-specific type (`application/vnd.docker.*`).
    pub fn is_docker(&self) -> bool {
        self.essence().starts_with("application/vnd.docker.")
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MediaType({:?})", self.0)
    }
}

impl From<&str> for MediaType {
    fn from(s: &str) -> Self {
        MediaType::new(s)
    }
}

impl From<String> for MediaType {
    fn from(s: String) -> Self {
        MediaType::new(s)
    }
}

impl AsRef<str> for MediaType {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for MediaType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for MediaType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(MediaType::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert!(MediaType::OCI_MANIFEST.is_manifest());
        assert!(MediaType::OCI_MANIFEST.is_image_manifest());
        assert!(MediaType::DOCKER_MANIFEST_LIST.is_index());
        assert!(MediaType::DOCKER_MANIFEST_LIST.is_docker());
        assert!(!MediaType::OCI_CONFIG.is_manifest());
        assert!(
            MediaType::new("application/vnd.oci.image.index.v1+json; charset=utf-8").is_index()
        );
        assert!(MediaType::DOCKER_SCHEMA1_SIGNED.is_schema1());
    }
}
