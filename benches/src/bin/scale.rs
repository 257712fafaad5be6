//! Scale: how time and memory grow with many tags (on a layout, in S3 via
//! moto, on docker-registry), many referrers of one subject, many blobs to
//! collect and an index of many members. Each scenario runs at two sizes,
//! so growth can be read off (linear: the time per item stays put).
//! Prints a table; `scale [DIR [GROUP…]]`, GROUP one of `tags`,
//! `remote` (tags on the registry and S3; `registry` or `s3` for one of
//! them), `referrers`, `gc`, `index`, `sync` (a cold sync of repositories
//! of 10 images each into a layout bundle, with the writes of its
//! `index.json` counted; `s3-sync` the same into an S3 bundle), `bundle`
//! (a bundle's repositories and each one's tags listed), `prune` (stale tags removed 4,096 at a time),
//! `serve` (`orca serve`'s catalog and a repository's tags, page by page;
//! `serve-s3` the catalog of a bucket root on moto).

#[path = "scale/serve.rs"]
mod serve;

use std::sync::Arc;
use std::time::Instant;

use orca_core::bundle::Namespaced;
use orca_core::{Backend, Descriptor, Index, Manifest, MediaType, RawManifest, Selector, Store};

/// The resident set now, in MiB.
fn rss_mib() -> u64 {
    orca_testkit::rss_kib() / 1024
}

fn report(scenario: &str, n: usize, seconds: f64) {
    println!(
        "| {scenario} | {n} | {seconds:.2} s | {:.1} µs | {} MiB |",
        seconds * 1e6 / n as f64,
        rss_mib()
    );
}

/// The peak resident set so far, in MiB.
fn peak_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0)
        / 1024
}

/// A layout bundle of `repos` repositories (`team/appNNNN`) of 10 small
/// images each (`v0`…`v9`), tagged 256 at a time.
async fn fill_bundle(root: &std::path::Path, repos: usize) -> Arc<dyn Backend> {
    let bundle: Arc<dyn Backend> = Arc::new(
        orca_backend_fs::LayoutBuilder::new(root.join(format!("bundle-{repos}")))
            .durable(false)
            .open()
            .expect("layout"),
    );
    let store = Store::from_arc(bundle.clone());
    let mut names = Vec::new();
    for r in 0..repos {
        for t in 0..10 {
            let image = image(&store, r * 10 + t).await;
            names.push((format!("team/app{r:04}:v{t}"), image));
        }
    }
    for chunk in names.chunks(256) {
        let tagged =
            futures::future::join_all(chunk.iter().map(|(name, image)| bundle.tag(image, name)))
                .await;
        tagged.into_iter().for_each(|t| t.expect("tag"));
    }
    bundle
}

/// A cold sync of every repository of a bundle into another layout
/// bundle, counting the target's writes of `index.json`.
async fn bundle_sync(root: &std::path::Path, repos: usize) {
    let source = fill_bundle(root, repos).await;
    let storage = orca_backend_fs::Directory::open(root.join(format!("synced-{repos}")), false)
        .expect("directory");
    sync_bundle_into(&source, storage, repos, "a layout bundle").await;
}

/// The same cold sync into a bundle in S3 (moto, started once).
async fn s3_bundle_sync(root: &std::path::Path, moto: &orca_testkit::MotoServer, repos: usize) {
    let source = fill_bundle(root, repos).await;
    let bucket = moto_layout(moto, &format!("bundle-{repos}"));
    sync_bundle_into(
        &source,
        bucket.storage().clone(),
        repos,
        "an S3 bundle (moto)",
    )
    .await;
}

/// A layout at `prefix` of moto's bucket `scale`.
fn moto_layout(moto: &orca_testkit::MotoServer, prefix: &str) -> orca_backend_s3::S3Backend {
    orca_backend_s3::S3Builder::new(format!("s3://scale/{prefix}"))
        .endpoint(moto.endpoint())
        .region("us-east-1")
        .credentials("scale", "scale")
        .allow_http(true)
        .build()
        .expect("bucket")
}

