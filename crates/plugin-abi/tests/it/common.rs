//! Finding and loading the plugin libraries the workspace built.

use orca_plugin_abi::Plugin;
pub(crate) use orca_testkit::plugin_library as library;

/// Loads the workspace's plugin `name`.
pub(crate) fn load(name: &str) -> Plugin {
    Plugin::load(library(name)).unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

/// A fresh prefix of the shared moto server's bucket for the s3 plugin
/// (`BUCKET/PREFIX`, named after `what`), and the configuration string
/// that reaches it: keys from a credentials file, never the string.
pub(crate) fn moto_target(what: &str) -> (String, String) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let server = orca_testkit::MotoServer::shared();
    let bucket = format!("orca-plugin-{}", std::process::id());
    server.create_bucket(&bucket).expect("bucket");
    // Written once per process: rewriting it for each target raced the
    // plugin reading it for another (it saw the file truncated).
    static CREDENTIALS: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let credentials = CREDENTIALS.get_or_init(|| {
        let path =
            std::env::temp_dir().join(format!("orca-plugin-credentials-{}", std::process::id()));
        std::fs::write(
            &path,
            "[conformance]\naws_access_key_id = orca-test-key\naws_secret_access_key = orca-test-secret\n",
        )
        .expect("credentials file");
        path
    });
    let config = format!(
        "endpoint={},region=us-east-1,credentials-file={},profile=conformance,allow-http",
        server.endpoint(),
        credentials.display()
    );
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    (format!("{bucket}/{what}-{n}"), config)
}
