//! Issue 22 §2: Ctrl-C (or `SIGTERM`) during `cp` ends as `sync` ends:
//! upload sessions cancelled and waited for, multipart uploads aborted,
//! archive temporaries removed, one line saying so, exit status 130. The
//! uploads go through a slow link (a proxy) so the signal lands mid-way.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use orca_testkit::{Faults, MotoServer, RecordingProxy, RegistryServer};

use crate::common::{bucket, ok, orca, unique};

const MIB: usize = 1024 * 1024;

/// A layout `big:v1` of three 16 MiB files (random: nothing compresses).
fn seed(path: &Path) {
    let mut names = Vec::new();
    for i in 0..3u8 {
        let name = format!("part-{i}.bin");
        let mut bytes = vec![0u8; 16 * MIB];
        let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ u64::from(i);
        for byte in bytes.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = state as u8;
        }
        std::fs::write(path.join(&name), bytes).expect("write");
        names.push(name);
    }
    let mut args = vec!["push", "oci:./big:v1"];
    args.extend(names.iter().map(String::as_str));
    ok(path, &args);
}

/// A proxy whose downlink carries 2 MiB a second, in front of `port`.
fn slow_down(port: u16) -> RecordingProxy {
    RecordingProxy::with_faults(
        port,
        Faults {
            link_down: Some(2 * MIB as u64),
            ..Faults::default()
        },
    )
    .expect("proxy")
}

/// Whether a file in `dir` holds something (a transfer into it began).
fn holds_bytes(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.metadata().is_ok_and(|m| m.len() > 0))
    })
}

/// A proxy whose uplink carries 2 MiB a second, in front of `port`.
fn slow(port: u16) -> RecordingProxy {
    RecordingProxy::with_faults(
        port,
        Faults {
            link_up: Some(2 * MIB as u64),
            ..Faults::default()
        },
    )
    .expect("proxy")
}

/// Waits until `ready` holds (at most 30 s), then sends SIGINT to `child`
/// and returns its exit code and stderr.
fn interrupt(mut child: Child, ready: impl Fn() -> bool) -> (Option<i32>, String) {
    let started = Instant::now();
    while !ready() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the copy never got under way"
        );
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the copy ended before it was interrupted: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let sent = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
    let output = child.wait_with_output().expect("wait");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn start(path: &Path, args: &[&str], env: &[(&str, String)]) -> Child {
    let mut command = orca(path);
    command
        .current_dir(path)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    command.spawn().expect("start orca")
}

#[test]
fn an_interrupted_cp_to_a_registry_leaves_no_upload_session() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path();
    seed(path);
    let registry = RegistryServer::shared();
    let link = slow(registry.port());
    let repository = unique("interrupted");
    let target = format!("127.0.0.1:{}/{repository}:v1", link.port());
    let child = start(path, &["cp", "oci:./big:v1", &target], &[]);
    let (code, said) = interrupt(child, || registry.upload_sessions(&repository) > 0);
    assert_eq!(code, Some(130), "{said}");
    assert!(
        said.contains("interrupted") && said.contains("cancelled"),
        "{said}"
    );
    assert_eq!(registry.upload_sessions(&repository), 0, "{said}");
    // A re-run copies the image whole.
    ok(
        path,
        &[
            "cp",
            "oci:./big:v1",
            &format!("{}/{repository}:v1", registry.host()),
        ],
    );
}

#[test]
fn an_interrupted_cp_to_a_bucket_leaves_no_multipart_upload() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path();
    seed(path);
    let moto = MotoServer::shared();
    let link = slow(moto.port());
    let prefix = unique("interrupted");
    let target = format!("s3://{}/{prefix}:v1", bucket());
    let endpoint = format!("http://127.0.0.1:{}", link.port());
    let child = start(
        path,
        &["cp", "oci:./big:v1", &target],
        &[("AWS_ENDPOINT_URL", endpoint)],
    );
    let (code, said) = interrupt(child, || {
        moto.open_uploads(bucket(), &prefix).unwrap_or(0) > 0
    });
    assert_eq!(code, Some(130), "{said}");
    assert!(said.contains("interrupted"), "{said}");
    assert_eq!(
        moto.open_uploads(bucket(), &prefix).expect("list uploads"),
        0,
        "{said}"
    );
}

