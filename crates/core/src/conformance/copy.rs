//! Copy-engine checks: the graph arrives whole and in order (no manifest
//! before what it names, the root's tag last), shared content moves once,
//! sha512 content keeps its digests, and a forced copy repairs a target
//! that lost content.

use std::sync::{Arc, Mutex};

use super::Subject;
use super::support::{LAYER, artifact, assert_kind, ok};
use crate::body::Body;
use crate::copy::{CopyOptions, Event, Progress, Tally, copy};
use crate::error::Error;
use crate::model::{
    Algorithm, Descriptor, Digest, Index, Manifest, MediaType, Platform, RawManifest, Selector,
};
use crate::referrers::fallback_tag;
use crate::store::Store;

/// A source holding a two-platform index whose images share a layer, an
/// SBOM referring to the first image, a signature of the SBOM and a
/// digest-tagged signature of the index.
struct Fixture {
    source: Store,
    index: Descriptor,
    members: Vec<Descriptor>,
    /// The layer both images name.
    shared: Descriptor,
    /// The layer only the arm64 image names.
    arm_layer: Descriptor,
    empty: Descriptor,
    sbom: RawManifest,
    cosign: RawManifest,
    sig_tag: String,
}

async fn fixture() -> Fixture {
    let source = Store::new(crate::memory::MemoryBackend::new());
    let shared = ok(
        source.push_bytes(LAYER, &b"shared base layer"[..]).await,
        "shared layer",
    );
    let mut members = Vec::new();
    let mut arm_layer = None;
    for arch in ["amd64", "arm64"] {
        let config = ok(
            source
                .push_bytes(
                    MediaType::OCI_CONFIG,
                    format!(r#"{{"architecture":"{arch}","os":"linux"}}"#),
                )
                .await,
            "config",
        );
        let own = ok(
            source.push_bytes(LAYER, format!("{arch} layer")).await,
            "layer",
        );
        arm_layer = Some(own.clone());
        let raw = ok(
            Manifest::new(config, vec![shared.clone(), own]).to_raw(),
            "manifest",
        );
        let mut descriptor = ok(source.push_manifest(&raw, None).await, "push manifest");
        descriptor.platform = Some(Platform::new("linux", arch));
        members.push(descriptor);
    }
    let index = Index {
        manifests: members.clone(),
        ..Index::new()
    };
    let index = ok(
        source
            .push_manifest(&ok(index.to_raw(), "index"), Some("multi"))
            .await,
        "push index",
    );
    let empty = ok(
        source.push_bytes(MediaType::OCI_EMPTY, &b"{}"[..]).await,
        "empty",
    );
    let sbom = artifact(&members[0], "application/vnd.example.sbom", "sbom", &empty);
    ok(source.push_manifest(&sbom, None).await, "push sbom");
    let sbom_sig = artifact(
        &sbom.descriptor(),
        "application/vnd.example.sig",
        "sbom-sig",
        &empty,
    );
    ok(
        source.push_manifest(&sbom_sig, None).await,
        "push signature of the sbom",
    );
    let cosign = ok(
        Manifest::new(empty.clone(), vec![empty.clone()]).to_raw(),
        "sig",
    );
    let sig_tag = format!("{}.sig", fallback_tag(&index.digest));
    ok(
        source.push_manifest(&cosign, Some(&sig_tag)).await,
        "push digest-tagged signature",
    );
    Fixture {
        source,
        index,
        members,
        shared,
        arm_layer: arm_layer.unwrap_or_else(|| panic!("no arm64 layer")),
        empty,
        sbom,
        cosign,
        sig_tag,
    }
}

/// Keeps every event, in order.
#[derive(Default)]
struct Recorder(Mutex<Vec<Event>>);

impl Recorder {
    fn events(&self) -> Vec<Event> {
        self.0.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

impl Progress for Recorder {
    fn event(&self, event: &Event) {
        if let Ok(mut events) = self.0.lock() {
            events.push(event.clone());
        }
    }
}

/// The copy engine brings a multi-platform index from another backend:
/// children before parents, a layer shared by two images transferred once,
/// referrers (nested) and digest tags along, nothing twice on a second
/// copy, and a platform filter that makes one manifest the root.
pub async fn copy_engine(subject: Subject) {
    let target = subject.store;
    let Fixture {
        source,
        index,
        members,
        shared,
        sbom,
        cosign,
        sig_tag,
        ..
    } = fixture().await;
    let tally = Arc::new(Tally::default());
    let options = CopyOptions {
        referrers: true,
        digest_tags: true,
        concurrency: 3,
        progress: Some(tally.clone()),
        ..CopyOptions::default()
    };
    let report = ok(
        copy(
            &source,
            &Selector::Tag("multi".into()),
            &target,
            Some("copied"),
            &options,
        )
        .await,
        "copy",
    );
    let copied = ok(
        target.resolve(&Selector::Tag("copied".into())).await,
        "resolve the copy",
    );
    assert_eq!(copied.digest, index.digest, "the index was re-serialised");
    assert_eq!(
        tally.copied(&shared.digest),
        1,
        "a shared layer moved more than once"
    );
    assert_eq!(report.referrers, 2, "{report:?}");
    assert_eq!(report.digest_tags, 1, "{report:?}");
    for member in &members {
        let (_, raw) = ok(
            target
                .fetch_manifest(&Selector::Digest(member.digest.clone()))
                .await,
            "member",
        );
        for child in ok(raw.parse(), "parse").children() {
            assert!(
                ok(target.exists(child).await, "exists"),
                "missing {}",
                child.digest
            );
        }
    }
    let listed = ok(
        target.referrers(&members[0], None).await,
        "referrers in the target",
    );
    assert_eq!(listed.manifests.len(), 1, "{listed:?}");
    assert_eq!(listed.manifests[0].digest, sbom.digest());
    let nested = ok(
        target.referrers(&sbom.descriptor(), None).await,
        "nested referrers",
    );
    assert_eq!(nested.manifests.len(), 1, "{nested:?}");
    let tagged = ok(
        target.resolve(&Selector::Tag(sig_tag.clone())).await,
        "digest tag copied",
    );
    assert_eq!(tagged.digest, cosign.digest());

    let again = Arc::new(Tally::default());
    let options = CopyOptions {
        progress: Some(again.clone()),
        ..options
    };
    let report = ok(
        copy(
            &source,
            &Selector::Tag("multi".into()),
            &target,
            Some("copied"),
            &options,
        )
        .await,
        "copy again",
    );
    assert_eq!(
        again.total(),
        0,
        "a second copy transferred content: {report:?}"
    );

    let options = CopyOptions {
        platforms: vec![Platform::new("linux", "arm64")],
        ..CopyOptions::default()
    };
    ok(
        copy(
            &source,
            &Selector::Tag("multi".into()),
            &target,
            Some("arm"),
            &options,
        )
        .await,
        "copy one platform",
    );
    let arm = ok(
        target.resolve(&Selector::Tag("arm".into())).await,
        "resolve arm",
    );
    assert_eq!(arm.digest, members[1].digest);
}

/// The events of a copy prove its order: the plan comes first, no manifest
/// is pushed before everything it names (and its subject) is in the
/// target, byte progress rises to each blob's size between its start and
/// its end, and the root's tag is the very last thing set.
pub async fn copy_order(subject: Subject) {
    let target = subject.store;
    let fixture = fixture().await;
    let recorder = Arc::new(Recorder::default());
    let options = CopyOptions {
        referrers: true,
        digest_tags: true,
        concurrency: 3,
        progress: Some(recorder.clone()),
        ..CopyOptions::default()
    };
    ok(
        copy(
            &fixture.source,
            &Selector::Tag("multi".into()),
            &target,
            Some("ordered"),
            &options,
        )
        .await,
        "copy",
    );
    let events = recorder.events();
    let Some(Event::Planned(totals)) = events.first() else {
        panic!("the first event is not the plan: {events:?}");
    };
    let pushed = events
        .iter()
        .filter(|e| matches!(e, Event::Pushed(_)))
        .count() as u64;
    assert_eq!(totals.manifests, pushed, "planned vs pushed manifests");
    let finished_blobs = events
        .iter()
        .filter(|e| {
            matches!(e, Event::Copied(_) | Event::Mounted(_) | Event::External(_))
                || matches!(e, Event::Present(d) if !d.media_type.is_manifest())
        })
        .count() as u64;
    assert_eq!(totals.blobs, finished_blobs, "planned vs finished blobs");
    match events.last() {
        Some(Event::Tagged { tag, descriptor })
            if tag == "ordered" && descriptor.digest == fixture.index.digest => {}
        other => panic!("the root's tag is not the last event but {other:?}"),
    }

    let mut arrived: std::collections::HashSet<Digest> = std::collections::HashSet::new();
    let mut progress: std::collections::HashMap<Digest, u64> = std::collections::HashMap::new();
    let mut started: std::collections::HashSet<Digest> = std::collections::HashSet::new();
    for event in &events {
        match event {
            Event::Started(d) => {
                assert!(
                    started.insert(d.digest.clone()),
                    "{} started twice",
                    d.digest
                );
            }
            Event::Advanced { digest, done, size } => {
                assert!(
                    started.contains(digest),
                    "progress before start of {digest}"
                );
                let before = progress.insert(digest.clone(), *done).unwrap_or(0);
                assert!(
                    *done >= before && done <= size,
                    "progress of {digest} went {before} -> {done} of {size}"
                );
            }
            Event::Copied(d) => {
                if d.size > 0 {
                    assert_eq!(
                        progress.get(&d.digest),
                        Some(&d.size),
                        "progress of {} did not reach its size",
                        d.digest
                    );
                }
                arrived.insert(d.digest.clone());
            }
            Event::Mounted(d) | Event::Present(d) | Event::External(d) => {
                arrived.insert(d.digest.clone());
            }
            Event::Pushed(d) => {
                let bytes = ok(
                    fixture.source.fetch_bytes(d).await,
                    "read a pushed manifest",
                );
                let document = ok(
                    RawManifest::new(d.media_type.clone(), bytes).parse(),
                    "parse a pushed manifest",
                );
                for named in document.children().into_iter().chain(document.subject()) {
                    assert!(
                        arrived.contains(&named.digest),
                        "{} was pushed before {} it names",
                        d.digest,
                        named.digest
                    );
                }
                arrived.insert(d.digest.clone());
            }
            Event::Tagged { descriptor, tag } => {
                assert!(
                    arrived.contains(&descriptor.digest),
                    "tag {tag} set before {} arrived",
                    descriptor.digest
                );
            }
            _ => {}
        }
    }
}

/// Content addressed by sha512 keeps its digests: blobs, the manifest and
/// the tag in the target name the same sha512 content, and a second copy
/// moves nothing.
pub async fn copy_sha512(subject: Subject) {
    let target = subject.store;
    let source = Store::new(crate::memory::MemoryBackend::new());
    let sha512 = |media_type: MediaType, bytes: &[u8]| {
        Descriptor::new(
            media_type,
            Digest::compute(Algorithm::Sha512, bytes),
            bytes.len() as u64,
        )
    };
    let config_bytes = br#"{"architecture":"amd64","os":"linux","seed":"sha512"}"#;
    let layer_bytes = b"a layer addressed by sha512";
    let config = sha512(MediaType::OCI_CONFIG, config_bytes);
    let layer = sha512(LAYER, layer_bytes);
    ok(
        source
            .push(&config, Body::from_bytes(&config_bytes[..]))
            .await,
        "push sha512 config",
    );
    ok(
        source
            .push(&layer, Body::from_bytes(&layer_bytes[..]))
            .await,
        "push sha512 layer",
    );
    let raw = ok(
        Manifest::new(config.clone(), vec![layer.clone()]).to_raw(),
        "manifest",
    );
    let manifest = sha512(MediaType::OCI_MANIFEST, raw.bytes());
    ok(
        source
            .push_opts(
                &manifest,
                Body::from_bytes(raw.bytes().clone()),
                crate::backend::PushOptions::tagged("v512"),
            )
            .await,
        "push sha512 manifest",
    );
    let copied = copy(
        &source,
        &Selector::Tag("v512".into()),
        &target,
        Some("v512"),
        &CopyOptions::default(),
    )
    .await;
    if let Err(Error::Unsupported { operation, .. }) = &copied {
        // A registry that addresses manifests only by sha256 (distribution
        // 2.8) must say so, and tag nothing.
        assert!(operation.contains("sha256"), "{operation}");
        let err = target
            .resolve(&Selector::Tag("v512".into()))
            .await
            .expect_err("a refused copy tagged something");
        assert!(err.is_not_found(), "{err}");
        return;
    }
    ok(copied, "copy sha512 content");
    let resolved = ok(
        target.resolve(&Selector::Tag("v512".into())).await,
        "resolve the copied tag",
    );
    assert_eq!(
        resolved.digest, manifest.digest,
        "the manifest was re-addressed"
    );
    let (_, fetched) = ok(
        target
            .fetch_manifest(&Selector::Digest(manifest.digest.clone()))
            .await,
        "fetch by sha512 digest",
    );
    assert_eq!(fetched.bytes(), raw.bytes());
    for blob in [&config, &layer] {
        assert!(
            ok(target.exists(blob).await, "exists"),
            "{} missing",
            blob.digest
        );
    }
    let tally = Arc::new(Tally::default());
    let options = CopyOptions {
        progress: Some(tally.clone()),
        ..CopyOptions::default()
    };
    ok(
        copy(
            &source,
            &Selector::Tag("v512".into()),
            &target,
            Some("v512"),
            &options,
        )
        .await,
        "copy again",
    );
    assert_eq!(tally.total(), 0, "a second copy moved sha512 content again");
}

/// A forced copy repairs a target that lost content under a manifest it
/// still has, moving only what is missing, and picks up referrers added
/// since to the members of an index already copied.
pub async fn copy_repair(subject: Subject) {
    let target = subject.store;
    let fixture = fixture().await;
    let selector = Selector::Tag("multi".into());
    ok(
        copy(
            &fixture.source,
            &selector,
            &target,
            Some("r"),
            &CopyOptions::default(),
        )
        .await,
        "first copy",
    );
    if target.capabilities().delete {
        ok(
            target.delete(&fixture.arm_layer).await,
            "delete a layer in the target",
        );
        ok(
            copy(
                &fixture.source,
                &selector,
                &target,
                Some("r"),
                &CopyOptions::default(),
            )
            .await,
            "plain copy",
        );
        assert!(
            !ok(target.exists(&fixture.arm_layer).await, "exists"),
            "a plain copy walked into a manifest the target has"
        );
        let tally = Arc::new(Tally::default());
        let forced = CopyOptions {
            force: true,
            progress: Some(tally.clone()),
            ..CopyOptions::default()
        };
        ok(
            copy(&fixture.source, &selector, &target, Some("r"), &forced).await,
            "forced copy",
        );
        assert!(
            ok(target.exists(&fixture.arm_layer).await, "exists"),
            "a forced copy did not repair the missing layer"
        );
        assert_eq!(tally.copied(&fixture.arm_layer.digest), 1);
        assert_eq!(
            tally.total(),
            1,
            "a forced copy moved more than what was missing"
        );
    } else {
        let err = target
            .delete(&fixture.arm_layer)
            .await
            .expect_err("delete is not a capability");
        assert_kind(&err, |e| matches!(e, Error::Unsupported { .. }), "delete");
    }

    let late = artifact(
        &fixture.members[1],
        "application/vnd.example.late",
        "late",
        &fixture.empty,
    );
    ok(
        fixture.source.push_manifest(&late, None).await,
        "push a late referrer",
    );
    let forced = CopyOptions {
        force: true,
        referrers: true,
        ..CopyOptions::default()
    };
    let report = ok(
        copy(&fixture.source, &selector, &target, Some("r"), &forced).await,
        "forced copy with referrers",
    );
    assert!(report.referrers >= 2, "{report:?}");
    let listed = ok(
        target.referrers(&fixture.members[1], None).await,
        "referrers of the arm64 image",
    );
    assert!(
        listed.manifests.iter().any(|d| d.digest == late.digest()),
        "the late referrer was not picked up: {listed:?}"
    );
}
