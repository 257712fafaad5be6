//! The README's promises, run as written: `scripts/demo` with the binary
//! under test, and every command of the quick start against an
//! `orca serve memory` of the test's own (in place of `localhost:5000`).

use std::path::Path;

use crate::common::orca;

fn readme() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    std::fs::read_to_string(path).expect("README.md")
}

#[test]
fn the_demo_runs_as_written() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/demo");
    let output = std::process::Command::new(script)
        .env("ORCA", env!("CARGO_BIN_EXE_orca"))
        .env("DEMO_DIR", dir.path())
        .output()
        .expect("run scripts/demo");
    assert!(
        output.status.success(),
        "scripts/demo failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(said.contains("v1") && said.contains("README.md"), "{said}");
}

#[test]
fn the_quick_start_runs_as_written() {
    let text = readme();
    let start = text
        .find("<!-- quickstart -->")
        .expect("quick start marker");
    let end = text.find("<!-- /quickstart -->").expect("quick start end");
    let commands: Vec<&str> = text[start..end]
        .lines()
        .filter(|l| l.starts_with("orca "))
        .collect();
    assert!(commands.len() >= 5, "{commands:?}");
    let dir = tempfile::tempdir().expect("temporary directory");
    let readme_copy = dir.path().join("README.md");
    std::fs::write(&readme_copy, &text).expect("copy README.md");
    let serving = crate::serve::Serving::start(dir.path(), "memory", &[]);
    let host = serving.host().to_owned();
    let repository = "quick";
    for command in commands {
        let line = command
            .replace("localhost:5000/quick", &format!("{host}/{repository}"))
            .replace("localhost:5000", &host);
        let args: Vec<&str> = line.split_whitespace().skip(1).collect();
        let output = orca(dir.path())
            .current_dir(dir.path())
            .args(&args)
            .output()
            .expect("run orca");
        assert!(
            output.status.success(),
            "quick start step `{command}` failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("pulled/README.md")).expect("pulled README"),
        text
    );
}
