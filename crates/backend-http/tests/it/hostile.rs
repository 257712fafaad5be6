//! Servers that misbehave, through the fault-injecting proxy: a download
//! that stalls resumes, a response that never starts is retried, an
//! unexpected Referrers API answer does not stop pulls, a `Link` that
//! loops is refused, and `OCI-Chunk-Min-Length` binds chunked uploads only
//! (and is ignored past what orca buffers).

use std::time::{Duration, Instant};

use futures::StreamExt;
use orca_backend_http::RegistryBuilder;
use orca_core::conformance::GeneratedBlob;
use orca_core::{MediaType, Selector, Store};
use orca_testkit::{Faults, RecordingProxy, RegistryServer};

use crate::common::{fresh_repository, plain, repository};

const MIB: u64 = 1024 * 1024;

/// A store on `name` through a proxy with `faults`, built by `tune`.
async fn through(
    name: &str,
    faults: Faults,
    tune: impl FnOnce(RegistryBuilder) -> RegistryBuilder,
) -> (RecordingProxy, Store) {
    let proxy =
        RecordingProxy::with_faults(RegistryServer::shared().port(), faults).expect("proxy");
    let registry = tune(RegistryBuilder::new(format!("127.0.0.1:{}", proxy.port())))
        .build()
        .expect("registry");
    let store = Store::new(registry.repository(name).await.expect("repository"));
    (proxy, store)
}

