//! Docker schema 1 (issue 21 item 7): refused by default with what to do,
//! copied verbatim when allowed.

use orca_core::copy::{CopyOptions, copy};
use orca_core::{Backend, Body, Descriptor, MediaType, MemoryBackend, Selector, Store};

/// A schema-1 manifest naming `layers`; signed, the way libtrust lays it
/// out (the payload cut before its closing brace, `signatures` after, the
/// cut tail in the protected header), with the digest of its payload.
fn schema1(layers: &[&Descriptor], signed: bool) -> (MediaType, String, orca_core::Digest) {
    use base64::Engine;
    let fs_layers: Vec<String> = layers
        .iter()
        .chain(layers.first())
        .map(|d| format!(r#"{{"blobSum":"{}"}}"#, d.digest))
        .collect();
    let payload = format!(
        "{{\n   \"schemaVersion\": 1,\n   \"name\": \"library/old\",\n   \"tag\": \"1\",\n   \"architecture\": \"amd64\",\n   \"fsLayers\": [{}],\n   \"history\": []\n}}",
        fs_layers.join(",")
    );
    let digest = orca_core::Digest::sha256(payload.as_bytes());
    if !signed {
        return (MediaType::DOCKER_SCHEMA1, payload, digest);
    }
    let cut = payload.rfind("\n}").expect("brace");
    let (head, tail) = payload.split_at(cut);
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let protected = url.encode(format!(
        r#"{{"formatLength":{},"formatTail":"{}"}}"#,
        head.len(),
        url.encode(tail)
    ));
    let text = format!(
        "{head},\n   \"signatures\": [{{\"header\":{{\"alg\":\"ES256\"}},\"signature\":\"c2ln\",\"protected\":\"{protected}\"}}]{tail}"
    );
    (MediaType::DOCKER_SCHEMA1_SIGNED, text, digest)
}

/// A source holding a schema-1 image tagged `old`: its layers, and the
/// manifest put in by the backend (a `Store` would refuse it).
async fn schema1_source(signed: bool) -> (Store, Descriptor, Vec<Descriptor>) {
    let backend = MemoryBackend::new();
    let source = Store::new(backend.clone());
    let mut layers = Vec::new();
    for n in 0..2u8 {
        layers.push(
            source
                .push_bytes(MediaType::DOCKER_LAYER_GZIP, vec![n; 1000])
                .await
                .expect("layer"),
        );
    }
    let (media_type, text, digest) = schema1(&layers.iter().collect::<Vec<_>>(), signed);
    let manifest = Descriptor::new(media_type, digest, text.len() as u64);
    backend
        .push(
            &manifest,
            Body::from_bytes(text.into_bytes()),
            &orca_core::PushOptions::tagged("old"),
        )
        .await
        .expect("put the schema-1 manifest");
    (source, manifest, layers)
}

/// Schema 1 (issue item 7): refused by default, with what to do; copied
/// verbatim when allowed, layers with it and digest kept — into a layout
/// unsigned, between stores that keep any digest signed (its digest that of
/// its payload); a signed one is refused by a layout with why.
#[tokio::test]
async fn schema1_is_refused_by_default_and_copied_verbatim_when_allowed() {
    let old = Selector::Tag("old".into());
    let (source, manifest, layers) = schema1_source(false).await;
    let target = Store::new(MemoryBackend::new());
    let err = copy(&source, &old, &target, Some("old"), &CopyOptions::default())
        .await
        .expect_err("schema 1 by default");
    assert!(
        matches!(err, orca_core::Error::Schema1Refused { .. })
            || orca_core::error::chain(&err).contains("--allow-schema1"),
        "{}",
        orca_core::error::chain(&err)
    );
    assert!(orca_core::error::chain(&err).contains("--allow-schema1"));

    let layout = Store::new(orca_core::layout::Layout::new(
        orca_core::layout::MemoryStorage::new("schema1"),
    ));
    orca_core::model::with_schema1(true, async {
        copy(&source, &old, &layout, Some("old"), &CopyOptions::default())
            .await
            .expect("copied when allowed");
        let copied = layout.resolve(&old).await.expect("tagged");
        assert_eq!(copied.digest, manifest.digest);
        assert_eq!(
            layout.fetch_bytes(&copied).await.expect("manifest"),
            source.fetch_bytes(&manifest).await.expect("original")
        );
        for layer in &layers {
            assert!(layout.exists(layer).await.expect("exists"), "layer missing");
        }

        let (signed_source, signed, _) = schema1_source(true).await;
        let target = Store::new(MemoryBackend::new());
        copy(
            &signed_source,
            &old,
            &target,
            Some("old"),
            &CopyOptions::default(),
        )
        .await
        .expect("signed, copied when allowed");
        let copied = target.resolve(&old).await.expect("tagged");
        assert_eq!(copied.digest, signed.digest, "named by its payload");
        assert_eq!(
            target.fetch_bytes(&copied).await.expect("manifest"),
            signed_source.fetch_bytes(&signed).await.expect("original"),
            "signatures and all"
        );
        let layout = Store::new(orca_core::layout::Layout::new(
            orca_core::layout::MemoryStorage::new("schema1-signed"),
        ));
        let err = copy(
            &signed_source,
            &old,
            &layout,
            Some("old"),
            &CopyOptions::default(),
        )
        .await
        .expect_err("a layout cannot name a signed schema 1");
        assert!(
            orca_core::error::chain(&err).contains("digest of its payload"),
            "{}",
            orca_core::error::chain(&err)
        );
    })
    .await;
}
