//! Image manifests and indexes, and [`RawManifest`]: a manifest's exact
//! bytes with its media type. Content orca copies is never re-serialised;
//! content orca authors is serialised deterministically.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{Descriptor, Digest, MediaType, detect};

/// An image manifest (OCI, or Docker schema 2 which has the same shape).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// Media type, optional in OCI documents and required in Docker ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<MediaType>,
    /// Artifact type (OCI 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<MediaType>,
    /// The configuration blob.
    pub config: Descriptor,
    /// The layers (or artifact files), in order.
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// The manifest this one refers to (OCI 1.1 referrers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Annotations, sorted by key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Fields this version of orca does not know, kept as they were.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// An image index (OCI, or Docker manifest list which has the same shape).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    /// Always 2.
    pub schema_version: u32,
    /// Media type, optional in OCI documents and required in Docker ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<MediaType>,
    /// Artifact type (OCI 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<MediaType>,
    /// The member manifests.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    /// The manifest this one refers to (OCI 1.1 referrers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Annotations, sorted by key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Fields this version of orca does not know, kept as they were.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// The withdrawn OCI artifact manifest
/// (`application/vnd.oci.artifact.manifest.v1+json`): orca never writes
/// one, but carries those it finds, walking their `blobs` and `subject`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactManifest {
    /// Always the artifact manifest media type.
    pub media_type: MediaType,
    /// What the artifact is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<MediaType>,
    /// The artifact's blobs.
    #[serde(default)]
    pub blobs: Vec<Descriptor>,
    /// The manifest this one refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Annotations, sorted by key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Fields this version of orca does not know, kept as they were.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Manifest {
    /// An OCI image manifest naming `config` and `layers`, with nothing else.
    pub fn new(config: Descriptor, layers: Vec<Descriptor>) -> Self {
        Manifest {
            schema_version: 2,
            media_type: Some(MediaType::OCI_MANIFEST),
            artifact_type: None,
            config,
            layers,
            subject: None,
            annotations: BTreeMap::new(),
            extra: BTreeMap::new(),
        }
    }

    /// Serialises deterministically into a [`RawManifest`] whose media type
    /// is the document's own (OCI manifest when absent).
    pub fn to_raw(&self) -> Result<RawManifest> {
        let media_type = self.media_type.clone().unwrap_or(MediaType::OCI_MANIFEST);
        to_raw(self, media_type)
    }
}

impl Index {
    /// The platforms its members name, for messages (`linux/amd64,
    /// linux/arm64`, or `no platforms`).
    pub fn platform_list(&self) -> String {
        let named: Vec<String> = self
            .manifests
            .iter()
            .filter_map(|m| m.platform.as_ref().map(ToString::to_string))
            .collect();
        if named.is_empty() {
            "no platforms".to_owned()
        } else {
            named.join(", ")
        }
    }

    /// An empty OCI index.
    pub fn new() -> Self {
        Index {
            schema_version: 2,
            media_type: Some(MediaType::OCI_INDEX),
            artifact_type: None,
            manifests: Vec::new(),
            subject: None,
            annotations: BTreeMap::new(),
            extra: BTreeMap::new(),
        }
    }

    /// Serialises deterministically into a [`RawManifest`] whose media type
    /// is the document's own (OCI index when absent).
    pub fn to_raw(&self) -> Result<RawManifest> {
        let media_type = self.media_type.clone().unwrap_or(MediaType::OCI_INDEX);
        to_raw(self, media_type)
    }
}

impl Default for Index {
    fn default() -> Self {
        Index::new()
    }
}

fn to_raw<T: Serialize>(document: &T, media_type: MediaType) -> Result<RawManifest> {
    // Struct fields serialise in declaration order and every map is a
    // BTreeMap, so the same document always yields the same bytes.
    let bytes = serde_json::to_vec(document).map_err(|e| Error::InvalidManifest {
        what: format!("new {media_type}"),
        reason: "it cannot be serialised".into(),
        source: Some(Box::new(e)),
    })?;
    Ok(RawManifest::new(media_type, bytes))
}

/// A parsed manifest document of either kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Document {
    /// An image manifest.
    Manifest(Box<Manifest>),
    /// An index.
    Index(Box<Index>),
    /// A withdrawn OCI artifact manifest, carried as it is.
    Artifact(Box<ArtifactManifest>),
    /// A Docker schema-1 manifest, read only when allowed
    /// ([`super::allow_schema1`]) and carried as it is.
    Schema1(Box<super::Schema1Manifest>),
}

impl Document {
    /// The `subject` the document refers to, if any.
    pub fn subject(&self) -> Option<&Descriptor> {
        match self {
            Document::Manifest(m) => m.subject.as_ref(),
            Document::Index(i) => i.subject.as_ref(),
            Document::Artifact(a) => a.subject.as_ref(),
            Document::Schema1(_) => None,
        }
    }

