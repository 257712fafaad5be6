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
