//! Who may do what on `orca serve` (issue 23 §6): htpasswd users (bcrypt)
//! with per-repository rules and no anonymous access; bearer tokens from a
//! token service; HTTPS whose certificate is read again on `SIGHUP`, and
//! client certificates. orca, skopeo and the oras Python client log in.

use std::process::Command;

use orca_testkit::require_program;

use crate::common::{ok, orca, run, with_input};
use crate::http::send;
use crate::serve::Serving;

/// An htpasswd line for `user`/`password` (bcrypt, as `htpasswd -B`).
fn htpasswd(user: &str, password: &str) -> String {
    let program = require_program("htpasswd", "scripts/setup (apt-get install apache2-utils)");
    let output = Command::new(program)
        .args(["-Bbn", user, password])
        .output()
        .expect("htpasswd");
    assert!(output.status.success());
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[test]
fn htpasswd_users_rules_and_peers_logging_in() {
    let home = tempfile::tempdir().expect("temporary directory");
    let path = home.path();
    std::fs::write(
        path.join("htpasswd"),
        format!(
            "{}\n{}\n",
            htpasswd("alice", "wonder"),
            htpasswd("bob", "builder")
        ),
    )
    .expect("write");
    std::fs::write(
        path.join("serve.yaml"),
        format!(
            "root: oci:{}\nauth:\n  anonymous: none\n  htpasswd: {}\n  rules:\n    - repositories: [\"team/*\"]\n      users: [alice]\n      access: write\n    - repositories: [\"**\"]\n      users: [\"*\"]\n      access: read\n",
            path.join("served").display(),
            path.join("htpasswd").display()
        ),
    )
    .expect("write");
    let serving = Serving::start(
        path,
        "--config",
        &[path.join("serve.yaml").to_str().expect("utf-8")],
    );
    let host = serving.host().to_owned();
    std::fs::write(path.join("note.txt"), b"by alice\n").expect("write");

    // Anonymous: challenged.
    let ping = send(&host, "GET", "/v2/", &[], b"");
    assert_eq!(ping.status, 401);
    assert_eq!(
        ping.header("www-authenticate"),
        Some("Basic realm=\"orca\"")
    );
    let anonymous = run(path, &["tags", &format!("{host}/team/app")]);
    assert_eq!(anonymous.status.code(), Some(4), "{anonymous:?}");

    // orca login checks the password, then every command uses it.
    let login = |user: &str, password: &str| {
        with_input(
            orca(path)
                .current_dir(path)
                .args(["login", &host, "-u", user, "--password-stdin"]),
            password.as_bytes(),
        )
    };
    let refused = login("alice", "wrong");
    assert_eq!(refused.status.code(), Some(4), "{refused:?}");
    assert!(login("alice", "wonder").status.success());
    ok(path, &["push", &format!("{host}/team/app:v1"), "note.txt"]);
    // Outside her rules: refused, and named so.
    let outside = run(path, &["push", &format!("{host}/other/app:v1"), "note.txt"]);
    assert_eq!(outside.status.code(), Some(4), "{outside:?}");
    assert!(
        String::from_utf8_lossy(&outside.stderr).contains("may not push"),
        "{outside:?}"
    );

    // bob reads everything and writes nothing.
    let bob = ["-u", "bob", "-p", "builder"];
    let repository = format!("{host}/team/app");
    let mut args = bob.to_vec();
    args.extend(["tags", &repository]);
    let tags = run(path, &args);
    assert!(
        String::from_utf8_lossy(&tags.stdout).contains("v1"),
        "{tags:?}"
    );
    let mut args = bob.to_vec();
    let target = format!("{host}/team/app:bob");
    args.extend(["push", &target, "note.txt"]);
    assert_eq!(run(path, &args).status.code(), Some(4));

    // skopeo with alice's credentials copies in.
    let skopeo = require_program("skopeo", "scripts/setup (apt-get install skopeo)");
    let seed = path.join("seed");
    crate::common::seed_image(&seed, "v1", b"through skopeo\n");
    let copied = Command::new(skopeo)
        .args([
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            "alice:wonder",
            &format!("oci:{}:v1", seed.display()),
            &format!("docker://{host}/team/skopeo:v1"),
        ])
        .output()
        .expect("skopeo");
    assert!(
        copied.status.success(),
        "{}",
        String::from_utf8_lossy(&copied.stderr)
    );

    // The oras Python client logs in and pushes.
    let script = r#"
import sys
import oras.client
host = sys.argv[1]
client = oras.client.OrasClient(hostname=host, insecure=True, auth_backend="basic")
client.auth.set_basic_auth("alice", "wonder")
client.push(target=f"{host}/team/oras:v1", files=["note.txt"])
print("pushed")
"#;
    crate::common::oras_python(path, script, &[&host]);
    // docker login (the client logs in itself, no engine needed) refuses a
    // wrong password, keeps a right one, and orca pushes with what docker
    // saved.
    let docker = require_program(
        "docker",
        "the machine's docker client (28 or later: it logs in without an engine)",
    );
    let config = path.join("docker-login");
    let docker_login = |password: &str| {
        with_input(
            Command::new(&docker).env("DOCKER_CONFIG", &config).args([
                "login",
                "-u",
                "alice",
                "--password-stdin",
                &host,
            ]),
            password.as_bytes(),
        )
    };
    let refused = docker_login("wrong");
    assert!(!refused.status.success(), "{refused:?}");
    let logged_in = docker_login("wonder");
    assert!(logged_in.status.success(), "{logged_in:?}");
    let pushed = orca(path)
        .env("DOCKER_CONFIG", &config)
        .current_dir(path)
        .args(["push", &format!("{host}/team/docker:v1"), "note.txt"])
        .output()
        .expect("orca push");
    assert!(pushed.status.success(), "{pushed:?}");

    let tags = run(path, &["repos", &host]);
    let listed = String::from_utf8_lossy(&tags.stdout);
    for repository in ["team/app", "team/skopeo", "team/oras", "team/docker"] {
        assert!(listed.contains(repository), "{listed}");
    }
}

#[test]
fn bearer_tokens_from_a_token_service() {
    let home = tempfile::tempdir().expect("temporary directory");
    let path = home.path();
    let issuer = orca_testkit::TokenIssuer::start("carol", "secret").expect("token issuer");
    std::fs::write(path.join("issuer.pem"), &issuer.certificate_pem).expect("write");
    std::fs::write(
        path.join("serve.yaml"),
        format!(
            "root: memory\nauth:\n  anonymous: none\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: {}\n    issuer: {}\n    key: {}\n",
            issuer.port,
            orca_testkit::TOKEN_SERVICE,
            orca_testkit::TOKEN_ISSUER,
            path.join("issuer.pem").display()
        ),
    )
    .expect("write");
    let serving = Serving::start(
        path,
        "--config",
        &[path.join("serve.yaml").to_str().expect("utf-8")],
    );
    let host = serving.host().to_owned();
    let challenged = send(&host, "GET", "/v2/tok/app/tags/list", &[], b"");
    assert_eq!(challenged.status, 401);
    let challenge = challenged
        .header("www-authenticate")
        .unwrap_or_default()
        .to_owned();
    assert!(
        challenge.starts_with("Bearer realm=")
            && challenge.contains("scope=\"repository:tok/app:pull\""),
        "{challenge}"
    );
    let forged = send(
        &host,
        "GET",
        "/v2/tok/app/tags/list",
        &[("Authorization", "Bearer a.b.c")],
        b"",
    );
    assert_eq!(forged.status, 401);
    std::fs::write(path.join("note.txt"), b"with a token\n").expect("write");
    ok(
        path,
        &[
            "-u",
            "carol",
            "-p",
            "secret",
            "push",
            &format!("{host}/tok/app:v1"),
            "note.txt",
        ],
    );
    let tags = ok(
        path,
        &[
            "-u",
            "carol",
            "-p",
            "secret",
            "tags",
            &format!("{host}/tok/app"),
        ],
    );
    assert_eq!(tags.trim(), "v1");
    let wrong = run(
        path,
        &[
            "-u",
            "carol",
            "-p",
            "nope",
            "tags",
            &format!("{host}/tok/app"),
        ],
    );
    assert_eq!(wrong.status.code(), Some(4), "{wrong:?}");
}

#[test]
fn https_reloads_its_certificate_on_sighup_and_asks_for_client_certificates() {
    let home = tempfile::tempdir().expect("temporary directory");
    let path = home.path();
    let first = path.join("first");
    let second = path.join("second");
    std::fs::create_dir_all(&first).expect("mkdir");
    std::fs::create_dir_all(&second).expect("mkdir");
    let (ca1, cert1, key1) = orca_testkit::tls_files(&first).expect("tls files");
    let (ca2, cert2, key2) = orca_testkit::tls_files(&second).expect("tls files");
    let live_cert = path.join("server.pem");
    let live_key = path.join("server.key");
    std::fs::copy(&cert1, &live_cert).expect("copy");
    std::fs::copy(&key1, &live_key).expect("copy");
    let serving = Serving::start(
        path,
        "memory",
        &[
            "--tls-cert",
            live_cert.to_str().expect("utf-8"),
            "--tls-key",
            live_key.to_str().expect("utf-8"),
        ],
    );
    let host = serving.host().to_owned();
    std::fs::write(path.join("note.txt"), b"over TLS\n").expect("write");
    let with = |ca: &std::path::Path, args: &[&str]| {
        let mut all = vec!["--ca-file", ca.to_str().expect("utf-8")];
        all.extend(args);
        run(path, &all)
    };
    let target = format!("{host}/tls/app:v1");
    assert!(with(&ca1, &["push", &target, "note.txt"]).status.success());
    assert_eq!(
        with(&ca2, &["tags", &format!("{host}/tls/app")])
            .status
            .code(),
        Some(1)
    );

    // New files, SIGHUP: the next connections get the new certificate.
    std::fs::copy(&cert2, &live_cert).expect("copy");
    std::fs::copy(&key2, &live_key).expect("copy");
    let hup = Command::new("kill")
        .args(["-HUP", &serving.pid().to_string()])
        .status()
        .expect("kill");
    assert!(hup.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !serving.log().contains("read again") && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let tags = with(&ca2, &["tags", &format!("{host}/tls/app")]);
    assert!(tags.status.success(), "{tags:?}\n{}", serving.log());
    assert_eq!(
        with(&ca1, &["tags", &format!("{host}/tls/app")])
            .status
            .code(),
        Some(1)
    );
    drop(serving);

    // Client certificates from a CA: without one, refused.
    let mutual = Serving::start(
        path,
        "memory",
        &[
            "--tls-cert",
            cert1.to_str().expect("utf-8"),
            "--tls-key",
            key1.to_str().expect("utf-8"),
            "--tls-client-ca",
            ca1.to_str().expect("utf-8"),
        ],
    );
    let host = mutual.host().to_owned();
    let target = format!("{host}/mtls/app:v1");
    assert_eq!(
        with(&ca1, &["push", &target, "note.txt"]).status.code(),
        Some(1)
    );
    let client = first.join("client.pem");
    let client_key = first.join("client.key");
    let pushed = with(
        &ca1,
        &[
            "--cert-file",
            client.to_str().expect("utf-8"),
            "--key-file",
            client_key.to_str().expect("utf-8"),
            "push",
            &target,
            "note.txt",
        ],
    );
    assert!(pushed.status.success(), "{pushed:?}");
}
