//! Archives as stores: oci-archive and docker-archive tars written and read
//! through `copy`, interoperability with skopeo and umoci both ways,
//! several images (and two `latest` tags) in one archive, archives that
//! never appear when a copy fails, sha512 names (`archive_input` has the
//! hostile and unusual tars).

use std::path::{Path, PathBuf};

use orca_backend_fs::{Archive, ArchiveFormat, ArchiveWriter};
use orca_core::copy::{CopyOptions, copy};
use orca_core::{Descriptor, Digest, Document, MediaType, Selector, Store};

use crate::common::{push_real_image, run, store};

const SKOPEO: &str = "apt-get install -y skopeo";
const UMOCI: &str = "apt-get install -y umoci";

pub(crate) struct Fixture {
    _dir: tempfile::TempDir,
    pub(crate) dir: PathBuf,
    pub(crate) source: PathBuf,
    pub(crate) pushed: Descriptor,
}

pub(crate) async fn fixture() -> Fixture {
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

pub(crate) async fn verify_all(store: &Store, tag: &str) -> (Descriptor, orca_core::Manifest) {
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

/// Copies `tag` of `from` into `to` under `as_tag`.
pub(crate) async fn cp(from: &Store, tag: &str, to: &Store, as_tag: &str) -> orca_core::Result<()> {
    copy(
        from,
        &Selector::Tag(tag.into()),
        to,
        Some(as_tag),
        &CopyOptions::default(),
    )
    .await
    .map(drop)
}

/// Files orca left next to an archive it wrote (temporary tars, spools).
fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("list")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".orca-"))
        .collect()
}

fn tar_names(path: &Path) -> Vec<String> {
    let mut archive = tar::Archive::new(std::fs::File::open(path).expect("open"));
    archive
        .entries()
        .expect("entries")
        .map(|e| String::from_utf8_lossy(&e.expect("entry").path_bytes()).into_owned())
        .collect()
}

#[tokio::test]
async fn oci_archive_round_trips_through_orca_skopeo_and_umoci() {
    let f = fixture().await;
    let source = store(&f.source);
    let archive = f.dir.join("image.oci.tar");
    let writer = ArchiveWriter::create(&archive, ArchiveFormat::Oci).expect("create");
    cp(&source, "v1", &Store::new(writer.clone()), "v1")
        .await
        .expect("copy into the archive");
    assert!(
        !archive.exists(),
        "the archive appeared before it was finished"
    );
    writer.finish().await.expect("finish");
    assert!(temporaries(&f.dir).is_empty(), "{:?}", temporaries(&f.dir));

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
    let unpacked = f.dir.join("unpacked");
    std::fs::create_dir(&unpacked).expect("mkdir");
    run(
        "tar",
        "apt-get install -y tar",
        &["-xf", s(&archive), "-C", s(&unpacked)],
    );
    let listed = run("umoci", UMOCI, &["ls", "--layout", s(&unpacked)]);
    assert_eq!(listed.trim(), "v1", "{listed}");

    let read = Archive::open(&archive).expect("open");
    assert_eq!(read.images().len(), 1);
    assert_eq!(read.images()[0].tag.as_deref(), Some("v1"));
    let back = f.dir.join("back");
    cp(&Store::new(read), "v1", &store(&back), "v1")
        .await
        .expect("copy out of the archive");
    assert_eq!(
        verify_all(&store(&back), "v1").await.0.digest,
        f.pushed.digest
    );

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
    let read = Store::new(Archive::open(&from_skopeo).expect("open skopeo's archive"));
    assert_eq!(read.tags_all().await.expect("tags"), ["skopeo"]);
    let target = f.dir.join("from-skopeo");
    cp(&read, "skopeo", &store(&target), "skopeo")
        .await
        .expect("copy out of skopeo's archive");
    // skopeo compresses the layer on its way into an OCI archive, so the
    // manifest differs; every byte of it is verified all the same.
    verify_all(&store(&target), "skopeo").await;
}

