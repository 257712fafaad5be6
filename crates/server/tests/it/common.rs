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

/// A server on a fresh root of `kind`.
pub(crate) async fn served(kind: Kind) -> Served {
    let dir = tempfile::tempdir().expect("temporary directory");
    let target = match kind {
        Kind::Memory => "memory".to_owned(),
        Kind::Directory => format!("oci:{}", dir.path().display()),
        Kind::Bucket => format!("s3://{}/{}", bucket(), unique("root")),
        Kind::Plugin => format!("ocidir://{}", dir.path().display()),
    };
    let root = Root::open(&target, &options()).expect("root");
    let running = orca_server::Server::new(root)
        .spawn("127.0.0.1:0")
        .await
        .expect("serve");
    Served { running, _dir: dir }
}
