//! Mistakes and failures: the exit status says which (2 usage, 3 not
//! found, 4 credentials, 1 other failures), and the message is short,
//! names what was wrong, and hints at what to do for the common mistakes.

use crate::common::run;

fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn bad_targets_and_arguments_are_usage_errors() {
    let dir = tempfile::tempdir().expect("temporary directory");
    for args in [
        &["resolve", "Not A Target"][..],
        &["cp", "oci:", "oci:./x"],
        &["tags", "oci:./x:bad tag"],
        &["cp", "gcs://bucket/thing", "oci:./x"],
        &["push", "oci:./x:v1"],
        &["nonsense"],
        &["sync", "mirror.yaml", "--watch", "0s"],
        &["cp", "--all", "oci:./x:v1", "oci:./y:v1"],
        &["push", "oci:./x:v1", "f", "--annotation", "no-equals"],
    ] {
        let output = run(dir.path(), args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr_of(&output)
        );
        assert!(output.stdout.is_empty(), "{args:?} printed on stdout");
    }
    let output = run(dir.path(), &["cp", "gcs://bucket/thing", "oci:./x"]);
    assert!(
        stderr_of(&output).contains("no plugin provides the scheme gcs://"),
        "{}",
        stderr_of(&output)
    );
    let output = run(dir.path(), &["resolve", "Not A Target"]);
    let text = stderr_of(&output);
    assert!(
        text.contains("Not A Target") && text.contains("oci-archive:FILE"),
        "{text}"
    );
}

