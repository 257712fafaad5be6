//! Credentials from docker's `config.json`, found the way docker finds them:
//! a per-registry credential helper (`credHelpers`), else the default store
//! (`credsStore`), else `auths` (base64 `user:password`, or an identity
//! token). Helpers are `docker-credential-<name>` programs speaking the
//! docker credential-helper protocol (`get`, host on stdin, JSON out).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use orca_core::{Error, Result};
use serde::Deserialize;

use crate::auth::Credentials;

/// The key Docker Hub's credentials are stored under.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct File {
    #[serde(default)]
    auths: HashMap<String, Entry>,
    #[serde(default)]
    pub(crate) creds_store: Option<String>,
    #[serde(default)]
    pub(crate) cred_helpers: HashMap<String, String>,
}

#[derive(Default, Deserialize)]
struct Entry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("Entry")
            .field("username", &self.username)
            .field("auth", &hidden(&self.auth))
            .field("password", &hidden(&self.password))
            .field("identitytoken", &hidden(&self.identitytoken))
            .finish()
    }
}

/// A loaded docker `config.json`.
#[derive(Debug, Default)]
pub struct DockerConfig {
    pub(crate) file: File,
    source: Option<PathBuf>,
    helper_dirs: Option<Vec<PathBuf>>,
    helper_timeout: std::time::Duration,
}

