//! Docker media types to OCI ones, as `skopeo copy --format oci` does: a
//! read-only view of a store in which every Docker image manifest and
//! manifest list reached through a tag or digest is seen as its OCI
//! counterpart (an image manifest, an index), with the media types of its
//! config and layers renamed. Blobs are untouched; manifests get new bytes,
//! so new digests. Copying from the view writes the converted graph, which
//! tools that read only OCI media types from a layout (skopeo 1.9) find.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;

use crate::backend::{Backend, ListPage, ListQuery, PushOptions, Referrers};
use crate::body::Body;
use crate::capabilities::Capabilities;
use crate::error::{Error, Result};
use crate::model::{Descriptor, Digest, MediaType, Selector};
use crate::store::Store;

/// The OCI name of a Docker media type, if it has one.
fn oci_name(media_type: &str) -> Option<&'static str> {
    Some(match media_type {
        "application/vnd.docker.distribution.manifest.v2+json" => {
            "application/vnd.oci.image.manifest.v1+json"
        }
        "application/vnd.docker.distribution.manifest.list.v2+json" => {
            "application/vnd.oci.image.index.v1+json"
        }
        "application/vnd.docker.container.image.v1+json" => {
            "application/vnd.oci.image.config.v1+json"
        }
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        }
        "application/vnd.docker.image.rootfs.diff.tar" => "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        }
        _ => return None,
    })
}

/// The converted manifests, by their new digest.
type Converted = HashMap<Digest, (Descriptor, Bytes)>;

/// A store seen with OCI media types (see the module documentation).
#[derive(Clone)]
pub struct OciView {
    inner: Store,
    converted: Arc<Mutex<Converted>>,
}

impl OciView {
    /// The view of `inner`.
    pub fn new(inner: Store) -> Self {
        OciView {
            inner,
            converted: Arc::default(),
        }
    }

    /// The descriptor `descriptor` becomes: itself when it needs no
    /// conversion, else the converted manifest's (kept for `fetch`).
    async fn convert(&self, descriptor: &Descriptor) -> Result<Descriptor> {
        let is_docker = oci_name(descriptor.media_type.essence()).is_some();
        let is_index = descriptor.media_type.is_index();
        if !is_docker && !is_index {
            return Ok(descriptor.clone());
        }
        let bytes = self.inner.fetch_bytes(descriptor).await?;
        let invalid = |reason: String| Error::InvalidManifest {
            what: format!("manifest {} in {}", descriptor.digest, self.inner),
            reason,
            source: None,
        };
        let mut json: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
        let Some(object) = json.as_object_mut() else {
            return Err(invalid("it is not a JSON object".into()));
        };
        let mut changed = false;
        let mut rename = |value: &mut serde_json::Value| {
            if let Some(name) = value.as_str().and_then(oci_name) {
                *value = name.into();
                changed = true;
            }
        };
        if let Some(media_type) = object.get_mut("mediaType") {
            rename(media_type);
        }
        if let Some(config) = object
            .get_mut("config")
            .and_then(|c| c.get_mut("mediaType"))
        {
            rename(config);
        }
        if let Some(layers) = object.get_mut("layers").and_then(|l| l.as_array_mut()) {
            for layer in layers {
                if let Some(media_type) = layer.get_mut("mediaType") {
                    rename(media_type);
                }
            }
        }
        // An index's members are converted first, and named by their new
        // descriptors.
        if let Some(members) = object.get_mut("manifests").and_then(|m| m.as_array_mut()) {
            for member in members {
                let old: Descriptor = serde_json::from_value(member.clone())
                    .map_err(|e| invalid(format!("a member: {e}")))?;
                let new = Box::pin(self.convert(&old)).await?;
                if new.digest != old.digest {
                    member["mediaType"] = new.media_type.as_str().into();
                    member["digest"] = new.digest.to_string().into();
                    member["size"] = new.size.into();
                    changed = true;
                }
            }
        }
        if !changed {
            return Ok(descriptor.clone());
        }
        let media_type = object
            .get("mediaType")
            .and_then(|m| m.as_str())
            .map(MediaType::new)
            .unwrap_or_else(|| descriptor.media_type.clone());
        let bytes = Bytes::from(serde_json::to_vec(&json).map_err(|e| invalid(e.to_string()))?);
        let mut converted = Descriptor::of(media_type, &bytes);
        converted.platform = descriptor.platform.clone();
        self.converted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(converted.digest.clone(), (converted.clone(), bytes));
        Ok(converted)
    }

    fn held(&self, digest: &Digest) -> Option<Bytes> {
        self.converted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(digest)
            .map(|(_, bytes)| bytes.clone())
    }

    fn read_only(&self, operation: &'static str) -> Error {
        Error::Unsupported {
            operation,
            place: format!("{} (seen with OCI media types, read-only)", self.inner),
        }
    }
}

impl std::fmt::Debug for OciView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OciView")
            .field("inner", &self.inner.to_string())
            .finish()
    }
}

impl std::fmt::Display for OciView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.inner, f)
    }
}

#[async_trait]
impl Backend for OciView {
    fn capabilities(&self) -> Capabilities {
        let mut capabilities = self.inner.capabilities();
        capabilities.delete = false;
        capabilities.untag = false;
        capabilities.mount = false;
        capabilities.tag_compare_and_swap = false;
        capabilities.resume = false;
        capabilities
    }