#[test]
fn failures_exit_one_with_a_line_per_cause() {
    let dir = tempfile::tempdir().expect("temporary directory");
    // A file that is missing, a tag that is missing.
    let output = run(dir.path(), &["push", "oci:./x:v1", "missing.txt"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr_of(&output));
    assert!(
        stderr_of(&output).contains("missing.txt"),
        "{}",
        stderr_of(&output)
    );
    let output = run(dir.path(), &["resolve", "oci:./x:v9"]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr_of(&output));
    let text = stderr_of(&output);
    assert!(text.starts_with("orca: "), "{text}");
    assert!(text.contains("image layout"), "{text}");
    // A tag missing from a layout that is there: not found too.
    std::fs::write(dir.path().join("note.txt"), b"note\n").expect("write");
    let pushed = run(dir.path(), &["push", "oci:./y:v1", "note.txt"]);
    assert!(pushed.status.success(), "{}", stderr_of(&pushed));
    let output = run(dir.path(), &["resolve", "oci:./y:v9"]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr_of(&output));
    assert!(stderr_of(&output).contains("tag v9 not found"));
    assert!(!text.contains("stack backtrace"), "{text}");
}

#[test]
fn a_closed_stdout_is_not_an_error() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut child = crate::common::orca(dir.path())
        .args(["completions", "bash"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    // Close the reading end at once.
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("wait");
    assert!(output.status.success(), "{}", stderr_of(&output));
}

#[test]
fn digests_match_sha256sum() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("data.bin");
    std::fs::write(&file, vec![7u8; 3 * 1024 * 1024 + 11]).expect("write");
    let out = crate::common::json(dir.path(), &["digest", "data.bin"]);
    let expected = orca::Digest::sha256(&std::fs::read(&file).expect("read"));
    assert_eq!(out["digests"][0]["digest"], expected.to_string());
    let sha512 = crate::common::ok(dir.path(), &["digest", "data.bin", "--algorithm", "sha512"]);
    assert!(sha512.starts_with("sha512:"), "{sha512}");
}

/// Issue 22 §5: what is missing is named as missing (exit 3), never read
/// as empty; targets that are plainly no registry image say what they
/// probably meant; a rejected password says to log in (exit 4).
#[test]
fn mistakes_get_a_hint() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path();
    std::fs::create_dir_all(path.join("empty")).expect("dir");
    std::fs::write(path.join("app.tar"), b"not really\n").expect("write");
    std::fs::create_dir_all(path.join("app-layout")).expect("dir");
    let bucket = crate::common::s3("nothing-here");
    for (args, code, says) in [
        (&["tags", "oci:/nonexistent"][..], 3, "image layout"),
        (&["tags", "oci:./empty"], 3, "image layout"),
        (&["tags", bucket.as_str()], 3, "image layout"),
        (
            &["cp", "oci:./x:v1", "localhost:5000"],
            2,
            "names a registry but no repository",
        ),
        (
            &["cp", "oci:./x:v1", "./app-layout"],
            2,
            "did you mean oci:./app-layout",
        ),
        (
            &["cp", "oci:./x:v1", "app.tar"],
            2,
            "did you mean oci-archive:app.tar",
        ),
        (
            &["cp", "oci-archiv:x.tar:multi", "oci:./x"],
            2,
            "oci-archiv: is no scheme",
        ),
    ] {
        let output = run(path, args);
        let text = stderr_of(&output);
        assert_eq!(output.status.code(), Some(code), "{args:?}: {text}");
        assert!(text.contains(says), "{args:?}: {text}");
    }

    // A repository the registry does not have is named as missing, not
    // as a missing tag; a missing tag of one it has, as a missing tag.
    let registry = orca_testkit::RegistryServer::shared();
    let output = run(
        path,
        &["resolve", &format!("{}/no/such/repo:v1", registry.host())],
    );
    let text = stderr_of(&output);
    assert_eq!(output.status.code(), Some(3), "{text}");
    assert!(text.contains("repository no/such/repo not found"), "{text}");
    std::fs::write(path.join("note.txt"), b"note\n").expect("write");
    let there = format!("{}/{}", registry.host(), crate::common::unique("there"));
    let pushed = run(path, &["push", &format!("{there}:v1"), "note.txt"]);
    assert!(pushed.status.success(), "{}", stderr_of(&pushed));
    let output = run(path, &["resolve", &format!("{there}:v9")]);
    let text = stderr_of(&output);
    assert_eq!(output.status.code(), Some(3), "{text}");
    assert!(text.contains("tag v9 not found"), "{text}");

    // TLS spoken to a plain-HTTP registry: the hint says --plain-http.
    let ca = path.join("ca.pem");
    std::fs::write(&ca, b"").expect("write");
    let output = run(
        path,
        &[
            "--ca-file",
            ca.to_str().expect("utf-8"),
            "tags",
            &format!("{}/some/repo", registry.host()),
        ],
    );
    let text = stderr_of(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("hint: ") && text.contains("--plain-http"),
        "{text}"
    );
    // No AWS credentials anywhere: one hint naming the variables (the
    // metadata service asked is a closed port here, as it is off EC2).
    let output = crate::common::orca(path)
        .current_dir(path)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_METADATA_ENDPOINT", "http://127.0.0.1:9")
        .args(["tags", &format!("{}:v1", crate::common::s3("nocreds"))])
        .output()
        .expect("run orca");
    let text = stderr_of(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("hint: no AWS credentials were found: set AWS_ACCESS_KEY_ID"),
        "{text}"
    );
    // --insecure speaks plain HTTP to a registry that answers only that, as
    // crane's --insecure does, and says so.
    let output = run(
        path,
        &[
            "--insecure",
            "--ca-file",
            ca.to_str().expect("utf-8"),
            "tags",
            &there,
        ],
    );
    let text = stderr_of(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("answered plain HTTP"), "{text}");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "v1");

    // A rejected password: exit 4, and what to do.
    let secured = orca_testkit::RegistryServer::shared_htpasswd();
    let output = crate::common::with_input(
        crate::common::orca(path)
            .current_dir(path)
            .args(["-u", "orca", "--password-stdin", "tags"])
            .arg(format!("{}/some/repo", secured.host())),
        b"wrong-password\n",
    );
    let text = stderr_of(&output);
    assert_eq!(output.status.code(), Some(4), "{text}");
    assert!(
        text.contains(&format!("orca login {}", secured.host())),
        "{text}"
    );
}
