//! Interrupted copies: a copy whose source connection is cut mid-blob, a
//! copy cancelled mid-blob, and a copy whose process is killed mid-blob,
//! into a layout and into a registry; run again, each moves only what is
//! missing — the interrupted blob continues from where it stopped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use orca::copy::{CopyOptions, CopyReport, Tally};
use orca::http::RegistryBuilder;
use orca::{Backend, Body, Descriptor, Digest, Manifest, MediaType, Result, Selector, Store};
use orca_core::conformance::{Hooks, Intercept};
use orca_testkit::{Faults, RecordingProxy, RegistryServer};

use crate::common::fresh;

/// The big layer's size, and where a stalling source stops.
const BIG: usize = 8 * 1024 * 1024;
const STALL_AT: u64 = 7 * 1024 * 1024 / 2;
/// A child process reads its orders here: `layout|<dir>` or
/// `registry|<host>|<repository>|<sessions dir>`, then the source and the
/// marker, a line each.
const CHILD_ENV: &str = "ORCA_TEST_STALLED_COPY";

fn pseudo_random(len: usize, seed: u64) -> Bytes {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// An image with a small and a big layer, tagged `v1`; returns the big
/// layer and the small one.
async fn image(store: &Store) -> (Descriptor, Descriptor) {
    let small = store
        .push_bytes(MediaType::OCI_LAYER_TAR, pseudo_random(100 * 1024, 1))
        .await
        .expect("small layer");
    let big = store
        .push_bytes(MediaType::OCI_LAYER_TAR, pseudo_random(BIG, 2))
        .await
        .expect("big layer");
    let config = store
        .push_bytes(
            MediaType::OCI_CONFIG,
            &br#"{"os":"linux","architecture":"amd64"}"#[..],
        )
        .await
        .expect("config");
    let raw = Manifest::new(config, vec![small.clone(), big.clone()])
        .to_raw()
        .expect("raw");
    store
        .push_manifest(&raw, Some("v1"))
        .await
        .expect("manifest");
    (big, small)
}

async fn copy_v1(source: &Store, target: &Store, tally: Option<Arc<Tally>>) -> Result<CopyReport> {
    let options = CopyOptions {
        progress: tally.map(|t| t as Arc<dyn orca::copy::Progress>),
        ..CopyOptions::default()
    };
    orca::copy(
        source,
        &Selector::Tag("v1".into()),
        target,
        Some("v1"),
        &options,
    )
    .await
}

/// Fetches everything under `v1` in `store`, verifying every byte.
async fn verify(store: &Store) {
    let (_, raw) = store
        .fetch_manifest(&Selector::Tag("v1".into()))
        .await
        .expect("manifest");
    for child in raw.parse().expect("parse").children() {
        let mut body = store.fetch(child).await.expect("fetch");
        while let Some(chunk) = body.next().await {
            chunk.expect("verified chunk");
        }
    }
}

/// Checks a second run: it resumed the big layer, moved less than it, and
/// did not move the small layer again.
fn assert_resumed(report: &CopyReport, tally: &Tally, big: &Descriptor, small: &Descriptor) {
    assert_eq!(report.resumed, 1, "{report:?}");
    assert!(
        report.bytes < big.size,
        "moved {} bytes again: {report:?}",
        report.bytes
    );
    assert_eq!(
        tally.copied(&small.digest),
        0,
        "the small layer moved again"
    );
    assert_eq!(tally.copied(&big.digest), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_cut_mid_blob_moves_only_the_rest_when_run_again() {
    let registry = RegistryBuilder::new(RegistryServer::shared().host())
        .build()
        .expect("registry");
    let name = format!("orca/{}", fresh("cut"));
    let direct = Store::new(registry.repository(&name).await.expect("repository"));
    let (big, small) = image(&direct).await;
    // Every blob response is cut after 1 MiB, more often than a download
    // resumes, so the big layer cannot get through.
    let proxy = RecordingProxy::with_faults(
        RegistryServer::shared().port(),
        Faults {
            cut_after: Some((1024 * 1024, 1000)),
            ..Faults::default()
        },
    )
    .expect("proxy");
    let through = RegistryBuilder::new(format!("127.0.0.1:{}", proxy.port()))
        .build()
        .expect("registry through the proxy");
    let cut = Store::new(through.repository(&name).await.expect("repository"));
    let dir = tempfile::tempdir().expect("temporary directory");
    let target = Store::new(orca::fs::open(dir.path().join("layout")).expect("layout"));
    let err = copy_v1(&cut, &target, None)
        .await
        .expect_err("the cut copy");
    assert!(
        target.resolve(&Selector::Tag("v1".into())).await.is_err(),
        "a failed copy tagged: {err}"
    );
    assert!(
        target.exists(&small).await.expect("exists"),
        "the small layer got through"
    );
    let held = target.partial(&big).await.expect("partial");
    assert!(held > 0, "nothing of the big layer was kept: {err}");

    let tally = Arc::new(Tally::default());
    let report = copy_v1(&direct, &target, Some(tally.clone()))
        .await
        .expect("copy again");
    assert_resumed(&report, &tally, &big, &small);
    assert!(
        report.bytes <= big.size - held + 64 * 1024,
        "{report:?} after {held} held"
    );
    verify(&target).await;
}

/// A source whose big blob stalls after `STALL_AT` bytes, writing
/// `marker` when it does.
#[derive(Debug)]
struct Stalling {
    big: Digest,
    marker: PathBuf,
}

#[orca::async_trait]
impl Hooks for Stalling {
    async fn fetch(&self, inner: &dyn Backend, d: &Descriptor) -> Result<Body> {
        let body = inner.fetch(d).await?;
        if d.digest != self.big {
            return Ok(body);
        }
        let len = body.len();
        let marker = self.marker.clone();
        let mut sent = 0u64;
        let head = body.into_stream().take_while(move |chunk| {
            let keep = sent < STALL_AT;
            if let Ok(chunk) = chunk {
                sent += chunk.len() as u64;
            }
            futures::future::ready(keep)
        });
        let stall = futures::stream::once(async move {
            std::fs::write(&marker, b"stalled").expect("marker");
            futures::future::pending::<()>().await;
            Ok(Bytes::new())
        });
        Ok(Body::new(len, head.chain(stall)))
    }
}

/// A child process is handed the parent's registry (each process would
/// otherwise start its own).
async fn target_store(spec: &str) -> Store {
    if let Some(dir) = spec.strip_prefix("layout|") {
        return Store::new(orca::fs::open(dir).expect("layout"));
    }
    let rest = spec.strip_prefix("registry|").expect("target spec");
    let mut parts = rest.splitn(3, '|');
    let (host, repository, sessions) = (
        parts.next().expect("host"),
        parts.next().expect("repository"),
        parts.next().expect("sessions"),
    );
    let registry = RegistryBuilder::new(host)
        .chunk_threshold(1024 * 1024)
        .chunk_size(1024 * 1024)
        .resume_uploads(sessions)
        .build()
        .expect("registry");
    Store::new(registry.repository(repository).await.expect("repository"))
}

/// The copy a child process runs until it is killed; run alone, the same
/// copy is cancelled once the source stalls, and a second copy resumes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_copy() {
    let scratch = tempfile::tempdir().expect("temporary directory");
    let (target_spec, source_dir, marker) = match std::env::var(CHILD_ENV) {
        Ok(orders) => {
            let mut parts = orders.splitn(3, '\n');
            let target = parts.next().expect("target").to_owned();
            let source = PathBuf::from(parts.next().expect("source"));
            let marker = PathBuf::from(parts.next().expect("marker"));
            (target, source, marker)
        }
        Err(_) => {
            let source = scratch.path().join("source");
            image(&Store::new(orca::fs::open(&source).expect("layout"))).await;
            let target = format!("layout|{}", scratch.path().join("target").display());
            (target, source, scratch.path().join("stalled"))
        }
    };
    let source_layout = orca::fs::open(&source_dir).expect("source layout");
    let plain_source = Store::new(source_layout.clone());
    let (_, raw) = plain_source
        .fetch_manifest(&Selector::Tag("v1".into()))
        .await
        .expect("manifest");
    let children: Vec<Descriptor> = raw
        .parse()
        .expect("parse")
        .children()
        .into_iter()
        .cloned()
        .collect();
    let (big, small) = (children[2].clone(), children[1].clone());
    let stalling = Store::new(Intercept::new(
        source_layout,
        Stalling {
            big: big.digest.clone(),
            marker: marker.clone(),
        },
    ));
    let target = target_store(&target_spec).await;
    let copy = {
        let (stalling, target) = (stalling.clone(), target.clone());
        tokio::spawn(async move { copy_v1(&stalling, &target, None).await })
    };
    if std::env::var(CHILD_ENV).is_ok() {
        let outcome = copy.await;
        panic!("the stalled copy was meant to be killed, it ended: {outcome:?}");
    }
    wait_for(&marker);
    // The small layer goes beside the big one: it must have landed before
    // the cut, or the re-run rightly moves it again (seen on a loaded
    // machine).
    let landed = Instant::now() + Duration::from_secs(10);
    while !target.exists(&small).await.expect("exists") {
        assert!(Instant::now() < landed, "the small layer never landed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    copy.abort();
    assert!(copy.await.is_err(), "the copy was not cancelled");
    let deadline = Instant::now() + Duration::from_secs(10);
    while target.partial(&big).await.expect("partial") == 0 {
        assert!(Instant::now() < deadline, "the cancelled copy kept nothing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let tally = Arc::new(Tally::default());
    let report = copy_v1(&plain_source, &target, Some(tally.clone()))
        .await
        .expect("copy again");
    assert_resumed(&report, &tally, &big, &small);
    verify(&target).await;
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `stalled_copy` in a child process against `target_spec`, kills it
/// once its source stalled, and copies again.
async fn killed_copy_resumes(target_spec: String, scratch: &Path) {
    let source = scratch.join("source");
    let (big, small) = image(&Store::new(orca::fs::open(&source).expect("layout"))).await;
    let marker = scratch.join("stalled");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "interrupted::stalled_copy",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            CHILD_ENV,
            format!("{target_spec}\n{}\n{}", source.display(), marker.display()),
        )
        .spawn()
        .expect("spawn the copying process");
    wait_for(&marker);
    if let Some(dir) = target_spec.strip_prefix("layout|") {
        // The layout's writer thread may lag the stall by a moment: kill
        // once some of the blob is on disk.
        let partial = Path::new(dir)
            .join("ingest")
            .join(format!("partial-sha256-{}", big.digest.hex()));
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::fs::metadata(&partial).map_or(0, |m| m.len()) < 1024 * 1024 {
            assert!(
                Instant::now() < deadline,
                "the copy never wrote the big layer"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // The small layer moves beside the big one; under load it may still
    // be landing when the big one stalls. Killed only once it has landed,
    // the second run must not move it again.
    let target = target_store(&target_spec).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !target.exists(&small).await.expect("exists") {
        assert!(
            Instant::now() < deadline,
            "the copy never finished the small layer"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().expect("kill the copying process");
    child.wait().expect("reap it");

    assert!(
        target.resolve(&Selector::Tag("v1".into())).await.is_err(),
        "a killed copy tagged the image"
    );
    let held = target.partial(&big).await.expect("partial");
    assert!(held > 0, "the killed copy left nothing to resume");
    let plain = Store::new(orca::fs::open(&source).expect("layout"));
    let tally = Arc::new(Tally::default());
    let report = copy_v1(&plain, &target, Some(tally.clone()))
        .await
        .expect("copy again");
    assert_resumed(&report, &tally, &big, &small);
    assert!(
        report.bytes <= big.size - held + 4096,
        "{report:?} after {held} held"
    );
    verify(&target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_killed_mid_blob_resumes_into_a_layout() {
    let scratch = tempfile::tempdir().expect("temporary directory");
    let target = format!("layout|{}", scratch.path().join("target").display());
    killed_copy_resumes(target, scratch.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_killed_mid_blob_resumes_into_a_registry() {
    let scratch = tempfile::tempdir().expect("temporary directory");
    let target = format!(
        "registry|{}|orca/{}|{}",
        RegistryServer::shared().host(),
        fresh("killed"),
        scratch.path().join("sessions").display()
    );
    killed_copy_resumes(target, scratch.path()).await;
}
