//! oci-archive and docker-archive: round trips, interoperability with
//! skopeo both ways, and hostile archives that must import nothing.

use std::path::{Path, PathBuf};

use orca_backend_fs::{
    LayoutBackend, export_docker_archive, export_oci_archive, import_docker_archive,
    import_oci_archive,
};
use orca_core::{Document, MediaType, Selector, Store};

use crate::common::{leftovers, push_real_image, run, store};

const SKOPEO: &str = "apt-get install -y skopeo";

struct Fixture {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    source: PathBuf,
    pushed: orca_core::Descriptor,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().to_owned();
    let source = path.join("source");
    let pushed = push_real_image(
        &store(&source),
        &[("etc/motd", b"archived by orca\n")],
        "v1",
    )
    .await;
    Fixture {
        _dir: dir,
        dir: path,
        source,
        pushed,
    }
}

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

async fn verify_all(store: &Store, tag: &str) -> (orca_core::Descriptor, orca_core::Manifest) {
    let (descriptor, raw) = store
        .fetch_manifest(&Selector::Tag(tag.into()))
        .await
        .expect("manifest");
    let Document::Manifest(manifest) = raw.parse().expect("parse") else {
        panic!("{tag} is not an image manifest")
    };
    for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
        store.fetch_bytes(blob).await.expect("verified blob");
    }
    (descriptor, *manifest)
}

#[tokio::test]
async fn oci_archive_round_trips_through_orca_and_skopeo() {
    let f = fixture().await;
    let archive = f.dir.join("image.oci.tar");
    let backend = LayoutBackend::open(&f.source).expect("open");
    export_oci_archive(&backend, &archive)
        .await
        .expect("export");

    let inspect = run(
        "skopeo",
        SKOPEO,
        &["inspect", &format!("oci-archive:{}:v1", s(&archive))],
    );
    let inspected: serde_json::Value = serde_json::from_str(&inspect).expect("json");
    assert_eq!(
        inspected["Digest"],
        f.pushed.digest.to_string(),
        "{inspect}"
    );

    let back = f.dir.join("back");
    let imported = import_oci_archive(&archive, &LayoutBackend::open(&back).expect("open"))
        .await
        .expect("import");
    assert_eq!(imported.tags, ["v1"]);
    let (descriptor, _) = verify_all(&store(&back), "v1").await;
    assert_eq!(descriptor.digest, f.pushed.digest);

    let from_skopeo = f.dir.join("skopeo.oci.tar");
    run(
        "skopeo",
        SKOPEO,
        &[
            "copy",
            &format!("oci:{}:v1", s(&f.source)),
            &format!("oci-archive:{}:skopeo", s(&from_skopeo)),
        ],
    );
    let target = f.dir.join("from-skopeo");
    let imported = import_oci_archive(&from_skopeo, &LayoutBackend::open(&target).expect("open"))
        .await
        .expect("import skopeo's archive");
    assert_eq!(imported.tags, ["skopeo"]);
    verify_all(&store(&target), "skopeo").await;
}

