//! `orca sync` when things go wrong: a run killed mid-blob resumes, a 429
//! is waited out, one failing image leaves the others, and `--watch` stops
//! cleanly on SIGTERM.

use std::path::Path;

use orca_testkit::{RecordingProxy, RegistryServer};

use crate::common::{json, ok, seed_image, unique};
use crate::sync_support::{actions, requests, seed, tags_of, write_config};

#[test]
fn watch_syncs_again_until_sigterm_stops_it_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path();
    let registry = RegistryServer::shared();
    let prefix = unique("watch");
    seed(path, &prefix, &[("app", "1.0", "one")]);
    let bundle = path.join("bundle");
    let config = write_config(
        path,
        &format!(
            "sync:\n  - source: {}/{prefix}/app\n    target: oci:{}\n",
            registry.host(),
            bundle.display()
        ),
    );
    let mut child = crate::common::orca(path)
        .current_dir(path)
        .args(["sync", &config, "--watch", "200ms", "--format", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn orca");
    let mut stdout = child.stdout.take().expect("stdout");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buffer = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                seen.lock()
                    .expect("lock")
                    .push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        })
    };
    // Two runs: the first copies, the second finds it up to date.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while seen.lock().expect("lock").matches("\"summary\"").count() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no second run: {}",
            seen.lock().expect("lock")
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = child.wait().expect("wait");
    reader.join().expect("reader");
    assert!(status.success(), "SIGTERM ends a watch cleanly: {status}");
    let out = seen.lock().expect("lock").clone();
    assert!(
        out.contains("\"copied\"") && out.contains("\"up-to-date\""),
        "{out}"
    );
    // The target is a valid layout holding the image.
    let tags = json(path, &["tags", &format!("oci:{}", bundle.display())]);
    assert!(
        tags.to_string().contains(&format!("{prefix}/app:1.0")),
        "{tags}"
    );
}

#[test]
fn a_run_killed_mid_blob_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path();
    let registry = RegistryServer::shared();
    let prefix = unique("resume");
    // One 8 MiB layer that does not compress.
    let mut content = vec![0u8; 8 * 1024 * 1024];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for byte in &mut content {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state as u8;
    }
    let scratch = path.join("seed");
    seed_image(&scratch, "big", &content);
    ok(
        path,
        &[
            "cp",
            &format!("oci:{}:big", scratch.display()),
            &format!("{}/{prefix}/app:big", registry.host()),
        ],
    );
    // The first run reads through a proxy that stops sending after 2 MiB
    // and keeps the connection open, as a stuck link does.
    let stalling = RecordingProxy::with_faults(
        registry.port(),
        orca_testkit::Faults {
            stall_after: Some((2 * 1024 * 1024, 1)),
            ..orca_testkit::Faults::default()
        },
    )
    .expect("proxy");
    let bundle = path.join("bundle");
    let config = |host: &str| {
        write_config(
            path,
            &format!(
                "sync:\n  - source: {host}/{prefix}/app\n    target: oci:{}\n",
                bundle.display()
            ),
        )
    };
    let mut child = crate::common::orca(path)
        .current_dir(path)
        .args([
            "sync",
            &config(&format!("127.0.0.1:{}", stalling.port())),
            "-q",
        ])
        .spawn()
        .expect("spawn orca");
    // Killed outright once the layout holds part of the blob.
    let partial_bytes = || -> u64 {
        std::fs::read_dir(bundle.join("ingest"))
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("partial-"))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .max()
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while partial_bytes() < 1024 * 1024 {
        assert!(
            std::time::Instant::now() < deadline,
            "no partial blob appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().expect("kill");
    child.wait().expect("wait");
    let held = partial_bytes();
    assert!(held > 0 && held < content.len() as u64, "{held}");

    // The second run continues from what the layout kept.
    let report = json(path, &["sync", &config(&registry.host())]);
    let image = &report["images"][0];
    assert_eq!(image["action"], "copied", "{report}");
    let moved = image["bytes"].as_u64().expect("bytes");
    assert!(
        moved < content.len() as u64,
        "moved {moved} bytes again, the blob is {}: {report}",
        content.len()
    );
    let copied = ok(
        path,
        &[
            "resolve",
            &format!("oci:{}:{prefix}/app:big", bundle.display()),
        ],
    );
    let original = ok(
        path,
        &["resolve", &format!("{}/{prefix}/app:big", registry.host())],
    );
    assert_eq!(copied, original);
}

#[test]
fn a_429_with_retry_after_is_waited_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path();
    let registry = RegistryServer::shared();
    let prefix = unique("limited");
    seed(path, &prefix, &[("app", "1.0", "one")]);
    // The registry says "too many requests, come back in a second", twice.
    let limited = RecordingProxy::with_faults(
        registry.port(),
        orca_testkit::Faults {
            fail_requests: Some(("/manifests/1.0".into(), 429, 2)),
            add_header: Some(("/manifests/1.0".into(), "Retry-After: 1".into())),
            ..orca_testkit::Faults::default()
        },
    )
    .expect("proxy");
    let bundle = path.join("bundle");
    let config = write_config(
        path,
        &format!(
            "sync:\n  - source: 127.0.0.1:{}/{prefix}/app\n    target: oci:{}\n",
            limited.port(),
            bundle.display()
        ),
    );
    let started = std::time::Instant::now();
    let report = json(path, &["sync", &config]);
    assert_eq!(report["images"][0]["action"], "copied", "{report}");
    // Two waits of the second the registry asked for.
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    let recorded = limited.recorded();
    assert!(
        requests(&recorded, "HEAD", "/manifests/1.0")
            + requests(&recorded, "GET", "/manifests/1.0")
            >= 3,
        "{recorded}"
    );
}

