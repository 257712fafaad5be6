//! Tars orca did not write: hostile ones are refused when opened or as
//! their content is read (nothing gets tagged), unusual but valid ones
//! (PAX global headers, continuous entries, hard links, gzip) are read,
//! and docker-archive layers are checked against their `diff_id`s.

use std::path::{Path, PathBuf};

use orca_backend_fs::Archive;
use orca_core::{Error, Store};

use crate::archives::{cp, fixture, verify_all};
use crate::common::store;

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

/// Backends review m21: a docker-archive whose `manifest.json` names one
/// config thousands of times reads it once; one that lists more images
/// than orca reads is refused at once.
#[test]
fn m21_many_images_share_one_config_read_and_too_many_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let listing = |count: usize| -> Vec<u8> {
        let images: Vec<String> = (0..count)
            .map(|n| format!(r#"{{"Config":"config.json","RepoTags":["img{n}:v1"],"Layers":[]}}"#))
            .collect();
        format!("[{}]", images.join(",")).into_bytes()
    };
    let shared = dir.path().join("shared.tar");
    let many = listing(3000);
    typed_tar(
        &shared,
        &[
            ("manifest.json", &many, tar::EntryType::Regular, None),
            ("config.json", config, tar::EntryType::Regular, None),
        ],
    );
    let archive = Archive::open(&shared).expect("open");
    assert_eq!(archive.images().len(), 3000);
    let too_many = dir.path().join("too-many.tar");
    let listed = listing(10_001);
    typed_tar(
        &too_many,
        &[
            ("manifest.json", &listed, tar::EntryType::Regular, None),
            ("config.json", config, tar::EntryType::Regular, None),
        ],
    );
    let err = Archive::open(&too_many).expect_err("too many images");
    assert!(err.to_string().contains("more than the 10000"), "{err}");
}
