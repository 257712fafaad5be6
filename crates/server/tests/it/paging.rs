//! The Referrers API pages a long list with `Link`: each page within its
//! byte budget, in digest order, and orca's registry client, following
//! the links, sees every referrer once (filtered or not).

use std::collections::BTreeMap;

use orca::{Descriptor, Manifest, MediaType, Root, Store};

use crate::common::get;

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