/// Pushes a small image tagged `v1`; returns its manifest.
async fn seed(store: &Store) -> orca_core::RawManifest {
    let empty = store
        .push_bytes(MediaType::OCI_EMPTY, &b"{}"[..])
        .await
        .expect("blob");
    let manifest = orca_core::Manifest::new(empty, vec![])
        .to_raw()
        .expect("raw");
    store
        .push_manifest(&manifest, Some("v1"))
        .await
        .expect("manifest");
    manifest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_download_resumes_with_range() {
    let name = fresh_repository("stall");
    let direct = Store::new(repository(&plain(), &name).await);
    let blob = GeneratedBlob::new(4 * MIB + 3, 41);
    let desc = blob.descriptor(MediaType::OCI_LAYER_TAR);
    direct.push(&desc, blob.body()).await.expect("seed");
    let faults = Faults {
        stall_after: Some((MIB, 1)),
        ..Faults::default()
    };
    let (proxy, store) = through(&name, faults, |b| b.idle_timeout(Duration::from_secs(1))).await;
    let started = Instant::now();
    let mut body = store.fetch(&desc).await.expect("fetch");
    let mut total = 0u64;
    while let Some(chunk) = body.next().await {
        total += chunk.expect("verified after resuming").len() as u64;
    }
    let elapsed = started.elapsed();
    assert_eq!(total, blob.size());
    let sent = proxy.recorded().to_ascii_lowercase();
    assert_eq!(sent.matches("range: bytes=").count(), 1, "{sent:.2000}");
    eprintln!("stall detected and resumed: {elapsed:?} with a 1 s idle timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_that_never_starts_is_retried() {
    let name = fresh_repository("silent");
    let direct = Store::new(repository(&plain(), &name).await);
    let manifest = seed(&direct).await;
    // The first request (opening the repository) gets no answer at all.
    let faults = Faults {
        stall_after: Some((0, 1)),
        ..Faults::default()
    };
    let (_proxy, store) = through(&name, faults, |b| b.idle_timeout(Duration::from_secs(1))).await;
    let resolved = store
        .resolve(&Selector::Tag("v1".into()))
        .await
        .expect("resolve after a silent server");
    assert_eq!(resolved.digest, manifest.digest());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unexpected_referrers_probe_answer_does_not_stop_pulls() {
    let name = fresh_repository("probe");
    let direct = Store::new(repository(&plain(), &name).await);
    let manifest = seed(&direct).await;
    let faults = Faults {
        fail_requests: Some(("/referrers/".into(), 500, 1000)),
        ..Faults::default()
    };
    let (_proxy, store) = through(&name, faults, |b| b.retries(1)).await;
    assert!(!store.capabilities().referrers_api);
    let (_, raw) = store
        .fetch_manifest(&Selector::Tag("v1".into()))
        .await
        .expect("pull");
    assert_eq!(raw.bytes(), manifest.bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_that_loops_is_refused() {
    let name = fresh_repository("loop");
    let direct = Store::new(repository(&plain(), &name).await);
    seed(&direct).await;
    let faults = Faults {
        add_header: Some((
            "/tags/list".into(),
            format!("Link: </v2/{name}/tags/list?n=1000>; rel=\"next\""),
        )),
        ..Faults::default()
    };
    let (_proxy, store) = through(&name, faults, |b| b).await;
    let err = store.tags_all().await.expect_err("a looping Link");
    let text = orca_core::error::chain(&err);
    assert!(text.contains("leads back"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_minimums_bind_only_chunked_uploads() {
    let chunked = |min: u64| Faults {
        add_header: Some(("POST /v2/".into(), format!("OCI-Chunk-Min-Length: {min}"))),
        ..Faults::default()
    };
    let tune = |b: RegistryBuilder| b.chunk_threshold(MIB).chunk_size(MIB);

    // Above the threshold: chunks of the registry's 2 MiB minimum.
    let (proxy, store) = through(&fresh_repository("min"), chunked(2 * MIB), tune).await;
    let blob = GeneratedBlob::new(5 * MIB, 51);
    store
        .push(&blob.descriptor(MediaType::OCI_LAYER_TAR), blob.body())
        .await
        .expect("chunked push");
    // (The proxy keeps the first 4 MiB sent: the first chunks.)
    let sent = proxy.recorded().to_ascii_lowercase();
    assert!(sent.contains("patch "), "{sent:.3000}");
    assert!(sent.contains("content-length: 2097152"), "{sent:.3000}");

    // Below the threshold: the body in one request, whatever the minimum.
    let (proxy, store) = through(&fresh_repository("min"), chunked(2 * MIB), tune).await;
    let small = GeneratedBlob::new(MIB / 2, 52);
    store
        .push(&small.descriptor(MediaType::OCI_LAYER_TAR), small.body())
        .await
        .expect("monolithic push");
    let sent = proxy.recorded().to_ascii_lowercase();
    assert_eq!(sent.matches("patch ").count(), 1, "{sent:.3000}");
    assert!(!sent.contains("content-range"), "{sent:.3000}");

    // A minimum past what orca holds per chunk: one request instead.
    let (proxy, store) = through(&fresh_repository("min"), chunked(1 << 40), tune).await;
    store
        .push(&blob.descriptor(MediaType::OCI_LAYER_TAR), blob.body())
        .await
        .expect("push despite a huge minimum");
    let sent = proxy.recorded().to_ascii_lowercase();
    assert!(!sent.contains("content-range"), "{sent:.3000}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_follow_a_link_to_another_origin() {
    let server = RegistryServer::shared_htpasswd();
    let (user, password) = server.credentials().expect("credentials");
    let name = fresh_repository("origin");
    // Another origin (another port) in front of the same registry.
    let elsewhere = RecordingProxy::start(server.port()).expect("second proxy");
    let faults = Faults {
        add_header: Some((
            "/tags/list".into(),
            format!(
                "Link: <http://127.0.0.1:{}/v2/{name}/tags/list?n=1000&last=a>; rel=\"next\"",
                elsewhere.port()
            ),
        )),
        ..Faults::default()
    };
    let proxy = RecordingProxy::with_faults(server.port(), faults).expect("proxy");
    let registry = RegistryBuilder::new(format!("127.0.0.1:{}", proxy.port()))
        .credentials(orca_backend_http::Credentials::basic(user, password))
        .build()
        .expect("registry");
    let store = Store::new(registry.repository(&name).await.expect("repository"));
    seed(&store).await;
    let _ = store.tags_all().await;
    let home = proxy.recorded().to_ascii_lowercase();
    let away = elsewhere.recorded().to_ascii_lowercase();
    assert!(home.contains("authorization: basic"), "{home:.2000}");
    assert!(
        away.contains("get /v2/"),
        "the Link was not followed: {away:.2000}"
    );
    assert!(
        !away.contains("authorization"),
        "credentials went to another origin: {away:.2000}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_chunk_is_sent_again_only_after_asking_the_session() {
    let tune = |b: RegistryBuilder| b.chunk_threshold(MIB).chunk_size(MIB);
    // A chunk refused with a 503 before the registry saw it: the session
    // says it holds nothing of it, so it is sent again to the newest
    // Location.
    let refused = Faults {
        fail_requests: Some(("PATCH ".into(), 503, 1)),
        ..Faults::default()
    };
    let name = fresh_repository("refused");
    let (proxy, store) = through(&name, refused, tune).await;
    let blob = GeneratedBlob::new(3 * MIB + 5, 81);
    let desc = blob.descriptor(MediaType::OCI_LAYER_TAR);
    store
        .push(&desc, blob.body())
        .await
        .unwrap_or_else(|e| panic!("{}", orca_core::error::chain(&e)));
    let body = store.fetch(&desc).await.expect("fetch");
    body.bytes(desc.size).await.expect("the blob verifies");
    let sent = proxy.recorded().to_ascii_lowercase();
    let asked = sent
        .lines()
        .any(|l| l.starts_with("get /v2/") && l.contains("/blobs/uploads/"));
    assert!(asked, "the session was not asked where it stands");

    // A chunk the registry took but whose answer was lost: distribution
    // 2.8 then refuses every request naming the session (its signed state
    // is one chunk behind), so the push fails cleanly — it does not append
    // the chunk twice — and nothing is published.
    let lost = Faults {
        lose_answers: Some(("PATCH ".into(), 1)),
        ..Faults::default()
    };
    let (_proxy, store) = through(&fresh_repository("lost"), lost, tune).await;
    store
        .push(&desc, blob.body())
        .await
        .expect_err("the session cannot be asked on distribution 2.8");
    assert!(!store.exists(&desc).await.expect("exists"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_cut_off_mid_body_is_read_again() {
    let name = fresh_repository("cutmanifest");
    let direct = Store::new(repository(&plain(), &name).await);
    let empty = direct
        .push_bytes(MediaType::OCI_EMPTY, &b"{}"[..])
        .await
        .expect("blob");
    // A manifest of some size, so the cut falls inside its body.
    let mut manifest = orca_core::Manifest::new(empty, vec![]);
    for i in 0..100 {
        manifest
            .annotations
            .insert(format!("org.example.note.{i:03}"), "x".repeat(40));
    }
    let raw = manifest.to_raw().expect("raw");
    direct
        .push_manifest(&raw, Some("v1"))
        .await
        .expect("manifest");
    assert!(raw.bytes().len() > 4000);
    let descriptor = direct
        .resolve(&Selector::Tag("v1".into()))
        .await
        .expect("resolve");
    // The first answer over 2000 bytes (the manifest's) is cut once.
    let cut = Faults {
        cut_after: Some((2000, 1)),
        ..Faults::default()
    };
    let (proxy, store) = through(&name, cut, |b| b).await;
    let bytes = store
        .fetch_bytes(&descriptor)
        .await
        .expect("read again after the cut");
    assert_eq!(&bytes[..], &raw.bytes()[..]);
    let sent = proxy.recorded().to_ascii_lowercase();
    let manifest_gets = sent
        .lines()
        .filter(|l| l.starts_with("get /v2/") && l.contains("/manifests/"))
        .count();
    assert_eq!(manifest_gets, 2, "{sent:.2000}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_list_cut_off_mid_body_is_read_again() {
    let name = fresh_repository("cuttags");
    let direct = Store::new(repository(&plain(), &name).await);
    let manifest = seed(&direct).await;
    let descriptor = manifest.descriptor();
    for i in 0..80 {
        direct
            .tag(&descriptor, &format!("release-{i:03}"))
            .await
            .expect("tag");
    }
    // The first answer over 1000 bytes (the tag list's) is cut once.
    let cut = Faults {
        cut_after: Some((1000, 1)),
        ..Faults::default()
    };
    let (proxy, store) = through(&name, cut, |b| b).await;
    let tags = store.tags_all().await.expect("read again after the cut");
    assert_eq!(tags.len(), 81, "{tags:?}");
    let sent = proxy.recorded().to_ascii_lowercase();
    let lists = sent
        .lines()
        .filter(|l| l.starts_with("get /v2/") && l.contains("/tags/list"))
        .count();
    assert_eq!(lists, 2, "{sent:.2000}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_list_cut_off_mid_body_is_read_again() {
    // Enough repositories that the list is surely longer than the cut.
    for _ in 0..40 {
        let name = fresh_repository("cutcatalog");
        let store = Store::new(repository(&plain(), &name).await);
        store
            .push_bytes(MediaType::OCI_EMPTY, &b"{}"[..])
            .await
            .expect("blob");
    }
    let expected = plain()
        .catalog(&orca_core::ListQuery::all())
        .await
        .expect("direct list")
        .entries
        .len();
    assert!(expected >= 40, "{expected}");
    // The first answer over 1000 bytes (the list's) is cut once.
    let cut = Faults {
        cut_after: Some((1000, 1)),
        ..Faults::default()
    };
    let proxy = RecordingProxy::with_faults(RegistryServer::shared().port(), cut).expect("proxy");
    let registry = RegistryBuilder::new(format!("127.0.0.1:{}", proxy.port()))
        .build()
        .expect("registry");
    let listed = registry
        .catalog(&orca_core::ListQuery::all())
        .await
        .expect("read again after the cut");
    assert!(listed.entries.len() >= expected, "{}", listed.entries.len());
    let sent = proxy.recorded().to_ascii_lowercase();
    let lists = sent
        .lines()
        .filter(|l| l.starts_with("get /v2/_catalog"))
        .count();
    assert_eq!(lists, 2, "{sent:.2000}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_whose_chunked_upload_stalls_is_tried_again() {
    const MIB: u64 = 1024 * 1024;
    let name = fresh_repository("stalledpatch");
    // A chunk's request stalls after 300 KiB of its MiB went through.
    let faults = Faults {
        stall_uploads: Some(("PATCH ".into(), 300 * 1024, 1)),
        ..Faults::default()
    };
    // The idle timeout leaves room for a loaded machine's ordinary
    // answers; only the silent one runs into it.
    let (proxy, store) = through(&name, faults, |b| {
        b.chunk_threshold(MIB)
            .chunk_size(MIB)
            .idle_timeout(Duration::from_secs(3))
    })
    .await;
    // A single push cannot send a broken-off chunk again once the registry
    // dropped its session (distribution 2.8 does); a copy reads its source
    // again and starts the blob over.
    let blob = GeneratedBlob::new(3 * MIB + 17, 9);
    let descriptor = blob.descriptor(MediaType::OCI_LAYER_TAR);
    let source = Store::new(orca_core::MemoryBackend::new());
    source.push(&descriptor, blob.body()).await.expect("source");
    let config = source
        .push_bytes(MediaType::OCI_CONFIG, &b"{}"[..])
        .await
        .expect("config");
    let manifest = orca_core::Manifest::new(config, vec![descriptor.clone()])
        .to_raw()
        .expect("raw");
    source
        .push_manifest(&manifest, Some("v1"))
        .await
        .expect("manifest");
    orca_core::copy::copy(
        &source,
        &Selector::Tag("v1".into()),
        &store,
        Some("v1"),
        &orca_core::copy::CopyOptions::default(),
    )
    .await
    .expect("the copy goes on after a stall");
    let direct = Store::new(repository(&plain(), &name).await);
    let bytes = direct.fetch(&descriptor).await.expect("fetch");
    let mut body = bytes;
    let mut total = 0u64;
    while let Some(chunk) = body.next().await {
        total += chunk.expect("verified").len() as u64;
    }
    assert_eq!(total, descriptor.size);
    assert_eq!(proxy.stall_uploads_left(), 0, "the upload never stalled");
}

/// Backends review M2: the idle timeout limits how long an upload makes no
/// progress, never how long it takes. A 2 MiB blob sent at 256 KiB/s
/// (about 8 s) with a 2 s idle timeout lands, streamed in one PATCH and in
/// 1 MiB chunks alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_m2_an_upload_longer_than_the_idle_timeout_lands() {
    let faults = || Faults {
        throttle_up: Some(256 * 1024),
        ..Faults::default()
    };
    let blob = GeneratedBlob::new(2 * MIB, 12);
    let descriptor = blob.descriptor(MediaType::OCI_LAYER_TAR);
    for chunked in [false, true] {
        let tune = move |b: RegistryBuilder| {
            let b = b.idle_timeout(Duration::from_secs(2));
            if chunked {
                b.chunk_threshold(MIB).chunk_size(MIB)
            } else {
                b
            }
        };
        let (_proxy, store) = through(&fresh_repository("slowup"), faults(), tune).await;
        let started = Instant::now();
        store
            .push(&descriptor, blob.body())
            .await
            .unwrap_or_else(|e| panic!("chunked {chunked}: {}", orca_core::error::chain(&e)));
        assert!(
            started.elapsed() > Duration::from_secs(4),
            "the throttle did not hold the upload past the idle timeout"
        );
        assert!(store.exists(&descriptor).await.expect("exists"));
    }
}

/// A server that accepts connections and never answers: each attempt
/// waits the response timeout, each retry is announced, and the request
/// ends with an error after the attempts (4 by default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_is_retried_aloud_then_given_up() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let notices: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let seen = notices.clone();
    let registry = RegistryBuilder::new(format!("127.0.0.1:{port}"))
        .response_timeout(Duration::from_secs(1))
        .on_retry(std::sync::Arc::new(move |line: &str| {
            seen.lock().expect("lock").push(line.to_owned());
        }))
        .build()
        .expect("registry");
    let started = Instant::now();
    let err = registry
        .catalog_all(None)
        .await
        .expect_err("no answer is an error");
    let took = started.elapsed();
    let text = orca_core::error::chain(&err);
    assert!(text.contains("no answer within 1 s (4 attempts)"), "{text}");
    let notices = notices.lock().expect("lock").clone();
    assert_eq!(
        notices,
        (2..=4)
            .map(|n| format!("no answer from 127.0.0.1:{port} in 1 s; trying again, {n} of 4"))
            .collect::<Vec<_>>()
    );
    assert!(took >= Duration::from_secs(4), "{took:?}");
}

/// Backends review m3: a DELETE whose answer is lost is sent again; the
/// 404 the second one gets means the first removed it, not "not found".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m3_a_delete_whose_answer_was_lost_succeeds() {
    let name = fresh_repository("lostdelete");
    let faults = Faults {
        lose_answers: Some(("DELETE /v2/".into(), 1)),
        ..Faults::default()
    };
    let (proxy, store) = through(&name, faults, |b| b).await;
    let manifest = seed(&store).await;
    store
        .delete(&manifest.descriptor())
        .await
        .unwrap_or_else(|e| panic!("{}", orca_core::error::chain(&e)));
    let deletes = proxy.recorded().matches("DELETE /v2/").count();
    assert_eq!(
        deletes, 2,
        "the lost answer was not followed by a second DELETE"
    );
    assert!(!store.exists(&manifest.descriptor()).await.expect("exists"));
}

/// Backends review m4: a streamed (one-`PATCH`) upload whose request is
/// aborted mid-body (the link stalls, the idle timeout ends it) is
/// cancelled at the session's newest `Location`: with no `202` to the
/// `PATCH`, that is the one the `POST` gave, the very URL the `PATCH` went
/// to. (distribution 2.8 then refuses the cancel: the bytes it kept no
/// longer match the offset signed into that URL's `_state`, and no other
/// URL exists for the session. Its upload purge removes the session; a
/// registry that signs no state, as zot and most others, cancels it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m4_an_aborted_streamed_upload_is_cancelled_at_its_location() {
    const MIB: u64 = 1024 * 1024;
    let name = fresh_repository("abortedpatch");
    let faults = Faults {
        stall_uploads: Some(("PATCH ".into(), 300 * 1024, 1)),
        ..Faults::default()
    };
    // The body may fit in loopback's buffers whole: then the wait is for
    // the answer, which the response timeout bounds.
    let (proxy, store) = through(&name, faults, |b| {
        b.idle_timeout(Duration::from_secs(2))
            .response_timeout(Duration::from_secs(2))
    })
    .await;
    let blob = GeneratedBlob::new(2 * MIB, 41);
    let descriptor = blob.descriptor(MediaType::OCI_LAYER_TAR);
    let err = store
        .push(&descriptor, blob.body())
        .await
        .expect_err("the stalled upload");
    assert_eq!(
        proxy.stall_uploads_left(),
        0,
        "the upload never stalled: {err}"
    );
    let sent = proxy.recorded();
    let target = |method: &str| -> Vec<String> {
        sent.split("\r\n")
            .filter_map(|line| line.strip_prefix(method))
            .filter_map(|rest| rest.split(' ').next())
            .filter(|url| url.contains("/blobs/uploads/"))
            .map(str::to_owned)
            .collect()
    };
    let patched = target("PATCH ");
    assert_eq!(patched.len(), 1, "{patched:?}");
    assert_eq!(
        target("DELETE "),
        patched,
        "the aborted session was not cancelled at its Location"
    );
}