/// Syncs every repository of `source` into a bundle on `storage`,
/// counting the writes of its `index.json`.
async fn sync_bundle_into<S>(source: &Arc<dyn Backend>, storage: S, repos: usize, place: &str)
where
    S: orca_core::layout::ObjectStorage + Clone + 'static,
{
    let storage = orca_benches::CountingStorage::new(storage);
    let target: Arc<dyn Backend> = Arc::new(orca_core::layout::Layout::new(storage.clone()));
    let mirrors: Vec<orca_core::sync::Mirror> = (0..repos)
        .map(|r| {
            let name = format!("team/app{r:04}");
            let view = |bundle: &Arc<dyn Backend>| {
                Store::new(Namespaced::new(bundle.clone(), &name).expect("view"))
            };
            orca_core::sync::Mirror {
                source: view(source),
                target: view(&target),
                source_name: name.clone(),
                target_name: name.clone(),
                shared: None,
            }
        })
        .collect();
    let started = Instant::now();
    let reports = orca_core::sync::sync(&mirrors, &orca_core::sync::SyncOptions::default()).await;
    let seconds = started.elapsed().as_secs_f64();
    let images = repos * 10;
    assert_eq!(reports.len(), images);
    for report in &reports {
        assert_eq!(report.action, orca_core::sync::Action::Copied, "{report:?}");
    }
    let writes = storage.index_writes();
    report(
        &format!(
            "cold sync into {place}: {writes} writes of index.json (1 per {:.0} images), peak RSS {} MiB",
            images as f64 / writes.max(1) as f64,
            peak_mib()
        ),
        images,
        seconds,
    );
}

/// Lists a bundle's repositories, then every repository's tags.
async fn bundle_listing(root: &std::path::Path, repos: usize) {
    let bundle = fill_bundle(root, repos).await;
    let started = Instant::now();
    let found = orca_core::bundle::repositories(bundle.as_ref())
        .await
        .expect("repositories");
    assert_eq!(found.len(), repos);
    let mut names = 0;
    for repository in &found {
        let view = Store::new(Namespaced::new(bundle.clone(), repository).expect("view"));
        names += view.tags_all().await.expect("tags").len();
    }
    assert_eq!(names, repos * 10);
    report(
        "list a bundle by repository (names)",
        names,
        started.elapsed().as_secs_f64(),
    );
}

