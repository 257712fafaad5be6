//! Running a server so that it never outlives the tests: a shell starts it
//! and stops it when the test process is gone, and stopping the shell
//! (SIGTERM) stops the server at once. Either way the shell then removes
//! the server's scratch directory: a server shared by a test binary lives
//! in a static, which is never dropped, so its directory would otherwise
//! stay behind after every run.

use std::process::{Child, Command, Stdio};

/// A server process under a watchdog shell.
#[derive(Debug)]
pub(crate) struct Watched {
    shell: Child,
}

impl Watched {
    /// Runs `program args…` (with `env`) under a watchdog; output goes to
    /// `log` so a failing test can show it; `scratch` is removed once the
    /// server stopped.
    pub(crate) fn spawn(
        program: &std::path::Path,
        args: &[&str],
        env: &[(&str, &str)],
        log: &std::path::Path,
        scratch: &std::path::Path,
    ) -> std::io::Result<Self> {
        let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
        let command: Vec<String> = std::iter::once(program.display().to_string())
            .chain(args.iter().map(|a| (*a).to_owned()))
            .map(|a| quote(&a))
            .collect();
        let script = format!(
            "{} >{} 2>&1 & child=$!; \
             trap 'kill $child 2>/dev/null; wait $child 2>/dev/null; rm -rf \"$ORCA_SCRATCH\"' EXIT INT TERM; \
             while kill -0 {} 2>/dev/null && kill -0 $child 2>/dev/null; do sleep 0.5; done",
            command.join(" "),
            quote(&log.display().to_string()),
            std::process::id()
        );
        let shell = Command::new("sh")
            .args(["-c", &script])
            .envs(env.iter().copied())
            .env("ORCA_SCRATCH", scratch)
            .stdin(Stdio::null())
            .spawn()?;
        Ok(Watched { shell })
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        // SIGTERM runs the watchdog's trap, which stops the server.
        let _ = Command::new("kill")
            .arg(self.shell.id().to_string())
            .status();
        let _ = self.shell.wait();
    }
}