#[tokio::test]
async fn docker_archive_round_trips_through_orca_and_skopeo() {
    let f = fixture().await;
    let source = store(&f.source);
    let (_, original) = verify_all(&source, "v1").await;

    let archive = f.dir.join("image.docker.tar");
    let tags = ["example.com/app:v1".to_owned()];
    export_docker_archive(&source, &Selector::Tag("v1".into()), None, &tags, &archive)
        .await
        .expect("export");
    let inspect = run(
        "skopeo",
        SKOPEO,
        &["inspect", &format!("docker-archive:{}", s(&archive))],
    );
    let inspected: serde_json::Value = serde_json::from_str(&inspect).expect("json");
    assert_eq!(inspected["Architecture"], "amd64", "{inspect}");
    assert_eq!(
        inspected["Layers"].as_array().map(Vec::len),
        Some(1),
        "{inspect}"
    );
    let listing = run("tar", "apt-get install -y tar", &["-tf", s(&archive)]);
    for name in ["manifest.json", "oci-layout", "index.json"] {
        assert!(
            listing.lines().any(|l| l == name),
            "{name} missing from {listing}"
        );
    }

    // orca reads its own export through the OCI layout inside.
    let back = f.dir.join("back");
    let imported = import_docker_archive(&archive, &LayoutBackend::open(&back).expect("open"))
        .await
        .expect("import");
    assert_eq!(imported.tags, ["v1"]);
    assert_eq!(
        verify_all(&store(&back), "v1").await.0.digest,
        f.pushed.digest
    );

    // skopeo's docker-archive has only manifest.json: orca builds a Docker
    // schema 2 manifest with gzip layers from it.
    let from_skopeo = f.dir.join("skopeo.docker.tar");
    run(
        "skopeo",
        SKOPEO,
        &[
            "copy",
            &format!("oci:{}:v1", s(&f.source)),
            &format!("docker-archive:{}:example.com/app:skopeo", s(&from_skopeo)),
        ],
    );
    let target = f.dir.join("from-skopeo");
    let imported =
        import_docker_archive(&from_skopeo, &LayoutBackend::open(&target).expect("open"))
            .await
            .expect("import skopeo's archive");
    assert_eq!(imported.tags, ["skopeo"]);
    let (descriptor, manifest) = verify_all(&store(&target), "skopeo").await;
    assert_eq!(descriptor.media_type, MediaType::DOCKER_MANIFEST);
    assert_eq!(manifest.layers.len(), original.layers.len());
    assert!(
        manifest
            .layers
            .iter()
            .all(|l| l.media_type == MediaType::DOCKER_LAYER_GZIP)
    );
    assert_eq!(
        manifest.config.digest, original.config.digest,
        "the config travels unchanged"
    );
}

#[tokio::test]
async fn docker_export_of_an_index_needs_a_platform() {
    let f = fixture().await;
    let source = store(&f.source);
    let mut member = f.pushed.clone();
    member.platform = Some(orca_core::Platform::new("linux", "amd64"));
    let index = orca_core::Index {
        manifests: vec![member],
        ..orca_core::Index::new()
    };
    source
        .push_manifest(&index.to_raw().expect("raw"), Some("multi"))
        .await
        .expect("index");
    let archive = f.dir.join("multi.tar");
    let err = export_docker_archive(&source, &Selector::Tag("multi".into()), None, &[], &archive)
        .await
        .expect_err("an index without a platform");
    assert!(err.to_string().contains("linux/amd64"), "{err}");
    assert!(!archive.exists(), "a failed export left an archive");
    let want = orca_core::Platform::parse("linux/amd64").expect("platform");
    let chosen = export_docker_archive(
        &source,
        &Selector::Tag("multi".into()),
        Some(&want),
        &[],
        &archive,
    )
    .await
    .expect("export with a platform");
    assert_eq!(chosen.digest, f.pushed.digest);
}

/// The files of a layout, as tar entries.
fn layout_entries(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut entries = vec![
        (
            "oci-layout".to_owned(),
            std::fs::read(root.join("oci-layout")).expect("marker"),
        ),
        (
            "index.json".to_owned(),
            std::fs::read(root.join("index.json")).expect("index"),
        ),
    ];
    for entry in std::fs::read_dir(root.join("blobs/sha256")).expect("blobs") {
        let entry = entry.expect("entry");
        let name = format!("blobs/sha256/{}", entry.file_name().to_string_lossy());
        entries.push((name, std::fs::read(entry.path()).expect("blob")));
    }
    entries
}

/// An entry to pack: name, content, and a symlink target.
type Owned = (String, Vec<u8>, Option<String>);

enum Raw<'a> {
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
}

