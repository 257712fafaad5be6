//! `login` and `logout`: checking credentials against a registry, and
//! keeping them where docker keeps them — the configured credential
//! helper (`credHelpers` for the host, else `credsStore`), or else the
//! `auths` of `config.json` — so docker, oras and skopeo see the same.
//! The file is rewritten atomically, readable by its owner only, with
//! everything else in it kept.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use orca_core::{Error, Result};
use reqwest::{Method, StatusCode};

use crate::client::Request;
use crate::docker_config::DockerConfig;
use crate::error::{convert, read_error};
use crate::registry::Registry;

impl Registry {
    /// Asks the registry's API root (`GET /v2/`) with the credentials it
    /// was built with: `Unauthorized` when they do not work.
    pub async fn check_credentials(&self) -> Result<()> {
        let request = Request::new(Method::GET, self.client.url("/v2/"));
        let response = self.client.send(&request, "", "login").await?;
        match response.status() {
            status if status.is_success() => Ok(()),
            StatusCode::NOT_FOUND => Ok(()),
            _ => {
                let error = read_error(response).await;
                Err(convert(
                    error,
                    &self.client.host,
                    "login",
                    "credentials".into(),
                    None,
                ))
            }
        }
    }
}

/// Where credentials went.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kept {
    /// In `config.json`'s `auths`, at this path.
    File(PathBuf),
    /// With the credential helper `docker-credential-<name>`.
    Helper(String),
}

impl DockerConfig {
    /// The `config.json` docker reads: `$DOCKER_CONFIG/config.json`, else
    /// `~/.docker/config.json`.
    pub fn default_path() -> Option<PathBuf> {
        std::env::var_os("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
            .map(|dir| dir.join("config.json"))
    }

    /// Keeps `username`/`password` for `host`, as `docker login` does.
    pub fn store_login(path: &Path, host: &str, username: &str, password: &str) -> Result<Kept> {
        let config = Self::load_or_empty(path)?;
        let key = Self::login_key(host);
        if let Some(helper) = config.helper_for(&key) {
            let request = serde_json::json!({
                "ServerURL": key,
                "Username": username,
                "Secret": password,
            });
            config.change_helper(&helper, "store", request.to_string().as_bytes())?;
            return Ok(Kept::Helper(helper));
        }
        let mut file = read_value(path)?;
        let auth =
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
        let root = object(&mut file, path)?;
        let auths = root.entry("auths").or_insert_with(|| serde_json::json!({}));
        let auths = auths.as_object_mut().ok_or_else(|| Error::InvalidInput {
            what: format!("docker config {}", path.display()),
            reason: "its auths is not an object".into(),
        })?;
        auths.insert(key, serde_json::json!({ "auth": auth }));
        write_value(path, &file)?;
        Ok(Kept::File(path.to_owned()))
    }

    /// Forgets the credentials for `host`; `false` when there were none
    /// in the file (a helper is asked to erase regardless).
    pub fn erase_login(path: &Path, host: &str) -> Result<bool> {
        let config = Self::load_or_empty(path)?;
        let key = Self::login_key(host);
        if let Some(helper) = config.helper_for(&key) {
            config.change_helper(&helper, "erase", key.as_bytes())?;
            return Ok(true);
        }
        if !path.exists() {
            return Ok(false);
        }
        let mut file = read_value(path)?;
        let root = object(&mut file, path)?;
        let removed = root
            .get_mut("auths")
            .and_then(|a| a.as_object_mut())
            .is_some_and(|auths| {
                let keys: Vec<String> = auths
                    .keys()
                    .filter(|k| Self::same_host(k, host))
                    .cloned()
                    .collect();
                for k in &keys {
                    auths.remove(k);
                }
                !keys.is_empty()
            });
        if removed {
            write_value(path, &file)?;
        }
        Ok(removed)
    }

    fn load_or_empty(path: &Path) -> Result<Self> {
        if path.exists() {
            Self::load(path)
        } else {
            Ok(DockerConfig::default())
        }
    }

    /// The key docker files a host's credentials under.
    fn login_key(host: &str) -> String {
        match host {
            "docker.io" | "index.docker.io" | "registry-1.docker.io" => {
                "https://index.docker.io/v1/".to_owned()
            }
            _ => host.to_owned(),
        }
    }

    fn same_host(key: &str, host: &str) -> bool {
        let wanted = Self::login_key(host);
        let bare = key
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/');
        key == wanted || bare == host
    }

    fn helper_for(&self, key: &str) -> Option<String> {
        self.file
            .cred_helpers
            .get(key)
            .or(self.file.creds_store.as_ref())
            .cloned()
    }

    /// Has the helper `store` or `erase`, and fails when it says no.
    fn change_helper(&self, name: &str, action: &str, input: &[u8]) -> Result<()> {
        let output = self.run_helper(name, action, input)?;
        if !output.status.success() {
            return Err(Error::InvalidInput {
                what: format!("credential helper docker-credential-{name}"),
                reason: format!("{action} exited with {}", output.status),
            });
        }
        Ok(())
    }
}

fn read_value(path: &Path) -> Result<serde_json::Value> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::InvalidInput {
            what: format!("docker config {}", path.display()),
            reason: format!("is not valid JSON ({e})"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(serde_json::json!({})),
        Err(e) => Err(Error::InvalidInput {
            what: format!("docker config {}", path.display()),
            reason: format!("cannot be read ({e})"),
        }),
    }
}

fn object<'a>(
    value: &'a mut serde_json::Value,
    path: &Path,
) -> Result<&'a mut serde_json::Map<String, serde_json::Value>> {
    value.as_object_mut().ok_or_else(|| Error::InvalidInput {
        what: format!("docker config {}", path.display()),
        reason: "it is not a JSON object".into(),
    })
}

/// Replaces the file atomically, readable by its owner only.
fn write_value(path: &Path, value: &serde_json::Value) -> Result<()> {
    let failed = |e: std::io::Error| Error::InvalidInput {
        what: format!("docker config {}", path.display()),
        reason: format!("cannot be written ({e})"),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    let temp = path.with_extension(format!("json.orca-{}", std::process::id()));
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| failed(std::io::Error::other(e)))?;
    let written = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&temp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        // The rename lasts only once the directory is on disk too.
        match path.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(dir) => std::fs::File::open(dir)?.sync_all(),
            None => Ok(()),
        }
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written.map_err(failed)
}
