//! A registry that speaks only HTTPS and asks clients for a certificate:
//! `--ca-file` trusts its CA, `--cert-file`/`--key-file` present the
//! client's; without them the push fails, with a one-line reason.

use orca_testkit::RegistryServer;

use crate::common::{run, unique};

#[test]
fn mutual_tls_needs_the_client_certificate() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path();
    let server = RegistryServer::start_mutual_tls().expect("docker-registry with mutual TLS");
    let ca = server
        .ca_file()
        .expect("CA file")
        .to_str()
        .expect("utf-8")
        .to_owned();
    let (cert, key) = server.client_identity().expect("client identity");
    std::fs::write(path.join("note.txt"), b"over mutual TLS\n").expect("write");
    let target = format!("{}/{}:v1", server.host(), unique("mtls"));

    let refused = run(
        path,
        &["push", &target, "note.txt", "--ca-file", &ca, "-vv"],
    );
    assert_eq!(
        refused.status.code(),
        Some(1),
        "a push without a client certificate worked:\nstdout: {}\nstderr: {}\nregistry log:\n{}",
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr),
        server.log()
    );

    let args = [
        "--ca-file",
        &ca,
        "--cert-file",
        cert.to_str().expect("utf-8"),
        "--key-file",
        key.to_str().expect("utf-8"),
    ];
    let mut push = vec!["push", target.as_str(), "note.txt"];
    push.extend(args);
    let pushed = run(path, &push);
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );
    let out = path.join("out");
    let mut pull = vec!["pull", target.as_str(), "-o", out.to_str().expect("utf-8")];
    pull.extend(args);
    let pulled = run(path, &pull);
    assert!(
        pulled.status.success(),
        "{}",
        String::from_utf8_lossy(&pulled.stderr)
    );
    assert_eq!(
        std::fs::read(out.join("note.txt")).expect("pulled"),
        b"over mutual TLS\n"
    );
}