#[tokio::test]
async fn docker_archives_keep_every_repository_tag() {
    let f = fixture().await;
    let source = store(&f.source);
    let second = push_real_image(&source, &[("etc/other", b"second image\n")], "v2").await;
    let archive = f.dir.join("two.docker.tar");
    let writer = ArchiveWriter::create(&archive, ArchiveFormat::Docker).expect("create");
    let a = Store::new(writer.repository("example.com/a"));
    let b = Store::new(writer.repository("example.com/b"));
    cp(&source, "v1", &a, "latest").await.expect("copy a");
    cp(&source, "v2", &b, "latest").await.expect("copy b");
    writer.finish().await.expect("finish");
    let names = tar_names(&archive);
    for name in ["manifest.json", "oci-layout", "index.json"] {
        assert!(
            names.iter().any(|n| n == name),
            "{name} missing from {names:?}"
        );
    }

    for (name, expected) in [
        ("example.com/a:latest", &f.pushed),
        ("example.com/b:latest", &second),
    ] {
        let inspect = run(
            "skopeo",
            SKOPEO,
            &[
                "inspect",
                "--raw",
                &format!("docker-archive:{}:{name}", s(&archive)),
            ],
        );
        let manifest: serde_json::Value = serde_json::from_str(&inspect).expect("json");
        let config = source
            .fetch_manifest(&Selector::Digest(expected.digest.clone()))
            .await
            .expect("manifest");
        let Document::Manifest(original) = config.1.parse().expect("parse") else {
            panic!("not an image")
        };
        assert_eq!(
            manifest["config"]["digest"],
            original.config.digest.to_string(),
            "skopeo read the wrong image for {name}: {inspect}"
        );
    }

    let read = Archive::open(&archive).expect("open");
    let mut names: Vec<String> = read
        .images()
        .iter()
        .filter_map(|i| i.name.clone())
        .collect();
    names.sort();
    assert_eq!(names, ["example.com/a:latest", "example.com/b:latest"]);
    let err = Store::new(read.clone())
        .resolve(&Selector::Tag("latest".into()))
        .await
        .expect_err("latest is ambiguous");
    assert!(err.to_string().contains("choose a repository"), "{err}");
    for (repository, expected) in [("example.com/a", &f.pushed), ("example.com/b", &second)] {
        let view = Store::new(read.repository(repository));
        let resolved = view
            .resolve(&Selector::Tag("latest".into()))
            .await
            .expect("resolve");
        assert_eq!(&resolved.digest, &expected.digest, "{repository}");
        let target = f.dir.join(repository.replace('/', "_"));
        cp(&view, "latest", &store(&target), "latest")
            .await
            .expect("copy out");
        verify_all(&store(&target), "latest").await;
    }
}

/// A docker-archive as `docker save` of two images would make it, put
/// together from two archives skopeo wrote: only `manifest.json`, no OCI
/// layout, uncompressed layers named by file.
fn merge_docker_archives(parts: &[&Path], out: &Path) {
    let mut listing: Vec<serde_json::Value> = Vec::new();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for part in parts {
        let mut archive = tar::Archive::new(std::fs::File::open(part).expect("open"));
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).expect("read");
            if name == "manifest.json" {
                let images: Vec<serde_json::Value> = serde_json::from_slice(&data).expect("json");
                listing.extend(images);
            } else if !files.iter().any(|(n, _)| *n == name) {
                files.push((name, data));
            }
        }
    }
    files.push((
        "manifest.json".into(),
        serde_json::to_vec(&listing).expect("json"),
    ));
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, name, &data[..])
            .expect("append");
    }
    std::fs::write(out, builder.into_inner().expect("tar")).expect("write");
}

#[tokio::test]
async fn orca_reads_docker_archives_skopeo_wrote() {
    let f = fixture().await;
    let source = store(&f.source);
    let (_, original) = verify_all(&source, "v1").await;
    push_real_image(&source, &[("etc/other", b"second image\n")], "v2").await;
    let mut parts = Vec::new();
    for (tag, name) in [
        ("v1", "example.com/a:latest"),
        ("v2", "example.com/b:latest"),
    ] {
        let part = f.dir.join(format!("skopeo-{tag}.tar"));
        run(
            "skopeo",
            SKOPEO,
            &[
                "copy",
                &format!("oci:{}:{tag}", s(&f.source)),
                &format!("docker-archive:{}:{name}", s(&part)),
            ],
        );
        parts.push(part);
    }
    let read = Archive::open(&parts[0]).expect("open skopeo's archive");
    assert_eq!(read.images().len(), 1);
    let read = Store::new(read);
    let (descriptor, manifest) = verify_all(&read, "latest").await;
    assert_eq!(descriptor.media_type, MediaType::DOCKER_MANIFEST);
    assert_eq!(
        manifest.config.digest, original.config.digest,
        "the config travels unchanged"
    );
    assert_eq!(
        manifest.layers[0].digest, original.layers[0].digest,
        "an uncompressed layer is addressed by its diff_id"
    );

    let merged = f.dir.join("merged.tar");
    let refs: Vec<&Path> = parts.iter().map(PathBuf::as_path).collect();
    merge_docker_archives(&refs, &merged);
    let read = Archive::open(&merged).expect("open the two-image archive");
    assert_eq!(read.images().len(), 2, "{:?}", read.images());
    for repository in ["example.com/a", "example.com/b"] {
        let view = Store::new(read.repository(repository));
        let target = f.dir.join(repository.replace('/', "_"));
        cp(&view, "latest", &store(&target), "latest")
            .await
            .expect("copy out");
        verify_all(&store(&target), "latest").await;
    }
}

