//! Archives as stores: oci-archive and docker-archive tars written and read
//! through `copy`, interoperability with skopeo and umoci both ways,
//! several images (and two `latest` tags) in one archive, archives that
//! never appear when a copy fails, hostile archives, and unusual but valid
//! tars (PAX global headers, continuous entries, hard links, gzip).

use std::path::{Path, PathBuf};

use orca_backend_fs::{Archive, ArchiveFormat, ArchiveWriter};
use orca_core::copy::{CopyOptions, copy};
use orca_core::{Descriptor, Document, Error, MediaType, Selector, Store};

use crate::common::{push_real_image, run, store};

const SKOPEO: &str = "apt-get install -y skopeo";
const UMOCI: &str = "apt-get install -y umoci";

struct Fixture {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    source: PathBuf,
    pushed: Descriptor,
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

async fn verify_all(store: &Store, tag: &str) -> (Descriptor, orca_core::Manifest) {
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
async fn cp(from: &Store, tag: &str, to: &Store, as_tag: &str) -> orca_core::Result<()> {
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
    // No process has pid 4194305 (above Linux's pid_max limit).
    let stale = dir.path().join(".image.tar.orca-4194305-0.tmp");
    let stale_spool = dir.path().join(".image.tar.orca-4194305-0.spool-3");
    let live = dir
        .path()
        .join(format!(".image.tar.orca-{}-99.tmp", std::process::id()));
    for path in [&stale, &stale_spool, &live] {
        std::fs::write(path, b"left behind").expect("write");
    }
    let writer = ArchiveWriter::create(&archive, ArchiveFormat::Oci).expect("create");
    assert!(
        !stale.exists() && !stale_spool.exists(),
        "a dead writer's files stayed"
    );
    assert!(live.exists(), "a live writer's file was removed");
    drop(writer);
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
async fn hostile_archives_are_refused() {
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
    let pack = |name: &str, entries: &[Owned]| -> PathBuf {
        let archive = f.dir.join(format!("{name}.tar"));
        let raw: Vec<Raw<'_>> = entries
            .iter()
            .map(|(n, d, link)| match link {
                Some(t) => Raw::Symlink(n, t),
                None => Raw::File(n, d),
            })
            .collect();
        raw_tar(&archive, &raw);
        archive
    };
    // Refused when opened.
    for (name, entries, expected) in [
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
            "dangling link",
            with(vec![Raw::Symlink("blobs/sha256/bbbb", "cccc")]),
            "does not lead to a file",
        ),
    ] {
        let archive = pack(name, &entries);
        let err = Archive::open(&archive).expect_err(name);
        let text = orca_core::error::chain(&err);
        assert!(
            text.contains(expected) && text.contains(&archive.display().to_string()),
            "{name}: {text}"
        );
    }
    let docker = pack(
        "docker-dot-dot",
        &[(
            "manifest.json".into(),
            br#"[{"Config":"../../etc/passwd","RepoTags":["a:b"],"Layers":[]}]"#.to_vec(),
            None,
        )],
    );
    let err = Archive::open(&docker).expect_err("manifest.json escaping");
    assert!(err.to_string().contains("`..`"), "{err}");

    // Refused when the content is read: nothing is tagged in the target.
    let mismatched: Vec<Owned> = good
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
    let wrong_size: Vec<Owned> = good
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
    for (name, entries, check) in [
        (
            "mismatched",
            mismatched,
            (|e: &Error| matches!(e, Error::DigestMismatch { .. } | Error::SizeMismatch { .. }))
                as fn(&Error) -> bool,
        ),
        ("wrong-size", wrong_size, |e: &Error| {
            matches!(e, Error::SizeMismatch { .. })
        }),
    ] {
        let archive = pack(name, &entries);
        let read = Store::new(Archive::open(&archive).expect(name));
        let target_root = f.dir.join(format!("{name}-target"));
        let target = store(&target_root);
        let err = cp(&read, "v1", &target, "v1").await.expect_err(name);
        assert!(check(&err), "{name}: {}", orca_core::error::chain(&err));
        let tags = target.tags_all().await.unwrap_or_default();
        assert!(tags.is_empty(), "{name}: tagged {tags:?}");
    }
}

/// Packs entries with the given raw types, as other tools write them.
fn typed_tar(path: &Path, entries: &[(&str, &[u8], tar::EntryType, Option<&str>)]) {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data, kind, link) in entries {
        let mut header = tar::Header::new_ustar();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(link) = link {
            header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_entry_type(*kind);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append(&header, *data).expect("append");
    }
    std::fs::write(path, builder.into_inner().expect("tar")).expect("write tar");
}

#[tokio::test]
async fn unusual_but_valid_tars_are_read() {
    let f = fixture().await;
    let entries = layout_entries(&f.source);
    let blobs: Vec<&(String, Vec<u8>)> = entries
        .iter()
        .filter(|(n, _)| n.starts_with("blobs/"))
        .collect();
    let mut typed: Vec<(&str, &[u8], tar::EntryType, Option<&str>)> = vec![(
        "pax_global_header",
        b"52 comment=0123456789abcdef0123456789abcdef01234567\n",
        tar::EntryType::XGlobalHeader,
        None,
    )];
    for (name, data) in &entries {
        if name.starts_with("blobs/") && name == &blobs[0].0 {
            // The first blob as a continuous file, and the second as a hard
            // link to a copy stored under another name.
            typed.push((name, data, tar::EntryType::Continuous, None));
        } else if name.starts_with("blobs/") && name == &blobs[1].0 {
            typed.push(("stored/elsewhere", data, tar::EntryType::Regular, None));
            typed.push((name, b"", tar::EntryType::Link, Some("stored/elsewhere")));
        } else {
            typed.push((name, data, tar::EntryType::Regular, None));
        }
    }
    let archive = f.dir.join("unusual.tar");
    typed_tar(&archive, &typed);
    let read = Store::new(Archive::open(&archive).expect("open"));
    assert_eq!(verify_all(&read, "v1").await.0.digest, f.pushed.digest);

    let compressed = f.dir.join("unusual.tar.gz");
    let mut encoder = flate2::write::GzEncoder::new(
        std::fs::File::create(&compressed).expect("create"),
        flate2::Compression::fast(),
    );
    std::io::Write::write_all(&mut encoder, &std::fs::read(&archive).expect("read")).expect("gzip");
    encoder.finish().expect("finish gzip");
    let read = Store::new(Archive::open(&compressed).expect("open gzip"));
    assert_eq!(verify_all(&read, "v1").await.0.digest, f.pushed.digest);
}

#[tokio::test]
async fn docker_archive_layers_are_checked_against_their_diff_ids() {
    let f = fixture().await;
    let source = store(&f.source);
    let (_, manifest) = verify_all(&source, "v1").await;
    let config = source.fetch_bytes(&manifest.config).await.expect("config");
    let layer = source
        .fetch_bytes(&manifest.layers[0])
        .await
        .expect("layer");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &layer).expect("gzip");
    let gzipped = gz.finish().expect("gzip");
    let mut wrong_config: serde_json::Value = serde_json::from_slice(&config).expect("json");
    wrong_config["rootfs"]["diff_ids"][0] =
        serde_json::Value::String(orca_core::Digest::sha256(b"something else").to_string());
    let wrong_config = serde_json::to_vec(&wrong_config).expect("json");
    let listing =
        br#"[{"Config":"config.json","RepoTags":["example.com/app:v1"],"Layers":["layer.tar"]}]"#;
    for (name, layer, config, open_fails) in [
        ("gzip-ok", &gzipped, config.to_vec(), false),
        ("gzip-wrong", &gzipped, wrong_config.clone(), true),
        ("plain-wrong", &layer.to_vec(), wrong_config.clone(), false),
    ] {
        let archive = f.dir.join(format!("{name}.tar"));
        typed_tar(
            &archive,
            &[
                ("manifest.json", listing, tar::EntryType::Regular, None),
                ("config.json", &config, tar::EntryType::Regular, None),
                ("layer.tar", layer, tar::EntryType::Regular, None),
            ],
        );
        let opened = Archive::open(&archive);
        if open_fails {
            let err = opened.expect_err(name);
            assert!(err.to_string().contains("diff_id"), "{name}: {err}");
            continue;
        }
        let read = Store::new(opened.expect(name));
        let target = Store::new(orca_core::MemoryBackend::new());
        let copied = cp(&read, "v1", &target, "v1").await;
        if name == "plain-wrong" {
            // An uncompressed layer is addressed by its diff_id, so a wrong
            // one is caught as the bytes pass.
            let err = copied.expect_err(name);
            assert!(matches!(err, Error::DigestMismatch { .. }), "{name}: {err}");
        } else {
            copied.expect(name);
            verify_all(&target, "v1").await;
        }
    }
}
