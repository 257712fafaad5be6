//! `orca serve` as users run it (issue 23): the official OCI
//! distribution-spec conformance suite against it on every kind of root,
//! peers (skopeo, the oras Python client, umoci) reading and writing it,
//! and bad input answered with the spec's errors, nothing stored.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use orca_testkit::require_program;

use crate::common::{bucket, orca, unique};

/// An `orca serve` process, killed when dropped.
pub(crate) struct Serving {
    child: Child,
    host: String,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Serving {
    /// Starts `orca serve ROOT` on a free port of 127.0.0.1.
    pub(crate) fn start(home: &Path, root: &str, extra: &[&str]) -> Serving {
        let mut child = orca(home)
            .current_dir(home)
            .args(["serve", root])
            .args(extra)
            .args(["--listen", "127.0.0.1:0"])
            .stderr(Stdio::piped())
            .spawn()
            .expect("start orca serve");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let host = loop {
            let Some(Ok(line)) = lines.next() else {
                let status = child.wait().expect("wait");
                panic!("orca serve {root} stopped before serving ({status})");
            };
            if let Some(address) = line
                .split("http://")
                .nth(1)
                .or_else(|| line.split("https://").nth(1))
            {
                break address.trim().to_owned();
            }
        };
        // The rest of stderr is kept, so the server never blocks on it and
        // a failing test can show it.
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Ok(mut log) = kept.lock() {
                    log.push_str(&line);
                    log.push('\n');
                }
            }
        });
        Serving { child, host, log }
    }

    /// Its process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for it to exit (at most 20 s) and gives its status.
    pub(crate) fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "orca serve did not stop"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// What the server said on stderr after it started.
    pub(crate) fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// `127.0.0.1:PORT`.
    pub(crate) fn host(&self) -> &str {
        &self.host
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The official suite's `run` script, where the shared directory has it.
fn suite() -> Option<PathBuf> {
    let run = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/oci-conformance/run");
    run.is_file().then_some(run)
}

/// Runs the official suite against `root` served by orca: 0 failed.
fn official_suite(root: &str) {
    let Some(run) = suite() else {
        eprintln!(
            "NOTE: ../shared/oci-conformance is not here: the official conformance suite was not run against orca serve {root}"
        );
        return;
    };
    let dir = tempfile::tempdir().expect("temporary directory");
    let serving = Serving::start(dir.path(), root, &[]);
    let results = dir.path().join("results");
    let output = Command::new(run)
        .args([serving.host(), results.to_str().expect("utf-8")])
        .output()
        .expect("run the conformance suite");
    let text = String::from_utf8_lossy(&output.stdout);
    let last = text.lines().last().unwrap_or_default().to_owned();
    assert!(
        output.status.success() && last.contains(" 0 failed") && last.contains(" 0 skipped"),
        "the conformance suite against orca serve {root}: {last}\n{text}\n{}",
        std::fs::read_to_string(results.join("out.txt"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("level=WARN"))
            .take(10)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn the_official_suite_passes_on_memory() {
    official_suite("memory");
}

#[test]
fn the_official_suite_passes_on_a_directory() {
    let dir = tempfile::tempdir().expect("temporary directory");
    official_suite(&format!("oci:{}", dir.path().display()));
}

#[test]
fn the_official_suite_passes_on_a_bucket() {
    official_suite(&format!("s3://{}/{}", bucket(), unique("served")));
}

#[test]
fn the_official_suite_passes_on_a_plugin_store() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let plugin = orca_testkit::plugin_library("orca_plugin_fs");
    let Some(run) = suite() else {
        eprintln!(
            "NOTE: ../shared/oci-conformance is not here: the official conformance suite was not run against a plugin store"
        );
        return;
    };
    let home = tempfile::tempdir().expect("temporary directory");
    let root = format!("ocidir://{}", dir.path().display());
    let serving = Serving::start(
        home.path(),
        &root,
        &["--plugin", plugin.to_str().expect("utf-8")],
    );
    let results = home.path().join("results");
    let output = Command::new(run)
        .args([serving.host(), results.to_str().expect("utf-8")])
        .output()
        .expect("run the conformance suite");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && text.contains(" 0 failed, 0 skipped"),
        "the conformance suite against orca serve {root}:\n{text}"
    );
}

#[test]
fn skopeo_oras_and_umoci_read_and_write_what_orca_serves() {
    let home = tempfile::tempdir().expect("temporary directory");
    let path = home.path();
    let served = path.join("served");
    let serving = Serving::start(path, &format!("oci:{}", served.display()), &[]);
    let host = serving.host().to_owned();
    let image = crate::common::seed_image(&path.join("seed"), "v1", b"served to peers\n");

    // skopeo copies in, and back out.
    let skopeo = require_program("skopeo", "scripts/setup (apt-get install skopeo)");
    let copy = |from: &str, to: &str| {
        let output = Command::new(&skopeo)
            .args([
                "copy",
                "--dest-tls-verify=false",
                "--src-tls-verify=false",
                from,
                to,
            ])
            .output()
            .expect("run skopeo");
        assert!(
            output.status.success(),
            "skopeo copy {from} {to}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    copy(
        &format!("oci:{}:v1", path.join("seed").display()),
        &format!("docker://{host}/peers/app:v1"),
    );
    copy(
        &format!("docker://{host}/peers/app:v1"),
        &format!("oci:{}:v1", path.join("back").display()),
    );
    // skopeo compresses an uncompressed layer on its way to a registry, so
    // the served image is compared with what came back out.
    assert!(!image.is_empty());
    let served_digest = crate::common::json(path, &["resolve", &format!("{host}/peers/app:v1")]);
    let back = crate::common::json(
        path,
        &[
            "resolve",
            &format!("oci:{}:v1", path.join("back").display()),
        ],
    );
    assert_eq!(
        crate::common::digest(&back),
        crate::common::digest(&served_digest)
    );

    // The served repository is a layout umoci unpacks as it stands.
    let umoci = require_program("umoci", "scripts/setup (apt-get install umoci)");
    let bundle = path.join("bundle");
    let output = Command::new(umoci)
        .args([
            "unpack",
            "--rootless",
            "--image",
            &format!("{}:v1", served.join("peers/app").display()),
            bundle.to_str().expect("utf-8"),
        ])
        .output()
        .expect("run umoci");
    assert!(
        output.status.success(),
        "umoci unpack: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        std::fs::read(bundle.join("rootfs/hello.txt")).expect("unpacked file"),
        b"served to peers\n"
    );

    // The oras Python client pushes an artifact with a referrer, and reads
    // them back through the Referrers API.
    std::fs::write(path.join("sbom.json"), b"{\"sbom\": true}\n").expect("write");
    let said = crate::common::oras_python(path, ORAS, &[&host]);
    assert!(said.contains("pulled sbom.json"), "{said}");
    let referrer = said
        .lines()
        .find_map(|l| l.strip_prefix("referrer "))
        .expect("the referrer's digest")
        .to_owned();
    let listed = said
        .lines()
        .find_map(|l| l.strip_prefix("listed "))
        .expect("the listing");
    assert_eq!(listed.trim(), referrer, "{said}");
    // orca sees the referrer oras attached, and the layout holds it.
    let tree = crate::common::ok(path, &["discover", &format!("{host}/peers/app:v1")]);
    assert!(tree.contains(&referrer), "{tree}");
    let from_disk = crate::common::ok(
        path,
        &[
            "discover",
            &format!("oci:{}:v1", served.join("peers/app").display()),
        ],
    );
    assert!(from_disk.contains(&referrer), "{from_disk}");
}

/// Pushes a file with oras and pulls it back; pushes a referrer of the
/// image (its subject read by HEAD, as the bytes orca served), and lists it
/// through the Referrers API.
const ORAS: &str = r#"
import sys, os
import oras.client, oras.oci
host = sys.argv[1]
client = oras.client.OrasClient(hostname=host, insecure=True)
client.push(target=f"{host}/peers/sbom:v1", files=["sbom.json"])
os.makedirs("pulled", exist_ok=True)
for f in client.pull(target=f"{host}/peers/sbom:v1", outdir="pulled"):
    print("pulled", os.path.basename(f))
head = client.do_request(f"http://{host}/v2/peers/app/manifests/v1", "HEAD",
    headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
digest = head.headers["Docker-Content-Digest"]
subject = oras.oci.Subject(mediaType=head.headers["Content-Type"], digest=digest,
    size=int(head.headers["Content-Length"]))
pushed = client.push(target=f"{host}/peers/app:sbom", files=["sbom.json"], subject=subject)
print("referrer", pushed.headers["Docker-Content-Digest"])
listed = client.do_request(f"http://{host}/v2/peers/app/referrers/{digest}", "GET").json()
print("listed", " ".join(m["digest"] for m in listed["manifests"]))
"#;

#[test]
fn health_metrics_request_ids_and_a_clean_stop() {
    let home = tempfile::tempdir().expect("temporary directory");
    let path = home.path();
    let mut serving = Serving::start(path, "memory", &[]);
    let host = serving.host().to_owned();
    use crate::http::send;
    assert_eq!(send(&host, "GET", "/healthz", &[], b"").status, 200);
    assert_eq!(send(&host, "GET", "/readyz", &[], b"").status, 200);
    std::fs::write(path.join("note.txt"), b"counted\n").expect("write");
    crate::common::ok(path, &["push", &format!("{host}/ops/app:v1"), "note.txt"]);
    let asked = send(
        &host,
        "GET",
        "/v2/ops/app/tags/list",
        &[("X-Request-Id", "trace-me-42")],
        b"",
    );
    assert_eq!(asked.header("x-request-id"), Some("trace-me-42"));
    let fresh = send(&host, "GET", "/v2/", &[], b"");
    assert!(
        fresh
            .header("x-request-id")
            .is_some_and(|id| !id.is_empty())
    );
    let metrics = send(&host, "GET", "/metrics", &[], b"").text();
    assert!(
        metrics.contains("orca_requests_total{route=\"manifest\",status=\"201\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("orca_request_seconds_bucket{route=\"tags\",le=\"+Inf\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("orca_upload_sessions_open 0"), "{metrics}");

    // SIGTERM: it stops, saying so, and exits cleanly.
    let pid = serving.pid().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = serving.wait();
    assert!(status.success(), "{status}");
    // Its last words reach the log through a reader thread: give it a
    // moment after the exit.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !serving.log().contains("stopped") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(serving.log().contains("stopped"), "{}", serving.log());
}
