//! TLS: verified by default, a custom CA file, and explicit insecure mode,
//! against a registry that speaks only HTTPS.

use orca_backend_http::RegistryBuilder;
use orca_core::{Selector, Store};
use orca_testkit::{RegistryServer, push_real_image};

use crate::common::fresh_repository;

#[tokio::test]
async fn tls_is_verified_unless_a_ca_is_given_or_insecure_is_explicit() {
    let server = RegistryServer::start_tls().expect("TLS registry");
    let name = fresh_repository("tls");

    let untrusted = RegistryBuilder::new(server.host())
        .plain_http(false)
        .build()
        .expect("registry");
    let err = untrusted
        .repository(&name)
        .await
        .expect_err("a certificate from an unknown CA");
    let text = orca_core::error::chain(&err);
    assert!(text.contains("certificate"), "{text}");
    assert!(text.contains(&server.host()), "{text}");

    let ca = server.ca_file().expect("CA file");
    let trusted = RegistryBuilder::new(server.host())
        .plain_http(false)
        .ca_file(ca)
        .build()
        .expect("registry");
    let store = Store::new(trusted.repository(&name).await.expect("open over TLS"));
    let pushed = push_real_image(&store, &[("f", b"over TLS")], "v1").await;

    let insecure = RegistryBuilder::new(server.host())
        .plain_http(false)
        .insecure(true)
        .build()
        .expect("registry");
    let store = Store::new(insecure.repository(&name).await.expect("open, insecure"));
    let (descriptor, _) = store
        .fetch_manifest(&Selector::Tag("v1".into()))
        .await
        .expect("pull, insecure");
    assert_eq!(descriptor.digest, pushed.digest);

    let plain = RegistryBuilder::new(server.host())
        .build()
        .expect("registry");
    let err = plain
        .repository(&name)
        .await
        .expect_err("plain HTTP to a TLS port");
    let text = orca_core::error::chain(&err);
    assert!(text.contains("HTTPS"), "{text}");
}

#[test]
fn a_ca_file_that_is_missing_or_not_pem_is_named() {
    let err = RegistryBuilder::new("registry.example")
        .ca_file("/nonexistent/ca.pem")
        .build()
        .expect_err("missing CA file");
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    let dir = tempfile::tempdir().expect("tempdir");
    let junk = dir.path().join("junk.pem");
    std::fs::write(
        &junk,
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let err = RegistryBuilder::new("registry.example")
        .ca_file(&junk)
        .build()
        .expect_err("junk CA file");
    assert!(err.to_string().contains("junk.pem"), "{err}");
}
