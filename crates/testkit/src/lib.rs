//! orca-testkit: helpers for tests that use real servers and peer tools.
//! A missing program fails the test with the command that installs it;
//! nothing is ever skipped.

use std::net::TcpListener;
use std::path::PathBuf;

mod attach;
mod image;
mod moto;
mod proxy;
mod referrers;
mod registry;
mod token;
mod umoci;
mod watchdog;

pub use attach::{
    ATTACH_PREFIX_ENV, ATTACH_PROCESSES, ATTACHES_PER_PROCESS, attach_from_processes, attach_many,
    attach_subject,
};
pub use image::{layer_of, push_layered_image, push_real_image, run, run_with_env};
pub use moto::MotoServer;
pub use proxy::{Faults, RecordingProxy};
pub use referrers::ReferrersFront;
pub use registry::{RegistryServer, tls_files};
pub use token::{ISSUER as TOKEN_ISSUER, SERVICE as TOKEN_SERVICE, TokenIssuer};
pub use umoci::umoci_image;

/// Where to find the program `name`, or a panic saying how to install it
/// (`scripts/setup` installs everything the tests use).
pub fn require_program(name: &str, install: &str) -> PathBuf {
    find_program(name).unwrap_or_else(|| {
        panic!(
            "`{name}` is not installed, and this test needs it. Run `scripts/setup`, or: {install}"
        )
    })
}

/// Looks `name` up on `PATH`.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// The path of a plugin library the workspace built (`orca_plugin_fs`),
/// next to the running test or bench executable; a failure says how to
/// build it.
pub fn plugin_library(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    // target/<profile>/deps/<exe> → target/<profile>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory");
    let path = dir.join(format!(
        "{}{name}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    assert!(
        path.exists(),
        "{} is missing: build the plugins first (scripts/test does): cargo build [--release] -p {}",
        path.display(),
        name.replace('_', "-")
    );
    path
}

/// This process's resident set now, in KiB (0 where `/proc` is missing).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs_on_path() {
        assert!(find_program("sh").is_some(), "sh is on every PATH");
        assert!(find_program("surely-not-a-program-orca").is_none());
    }

    #[test]
    #[should_panic(expected = "apt-get install -y nothing")]
    fn missing_program_names_the_install_command() {
        require_program("surely-not-a-program-orca", "apt-get install -y nothing");
    }

    #[test]
    fn free_ports_can_be_bound() {
        let port = free_port().expect("port");
        assert_ne!(port, 0);
        TcpListener::bind(("127.0.0.1", port)).expect("bind the free port");
    }
}
