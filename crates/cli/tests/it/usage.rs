//! Mistakes and failures: the exit status says which (2 usage, 1
//! failure), and the message is short and names what was wrong.

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
    assert_eq!(output.status.code(), Some(1), "{}", stderr_of(&output));
    let text = stderr_of(&output);
    assert!(text.starts_with("orca: "), "{text}");
    assert!(text.contains("tag v9 not found"), "{text}");
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
