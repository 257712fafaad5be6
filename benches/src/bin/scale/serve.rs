//! The `serve` and `serve-s3` scenarios: `orca serve` over a root of
//! many repositories, its catalog and a repository's tags read page by
//! page by `Link`, and on a bucket the S3 listings a page costs.

use std::time::Instant;

use orca_core::{Manifest, MediaType};

use super::report;

/// `orca serve` over the root `target` (`place` in the report) of
/// `repos` repositories, one of them holding `tags` tags: the time of a
/// page of 100 from the catalog and, with more than one tag, from the
/// tags, read from start to end by `Link`.
pub(super) async fn serve_listing(
    target: &str,
    options: &orca::OpenOptions,
    place: &str,
    repos: usize,
    tags: usize,
) {
    serve_listing_counted(target, options, options, None, place, repos, tags).await;
}

/// [`serve_listing`], the root made through `made` and served through
/// `serving`; with `lists`, the proxy `serving` reaches the bucket
/// through, the S3 listings a catalog page cost are counted.
pub(super) async fn serve_listing_counted(
    target: &str,
    made: &orca::OpenOptions,
    serving: &orca::OpenOptions,
    lists: Option<&orca_testkit::RecordingProxy>,
    place: &str,
    repos: usize,
    tags: usize,
) {
    let served = orca::Root::open(target, made).expect("root");
    let image = Manifest::new(
        orca_core::Descriptor::of(MediaType::OCI_EMPTY, b"{}"),
        Vec::new(),
    )
    .to_raw()
    .expect("image");
    let names: Vec<String> = (0..repos).map(|r| format!("team/app{r:05}")).collect();
    for chunk in names.chunks(64) {
        futures::future::join_all(chunk.iter().map(|name| {
            let (served, image) = (&served, &image);
            async move {
                let repository = served.create(name).await.expect("repository");
                repository
                    .store
                    .push_bytes(MediaType::OCI_EMPTY, &b"{}"[..])
                    .await
                    .expect("config");
                repository
                    .store
                    .push_manifest(image, Some("v1"))
                    .await
                    .expect("push");
            }
        }))
        .await;
    }
    let busy = served.repository(&names[0]).await.expect("repository");
    let descriptor = image.descriptor();
    let more: Vec<String> = (1..tags).map(|t| format!("t{t:06}")).collect();
    for chunk in more.chunks(4096) {
        let tagged =
            futures::future::join_all(chunk.iter().map(|tag| busy.store.tag(&descriptor, tag)))
                .await;
        tagged.into_iter().for_each(|t| t.expect("tag"));
    }
    let served = orca::Root::open(target, serving).expect("root");
    let running = orca_server::Server::new(served)
        .spawn("127.0.0.1:0")
        .await
        .expect("serve");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let base = format!("http://{}", running.host());
    let walk = |first: String, field: &'static str| {
        let (client, base) = (&client, &base);
        async move {
            let (mut next, mut pages, mut seen) = (Some(first), 0usize, 0usize);
            let started = Instant::now();
            while let Some(path) = next.take() {
                let answer = client
                    .get(format!("{base}{path}"))
                    .send()
                    .await
                    .expect("page");
                assert!(answer.status().is_success(), "{path}: {}", answer.status());
                next = answer
                    .headers()
                    .get("link")
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| l.split_once('>'))
                    .map(|(target, _)| target.trim_start_matches('<').to_owned());
                let bytes = answer.bytes().await.expect("body");
                let body: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
                seen += body[field].as_array().map_or(0, Vec::len);
                pages += 1;
            }
            (seen, pages, started.elapsed().as_secs_f64())
        }
    };
    let listed_before = lists.map(|proxy| proxy.recorded().matches("list-type=2").count());
    let (seen, pages, seconds) = walk("/v2/_catalog?n=100".to_owned(), "repositories").await;
    assert_eq!(seen, repos);
    if let (Some(proxy), Some(before)) = (lists, listed_before) {
        let listed = proxy.recorded().matches("list-type=2").count() - before;
        println!(
            "| orca serve{place}: S3 listings per catalog page ({repos} repositories) | {pages} | {listed} listings | {:.1} a page | |",
            listed as f64 / pages as f64
        );
    }
    report(
        &format!("orca serve{place}: catalog of {repos} repositories, per page of 100"),
        pages,
        seconds,
    );
    if tags <= 1 {
        running.stop().await;
        return;
    }
    let first = format!("/v2/{}/tags/list?n=100", names[0]);
    let (seen, pages, seconds) = walk(first, "tags").await;
    assert_eq!(seen, tags);
    report(
        &format!("orca serve: {tags} tags of a repository, per page of 100"),
        pages,
        seconds,
    );
    running.stop().await;
}