#[tokio::test]
async fn a_docker_archive_of_an_index_lists_the_platform_image() {
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
    let archive = f.dir.join("multi.docker.tar");
    let writer = ArchiveWriter::create(&archive, ArchiveFormat::Docker).expect("create");
    cp(
        &source,
        "multi",
        &Store::new(writer.repository("example.com/multi")),
        "v1",
    )
    .await
    .expect("copy the index");
    writer.finish().await.expect("finish");
    let inspect = run(
        "skopeo",
        SKOPEO,
        &["inspect", &format!("docker-archive:{}", s(&archive))],
    );
    let inspected: serde_json::Value = serde_json::from_str(&inspect).expect("json");
    assert_eq!(inspected["Architecture"], "amd64", "{inspect}");
    // The OCI layout inside keeps the whole index.
    let read = Store::new(Archive::open(&archive).expect("open"));
    let resolved = read
        .resolve(&Selector::Tag("v1".into()))
        .await
        .expect("resolve");
    assert_eq!(resolved.media_type, MediaType::OCI_INDEX);
}

#[tokio::test]
async fn a_failed_or_unfinished_copy_leaves_no_archive() {
    let f = fixture().await;
    let source = store(&f.source);
    let (_, manifest) = verify_all(&source, "v1").await;
    let archive = f.dir.join("never.tar");
    {
        let writer = ArchiveWriter::create(&archive, ArchiveFormat::Oci).expect("create");
        cp(&source, "v1", &Store::new(writer.clone()), "v1")
            .await
            .expect("copy");
        // Dropped without finishing: the copy was cancelled.
    }
    assert!(!archive.exists());
    assert!(temporaries(&f.dir).is_empty(), "{:?}", temporaries(&f.dir));

    std::fs::remove_file(
        f.source
            .join("blobs/sha256")
            .join(manifest.layers[0].digest.hex()),
    )
    .expect("remove a layer from the source");
    let writer = ArchiveWriter::create(&archive, ArchiveFormat::Docker).expect("create");
    let err = cp(&source, "v1", &Store::new(writer.clone()), "v1")
        .await
        .expect_err("a layer is missing");
    assert!(err.is_not_found(), "{err}");
    drop(writer);
    assert!(!archive.exists());
    assert!(temporaries(&f.dir).is_empty(), "{:?}", temporaries(&f.dir));
}

#[tokio::test]
async fn temporary_files_of_killed_writers_are_removed() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let archive = dir.path().join("image.tar");
    // A live writer's file is locked; a killed writer's is not, whatever
    // its name says (here: this very process's id).
    let live = ArchiveWriter::create(&archive, ArchiveFormat::Oci).expect("live writer");
    let live_file = match temporaries(dir.path()).as_slice() {
        [one] => dir.path().join(one),
        other => panic!("one temporary file expected: {other:?}"),
    };
    let stale = dir
        .path()
        .join(format!(".image.tar.orca-{}-90.tmp", std::process::id()));
    let stale_spool = dir
        .path()
        .join(format!(".image.tar.orca-{}-90.spool-3", std::process::id()));
    let orphan_spool = dir.path().join(".image.tar.orca-4194305-0.spool-1");
    let young = dir.path().join(".image.tar.orca-4194305-7.tmp");
    for path in [&stale, &stale_spool, &orphan_spool, &young] {
        std::fs::write(path, b"left behind").expect("write");
    }
    // Old enough to judge, all but one (the live one only by its lock).
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    for path in [&stale, &stale_spool, &orphan_spool, &live_file] {
        std::fs::File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.set_modified(old))
            .expect("age the file");
    }
    let writer = ArchiveWriter::create(&archive, ArchiveFormat::Oci).expect("create");
    for path in [&stale, &stale_spool, &orphan_spool] {
        assert!(
            !path.exists(),
            "a dead writer's file stayed: {}",
            path.display()
        );
    }
    assert!(young.exists(), "a file too young to judge was removed");
    assert!(live_file.exists(), "a live writer's file was removed");
    drop(writer);
    drop(live);
}

