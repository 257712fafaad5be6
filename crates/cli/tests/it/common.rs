//! Running the binary, and the places the tests use: a fresh layout, a
//! fresh repository on the shared registry, a fresh prefix of a moto
//! bucket.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use orca_testkit::{MotoServer, RegistryServer};

/// A name no other test uses.
pub(crate) fn unique(label: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{label}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// The bucket of this test binary on the shared moto server.
pub(crate) fn bucket() -> &'static str {
    static BUCKET: OnceLock<String> = OnceLock::new();
    BUCKET.get_or_init(|| {
        let name = format!("orca-cli-{}", std::process::id());
        MotoServer::shared()
            .create_bucket(&name)
            .expect("create bucket");
        name
    })
}

/// A fresh `s3://` target base (without a tag).
pub(crate) fn s3(label: &str) -> String {
    format!("s3://{}/{}", bucket(), unique(label))
}

/// A fresh repository on the shared registry (without a tag).
pub(crate) fn registry(label: &str) -> String {
    format!("{}/{}", RegistryServer::shared().host(), unique(label))
}

/// The binary with an environment of its own: no docker config of the
/// machine's, moto's endpoint and test credentials for S3.
pub(crate) fn orca(home: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_orca"));
    command
        .env("HOME", home)
        .env("DOCKER_CONFIG", home.join(".docker"))
        .env("AWS_ACCESS_KEY_ID", "orca-test-key")
        .env("AWS_SECRET_ACCESS_KEY", "orca-test-secret")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", MotoServer::shared().endpoint())
        .env_remove("AWS_PROFILE")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("ORCA_REGISTRIES_FILE")
        .stdin(Stdio::null());
    command
}

/// Runs orca with `args` in `dir`; the output, whatever the status.
pub(crate) fn run(dir: &Path, args: &[&str]) -> Output {
    orca(dir)
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run orca")
}

/// Runs orca and expects success; its stdout.
pub(crate) fn ok(dir: &Path, args: &[&str]) -> String {
    let output = run(dir, args);
    assert!(
        output.status.success(),
        "orca {args:?} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 stdout")
}

/// Runs orca with `--format json` and parses what it printed.
pub(crate) fn json(dir: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend(["--format", "json"]);
    let out = ok(dir, &all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("orca {args:?}: not JSON ({e}): {out}"))
}

/// The digest a JSON result names.
pub(crate) fn digest(value: &serde_json::Value) -> String {
    value["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("no digest in {value}"))
        .to_owned()
}

/// Runs `command` with `input` on its standard input; its output.
pub(crate) fn with_input(command: &mut Command, input: &[u8]) -> std::process::Output {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(input)?;
            }
            child.wait_with_output()
        })
        .expect("run a command")
}

/// Writes a small real image (a layer of `files`) into the layout at
/// `dir`, tagged `tag`; returns its manifest digest.
pub(crate) fn seed_image(dir: &Path, tag: &str, content: &[u8]) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = orca::Store::new(orca::fs::open(dir).expect("layout"));
        orca_testkit::push_real_image(&store, &[("hello.txt", content)], tag)
            .await
            .digest
            .to_string()
    })
}

/// Runs `script` (Python, with the oras package) in `dir` with `args`;
/// its stdout. Fails, saying how to install it, when oras is missing.
pub(crate) fn oras_python(dir: &Path, script: &str, args: &[&str]) -> String {
    let python = orca_testkit::require_program("python3", "apt-get install -y python3");
    let output = Command::new(python)
        .current_dir(dir)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python3");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("No module named 'oras'"),
        "the oras Python package is missing: run scripts/setup, or: pip install oras"
    );
    assert!(output.status.success(), "the oras script failed: {stderr}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}
