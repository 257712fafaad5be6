//! Paging by `Link`: the Referrers API pages a long list (each page
//! within its byte budget, in digest order, and orca's registry client,
//! following the links, sees every referrer once, filtered or not); the
//! catalog and a repository's tags are paged on every kind of root.

use std::collections::BTreeMap;

use orca::{Descriptor, Manifest, MediaType, Root, Store};

use crate::common::{self, Kind, get};

fn next_link(headers: &[(String, String)]) -> Option<String> {
    let link = headers.iter().find(|(k, _)| k == "link")?;
    let (target, rel) = link.1.split_once(';')?;
    assert_eq!(rel.trim(), "rel=\"next\"", "{link:?}");
    Some(
        target
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_owned(),
    )
}

async fn referrer(store: &Store, subject: &Descriptor, kind: &str, i: usize) -> Descriptor {
    let config = store
        .push_bytes(MediaType::OCI_EMPTY, &b"{}"[..])
        .await
        .expect("push empty config");
    let mut annotations = BTreeMap::new();
    // About 300 bytes a descriptor: a 2 KiB page holds a handful.
    annotations.insert(
        "org.example.note".to_owned(),
        format!("{i:04}{}", "x".repeat(200)),
    );
    let manifest = Manifest {
        artifact_type: Some(MediaType::new(kind)),
        subject: Some(subject.clone()),
        annotations,
        ..Manifest::new(config.clone(), vec![config])
    };
    let raw = manifest.to_raw().expect("serialise referrer");
    store
        .push_manifest(&raw, None)
        .await
        .expect("push referrer");
    raw.descriptor()
}

#[tokio::test]
async fn a_long_referrers_list_is_paged_by_link() {
    let root = Root::open("memory", &orca::OpenOptions::new()).expect("root");
    let mut limits = orca_server::Limits::default();
    limits.referrers_page = 2048;
    let running = orca_server::Server::configured(root, limits, orca_server::Auth::default())
        .spawn("127.0.0.1:0")
        .await
        .expect("serve");
    let host = running.host();
    let registry = orca::http::RegistryBuilder::new(&host)
        .build()
        .expect("registry client");
    let store = Store::new(registry.repository("paged/app").await.expect("repository"));
    let config = store
        .push_bytes(MediaType::OCI_EMPTY, &b"{}"[..])
        .await
        .expect("push config");
    let image = Manifest::new(config.clone(), vec![config])
        .to_raw()
        .expect("image");
    store
        .push_manifest(&image, Some("v1"))
        .await
        .expect("push image");
    let subject = image.descriptor();
    let mut sboms = Vec::new();
    let mut signatures = Vec::new();
    for i in 0..30 {
        if i % 3 == 0 {
            signatures.push(referrer(&store, &subject, "application/vnd.example.sig", i).await);
        } else {
            sboms.push(referrer(&store, &subject, "application/vnd.example.sbom", i).await);
        }
    }

    // Page by page, as a client reads them: each within the budget, in
    // digest order, every referrer once.
    let mut path = Some(format!("/v2/paged/app/referrers/{}", subject.digest));
    let mut seen: Vec<String> = Vec::new();
    let mut pages = 0;
    while let Some(next) = path.take() {
        let (headers, index) = get(&host, &next).await;
        pages += 1;
        let manifests = index["manifests"].as_array().expect("manifests").clone();
        assert!(!manifests.is_empty(), "page {pages} is empty");
        let bytes: usize = manifests.iter().map(|m| m.to_string().len() + 1).sum();
        assert!(
            manifests.len() == 1 || bytes <= 2048,
            "page {pages}: {bytes} bytes"
        );
        seen.extend(
            manifests
                .iter()
                .map(|m| m["digest"].as_str().expect("digest").to_owned()),
        );
        path = next_link(&headers);
    }
    assert!(
        pages >= 4,
        "30 referrers of ~300 bytes in {pages} pages of 2 KiB"
    );
    let mut expected: Vec<String> = sboms
        .iter()
        .chain(&signatures)
        .map(|d| d.digest.to_string())
        .collect();
    expected.sort();
    assert_eq!(seen, expected, "every referrer once, in digest order");

    // Filtered: the link carries the filter on, and says it applied.
    let sig = "application/vnd.example.sig";
    let mut path = Some(format!(
        "/v2/paged/app/referrers/{}?artifactType=application%2Fvnd.example.sig",
        subject.digest
    ));
    let mut filtered = Vec::new();
    while let Some(next) = path.take() {
        let (headers, index) = get(&host, &next).await;
        assert!(
            headers
                .iter()
                .any(|(k, v)| k == "oci-filters-applied" && v == "artifactType"),
            "{next}: {headers:?}"
        );
        for m in index["manifests"].as_array().expect("manifests") {
            assert_eq!(m["artifactType"], sig, "{next}");
            filtered.push(m["digest"].as_str().expect("digest").to_owned());
        }
        path = next_link(&headers);
    }
    assert_eq!(filtered.len(), signatures.len());

    // `n` pages too, and orca's client follows the links to the end.
    let (headers, index) = get(
        &host,
        &format!("/v2/paged/app/referrers/{}?n=2", subject.digest),
    )
    .await;
    assert_eq!(index["manifests"].as_array().map(Vec::len), Some(2));
    assert!(
        next_link(&headers).is_some_and(|l| l.contains("n=2")),
        "{headers:?}"
    );
    let listing = store.referrers(&subject, None).await.expect("referrers");
    assert_eq!(listing.manifests.len(), 30);
    let listing = store
        .referrers(&subject, Some(&MediaType::new(sig)))
        .await
        .expect("filtered referrers");
    assert_eq!(listing.manifests.len(), signatures.len());
    assert!(
        listing
            .manifests
            .iter()
            .all(|d| d.artifact_type.as_ref().map(MediaType::as_str) == Some(sig))
    );
}