/// Packs entries without the tar crate's path checks, as an attacker would.
fn raw_tar(path: &Path, entries: &[Raw<'_>]) {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_old();
        let (name, data, kind, link) = match entry {
            Raw::File(name, data) => (*name, *data, tar::EntryType::Regular, None),
            Raw::Symlink(name, target) => (*name, &b""[..], tar::EntryType::Symlink, Some(*target)),
        };
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(link) = link {
            header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append(&header, data).expect("append");
    }
    std::fs::write(path, builder.into_inner().expect("tar")).expect("write tar");
}

#[tokio::test]
async fn hostile_archives_import_nothing() {
    let f = fixture().await;
    let good = layout_entries(&f.source);
    let blob = good
        .iter()
        .find(|(n, _)| n.starts_with("blobs/"))
        .expect("a blob")
        .clone();
    let index_entry = good
        .iter()
        .find(|(n, _)| n == "index.json")
        .expect("index")
        .clone();
    let with = |extra: Vec<Raw<'static>>| -> Vec<Owned> {
        let mut out: Vec<_> = good
            .iter()
            .map(|(n, d)| (n.clone(), d.clone(), None))
            .collect();
        for e in extra {
            match e {
                Raw::File(n, d) => out.push((n.to_owned(), d.to_vec(), None)),
                Raw::Symlink(n, t) => out.push((n.to_owned(), Vec::new(), Some(t.to_owned()))),
            }
        }
        out
    };
    let mismatched: Vec<_> = good
        .iter()
        .map(|(n, d)| {
            let d = if *n == blob.0 {
                b"not the content its name promises".to_vec()
            } else {
                d.clone()
            };
            (n.clone(), d, None)
        })
        .collect();
    let wrong_size: Vec<_> = good
        .iter()
        .map(|(n, d)| {
            let d = if *n == index_entry.0 {
                let text = String::from_utf8(d.clone()).expect("utf-8");
                let size = f.pushed.size.to_string();
                text.replacen(
                    &format!("\"size\":{size}"),
                    &format!("\"size\":{}", f.pushed.size + 1),
                    1,
                )
                .into_bytes()
            } else {
                d.clone()
            };
            (n.clone(), d, None)
        })
        .collect();
    let cases: Vec<(&str, Vec<Owned>, &str)> = vec![
        (
            "dot-dot",
            with(vec![Raw::File("blobs/../../evil", b"x")]),
            "`..`",
        ),
        (
            "absolute",
            with(vec![Raw::File("/tmp/evil", b"x")]),
            "absolute path",
        ),
        (
            "escaping link",
            with(vec![Raw::Symlink(
                "blobs/sha256/aaaa",
                "../../../../etc/passwd",
            )]),
            "outside the archive",
        ),
        (
            "content not matching its name",
            mismatched,
            "does not match its name",
        ),
        (
            "size not matching its descriptor",
            wrong_size,
            "but its descriptor says",
        ),
    ];

    let target_root = f.dir.join("target");
    let target = store(&target_root);
    push_real_image(&target, &[("keep", b"keep me")], "keep").await;
    let index_before = std::fs::read(target_root.join("index.json")).expect("index");
    let blobs_before = std::fs::read_dir(target_root.join("blobs/sha256"))
        .expect("blobs")
        .count();

    for (name, entries, expected) in cases {
        let archive = f.dir.join(format!("{name}.tar"));
        let raw: Vec<Raw<'_>> = entries
            .iter()
            .map(|(n, d, link)| match link {
                Some(t) => Raw::Symlink(n, t),
                None => Raw::File(n, d),
            })
            .collect();
        raw_tar(&archive, &raw);
        let backend = LayoutBackend::open(&target_root).expect("open");
        for result in [
            import_oci_archive(&archive, &backend).await,
            import_docker_archive(&archive, &backend).await,
        ] {
            let err = result.expect_err(name);
            let text = orca_core::error::chain(&err);
            assert!(
                text.contains(expected) && text.contains(&archive.display().to_string()),
                "{name}: {text}"
            );
        }
        assert_eq!(
            std::fs::read(target_root.join("index.json")).expect("index"),
            index_before,
            "{name}: index.json changed"
        );
        let blobs_after = std::fs::read_dir(target_root.join("blobs/sha256"))
            .expect("blobs")
            .count();
        assert_eq!(blobs_after, blobs_before, "{name}: blobs were imported");
        assert!(
            leftovers(&target_root).is_empty(),
            "{name}: staging files stayed: {:?}",
            leftovers(&target_root)
        );
    }

    let docker = f.dir.join("docker-dot-dot.tar");
    raw_tar(
        &docker,
        &[Raw::File(
            "manifest.json",
            br#"[{"Config":"../../etc/passwd","RepoTags":["a:b"],"Layers":[]}]"#,
        )],
    );
    let err = import_docker_archive(&docker, &LayoutBackend::open(&target_root).expect("open"))
        .await
        .expect_err("manifest.json escaping");
    assert!(err.to_string().contains("`..`"), "{err}");
}