#[test]
fn one_failing_image_leaves_the_others_and_the_exit_status_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path();
    let registry = RegistryServer::shared();
    let prefix = unique("failing");
    seed(
        path,
        &prefix,
        &[
            ("app", "1.0", "one"),
            ("app", "2.0", "two"),
            ("tool", "1.0", "tool"),
            ("extra", "1.0", "x"),
        ],
    );
    // The registry fails every request for app:2.0.
    let broken = RecordingProxy::with_faults(
        registry.port(),
        orca_testkit::Faults {
            fail_requests: Some((format!("{prefix}/app/manifests/2.0"), 500, 100)),
            ..orca_testkit::Faults::default()
        },
    )
    .expect("proxy");
    let host = format!("127.0.0.1:{}", broken.port());
    let named = path.join("named");
    let filtered = path.join("filtered");
    let config = write_config(
        path,
        &format!(
            "sync:\n\
             - source: {host}/{prefix}/\n  repositories: [app, tool]\n  target: oci:{named}\n\
             - source: {host}/{prefix}/\n  exclude: [\"*/app\", \"*/tool\"]\n  target: oci:{filtered}\n",
            named = named.display(),
            filtered = filtered.display(),
        ),
    );
    let output = crate::common::run(path, &["sync", &config, "--format", "json"]);
    assert_eq!(output.status.code(), Some(1), "some failed: exit 1");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
    let found = actions(&report);
    let at = |bundle: &Path, name: &str| format!("oci:{}:{prefix}/{name}", bundle.display());
    assert!(
        found.contains(&(at(&named, "app:1.0"), "copied".into())),
        "{report}"
    );
    assert!(
        found.contains(&(at(&named, "tool:1.0"), "copied".into())),
        "{report}"
    );
    assert!(
        found.contains(&(at(&named, "app:2.0"), "failed".into())),
        "{report}"
    );
    let failed = report["images"]
        .as_array()
        .expect("images")
        .iter()
        .find(|i| i["action"] == "failed")
        .expect("the failure");
    assert!(
        failed["error"].as_str().unwrap_or_default().contains("500"),
        "{failed}"
    );
    // The second entry took only the repository its patterns leave.
    assert_eq!(
        tags_of(&report, &format!("oci:{}:", filtered.display())),
        ["1.0"],
        "{report}"
    );
    assert!(
        found
            .iter()
            .any(|(name, _)| name == &at(&filtered, "extra:1.0")),
        "{report}"
    );
    assert_eq!(report["summary"]["failed"], 1);
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("1 of"),
        "says so on stderr"
    );
}
