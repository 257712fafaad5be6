//! `orca cp` between every pair of backends keeps digests: an image goes
//! from a seed layout into each backend, then from each into every other.
//! A docker-archive rewrites manifests in docker's own form, so only what
//! comes out of one is checked by content rather than digest.

use crate::common::{digest, json, ok, registry, s3, seed_image};

#[test]
fn cp_between_every_pair_keeps_digests() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path();
    let image = seed_image(&path.join("seed"), "v1", b"matrix\n");
    let sources = [
        ("layout", "oci:./src-layout:v1".to_owned()),
        ("oci-archive", "oci-archive:./src.tar:v1".to_owned()),
        ("s3", format!("{}:v1", s3("src"))),
        ("registry", format!("{}:v1", registry("src"))),
    ];
    for (_, source) in &sources {
        ok(path, &["cp", "oci:./seed:v1", source]);
        assert_eq!(digest(&json(path, &["resolve", source])), image, "{source}");
    }
    for (from, source) in &sources {
        let destinations = [
            format!("oci:./to-layout-{from}:v1"),
            format!("oci-archive:./to-{from}.tar:v1"),
            format!("docker-archive:./to-{from}-docker.tar:example/app:v1"),
            format!("{}:v1", s3(&format!("to-{from}"))),
            format!("{}:v1", registry(&format!("to-{from}"))),
        ];
        for destination in &destinations {
            let copied = json(path, &["cp", source, destination]);
            assert!(copied["summary"]["seconds"].is_number(), "{copied}");
            if *from == "registry"
                && destination.starts_with(&orca_testkit::RegistryServer::shared().host())
            {
                // Two repositories of one registry: blobs are mounted.
                assert!(
                    copied["summary"]["mounted"].as_u64() >= Some(1),
                    "{source} -> {destination}: {copied}"
                );
            }
            let resolved = json(path, &["inspect", destination]);
            if destination.starts_with("docker-archive:") {
                assert_eq!(
                    resolved["platform"], "linux/amd64",
                    "{source} -> {destination}"
                );
            } else {
                assert_eq!(digest(&resolved), image, "{source} -> {destination}");
                assert_eq!(digest(&copied["copied"][0]["manifest"]), image);
            }
        }
    }
}