async fn image(store: &Store, seed: usize) -> Descriptor {
    let layer = store
        .push_bytes(
            MediaType::OCI_LAYER_TAR,
            format!("layer {seed}").into_bytes(),
        )
        .await
        .expect("layer");
    let config = store
        .push_bytes(
            MediaType::OCI_CONFIG,
            format!(r#"{{"os":"linux","architecture":"amd64","seed":{seed}}}"#).into_bytes(),
        )
        .await
        .expect("config");
    let manifest: RawManifest = Manifest::new(config, vec![layer]).to_raw().expect("raw");
    store
        .push_manifest(&manifest, None)
        .await
        .expect("manifest")
}

/// Tags on docker-registry (started here).
async fn registry_tags() {
    let registry = orca_testkit::RegistryServer::start().expect("docker-registry");
    let client = orca_backend_http::RegistryBuilder::new(registry.host())
        .build()
        .expect("registry client");
    for n in [1_000, 10_000] {
        let store = Store::new(
            client
                .repository(&format!("scale-{n}"))
                .await
                .expect("repository"),
        );
        tag_and_list(&store, n, "registry").await;
    }
}

/// Tags in S3 (a moto started here).
async fn s3_tags() {
    let moto = orca_testkit::MotoServer::start().expect("moto_server");
    moto.create_bucket("scale").expect("bucket");
    for n in [1_000, 10_000] {
        let store = Store::new(moto_layout(&moto, &format!("tags-{n}")));
        tag_and_list(&store, n, "S3 (moto)").await;
    }
}

/// Tags one manifest `n` times, then lists the tags whole and by pages.
async fn tag_and_list(store: &Store, n: usize, place: &str) {
    let manifest = image(store, 0).await;
    let started = Instant::now();
    for i in 0..n {
        store
            .tag(&manifest, &format!("t{i:05}"))
            .await
            .expect("tag");
    }
    report(
        &format!("{place}: tag, one at a time"),
        n,
        started.elapsed().as_secs_f64(),
    );
    let started = Instant::now();
    let all = store.tags_all().await.expect("tags");
    assert_eq!(all.len(), n);
    let mut query = orca_core::ListQuery::page(None, 100);
    let mut seen = 0;
    loop {
        let page = store.tags(&query).await.expect("page");
        seen += page.entries.len();
        match page.next {
            Some(next) => query.last = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, n);
    report(
        &format!("{place}: list all tags, then page by 100"),
        n,
        started.elapsed().as_secs_f64(),
    );
}

fn layout(root: &std::path::Path, name: &str) -> Store {
    Store::new(
        orca_backend_fs::LayoutBuilder::new(root.join(name))
            .durable(false)
            .open()
            .expect("layout"),
    )
}

#[tokio::main]
async fn main() {
    let base = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let groups: Vec<String> = std::env::args().skip(2).collect();
    let wants = |group: &str| groups.is_empty() || groups.iter().any(|g| g == group);
    let scratch = tempfile::tempdir_in(base).expect("scratch");
    let root = scratch.path();
    println!("| scenario | items | time | per item | RSS |");
    println!("|---|---|---|---|---|");

    for n in [1_000, 10_000] {
        if !wants("tags") {
            break;
        }
        let store = layout(root, &format!("tags-{n}"));
        tag_and_list(&store, n, "layout").await;
    }

    // Tags elsewhere: the registry keeps them itself; S3 keeps them in
    // index.json like a layout, written by conditional PUTs.
    if wants("remote") || wants("registry") {
        registry_tags().await;
    }
    if wants("remote") || wants("s3") {
        s3_tags().await;
    }

    for repos in [10, 100, 1_000] {
        if !wants("sync") {
            break;
        }
        bundle_sync(root, repos).await;
    }

    if wants("s3-sync") {
        let moto = orca_testkit::MotoServer::start().expect("moto_server");
        moto.create_bucket("scale").expect("bucket");
        for repos in [10, 100] {
            s3_bundle_sync(root, &moto, repos).await;
        }
    }

    for (repos, tags) in [(1_000, 10_000), (10_000, 100_000)] {
        if !wants("serve") {
            break;
        }
        let target = format!("oci:{}", root.join(format!("serve-{repos}")).display());
        serve::serve_listing(&target, &orca::OpenOptions::new(), "", repos, tags).await;
    }

    if wants("serve-s3") {
        // The catalog of a bucket root: a page lists the levels on its
        // way, not every object of the root.
        let moto = orca_testkit::MotoServer::start().expect("moto_server");
        moto.create_bucket("scale").expect("bucket");
        let mut made = orca::OpenOptions::new();
        made.s3_endpoint = Some(moto.endpoint());
        made.s3_region = Some("us-east-1".into());
        made.s3_credentials = Some(("scale".into(), "scale".into()));
        // The server reaches moto through a proxy that counts its
        // listings: moto scans every key of the bucket for each one, so
        // its time is no measure of S3's, where a listing is a range read.
        let proxy = orca_testkit::RecordingProxy::start(moto.port()).expect("proxy");
        let mut serving = made.clone();
        serving.s3_endpoint = Some(format!("http://127.0.0.1:{}", proxy.port()));
        for repos in [100, 1_000] {
            let target = format!("s3://scale/serve-{repos}");
            serve::serve_listing_counted(
                &target,
                &made,
                &serving,
                Some(&proxy),
                " on S3 (moto)",
                repos,
                1,
            )
            .await;
        }
    }

    for repos in [1_000, 10_000] {
        if !wants("bundle") {
            break;
        }
        bundle_listing(root, repos).await;
    }

    for n in [1_000, 10_000] {
        if !wants("prune") {
            break;
        }
        // As sync's prune removes stale tags from a layout: 4,096 at a time.
        let store = layout(root, &format!("prune-{n}"));
        let manifest = image(&store, 0).await;
        let names: Vec<String> = (0..n).map(|i| format!("stale{i:05}")).collect();
        for chunk in names.chunks(256) {
            let tagged =
                futures::future::join_all(chunk.iter().map(|name| store.tag(&manifest, name)))
                    .await;
            tagged.into_iter().for_each(|t| t.expect("tag"));
        }
        let started = Instant::now();
        let untagged: Vec<_> = futures::StreamExt::collect(futures::StreamExt::buffered(
            futures::stream::iter(names.iter().map(|name| store.untag(name))),
            4096,
        ))
        .await;
        untagged.into_iter().for_each(|u| u.expect("untag"));
        assert!(store.tags_all().await.expect("tags").is_empty());
        report(
            "layout: prune stale tags, 4,096 at a time",
            n,
            started.elapsed().as_secs_f64(),
        );
    }

    for n in [1_000, 10_000] {
        if !wants("referrers") {
            break;
        }
        let store = layout(root, &format!("referrers-{n}"));
        let subject = image(&store, 0).await;
        let empty = store
            .push_bytes(MediaType::OCI_EMPTY, &b"{}"[..])
            .await
            .expect("empty");
        let started = Instant::now();
        // Attached 64 at a time, as several signers would: one process
        // batches what arrives together into one index update.
        let mut pending = futures::stream::FuturesUnordered::new();
        for i in 0..n {
            let store = store.clone();
            let (subject, empty) = (subject.clone(), empty.clone());
            pending.push(tokio::spawn(async move {
                let mut referrer = Manifest::new(empty.clone(), vec![empty]);
                referrer.artifact_type = Some(MediaType::new("application/vnd.example.sig"));
                referrer.subject = Some(subject.plain());
                referrer.annotations.insert("n".into(), i.to_string());
                store
                    .push_manifest(&referrer.to_raw().expect("raw"), None)
                    .await
                    .expect("attach")
            }));
            if pending.len() >= 64 {
                futures::StreamExt::next(&mut pending).await;
            }
        }
        while futures::StreamExt::next(&mut pending).await.is_some() {}
        report(
            "attach referrers to one subject",
            n,
            started.elapsed().as_secs_f64(),
        );
        let started = Instant::now();
        let listed = store.referrers(&subject, None).await.expect("list");
        assert_eq!(listed.manifests.len(), n);
        report("list them", n, started.elapsed().as_secs_f64());
    }

    for n in [10_000, 100_000] {
        if !wants("gc") {
            break;
        }
        let backend = orca_backend_fs::LayoutBuilder::new(root.join(format!("gc-{n}")))
            .durable(false)
            .open()
            .expect("layout");
        let store = Store::new(backend.clone());
        let kept = image(&store, 0).await;
        store.tag(&kept, "kept").await.expect("tag");
        for i in 0..n {
            store
                .push_bytes(
                    MediaType::OCI_LAYER_TAR,
                    format!("garbage {i}").into_bytes(),
                )
                .await
                .expect("garbage");
        }
        let started = Instant::now();
        let collected = backend
            .gc(&orca_core::layout::GcOptions::new().grace(std::time::Duration::ZERO))
            .await
            .expect("gc");
        assert_eq!(collected.blobs.len(), n);
        report(
            "gc of a layout, all garbage",
            n,
            started.elapsed().as_secs_f64(),
        );
    }

    for n in [100, 1_000] {
        if !wants("index") {
            break;
        }
        let source = layout(root, &format!("index-src-{n}"));
        let mut members = Vec::new();
        for i in 0..n {
            let mut member = image(&source, i).await;
            member.platform = Some(orca_core::Platform::new("linux", "amd64"));
            members.push(member);
        }
        let index = Index {
            manifests: members,
            ..Index::new()
        };
        source
            .push_manifest(&index.to_raw().expect("raw"), Some("big"))
            .await
            .expect("index");
        let target = layout(root, &format!("index-dst-{n}"));
        let started = Instant::now();
        orca_core::copy::copy(
            &source,
            &Selector::Tag("big".into()),
            &target,
            Some("big"),
            &orca_core::copy::CopyOptions::default(),
        )
        .await
        .expect("copy");
        report(
            "copy an index of n members",
            n,
            started.elapsed().as_secs_f64(),
        );
    }
}
