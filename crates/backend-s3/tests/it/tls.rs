//! TLS to the object store is verified: a certificate from an unknown CA
//! is refused unless the builder is told otherwise — and
//! `AWS_ALLOW_INVALID_CERTIFICATES` in the environment does not tell it.

use std::process::Command;

use orca_backend_s3::S3Builder;
use orca_core::Store;
use orca_testkit::RegistryServer;

/// Set (to `true`) when the test below runs as a child process.
const INVALID_CERTIFICATES: &str = "AWS_ALLOW_INVALID_CERTIFICATES";

/// An HTTPS server whose certificate comes from a test CA nobody trusts
/// (a registry: it is the TLS that is tested, not S3), and a store on it.
fn store(server: &RegistryServer, allow: bool) -> Store {
    let backend = S3Builder::new("s3://bucket/prefix")
        .endpoint(format!("https://{}", server.host()))
        .region("us-east-1")
        .credentials("key", "secret")
        .allow_invalid_certificates(allow)
        .build()
        .expect("s3 backend");
    Store::new(backend)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_certificates_are_refused_unless_allowed() {
    let server = RegistryServer::start_tls().expect("TLS server");
    let err = store(&server, false)
        .tags_all()
        .await
        .expect_err("an untrusted certificate");
    let text = orca_core::error::chain(&err).to_ascii_lowercase();
    assert!(text.contains("certificate"), "{text}");
    // Explicitly insecure: the TLS handshake succeeds (the server, not
    // being S3, holds no layout there: an empty tag list).
    let tags = store(&server, true)
        .tags_all()
        .await
        .expect("certificate checks off on request");
    assert!(tags.is_empty(), "{tags:?}");
    if std::env::var_os(INVALID_CERTIFICATES).is_none() {
        // The same again with the environment saying otherwise.
        let status = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "tls::untrusted_certificates_are_refused_unless_allowed",
                "--test-threads=1",
            ])
            .env(INVALID_CERTIFICATES, "true")
            .status()
            .expect("run the child");
        assert!(
            status.success(),
            "with {INVALID_CERTIFICATES}=true the checks went off"
        );
    }
}

/// Set when the test below runs as a child process.
const ENDPOINT_CHILD: &str = "ORCA_TEST_ENDPOINT_CHILD";

/// Backends review m15: the endpoint the client uses decides TLS and
/// loopback, whichever variable named it: `AWS_ENDPOINT` (which
/// object_store reads too) naming moto on loopback speaks plain HTTP as
/// `AWS_ENDPOINT_URL` does, without `allow_http`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m15_the_endpoint_in_effect_decides_loopback() {
    if std::env::var_os(ENDPOINT_CHILD).is_some() {
        let backend = S3Builder::new(format!(
            "s3://{}/m15-{}",
            crate::common::bucket(),
            std::process::id()
        ))
        .build()
        .expect("s3 backend");
        Store::new(backend)
            .tags_all()
            .await
            .expect("plain HTTP to a loopback AWS_ENDPOINT");
        return;
    }
    let moto = orca_testkit::MotoServer::shared();
    crate::common::bucket();
    let status = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "tls::m15_the_endpoint_in_effect_decides_loopback",
            "--test-threads=1",
        ])
        .env(ENDPOINT_CHILD, "1")
        .env_remove("AWS_ENDPOINT_URL")
        .env("AWS_ENDPOINT", moto.endpoint())
        .env("AWS_ACCESS_KEY_ID", "orca-test-key")
        .env("AWS_SECRET_ACCESS_KEY", "orca-test-secret")
        .env("AWS_REGION", "us-east-1")
        .status()
        .expect("run the child");
    assert!(
        status.success(),
        "a loopback AWS_ENDPOINT was not spoken to"
    );
}
