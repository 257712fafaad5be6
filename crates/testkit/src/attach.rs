//! Referrers under concurrency: many OS processes attaching artifacts to one
//! subject. Every backend's test runs the same worker (in child processes
//! it spawns from its own test binary) and the same final check.

use std::process::Command;

use orca_core::{Descriptor, Manifest, MediaType, Store};

/// Processes that attach at once.
pub const ATTACH_PROCESSES: usize = 4;
/// Attaches per process.
pub const ATTACHES_PER_PROCESS: usize = 25;
/// The environment variable naming a worker's prefix.
pub const ATTACH_PREFIX_ENV: &str = "ORCA_TEST_ATTACH_PREFIX";

/// The subject every worker attaches to: the same bytes, so the same
/// digest, whichever process pushes it first.
pub async fn attach_subject(store: &Store) -> Descriptor {
    crate::push_real_image(store, &[("subject", b"the shared subject")], "subject").await
}

/// Attaches [`ATTACHES_PER_PROCESS`] artifacts to the subject, one after
/// another, each annotated `org.example.attach = <prefix>-<n>`.
pub async fn attach_many(store: &Store, prefix: &str) {
    let subject = attach_subject(store).await;
    let empty = store
        .push_bytes(MediaType::OCI_EMPTY, &b"{}"[..])
        .await
        .expect("push empty config");
    for n in 0..ATTACHES_PER_PROCESS {
        let mut manifest = Manifest::new(empty.clone(), vec![empty.clone()]);
        manifest.artifact_type = Some(MediaType::new("application/vnd.example.attach"));
        manifest.subject = Some(subject.clone());
        manifest
            .annotations
            .insert("org.example.attach".into(), format!("{prefix}-{n:02}"));
        let raw = manifest.to_raw().expect("serialise");
        store
            .push_manifest(&raw, None)
            .await
            .unwrap_or_else(|e| panic!("attach {prefix}-{n}: {}", orca_core::error::chain(&e)));
    }
}

/// Runs `test` of the current test binary in [`ATTACH_PROCESSES`] child
/// processes at once (each with its own prefix and `env`), then checks
/// that `store` lists exactly every attach, once.
pub async fn attach_from_processes(store: &Store, test: &str, env: &[(String, String)]) {
    let mut children: Vec<_> = (0..ATTACH_PROCESSES)
        .map(|p| {
            Command::new(std::env::current_exe().expect("test binary"))
                .args(["--exact", test, "--nocapture", "--test-threads=1"])
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .env(ATTACH_PREFIX_ENV, format!("p{p}"))
                .spawn()
                .expect("spawn attaching process")
        })
        .collect();
    for child in &mut children {
        let status = child.wait().expect("wait for attaching process");
        assert!(status.success(), "an attaching process failed: {status}");
    }
    let subject = attach_subject(store).await;
    let listing = store.referrers(&subject, None).await.expect("referrers");
    let mut notes: Vec<String> = listing
        .manifests
        .iter()
        .filter_map(|d| d.annotations.get("org.example.attach").cloned())
        .collect();
    notes.sort();
    let mut expected: Vec<String> = (0..ATTACH_PROCESSES)
        .flat_map(|p| (0..ATTACHES_PER_PROCESS).map(move |n| format!("p{p}-{n:02}")))
        .collect();
    expected.sort();
    assert_eq!(
        listing.manifests.len(),
        expected.len(),
        "referrers listed after {ATTACH_PROCESSES} processes x {ATTACHES_PER_PROCESS} attaches"
    );
    assert_eq!(notes, expected, "lost or duplicated referrers");
}
