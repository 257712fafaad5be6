//! What the checks share: the imports they use and small helpers that
//! push content and assert on results.

pub(super) use std::collections::BTreeMap;

pub(super) use bytes::Bytes;
pub(super) use futures::{StreamExt, stream};

pub(super) use super::Subject;
pub(super) use super::content::{CHUNK, GeneratedBlob, LiveChunks};
pub(super) use crate::backend::{ListQuery, PushOptions};
pub(super) use crate::body::Body;
pub(super) use crate::error::{Error, Result, chain};
pub(super) use crate::model::{
    Descriptor, Digest, Index, Manifest, MediaType, RawManifest, Selector,
};
pub(super) use crate::referrers::{Via, fallback_tag};
pub(super) use crate::store::Store;

pub(super) const LAYER: MediaType = MediaType::OCI_LAYER_TAR;

#[track_caller]
pub(super) fn ok<T>(result: Result<T>, doing: &str) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!("{doing}: unexpected error: {}", chain(&e)),
    }
}

#[track_caller]
pub(super) fn expect_err<T: std::fmt::Debug>(result: Result<T>, doing: &str) -> Error {
    match result {
        Ok(value) => panic!("{doing}: expected an error, got {value:?}"),
        Err(e) => e,
    }
}

pub(super) async fn read_all(mut body: Body) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

pub(super) async fn push_blob(store: &Store, data: &[u8]) -> Descriptor {
    ok(
        store.push_bytes(LAYER, Bytes::copy_from_slice(data)).await,
        "push blob",
    )
}

/// Pushes a config and a layer and an image manifest naming them (written
/// with deliberate odd spacing and an unknown field, so a backend that
/// re-serialises would change its digest). Returns the manifest's raw form.
pub(super) async fn push_image(store: &Store, seed: &str, tag: Option<&str>) -> RawManifest {
    let raw = stage_image(store, seed).await;
    ok(store.push_manifest(&raw, tag).await, "push manifest");
    raw
}

/// What [`push_image`] pushes before the manifest: the config and the
/// layer are pushed, the manifest only returned.
pub(super) async fn stage_image(store: &Store, seed: &str) -> RawManifest {
    let config = ok(
        store
            .push_bytes(
                MediaType::OCI_CONFIG,
                format!(r#"{{"architecture":"amd64","os":"linux","seed":"{seed}"}}"#),
            )
            .await,
        "push config",
    );
    let layer = push_blob(store, format!("layer of {seed}").as_bytes()).await;
    let text = format!(
        "{{\n  \"schemaVersion\": 2,\n  \"mediaType\": \"{}\",\n  \"config\": {},\n  \"layers\": [ {} ],\n  \"x-orca-test\": {{ \"seed\": \"{seed}\" }}\n}}\n",
        MediaType::OCI_MANIFEST,
        ok(
            serde_json::to_string(&config).map_err(invalid),
            "config json"
        ),
        ok(serde_json::to_string(&layer).map_err(invalid), "layer json"),
    );
    RawManifest::new(MediaType::OCI_MANIFEST, text.into_bytes())
}

pub(super) fn invalid(e: serde_json::Error) -> Error {
    Error::InvalidInput {
        what: "test document".into(),
        reason: e.to_string(),
    }
}

pub(super) fn artifact(
    subject: &Descriptor,
    artifact_type: &str,
    note: &str,
    config: &Descriptor,
) -> RawManifest {
    let mut annotations = BTreeMap::new();
    annotations.insert("org.example.note".to_owned(), note.to_owned());
    let manifest = Manifest {
        artifact_type: Some(MediaType::new(artifact_type)),
        subject: Some(subject.plain()),
        annotations,
        ..Manifest::new(config.clone(), vec![config.clone()])
    };
    ok(manifest.to_raw(), "serialise artifact")
}

pub(super) fn assert_kind(err: &Error, expected: fn(&Error) -> bool, doing: &str) {
    assert!(
        expected(err),
        "{doing}: wrong error kind: {} ({err:?})",
        chain(err)
    );
}

/// A scratch directory for a check, removed when dropped.
pub(super) struct Scratch(pub(super) std::path::PathBuf);

impl Scratch {
    pub(super) fn new(label: &str) -> Self {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("orca-check-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        if let Err(e) = std::fs::create_dir_all(&path) {
            panic!("scratch directory {}: {e}", path.display());
        }
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
