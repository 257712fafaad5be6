//! Servers on every kind of root, each on a free loopback port, kept alive
//! by what [`served`] returns.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use orca::{OpenOptions, Root};
use orca_testkit::MotoServer;

/// A name no other test of this binary uses.
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
        let name = format!("orca-server-{}", std::process::id());
        MotoServer::shared()
            .create_bucket(&name)
            .expect("create bucket");
        name
    })
}

/// Options that reach moto with its test credentials, and load the fs
/// plugin (`ocidir://`).
pub(crate) fn options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.s3_endpoint = Some(MotoServer::shared().endpoint());
    options.s3_region = Some("us-east-1".into());
    options.s3_credentials = Some(("orca-test-key".into(), "orca-test-secret".into()));
    let plugin = orca::plugins::Plugin::load(orca_testkit::plugin_library("orca_plugin_fs"))
        .expect("the fs plugin (scripts/test builds it)");
    options.plugins.push(plugin);
    options
}

/// Which kind of root.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    Memory,
    Directory,
    Bucket,
    Plugin,
}

/// What keeps a server and its storage alive.
pub(crate) struct Served {
    pub(crate) running: orca_server::Running,
    pub(crate) _dir: tempfile::TempDir,
}

/// A fresh root of `kind`, in `dir` where it is a directory.
pub(crate) fn root(kind: Kind, dir: &tempfile::TempDir) -> Root {
    let target = match kind {
        Kind::Memory => "memory".to_owned(),
        Kind::Directory => format!("oci:{}", dir.path().display()),
        Kind::Bucket => format!("s3://{}/{}", bucket(), unique("root")),
        Kind::Plugin => format!("ocidir://{}", dir.path().display()),
    };
    Root::open(&target, &options()).expect("root")
}

/// A server on a fresh root of `kind`.
pub(crate) async fn served(kind: Kind) -> Served {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = root(kind, &dir);
    let running = orca_server::Server::new(root)
        .spawn("127.0.0.1:0")
        .await
        .expect("serve");
    Served { running, _dir: dir }
}

/// An answer to [`request`]: status, headers (lower-cased names), body.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Answer {
    /// The first value of header `name` (lower case).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One plain HTTP/1.1 request on its own connection.
pub(crate) async fn request(host: &str, method: &str, path: &str, body: &[u8]) -> Answer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(host).await.expect("connect");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("send head");
    stream.write_all(body).await.expect("send body");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers end");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// A `GET` answered `200` with JSON: its headers and body.
pub(crate) async fn get(host: &str, path: &str) -> (Vec<(String, String)>, serde_json::Value) {
    let answer = request(host, "GET", path, b"").await;
    assert_eq!(
        answer.status,
        200,
        "GET {path}: {}",
        String::from_utf8_lossy(&answer.body)
    );
    let json = serde_json::from_slice(&answer.body).expect("a JSON body");
    (answer.headers, json)
}
