//! `login` against a registry that needs a password: a wrong password is
//! refused and nothing is kept; the right one is kept in config.json, and
//! a push then needs no flags; `logout` forgets it.

use std::io::Write;
use std::process::Stdio;

use orca_testkit::RegistryServer;

use crate::common::{orca, run, unique};

fn login(dir: &std::path::Path, host: &str, password: &str) -> std::process::Output {
    let mut child = orca(dir)
        .current_dir(dir)
        .args(["login", host, "-u", "orca", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn login");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("password");
    child.wait_with_output().expect("login")
}

#[test]
fn login_push_logout() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path();
    let server = RegistryServer::shared_htpasswd();
    let host = server.host();
    let config = path.join(".docker/config.json");
    std::fs::write(path.join("note.txt"), b"note\n").expect("write");
    let target = format!("{host}/{}:v1", unique("login"));

    let refused = login(path, &host, "wrong-password");
    assert_eq!(refused.status.code(), Some(4), "credentials rejected");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.starts_with(&format!("orca: logging in to {host} as orca")),
        "{said}"
    );
    assert!(said.to_lowercase().contains("unauthorized"), "{said}");
    assert!(!config.exists(), "a refused login was kept");
    let anonymous = run(path, &["push", &target, "note.txt"]);
    assert_eq!(
        anonymous.status.code(),
        Some(4),
        "a push without credentials worked"
    );

    let accepted = login(path, &host, "orca-password");
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    let kept = std::fs::read_to_string(&config).expect("config.json");
    assert!(
        kept.contains(&host) && !kept.contains("orca-password"),
        "{kept}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&config)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "config.json is readable by others: {mode:o}"
        );
    }
    let pushed = run(path, &["push", &target, "note.txt"]);
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );

    let out = run(path, &["logout", &host]);
    assert!(out.status.success());
    let again = run(path, &["push", &target, "note.txt"]);
    assert_eq!(again.status.code(), Some(4), "credentials outlived logout");
}

/// Issue 22 §8: credentials as the peers take them: `-p` (with docker's
/// warning), `--creds USER:PASSWORD`, the containers tools' auth file
/// (`REGISTRY_AUTH_FILE`) after docker's, and per end for `cp`.
#[test]
fn credentials_as_peers_take_them() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path();
    let server = RegistryServer::shared_htpasswd();
    let host = server.host();
    let (user, password) = server.credentials().expect("an htpasswd registry");
    std::fs::write(path.join("note.txt"), b"note\n").expect("write");
    let repository = unique("peers");
    let target = format!("{host}/{repository}:v1");

    let pushed = run(
        path,
        &["-u", user, "-p", password, "push", &target, "note.txt"],
    );
    assert!(pushed.status.success(), "{pushed:?}");
    assert!(
        String::from_utf8_lossy(&pushed.stderr).contains("WARNING! Using --password"),
        "{pushed:?}"
    );
    let creds = format!("{user}:{password}");
    let resolved = run(path, &["--creds", &creds, "resolve", &target]);
    assert!(resolved.status.success(), "{resolved:?}");

    // Issue 22 §7: --debug shows each exchange, never a credential, and
    // no colour codes go into a pipe.
    let debugged = run(path, &["--debug", "--creds", &creds, "resolve", &target]);
    assert!(debugged.status.success(), "{debugged:?}");
    let said = String::from_utf8_lossy(&debugged.stderr);
    assert!(
        said.contains("HEAD http://") || said.contains("GET http://"),
        "{said}"
    );
    assert!(
        said.contains("-> 401") && said.contains("www-authenticate"),
        "{said}"
    );
    assert!(said.contains("(with credentials)"), "{said}");
    assert!(
        !said.contains(password) && !said.contains("\x1b["),
        "{said}"
    );

    let auth = path.join("auth.json");
    std::fs::write(
        &auth,
        serde_json::json!({"auths": {host.clone(): {"username": user, "password": password}}})
            .to_string(),
    )
    .expect("auth.json");
    let anonymous = run(path, &["resolve", &target]);
    assert_eq!(anonymous.status.code(), Some(4), "{anonymous:?}");
    let from_file = orca(path)
        .current_dir(path)
        .env("REGISTRY_AUTH_FILE", &auth)
        .args(["resolve", &target])
        .output()
        .expect("run orca");
    assert!(from_file.status.success(), "{from_file:?}");

    // Credentials for one end of a copy only.
    let plain = format!("{}/{repository}:v1", RegistryServer::shared().host());
    let copied = run(path, &["cp", "--src-creds", &creds, &target, &plain]);
    assert!(copied.status.success(), "{copied:?}");
    let back = format!("{host}/{repository}:v2");
    let copied = run(path, &["cp", "--dest-creds", &creds, &plain, &back]);
    assert!(copied.status.success(), "{copied:?}");
}