    /// The artifact type: `artifactType`, or for a manifest without one,
    /// the config media type (how OCI 1.0 artifacts say what they are).
    pub fn artifact_type(&self) -> Option<&MediaType> {
        match self {
            Document::Manifest(m) => m.artifact_type.as_ref().or(Some(&m.config.media_type)),
            Document::Index(i) => i.artifact_type.as_ref(),
            Document::Artifact(a) => a.artifact_type.as_ref(),
            Document::Schema1(_) => None,
        }
    }

    /// The document's annotations.
    pub fn annotations(&self) -> &BTreeMap<String, String> {
        match self {
            Document::Manifest(m) => &m.annotations,
            Document::Index(i) => &i.annotations,
            Document::Artifact(a) => &a.annotations,
            Document::Schema1(s) => &s.annotations,
        }
    }

    /// Everything the document names directly: config and layers, the
    /// index members, or an artifact's blobs (the subject is not included).
    pub fn children(&self) -> Vec<&Descriptor> {
        match self {
            Document::Manifest(m) => std::iter::once(&m.config).chain(&m.layers).collect(),
            Document::Index(i) => i.manifests.iter().collect(),
            Document::Artifact(a) => a.blobs.iter().collect(),
            Document::Schema1(s) => s.layers.iter().collect(),
        }
    }
}

/// A manifest's exact bytes and media type. Its digest is over these bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawManifest {
    media_type: MediaType,
    bytes: Bytes,
}

impl RawManifest {
    /// Wraps bytes whose media type is known (from a descriptor or a
    /// `Content-Type` header).
    pub fn new(media_type: MediaType, bytes: impl Into<Bytes>) -> Self {
        RawManifest {
            media_type,
            bytes: bytes.into(),
        }
    }

    /// Wraps bytes that arrived without a media type, detecting it from the
    /// document (see [`detect::detect_media_type`]).
    pub fn detect(bytes: impl Into<Bytes>, schema1: detect::Schema1) -> Result<Self> {
        let bytes = bytes.into();
        let media_type = detect::detect_media_type(&bytes, schema1)?;
        Ok(RawManifest { media_type, bytes })
    }

    /// The media type.
    pub fn media_type(&self) -> &MediaType {
        &self.media_type
    }

    /// The exact bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The SHA-256 digest the manifest is named by: of the bytes (of the
    /// payload, for a signed schema-1 manifest).
    pub fn digest(&self) -> Digest {
        if self.media_type.is_schema1() {
            return super::schema1::schema1_digest(&self.media_type, &self.bytes);
        }
        Digest::sha256(&self.bytes)
    }

    /// A descriptor for these bytes (SHA-256, as [`RawManifest::digest`]).
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(
            self.media_type.clone(),
            self.digest(),
            self.bytes.len() as u64,
        )
    }

    /// Parses the bytes as the document their media type says, refusing a
    /// document whose own `mediaType` or shape contradicts it.
    pub fn parse(&self) -> Result<Document> {
        self.parse_with(detect::Schema1::here())
    }

    /// [`RawManifest::parse`], reading schema 1 as `schema1` says rather
    /// than as the operation does (a collector must see what a schema-1
    /// manifest names, whoever may copy it).
    pub fn parse_with(&self, schema1: detect::Schema1) -> Result<Document> {
        let what = || format!("{} document", self.media_type);
        let invalid = |reason: String, source: Option<serde_json::Error>| Error::InvalidManifest {
            what: what(),
            reason,
            source: source.map(|e| Box::new(e) as _),
        };
        if self.media_type.is_schema1() {
            if schema1 == detect::Schema1::Refuse {
                return Err(Error::Schema1Refused { what: what() });
            }
            let manifest = super::schema1::parse(&self.bytes, &what())?;
            return Ok(Document::Schema1(Box::new(manifest)));
        }
        if self.media_type.essence() == MediaType::OCI_ARTIFACT_MANIFEST.as_str() {
            let a: ArtifactManifest = serde_json::from_slice(&self.bytes)
                .map_err(|e| invalid("it is not a valid artifact manifest".into(), Some(e)))?;
            check_inner_type(Some(&a.media_type), self.media_type.essence())
                .map_err(|r| invalid(r, None))?;
            return Ok(Document::Artifact(Box::new(a)));
        }
        // Detection applies its shape checks whatever type was claimed, and
        // tells which kind of document the bytes really are.
        let detected = detect::detect_media_type(&self.bytes, detect::Schema1::Allow)?;
        let claimed = self.media_type.essence();
        if !self.media_type.is_image_manifest() && !self.media_type.is_index() {
            return Err(invalid(
                format!("{claimed} is not a manifest or index media type orca can read"),
                None,
            ));
        }
        if detected.is_index() != self.media_type.is_index() || detected.is_schema1() {
            return Err(invalid(
                format!("the document is a {detected}, not a {claimed}"),
                None,
            ));
        }
        let document = if self.media_type.is_image_manifest() {
            let m: Manifest = serde_json::from_slice(&self.bytes)
                .map_err(|e| invalid("it is not a valid image manifest".into(), Some(e)))?;
            check_inner_type(m.media_type.as_ref(), claimed).map_err(|r| invalid(r, None))?;
            check_schema(m.schema_version).map_err(|r| invalid(r, None))?;
            Document::Manifest(Box::new(m))
        } else {
            let i: Index = serde_json::from_slice(&self.bytes)
                .map_err(|e| invalid("it is not a valid index".into(), Some(e)))?;
            check_inner_type(i.media_type.as_ref(), claimed).map_err(|r| invalid(r, None))?;
            check_schema(i.schema_version).map_err(|r| invalid(r, None))?;
            Document::Index(Box::new(i))
        };
        Ok(document)
    }
}