/// Follows `Link` from `first`, collecting `field` of every page of at
/// most `n` entries.
async fn paged(host: &str, first: &str, field: &str, n: usize) -> Vec<String> {
    let mut path = Some(first.to_owned());
    let mut seen = Vec::new();
    while let Some(next) = path.take() {
        let (headers, page) = get(host, &next).await;
        let entries = page[field].as_array().expect("entries").clone();
        assert!(entries.len() <= n, "{next}: {} entries", entries.len());
        seen.extend(entries.iter().map(|e| e.as_str().expect("name").to_owned()));
        path = next_link(&headers);
    }
    seen
}

/// The catalog of a root and a repository's tags are paged by `Link`
/// from what the store keeps sorted (a page of the catalog of a directory
/// or a bucket walks only the levels on its way; a page of tags reads the
/// parsed index): every page in order, nothing repeated or missed,
/// whatever sorts between a repository and those below it.
async fn catalog_and_tags_are_paged_from_the_store(kind: Kind) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = common::root(kind, &dir);
    let mut names = vec![
        "a".to_owned(),
        "a-c".to_owned(),
        "a/b".to_owned(),
        "z".to_owned(),
    ];
    names.extend((0..23).map(|i| format!("team/app{i}")));
    let image = Manifest::new(Descriptor::of(MediaType::OCI_EMPTY, b"{}"), Vec::new())
        .to_raw()
        .expect("image");
    for name in &names {
        let repository = root.create(name).await.expect("repository");
        let empty = repository
            .store
            .push_bytes(MediaType::OCI_EMPTY, &b"{}"[..])
            .await
            .expect("config");
        assert_eq!(
            empty.digest,
            Descriptor::of(MediaType::OCI_EMPTY, b"{}").digest
        );
        repository
            .store
            .push_manifest(&image, Some("v1"))
            .await
            .expect("push");
    }
    let mut team: Vec<String> = names
        .iter()
        .filter(|name| name.starts_with("team/"))
        .cloned()
        .collect();
    team.sort();
    assert_eq!(root.repositories_under("team/").await.expect("team"), team);
    assert_eq!(
        root.repositories_under("a/").await.expect("a/"),
        vec!["a/b".to_owned()]
    );
    let app = root.repository("team/app0").await.expect("app");
    let mut tags: Vec<String> = (0..57).map(|i| format!("t{i:03}")).collect();
    let descriptor = image.descriptor();
    let tagged =
        futures::future::join_all(tags.iter().map(|tag| app.store.tag(&descriptor, tag))).await;
    tagged.into_iter().for_each(|t| t.expect("tag"));
    tags.push("v1".to_owned());
    let running = orca_server::Server::configured(
        root,
        orca_server::Limits::default(),
        orca_server::Auth::default(),
    )
    .spawn("127.0.0.1:0")
    .await
    .expect("serve");
    let host = running.host();
    names.sort();
    for n in [1, 4, 100] {
        let catalog = paged(&host, &format!("/v2/_catalog?n={n}"), "repositories", n).await;
        assert_eq!(catalog, names, "catalog by {n}");
        let listed = paged(&host, &format!("/v2/team/app0/tags/list?n={n}"), "tags", n).await;
        assert_eq!(listed, tags, "tags by {n}");
    }
}

#[tokio::test]
async fn the_catalog_and_tags_of_a_directory_are_paged_from_the_store() {
    catalog_and_tags_are_paged_from_the_store(Kind::Directory).await;
}

#[tokio::test]
async fn the_catalog_and_tags_of_a_bucket_are_paged_from_the_store() {
    catalog_and_tags_are_paged_from_the_store(Kind::Bucket).await;
}

#[tokio::test]
async fn the_catalog_and_tags_of_a_plugin_root_are_paged_from_the_store() {
    catalog_and_tags_are_paged_from_the_store(Kind::Plugin).await;
}

#[tokio::test]
async fn the_catalog_and_tags_in_memory_are_paged_from_the_store() {
    catalog_and_tags_are_paged_from_the_store(Kind::Memory).await;
}