    async fn exists(&self, descriptor: &Descriptor) -> Result<bool> {
        if self.held(&descriptor.digest).is_some() {
            return Ok(true);
        }
        self.inner.exists(descriptor).await
    }

    async fn stat(&self, descriptor: &Descriptor) -> Result<Option<u64>> {
        if let Some(bytes) = self.held(&descriptor.digest) {
            return Ok(Some(bytes.len() as u64));
        }
        self.inner.stat(descriptor).await
    }

    async fn fetch(&self, descriptor: &Descriptor) -> Result<Body> {
        match self.held(&descriptor.digest) {
            Some(bytes) => Ok(Body::from_bytes(bytes)),
            None => self.inner.fetch(descriptor).await,
        }
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
        if let Selector::Digest(digest) = selector
            && let Some((descriptor, _)) = self
                .converted
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(digest)
        {
            return Ok(descriptor.clone());
        }
        let found = self.inner.resolve(selector).await?;
        self.convert(&found).await
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
        self.inner.tags(query).await
    }

    async fn referrers(
        &self,
        subject: &Descriptor,
        artifact_type: Option<&MediaType>,
    ) -> Result<Referrers> {
        // Referrers name the subject by its digest, which conversion
        // changes: a converted image has none.
        let _ = (subject, artifact_type);
        Ok(Referrers::new(Vec::new(), false))
    }

    async fn mount(&self, _: &Descriptor, _: &str) -> Result<bool> {
        Ok(false)
    }

    async fn fetch_range(&self, descriptor: &Descriptor, range: Range<u64>) -> Result<Body> {
        match self.held(&descriptor.digest) {
            Some(bytes) => {
                let end = usize::try_from(range.end)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                let start = usize::try_from(range.start).unwrap_or(usize::MAX).min(end);
                Ok(Body::from_bytes(bytes.slice(start..end)))
            }
            None => self.inner.fetch_range(descriptor, range).await,
        }
    }

    async fn catalog(&self, query: &ListQuery) -> Result<ListPage> {
        self.inner.catalog(query).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryBackend;
    use crate::model::Document;

    #[tokio::test]
    async fn a_docker_image_and_list_are_seen_as_oci() {
        let store = Store::new(MemoryBackend::new());
        let config = store
            .push_bytes(
                MediaType::DOCKER_CONFIG,
                &br#"{"architecture":"amd64","os":"linux"}"#[..],
            )
            .await
            .expect("config");
        let layer = store
            .push_bytes(MediaType::DOCKER_LAYER_GZIP, &b"not really gzip"[..])
            .await
            .expect("layer");
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MediaType::DOCKER_MANIFEST.as_str(),
            "config": {"mediaType": MediaType::DOCKER_CONFIG.as_str(), "digest": config.digest.to_string(), "size": config.size},
            "layers": [{"mediaType": MediaType::DOCKER_LAYER_GZIP.as_str(), "digest": layer.digest.to_string(), "size": layer.size}],
        });
        let raw = crate::model::RawManifest::new(
            MediaType::DOCKER_MANIFEST,
            Bytes::from(serde_json::to_vec(&manifest).expect("json")),
        );
        let image = store.push_manifest(&raw, None).await.expect("image");
        let list = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MediaType::DOCKER_MANIFEST_LIST.as_str(),
            "manifests": [{"mediaType": MediaType::DOCKER_MANIFEST.as_str(), "digest": image.digest.to_string(), "size": image.size, "platform": {"architecture": "amd64", "os": "linux"}}],
        });
        let raw = crate::model::RawManifest::new(
            MediaType::DOCKER_MANIFEST_LIST,
            Bytes::from(serde_json::to_vec(&list).expect("json")),
        );
        store.push_manifest(&raw, Some("v1")).await.expect("list");

        let view = Store::new(OciView::new(store.clone()));
        let (root, raw) = view
            .fetch_manifest(&Selector::Tag("v1".into()))
            .await
            .expect("root");
        assert_eq!(root.media_type, MediaType::OCI_INDEX);
        let Document::Index(index) = raw.parse().expect("parse") else {
            panic!("not an index");
        };
        let member = &index.manifests[0];
        assert_eq!(member.media_type, MediaType::OCI_MANIFEST);
        assert_ne!(
            member.digest, image.digest,
            "a converted manifest has a new digest"
        );
        let (_, raw) = view
            .fetch_manifest(&Selector::Digest(member.digest.clone()))
            .await
            .expect("member");
        let Document::Manifest(converted) = raw.parse().expect("parse") else {
            panic!("not a manifest");
        };
        assert_eq!(converted.config.media_type, MediaType::OCI_CONFIG);
        assert_eq!(
            converted.config.digest, config.digest,
            "blobs are untouched"
        );
        assert_eq!(
            converted.layers[0].media_type,
            MediaType::OCI_LAYER_TAR_GZIP
        );
        // What the view shows, copied, lands whole.
        let target = Store::new(MemoryBackend::new());
        let report = crate::copy::copy(
            &view,
            &Selector::Tag("v1".into()),
            &target,
            Some("v1"),
            &crate::copy::CopyOptions::default(),
        )
        .await
        .expect("copy");
        assert_eq!(report.root.map(|r| r.digest), Some(root.digest));
    }
}