fn check_inner_type(inner: Option<&MediaType>, claimed: &str) -> std::result::Result<(), String> {
    match inner {
        Some(inner) if inner.essence() != claimed => Err(format!(
            "its mediaType field says {inner} but it was given as {claimed}"
        )),
        _ => Ok(()),
    }
}

fn check_schema(version: u32) -> std::result::Result<(), String> {
    if version == 2 {
        Ok(())
    } else {
        Err(format!("schemaVersion is {version}, expected 2"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_manifest() -> Manifest {
        let config = Descriptor::of(MediaType::OCI_EMPTY, b"{}");
        let mut layer = Descriptor::of(MediaType::OCI_LAYER_TAR, b"hello");
        layer.annotations.insert("z".into(), "1".into());
        layer.annotations.insert("a".into(), "2".into());
        Manifest {
            schema_version: 2,
            media_type: Some(MediaType::OCI_MANIFEST),
            artifact_type: Some(MediaType::new("application/x-test")),
            config,
            layers: vec![layer],
            subject: None,
            annotations: BTreeMap::new(),
            extra: BTreeMap::new(),
        }
    }

    #[test]
    fn serialisation_is_deterministic_and_round_trips() {
        let m = sample_manifest();
        let a = m.to_raw().expect("raw");
        let b = m.clone().to_raw().expect("raw");
        assert_eq!(a.bytes(), b.bytes());
        let text = std::str::from_utf8(a.bytes()).expect("utf8");
        assert!(text.starts_with(r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/x-test","config":"#), "{text}");
        assert!(
            text.contains(r#""annotations":{"a":"2","z":"1"}"#),
            "{text}"
        );
        assert_eq!(a.parse().expect("parse"), Document::Manifest(Box::new(m)));
    }

    #[test]
    fn raw_bytes_are_kept_exactly() {
        let text = "{ \"schemaVersion\": 2,\n  \"manifests\": [], \"x-unknown\": {\"k\": 1} }";
        let raw = RawManifest::new(MediaType::OCI_INDEX, text.as_bytes().to_vec());
        assert_eq!(raw.bytes().as_ref(), text.as_bytes());
        assert_eq!(raw.digest(), Digest::sha256(text.as_bytes()));
        let Document::Index(index) = raw.parse().expect("parse") else {
            panic!("not an index")
        };
        assert_eq!(
            index.extra.get("x-unknown"),
            Some(&serde_json::json!({"k": 1}))
        );
    }

    #[test]
    fn malformed_manifests_name_the_problem() {
        let cases: &[(MediaType, &str, &str)] = &[
            (MediaType::OCI_MANIFEST, "not json", "not valid JSON"),
            (MediaType::OCI_MANIFEST, "[]", "not a JSON object"),
            (
                MediaType::OCI_MANIFEST,
                r#"{"schemaVersion":2,"layers":[]}"#,
                "not a valid image manifest",
            ),
            (
                MediaType::OCI_MANIFEST,
                r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#,
                "the document is a application/vnd.oci.image.index.v1+json",
            ),
            (
                MediaType::OCI_INDEX,
                r#"{"schemaVersion":1,"manifests":[]}"#,
                "schemaVersion is 1",
            ),
            (
                MediaType::OCI_INDEX,
                r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}"#,
                "its mediaType field says",
            ),
            (
                MediaType::OCI_INDEX,
                r#"{"schemaVersion":2,"config":{"mediaType":"a/b","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[]}"#,
                "the document is a application/vnd.oci.image.manifest.v1+json",
            ),
            (
                MediaType::OCI_LAYER_TAR,
                "{}",
                "not a manifest or index media type",
            ),
        ];
        for (mt, text, expected) in cases {
            let err = RawManifest::new(mt.clone(), text.as_bytes().to_vec())
                .parse()
                .expect_err(text);
            let chain = crate::error::chain(&err);
            assert!(chain.contains(expected), "{text}: {chain}");
            assert!(chain.starts_with("invalid"), "{text}: {chain}");
        }
    }
}
