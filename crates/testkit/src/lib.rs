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
pub use image::{push_real_image, run, run_with_env};
pub use moto::MotoServer;
pub use proxy::{Faults, RecordingProxy};
pub use referrers::ReferrersFront;
pub use registry::RegistryServer;
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