/// How long a credential helper may take to answer: long enough for a
/// keychain that asks for a password, short enough that a helper waiting
/// for one that never comes does not hang orca in silence.
const HELPER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl DockerConfig {
    /// Loads `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`; a
    /// missing file is an empty configuration (anonymous access).
    pub fn load_default() -> Result<Self> {
        let dir = std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")));
        match dir {
            Some(dir) if dir.join("config.json").exists() => Self::load(&dir.join("config.json")),
            _ => Ok(DockerConfig::default()),
        }
    }

    /// Loads a `config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidInput {
            what: format!("docker config {}", path.display()),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| invalid(format!("cannot be read ({e})")))?;
        let file: File =
            serde_json::from_slice(&bytes).map_err(|e| invalid(format!("is not valid ({e})")))?;
        Ok(DockerConfig {
            file,
            source: Some(path.to_owned()),
            helper_dirs: None,
            helper_timeout: HELPER_TIMEOUT,
        })
    }

    /// Looks for credential helpers in these directories instead of `PATH`.
    pub fn with_helper_dirs(mut self, dirs: Vec<PathBuf>) -> Self {
        self.helper_dirs = Some(dirs);
        self
    }

    /// How long a credential helper may take before it is stopped and the
    /// lookup fails (default 30 s).
    pub fn with_helper_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.helper_timeout = timeout;
        self
    }

    fn keys(host: &str) -> Vec<String> {
        if host == "docker.io" || host == "index.docker.io" || host == "registry-1.docker.io" {
            return vec![
                DOCKER_HUB_KEY.to_owned(),
                "docker.io".to_owned(),
                "index.docker.io".to_owned(),
            ];
        }
        vec![
            host.to_owned(),
            format!("https://{host}"),
            format!("http://{host}"),
        ]
    }

    /// The credentials for `host` (`Anonymous` when none are configured).
    pub fn credentials_for(&self, host: &str) -> Result<Credentials> {
        let keys = Self::keys(host);
        if let Some(helper) = keys.iter().find_map(|k| self.file.cred_helpers.get(k)) {
            return self.ask_helper(helper, &keys[0]);
        }
        if let Some(store) = &self.file.creds_store {
            let found = self.ask_helper(store, &keys[0])?;
            if !matches!(found, Credentials::Anonymous) {
                return Ok(found);
            }
        }
        let Some(entry) = keys.iter().find_map(|k| self.file.auths.get(k)) else {
            return Ok(Credentials::Anonymous);
        };
        if let Some(token) = entry.identitytoken.as_ref().filter(|t| !t.is_empty()) {
            return Ok(Credentials::IdentityToken(token.clone()));
        }
        if let (Some(user), Some(password)) = (&entry.username, &entry.password) {
            return Ok(Credentials::basic(user, password));
        }
        if let Some(auth) = &entry.auth {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|text| {
                    text.split_once(':')
                        .map(|(u, p)| (u.to_owned(), p.to_owned()))
                });
            return match decoded {
                Some((user, password)) => Ok(Credentials::basic(user, password)),
                None => Err(self.invalid(format!(
                    "the auth entry for {host} is not base64 of user:password"
                ))),
            };
        }
        Ok(Credentials::Anonymous)
    }

    fn invalid(&self, reason: String) -> Error {
        Error::InvalidInput {
            what: format!(
                "docker config {}",
                self.source
                    .as_ref()
                    .map_or("(default)".into(), |p| p.display().to_string())
            ),
            reason,
        }
    }

    fn find_helper(&self, name: &str) -> Option<PathBuf> {
        let program = format!("docker-credential-{name}");
        match &self.helper_dirs {
            Some(dirs) => dirs.iter().map(|d| d.join(&program)).find(|p| p.is_file()),
            None => std::env::var_os("PATH").and_then(|path| {
                std::env::split_paths(&path)
                    .map(|d| d.join(&program))
                    .find(|p| p.is_file())
            }),
        }
    }

    /// Runs `docker-credential-<name> <action>` with `input` on its stdin
    /// (the credential-helper protocol) and returns what it did, whatever
    /// its exit status.
    pub(crate) fn run_helper(
        &self,
        name: &str,
        action: &str,
        input: &[u8],
    ) -> Result<std::process::Output> {
        let helper = self.find_helper(name).ok_or_else(|| {
            self.invalid(format!(
                "credential helper docker-credential-{name} is not installed"
            ))
        })?;
        let failed = |reason: String| self.invalid(format!("credential helper {name}: {reason}"));
        let mut child = Command::new(&helper)
            .arg(action)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| failed(format!("cannot run ({e})")))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(input)
                .map_err(|e| failed(format!("cannot be told what to {action} ({e})")))?;
        }
        // Read what it says on threads of their own (a full pipe would stop
        // it), and wait for it no longer than the deadline.
        let read = |pipe: Option<Box<dyn std::io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut out = Vec::new();
                if let Some(mut pipe) = pipe {
                    let _ = std::io::Read::read_to_end(&mut pipe, &mut out);
                }
                out
            })
        };
        let stdout = read(
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        );
        let stderr = read(
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        );
        let deadline = std::time::Instant::now() + self.helper_timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(failed(format!(
                        "gave no answer within {} s and was stopped (is it waiting for a password or a locked keychain?)",
                        self.helper_timeout.as_secs()
                    )));
                }
                Err(e) => return Err(failed(format!("did not finish ({e})"))),
            }
        };
        Ok(std::process::Output {
            status,
            stdout: stdout.join().unwrap_or_default(),
            stderr: stderr.join().unwrap_or_default(),
        })
    }

    /// Runs `docker-credential-<name> get` for `server`.
    fn ask_helper(&self, name: &str, server: &str) -> Result<Credentials> {
        let failed = |reason: String| self.invalid(format!("credential helper {name}: {reason}"));
        let output = self.run_helper(name, "get", server.as_bytes())?;
        if !output.status.success() {
            let said = String::from_utf8_lossy(&output.stdout);
            // "credentials not found" is an answer, not a failure.
            if said.contains("credentials not found") {
                return Ok(Credentials::Anonymous);
            }
            return Err(failed(format!("exited with {}", output.status)));
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Answer {
            username: String,
            secret: String,
        }
        let answer: Answer = serde_json::from_slice(&output.stdout).map_err(|_| {
            failed("answered something that is not {\"Username\",\"Secret\"}".into())
        })?;
        if answer.username == "<token>" {
            return Ok(Credentials::IdentityToken(answer.secret));
        }
        Ok(Credentials::basic(answer.username, answer.secret))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> DockerConfig {
        DockerConfig {
            file: serde_json::from_str(json).expect("config"),
            source: None,
            helper_dirs: Some(Vec::new()),
            helper_timeout: HELPER_TIMEOUT,
        }
    }

    #[test]
    fn auths_entries() {
        let c = config(
            r#"{"auths":{"reg.example":{"auth":"dXNlcjpwYXNz"},"https://index.docker.io/v1/":{"identitytoken":"tok"}}}"#,
        );
        assert!(
            matches!(c.credentials_for("reg.example").expect("basic"), Credentials::Basic { ref username, ref password } if username == "user" && password == "pass")
        );
        assert!(
            matches!(c.credentials_for("docker.io").expect("hub"), Credentials::IdentityToken(ref t) if t == "tok")
        );
        assert!(matches!(
            c.credentials_for("other.example").expect("none"),
            Credentials::Anonymous
        ));
        let bad = config(r#"{"auths":{"reg.example":{"auth":"!!"}}}"#);
        assert!(
            bad.credentials_for("reg.example")
                .expect_err("bad")
                .to_string()
                .contains("not base64")
        );
    }

    /// Backends review m8: a helper that never answers (a keychain waiting
    /// for a password) is stopped at the deadline, with an error that
    /// says why.
    #[cfg(unix)]
    #[test]
    fn m8_a_helper_that_never_answers_is_stopped() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("orca-helper-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let helper = dir.join("docker-credential-stuck");
        std::fs::write(&helper, "#!/bin/sh\nexec sleep 600\n").expect("helper");
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).expect("mode");
        let c = config(r#"{"credHelpers":{"reg.example":"stuck"}}"#)
            .with_helper_dirs(vec![dir.clone()])
            .with_helper_timeout(std::time::Duration::from_millis(500));
        let started = std::time::Instant::now();
        let err = c.credentials_for("reg.example").expect_err("stuck");
        assert!(err.to_string().contains("no answer within"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_missing_helper_is_named() {
        let c = config(r#"{"credHelpers":{"reg.example":"nonexistent"}}"#);
        let err = c
            .credentials_for("reg.example")
            .expect_err("missing helper");
        assert!(
            err.to_string().contains("docker-credential-nonexistent"),
            "{err}"
        );
    }
}
