//! Property tests for the tar reader: arbitrary bytes, and valid image
//! archives damaged at random (bytes flipped, cut short), are an error or
//! an archive that reads without panicking — never a panic.

use std::io::Write;

use orca_backend_fs::Archive;
use orca_core::{Descriptor, Manifest, MediaType, Selector, Store};
use proptest::prelude::*;

/// A small valid archive: an OCI layout (with `manifest.json` too when
/// `docker`), one image tagged `v1`.
fn valid_archive(docker: bool) -> Vec<u8> {
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_d = Descriptor::of(MediaType::OCI_CONFIG, config);
    let layer = b"not really a tar, but a blob all the same";
    let layer_d = Descriptor::of(MediaType::OCI_LAYER_TAR, layer);
    let manifest = Manifest::new(config_d.clone(), vec![layer_d.clone()])
        .to_raw()
        .expect("raw");
    let mut entry = manifest.descriptor();
    entry
        .annotations
        .insert("org.opencontainers.image.ref.name".into(), "v1".into());
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [entry]});
    let blob = |d: &Descriptor| format!("blobs/sha256/{}", d.digest.hex());
    let mut files: Vec<(String, Vec<u8>)> = vec![
        (
            "oci-layout".into(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        (
            "index.json".into(),
            serde_json::to_vec(&index).expect("json"),
        ),
        (blob(&config_d), config.to_vec()),
        (blob(&layer_d), layer.to_vec()),
        (blob(&manifest.descriptor()), manifest.bytes().to_vec()),
    ];
    if docker {
        let listing = serde_json::json!([{
            "Config": blob(&config_d),
            "RepoTags": ["example.com/app:v1"],
            "Layers": [],
        }]);
        files.push((
            "manifest.json".into(),
            serde_json::to_vec(&listing).expect("json"),
        ));
    }
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
    builder.into_inner().expect("tar")
}

/// Opens `bytes` as an archive and reads whatever it names.
fn exercise(bytes: &[u8]) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("archive.tar");
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(bytes))
        .expect("write");
    let Ok(archive) = Archive::open(&path) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let images: Vec<Descriptor> = archive
        .images()
        .iter()
        .map(|i| i.descriptor.clone())
        .collect();
    let store = Store::new(archive);
    runtime.block_on(async {
        let _ = store.tags_all().await;
        let _ = store.resolve(&Selector::Tag("v1".into())).await;
        for image in images {
            if let Ok(bytes) = store.fetch_bytes(&image).await
                && let Ok(document) =
                    orca_core::RawManifest::new(image.media_type.clone(), bytes).parse()
            {
                for child in document.children() {
                    let _ = store.fetch_bytes(child).await;
                }
            }
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        exercise(&bytes);
    }

    #[test]
    fn damaged_archives_never_panic(
        docker in any::<bool>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = valid_archive(docker);
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= value;
        }
        if truncate {
            let keep = cut.index(bytes.len());
            bytes.truncate(keep);
        }
        exercise(&bytes);
    }
}

#[test]
fn the_undamaged_archives_read() {
    for docker in [false, true] {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("archive.tar");
        std::fs::write(&path, valid_archive(docker)).expect("write");
        let archive = Archive::open(&path).expect("open");
        assert_eq!(archive.images().len(), 1);
        exercise(&valid_archive(docker));
    }
}
