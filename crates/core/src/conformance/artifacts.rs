//! Artifact and index-creation checks: packing in the OCI 1.1 and 1.0
//! forms with the fallback, pulling files by title, and building an index
//! from several sources.

use super::support::*;

/// Artifacts: files packed in the OCI 1.1 form (with a subject, listed as
/// a referrer) and in the explicit 1.0 form, pulled back by title; a
/// hostile title writes nothing.
pub async fn artifacts(subject: Subject) {
    use crate::artifact::{Artifact, Form, pack, pull_files, push_file};
    let store = subject.store;
    let scratch = Scratch::new("artifact");
    let input = scratch.0.join("in");
    ok(
        std::fs::create_dir_all(input.join("docs")).map_err(io),
        "mkdir",
    );
    ok(
        std::fs::write(input.join("report.json"), br#"{"ok":true}"#).map_err(io),
        "write",
    );
    ok(
        std::fs::write(input.join("docs/readme.txt"), b"read me").map_err(io),
        "write",
    );
    let report = ok(
        push_file(
            &store,
            &input.join("report.json"),
            MediaType::new("application/json"),
            None,
        )
        .await,
        "push file",
    );
    let readme = ok(
        push_file(
            &store,
            &input.join("docs/readme.txt"),
            MediaType::new("text/plain"),
            Some("docs/readme.txt"),
        )
        .await,
        "push titled file",
    );
    let image = push_image(&store, "artifact-subject", None).await;
    let mut artifact = Artifact::new(
        MediaType::new("application/vnd.example.report"),
        vec![report.clone(), readme.clone()],
    );
    artifact.subject = Some(image.descriptor());
    let packed = ok(
        pack(&store, &artifact, Form::Auto, Some("report")).await,
        "pack 1.1",
    );
    assert_eq!(packed.form, Form::V1_1);
    let (_, raw) = ok(
        store.fetch_manifest(&Selector::Tag("report".into())).await,
        "fetch",
    );
    let manifest: Manifest = ok(
        serde_json::from_slice(raw.bytes()).map_err(invalid),
        "parse",
    );
    assert_eq!(
        manifest.artifact_type.as_ref().map(MediaType::as_str),
        Some("application/vnd.example.report")
    );
    assert_eq!(manifest.config.media_type, MediaType::OCI_EMPTY);
    assert_eq!(manifest.config.size, 2);
    assert!(
        manifest
            .annotations
            .contains_key(crate::model::ANNOTATION_CREATED)
    );
    let listed = ok(
        store.referrers(&image.descriptor(), None).await,
        "referrers",
    );
    assert_eq!(listed.manifests.len(), 1, "{listed:?}");
    assert_eq!(listed.manifests[0].digest, packed.descriptor.digest);

    let out = scratch.0.join("out");
    ok(std::fs::create_dir_all(&out).map_err(io), "mkdir");
    let written = ok(
        pull_files(&store, &Selector::Tag("report".into()), &out).await,
        "pull",
    );
    assert_eq!(written.len(), 2);
    assert_eq!(
        ok(std::fs::read(out.join("report.json")).map_err(io), "read"),
        br#"{"ok":true}"#
    );
    assert_eq!(
        ok(
            std::fs::read(out.join("docs/readme.txt")).map_err(io),
            "read"
        ),
        b"read me"
    );

    artifact.subject = None;
    let old = ok(
        pack(&store, &artifact, Form::V1_0, Some("report-1.0")).await,
        "pack 1.0",
    );
    assert_eq!(old.form, Form::V1_0);
    let (_, raw) = ok(
        store
            .fetch_manifest(&Selector::Tag("report-1.0".into()))
            .await,
        "fetch",
    );
    let manifest: Manifest = ok(
        serde_json::from_slice(raw.bytes()).map_err(invalid),
        "parse",
    );
    assert!(
        manifest.artifact_type.is_none(),
        "1.0 form has no artifactType"
    );
    assert_eq!(
        manifest.config.media_type.as_str(),
        "application/vnd.example.report"
    );
    artifact.subject = Some(image.descriptor());
    let err = expect_err(
        pack(&store, &artifact, Form::V1_0, None).await,
        "1.0 with a subject",
    );
    assert_kind(
        &err,
        |e| matches!(e, Error::InvalidInput { .. }),
        "1.0 with a subject",
    );

    // A title that climbs out: nothing is written anywhere.
    let mut evil = report.clone();
    evil.annotations.insert(
        crate::model::ANNOTATION_TITLE.into(),
        "../escaped.json".into(),
    );
    let hostile = Artifact::new(
        MediaType::new("application/vnd.example.evil"),
        vec![readme.clone(), evil],
    );
    ok(
        pack(&store, &hostile, Form::V1_1, Some("evil")).await,
        "pack hostile",
    );
    let clean = scratch.0.join("clean");
    ok(std::fs::create_dir_all(&clean).map_err(io), "mkdir");
    let err = expect_err(
        pull_files(&store, &Selector::Tag("evil".into()), &clean).await,
        "hostile pull",
    );
    assert_kind(
        &err,
        |e| matches!(e, Error::InvalidInput { .. }),
        "hostile title",
    );
    assert!(!scratch.0.join("escaped.json").exists(), "a file escaped");
    let left: Vec<_> = ok(std::fs::read_dir(&clean).map_err(io), "read_dir").collect();
    assert!(left.is_empty(), "a refused pull wrote {left:?}");
}

fn io(e: std::io::Error) -> Error {
    Error::InvalidInput {
        what: "scratch files".into(),
        reason: e.to_string(),
    }
}

/// An image whose config names `arch`, OCI- or Docker-typed.
async fn platform_image(store: &Store, seed: &str, arch: &str, docker: bool) -> Descriptor {
    let (config_type, layer_type, manifest_type) = if docker {
        (
            MediaType::DOCKER_CONFIG,
            MediaType::DOCKER_LAYER_GZIP,
            MediaType::DOCKER_MANIFEST,
        )
    } else {
        (MediaType::OCI_CONFIG, LAYER, MediaType::OCI_MANIFEST)
    };
    let config = ok(
        store
            .push_bytes(
                config_type,
                format!(r#"{{"architecture":"{arch}","os":"linux","seed":"{seed}"}}"#),
            )
            .await,
        "push config",
    );
    let layer = ok(
        store
            .push_bytes(layer_type, format!("layer {seed} {arch}"))
            .await,
        "push layer",
    );
    let mut manifest = Manifest::new(config, vec![layer]);
    manifest.media_type = Some(manifest_type);
    let raw = ok(manifest.to_raw(), "serialise");
    ok(store.push_manifest(&raw, None).await, "push manifest")
}

/// Index creation: members from this store and from another backend,
/// de-duplicated with annotations merged, platforms read from configs,
/// copied here by digest, an OCI index unless every member is Docker (then
/// a Docker list, which refuses annotations); one index source alone is
/// kept byte for byte.
pub async fn index_creation(subject: Subject) {
    use crate::index::{Annotations, Source, create};
    let store = subject.store;
    let elsewhere = Store::new(crate::memory::MemoryBackend::new());
    let amd64 = platform_image(&store, "idx", "amd64", false).await;
    let arm64 = platform_image(&elsewhere, "idx", "arm64", false).await;
    let sources = [
        Source::new(store.clone(), Selector::Digest(amd64.digest.clone())),
        Source::new(elsewhere.clone(), Selector::Digest(arm64.digest.clone())),
        Source::new(store.clone(), Selector::Digest(amd64.digest.clone())),
    ];
    let mut annotations = Annotations::default();
    annotations
        .index
        .insert("org.example.index".into(), "yes".into());
    annotations.descriptors.push((
        Some(crate::model::Platform::new("linux", "arm64")),
        "org.example.arm".into(),
        "yes".into(),
    ));
    let created = ok(
        create(&store, &sources, &annotations, Some("multi")).await,
        "create index",
    );
    assert_eq!(created.descriptor.media_type, MediaType::OCI_INDEX);
    let index: Index = ok(
        serde_json::from_slice(created.raw.bytes()).map_err(invalid),
        "parse",
    );
    assert_eq!(index.manifests.len(), 2, "members: {index:?}");
    assert_eq!(
        index
            .annotations
            .get("org.example.index")
            .map(String::as_str),
        Some("yes")
    );
    let platforms: Vec<String> = index
        .manifests
        .iter()
        .map(|m| {
            m.platform
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    assert!(
        index.manifests[1]
            .annotations
            .contains_key("org.example.arm")
    );
    assert!(
        !index.manifests[0]
            .annotations
            .contains_key("org.example.arm")
    );
    let resolved = ok(
        store.resolve(&Selector::Tag("multi".into())).await,
        "resolve",
    );
    assert_eq!(resolved.digest, created.descriptor.digest);
    let copied = ok(
        store
            .fetch_manifest(&Selector::Digest(arm64.digest.clone()))
            .await,
        "member copied",
    );
    let document = ok(copied.1.parse(), "parse member");
    for child in document.children() {
        assert!(
            ok(store.exists(child).await, "exists"),
            "member content {} missing",
            child.digest
        );
    }

    // One index source, no annotations: the same bytes.
    let again = ok(
        create(
            &store,
            &[Source::new(store.clone(), Selector::Tag("multi".into()))],
            &Annotations::default(),
            Some("same"),
        )
        .await,
        "re-create from one index",
    );
    assert_eq!(again.descriptor.digest, created.descriptor.digest);

    // Docker-typed members make a Docker list, which takes no annotations.
    let d1 = platform_image(&elsewhere, "docker", "amd64", true).await;
    let d2 = platform_image(&elsewhere, "docker", "arm64", true).await;
    let docker_sources = [
        Source::new(elsewhere.clone(), Selector::Digest(d1.digest.clone())),
        Source::new(elsewhere.clone(), Selector::Digest(d2.digest.clone())),
    ];
    let list = ok(
        create(
            &store,
            &docker_sources,
            &Annotations::default(),
            Some("docker"),
        )
        .await,
        "docker list",
    );
    assert_eq!(list.descriptor.media_type, MediaType::DOCKER_MANIFEST_LIST);
    let err = expect_err(
        create(&store, &docker_sources, &annotations, None).await,
        "annotated docker list",
    );
    assert_kind(
        &err,
        |e| matches!(e, Error::InvalidInput { .. }),
        "annotated docker list",
    );
}