#[tokio::test]
async fn sha512_content_keeps_its_names_in_an_archive() {
    let source = Store::new(orca_core::MemoryBackend::new());
    let sha512 = |media_type: MediaType, bytes: &[u8]| {
        Descriptor::new(
            media_type,
            orca_core::Digest::compute(orca_core::Algorithm::Sha512, bytes),
            bytes.len() as u64,
        )
    };
    let config_bytes = br#"{"architecture":"amd64","os":"linux"}"#;
    let config = sha512(MediaType::OCI_CONFIG, config_bytes);
    source
        .push(&config, orca_core::Body::from_bytes(&config_bytes[..]))
        .await
        .expect("config");
    let raw = orca_core::Manifest::new(config.clone(), vec![])
        .to_raw()
        .expect("raw");
    let manifest = sha512(MediaType::OCI_MANIFEST, raw.bytes());
    source
        .push_opts(
            &manifest,
            orca_core::Body::from_bytes(raw.bytes().clone()),
            orca_core::PushOptions::tagged("v1"),
        )
        .await
        .expect("manifest");
    let dir = tempfile::tempdir().expect("temporary directory");
    let archive = dir.path().join("sha512.tar");
    let writer = ArchiveWriter::create(&archive, ArchiveFormat::Oci).expect("create");
    cp(&source, "v1", &Store::new(writer.clone()), "v1")
        .await
        .expect("copy in");
    writer.finish().await.expect("finish");
    let long = format!("blobs/sha512/{}", manifest.digest.hex());
    assert!(
        tar_names(&archive).contains(&long),
        "{:?}",
        tar_names(&archive)
    );
    let read = Store::new(Archive::open(&archive).expect("open"));
    let resolved = read
        .resolve(&Selector::Tag("v1".into()))
        .await
        .expect("resolve");
    assert_eq!(resolved.digest, manifest.digest);
    let back = Store::new(orca_core::MemoryBackend::new());
    cp(&read, "v1", &back, "v1").await.expect("copy out");
    assert!(back.exists(&config).await.expect("exists"));
}

/// A file of a tar, whole.
fn tar_file(path: &Path, name: &str) -> Vec<u8> {
    let mut archive = tar::Archive::new(std::fs::File::open(path).expect("open"));
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        if entry.path_bytes().as_ref() == name.as_bytes() {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut out).expect("read");
            return out;
        }
    }
    panic!("{name} is not in {}", path.display());
}

/// Backends review m24: two repositories tagged `latest` in one
/// oci-archive get distinct `ref.name`s (`REPO:TAG`), which skopeo
/// addresses; a tag only one repository has keeps its plain name.
#[tokio::test]
async fn m24_an_oci_archive_never_names_two_images_alike() {
    let f = fixture().await;
    let source = store(&f.source);
    let second = push_real_image(&source, &[("etc/other", b"second image\n")], "v2").await;
    let archive = f.dir.join("two.oci.tar");
    let writer = ArchiveWriter::create(&archive, ArchiveFormat::Oci).expect("create");
    let a = Store::new(writer.repository("example.com/a"));
    let b = Store::new(writer.repository("example.com/b"));
    cp(&source, "v1", &a, "latest").await.expect("copy a");
    cp(&source, "v2", &b, "latest").await.expect("copy b");
    cp(&source, "v2", &b, "only").await.expect("copy b only");
    writer.finish().await.expect("finish");
    let index: orca_core::Index =
        serde_json::from_slice(&tar_file(&archive, "index.json")).expect("index");
    let mut names: Vec<&str> = index
        .manifests
        .iter()
        .filter_map(|d| d.annotations.get("org.opencontainers.image.ref.name"))
        .map(String::as_str)
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["example.com/a:latest", "example.com/b:latest", "only"],
        "{index:?}"
    );
    for (name, expected) in [
        ("example.com/a:latest", &f.pushed),
        ("example.com/b:latest", &second),
    ] {
        let inspect = run(
            "skopeo",
            SKOPEO,
            &[
                "inspect",
                "--raw",
                &format!("oci-archive:{}:{name}", s(&archive)),
            ],
        );
        let digest = orca_core::Digest::sha256(inspect.trim_end_matches('\n').as_bytes());
        let raw = Digest::sha256(inspect.as_bytes());
        assert!(
            digest == expected.digest || raw == expected.digest,
            "skopeo read another image for {name}"
        );
    }
}