#[test]
fn an_interrupted_cp_to_an_archive_leaves_no_temporary() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path();
    seed(path);
    // The source is a registry behind a slow downlink.
    let registry = RegistryServer::shared();
    let repository = unique("archive-source");
    ok(
        path,
        &[
            "cp",
            "oci:./big:v1",
            &format!("{}/{repository}:v1", registry.host()),
        ],
    );
    let link = slow_down(registry.port());
    let out = path.join("out");
    std::fs::create_dir_all(&out).expect("dir");
    let source = format!("127.0.0.1:{}/{repository}:v1", link.port());
    let child = start(
        path,
        &["cp", &source, "oci-archive:./out/image.tar:v1"],
        &[],
    );
    // The signal comes once the archive's temporary file holds something.
    let (code, said) = interrupt(child, || holds_bytes(&out));
    assert_eq!(code, Some(130), "{said}");
    assert!(said.contains("interrupted"), "{said}");
    let left: Vec<_> = std::fs::read_dir(&out)
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?} ({said})");
}

#[test]
fn an_interrupted_pull_leaves_nothing_and_a_killed_one_blocks_nothing() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path();
    seed(path);
    let registry = RegistryServer::shared();
    let repository = unique("pull-source");
    let direct = format!("{}/{repository}:v1", registry.host());
    ok(path, &["cp", "oci:./big:v1", &direct]);
    let link = slow_down(registry.port());
    let source = format!("127.0.0.1:{}/{repository}:v1", link.port());
    let out = path.join("out");
    std::fs::create_dir_all(&out).expect("dir");
    let writing = || holds_bytes(&out);
    // Ctrl-C: the file being written goes.
    let child = start(path, &["pull", &source, "-o", "out"], &[]);
    let (code, said) = interrupt(child, writing);
    assert_eq!(code, Some(130), "{said}");
    let left: Vec<_> = std::fs::read_dir(&out)
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?} ({said})");
    // Killed outright, it cleans nothing; the next pull works all the same.
    let mut child = start(path, &["pull", &source, "-o", "out"], &[]);
    let started = Instant::now();
    while !writing() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the pull never began"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().expect("kill");
    let _ = child.wait();
    ok(path, &["pull", &direct, "-o", "out"]);
    for i in 0..3 {
        let pulled = std::fs::read(out.join(format!("part-{i}.bin"))).expect("pulled");
        assert_eq!(
            pulled,
            std::fs::read(path.join(format!("part-{i}.bin"))).expect("seeded")
        );
    }
}

#[test]
fn an_interrupted_cp_into_a_layout_keeps_its_partials_and_says_so() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path();
    seed(path);
    let registry = RegistryServer::shared();
    let repository = unique("layout-source");
    let direct = format!("{}/{repository}:v1", registry.host());
    ok(path, &["cp", "oci:./big:v1", &direct]);
    let link = slow_down(registry.port());
    let source = format!("127.0.0.1:{}/{repository}:v1", link.port());
    let ingest = path.join("dest/ingest");
    let child = start(path, &["cp", &source, "oci:./dest:v1"], &[]);
    let (code, said) = interrupt(child, || {
        std::fs::read_dir(&ingest).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                e.file_name().to_string_lossy().starts_with("partial-")
                    && e.metadata().is_ok_and(|m| m.len() > 0)
            })
        })
    });
    assert_eq!(code, Some(130), "{said}");
    assert!(said.contains("kept for a re-run"), "{said}");
    // gc keeps the partials, and says why; --staging removes them now.
    let kept = crate::common::json(path, &["gc", "oci:./dest"]);
    let staged = kept["staging_kept"].as_array().map_or(0, Vec::len);
    assert!(staged >= 1, "{kept}");
    assert!(kept["staging_age_seconds"].as_u64() >= Some(3600), "{kept}");
    let removed = crate::common::json(path, &["gc", "oci:./dest", "--staging"]);
    assert_eq!(
        removed["staging"].as_u64(),
        Some(staged as u64),
        "{removed}"
    );
    assert_eq!(
        removed["staging_kept"].as_array().map(Vec::len),
        Some(0),
        "{removed}"
    );
    ok(path, &["cp", &direct, "oci:./dest:v1"]);
}
