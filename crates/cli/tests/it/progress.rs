//! Issue 22 §6: `push` and `pull` show progress. On a terminal (tmux, 80
//! columns): bars that fit its width, with a total, rate and ETA. With
//! stderr to a file (CI): a line per blob as it starts and ends, then a
//! summary.

use std::path::Path;
use std::time::{Duration, Instant};

use orca_testkit::{Faults, RecordingProxy, RegistryServer};

use crate::common::{ok, unique};

const MIB: usize = 1024 * 1024;

/// A 12 MiB file that does not compress.
fn big_file(path: &Path, name: &str) {
    let mut bytes = vec![0u8; 12 * MIB];
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for byte in bytes.iter_mut() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state as u8;
    }
    std::fs::write(path.join(name), bytes).expect("write");
}

/// Runs `script` in a detached tmux session of 80×24 and returns the first
/// screen (captured every 100 ms) that shows a line containing `wanted`,
/// with every line of it; the session ends then.
fn on_a_terminal(path: &Path, script: &str, wanted: &str) -> Vec<String> {
    let tmux = orca_testkit::require_program("tmux", "apt-get install -y tmux");
    let socket = unique("orca-tmux");
    let file = path.join(format!("{socket}.sh"));
    std::fs::write(&file, format!("{script}\nsleep 30\n")).expect("script");
    let started = std::process::Command::new(&tmux)
        .args(["-L", &socket, "new-session", "-d", "-x", "80", "-y", "24"])
        .arg(format!("sh {}", file.display()))
        .status()
        .expect("tmux");
    assert!(started.success());
    let deadline = Instant::now() + Duration::from_secs(40);
    let found = loop {
        let screen = std::process::Command::new(&tmux)
            .args(["-L", &socket, "capture-pane", "-p"])
            .output()
            .expect("capture");
        let lines: Vec<String> = String::from_utf8_lossy(&screen.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        if lines.iter().any(|l| l.contains(wanted)) {
            break Some(lines);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = std::process::Command::new(&tmux)
        .args(["-L", &socket, "kill-server"])
        .status();
    found.unwrap_or_else(|| panic!("no {wanted:?} on the terminal"))
}

/// The environment the tests' orca runs with, as shell exports.
fn exports(path: &Path) -> String {
    format!(
        "export HOME={home} DOCKER_CONFIG={home}/.docker NO_COLOR=1\ncd {home}",
        home = path.display()
    )
}

#[test]
fn push_and_pull_show_progress() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path();
    big_file(path, "big.bin");
    let registry = RegistryServer::shared();
    let slow = RecordingProxy::with_faults(
        registry.port(),
        Faults {
            link_up: Some(2 * MIB as u64),
            link_down: Some(2 * MIB as u64),
            ..Faults::default()
        },
    )
    .expect("proxy");
    let repository = unique("progress");
    let target = format!("127.0.0.1:{}/{repository}:v1", slow.port());
    let orca = env!("CARGO_BIN_EXE_orca");

    let screen = on_a_terminal(
        path,
        &format!("{}\n{orca} push {target} big.bin", exports(path)),
        "total [",
    );
    let total = screen
        .iter()
        .find(|l| l.contains("total ["))
        .expect("total");
    assert!(total.contains("/s ETA"), "{screen:#?}");
    assert!(
        screen.iter().all(|l| l.chars().count() <= 80),
        "a line is wider than the terminal: {screen:#?}"
    );

    // (The session, and the push in it, end with the capture.) The image
    // pushed at full speed, then pulled through the slow link.
    let direct = format!("{}/{repository}:v1", registry.host());
    ok(path, &["push", &direct, "big.bin"]);
    let screen = on_a_terminal(
        path,
        &format!("{}\n{orca} pull {target} -o pulled", exports(path)),
        "total [",
    );
    assert!(
        screen
            .iter()
            .any(|l| l.contains("total [") && l.contains("ETA")),
        "{screen:#?}"
    );

    // Stderr to a file: a line per blob, then the summary.
    let output = crate::common::run(path, &["pull", &direct, "-o", "again"]);
    assert!(output.status.success(), "{output:?}");
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        said.contains("started sha256:") && said.contains("done sha256:"),
        "{said}"
    );
    assert!(said.contains("pulled 1 file(s)"), "{said}");
    ok(path, &["resolve", &direct]);
}
