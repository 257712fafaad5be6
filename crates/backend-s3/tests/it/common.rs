//! The shared moto server, one bucket per test binary, a prefix per test.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use orca_backend_s3::{S3Backend, S3Builder};
use orca_testkit::MotoServer;

pub(crate) const REGION: &str = "us-east-1";
pub(crate) const KEY: &str = "orca-test-key";
pub(crate) const SECRET: &str = "orca-test-secret";

/// The bucket of this test binary, created on first use.
pub(crate) fn bucket() -> &'static str {
    static BUCKET: OnceLock<String> = OnceLock::new();
    BUCKET.get_or_init(|| {
        let name = format!("orca-it-{}", std::process::id());
        MotoServer::shared()
            .create_bucket(&name)
            .expect("create bucket");
        name
    })
}

/// A prefix no other test uses.
pub(crate) fn fresh_prefix(label: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{label}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A builder for `s3://<bucket>/<prefix>` on the shared server.
pub(crate) fn builder(prefix: &str) -> S3Builder {
    S3Builder::new(format!("s3://{}/{prefix}", bucket()))
        .endpoint(MotoServer::shared().endpoint())
        .region(REGION)
        .credentials(KEY, SECRET)
        .allow_http(true)
}

/// A backend on a fresh prefix of the shared server.
pub(crate) fn backend(prefix: &str) -> S3Backend {
    builder(prefix).build().expect("build S3 backend")
}

/// The environment a child process or aws-cli needs to reach the server.
pub(crate) fn aws_env() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", KEY.to_owned()),
        ("AWS_SECRET_ACCESS_KEY", SECRET.to_owned()),
        ("AWS_DEFAULT_REGION", REGION.to_owned()),
        ("AWS_ENDPOINT_URL", MotoServer::shared().endpoint()),
    ]
}
