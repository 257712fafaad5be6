//! Per-registry settings, as `regctl registry set` and skopeo's
//! `registries.conf` keep them: how orca talks to one registry host (TLS
//! off, a CA, a client certificate, mirrors to read from first, a request
//! rate). They live in a YAML file every command and `sync` read
//! ([`RegistryFile`]); what the command line says wins over them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use orca_core::{Error, Result};

/// How orca talks to one registry host. Every field is optional: what is
/// not set keeps orca's default (or what the command line says).
#[derive(Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "settings", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "settings", serde(deny_unknown_fields))]
#[non_exhaustive]
pub struct RegistrySettings {
    /// Speak plain HTTP (`true`) or HTTPS (`false`) to it.
    #[cfg_attr(
        feature = "settings",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub plain_http: Option<bool>,
    /// Accept any TLS certificate from it.
    #[cfg_attr(
        feature = "settings",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub insecure: Option<bool>,
    /// Also trust the CA certificates in this PEM file.
    #[cfg_attr(
        feature = "settings",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub ca_file: Option<PathBuf>,
    /// A client certificate (PEM) to present to it.
    #[cfg_attr(
        feature = "settings",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub cert_file: Option<PathBuf>,
    /// The key of `cert_file` (PEM).
    #[cfg_attr(
        feature = "settings",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub key_file: Option<PathBuf>,
    /// Registries (`HOST[:PORT][/PREFIX]`) to read content from first, in
    /// order: manifests and blobs are fetched by digest from the first
    /// that has them (and verified), tags are always resolved here.
    #[cfg_attr(
        feature = "settings",
        serde(default, skip_serializing_if = "Vec::is_empty")
    )]
    pub mirrors: Vec<String>,
    /// Send at most this many requests a second to it (a `429` with
    /// `Retry-After` is honoured in any case).
    #[cfg_attr(
        feature = "settings",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub rate: Option<f64>,
}

impl RegistrySettings {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == RegistrySettings::default()
    }

    /// These settings with `over`'s set fields put over them (mirrors are
    /// replaced when `over` lists any).
    pub fn merged(&self, over: &RegistrySettings) -> RegistrySettings {
        RegistrySettings {
            plain_http: over.plain_http.or(self.plain_http),
            insecure: over.insecure.or(self.insecure),
            ca_file: over.ca_file.clone().or_else(|| self.ca_file.clone()),
            cert_file: over.cert_file.clone().or_else(|| self.cert_file.clone()),
            key_file: over.key_file.clone().or_else(|| self.key_file.clone()),
            mirrors: if over.mirrors.is_empty() {
                self.mirrors.clone()
            } else {
                over.mirrors.clone()
            },
            rate: over.rate.or(self.rate),
        }
    }

    /// Checks what cannot hold: a certificate without its key, a rate
    /// that is no positive number, a mirror that is no registry.
    pub fn check(&self, host: &str) -> Result<()> {
        let invalid = |reason: String| Error::InvalidInput {
            what: format!("the settings of registry {host}"),
            reason,
        };
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(invalid(
                "a client certificate needs its key (cert_file and key_file)".into(),
            ));
        }
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err(invalid(format!(
                "rate {rate} is not a positive number of requests a second"
            )));
        }
        for mirror in &self.mirrors {
            let (mirror_host, _) = split_mirror(mirror);
            if mirror_host.is_empty()
                || mirror.contains("://")
                || mirror.contains(char::is_whitespace)
            {
                return Err(invalid(format!(
                    "mirror {mirror:?} is not HOST[:PORT][/PREFIX]"
                )));
            }
            if mirror_host.eq_ignore_ascii_case(host) {
                return Err(invalid(format!("mirror {mirror:?} is the registry itself")));
            }
        }
        Ok(())
    }
}

/// A mirror's host, and the prefix its repositories are under (empty, or
/// ending in `/`).
pub(crate) fn split_mirror(mirror: &str) -> (&str, String) {
    let mirror = mirror.trim_end_matches('/');
    match mirror.split_once('/') {
        Some((host, prefix)) => (host, format!("{prefix}/")),
        None => (mirror, String::new()),
    }
}

/// The registry settings file: a YAML map from host (`HOST[:PORT]`) to
/// [`RegistrySettings`]. Written under a lock and renamed into place, so
/// two `orca registry set` at once both land and a reader never sees half
/// a file.
#[cfg(feature = "settings")]
#[derive(Clone, Debug)]
pub struct RegistryFile {
    path: PathBuf,
}

#[cfg(feature = "settings")]
impl RegistryFile {
    /// The file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        RegistryFile { path: path.into() }
    }

    /// The file orca reads by default: `ORCA_REGISTRIES_FILE`, else
    /// `$XDG_CONFIG_HOME/orca/registries.yaml`, else
    /// `~/.config/orca/registries.yaml`; `None` with no home directory.
    pub fn default_location() -> Option<Self> {
        if let Some(file) = std::env::var_os("ORCA_REGISTRIES_FILE") {
            return Some(RegistryFile::new(file));
        }
        let config = match std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => {
                PathBuf::from(std::env::var_os("HOME").filter(|d| !d.is_empty())?).join(".config")
            }
        };
        Some(RegistryFile::new(
            config.join("orca").join("registries.yaml"),
        ))
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The settings of every host; none when the file does not exist.
    pub fn load(&self) -> Result<BTreeMap<String, RegistrySettings>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(self.invalid(e.to_string())),
        };
        if text.trim().is_empty() {
            return Ok(BTreeMap::new());
        }
        let hosts: BTreeMap<String, RegistrySettings> =
            serde_saphyr::from_str(&text).map_err(|e| self.invalid(e.to_string()))?;
        for (host, settings) in &hosts {
            settings
                .check(host)
                .map_err(|e| self.invalid(e.to_string()))?;
        }
        Ok(hosts
            .into_iter()
            .map(|(host, settings)| (host.to_ascii_lowercase(), settings))
            .collect())
    }

    /// Changes the settings of `host` with `change` (removing the host
    /// when they end up empty), under the file's lock: a concurrent change
    /// of another host, by another process, is kept. Returns the settings
    /// the host has now.
    pub fn update(
        &self,
        host: &str,
        change: impl FnOnce(&mut RegistrySettings),
    ) -> Result<RegistrySettings> {
        let host = host.to_ascii_lowercase();
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| self.invalid(e.to_string()))?;
        // The lock is a file of its own, so the settings file itself can be
        // replaced by a rename while it is held.
        let lock_path = self.path.with_extension("yaml.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| self.invalid(format!("locking {}: {e}", lock_path.display())))?;
        lock.lock()
            .map_err(|e| self.invalid(format!("locking {}: {e}", lock_path.display())))?;
        let mut hosts = self.load()?;
        let mut settings = hosts.remove(&host).unwrap_or_default();
        change(&mut settings);
        settings
            .check(&host)
            .map_err(|e| self.invalid(e.to_string()))?;
        if !settings.is_empty() {
            hosts.insert(host, settings.clone());
        }
        let text = serde_saphyr::to_string(&hosts).map_err(|e| self.invalid(e.to_string()))?;
        let mut temp =
            tempfile::NamedTempFile::new_in(dir).map_err(|e| self.invalid(e.to_string()))?;
        std::io::Write::write_all(&mut temp, text.as_bytes())
            .and_then(|()| temp.as_file().sync_all())
            .map_err(|e| self.invalid(e.to_string()))?;
        temp.persist(&self.path)
            .map_err(|e| self.invalid(e.error.to_string()))?;
        drop(lock);
        Ok(settings)
    }

    fn invalid(&self, reason: String) -> Error {
        Error::InvalidInput {
            what: format!("registry settings file {}", self.path.display()),
            reason,
        }
    }
}

#[cfg(all(test, feature = "settings"))]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_and_merge() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = RegistryFile::new(dir.path().join("sub/registries.yaml"));
        assert!(file.load().expect("no file yet").is_empty());
        file.update("Registry.Example:5000", |s| {
            s.plain_http = Some(true);
            s.mirrors = vec!["mirror.example/cache".into()];
        })
        .expect("set");
        file.update("other.example", |s| s.rate = Some(2.5))
            .expect("set");
        let hosts = file.load().expect("load");
        assert_eq!(hosts.len(), 2);
        let first = &hosts["registry.example:5000"];
        assert_eq!(first.plain_http, Some(true));
        assert_eq!(first.mirrors, ["mirror.example/cache"]);
        assert_eq!(hosts["other.example"].rate, Some(2.5));
        // Emptied settings remove the host.
        file.update("other.example", |s| *s = RegistrySettings::default())
            .expect("clear");
        assert!(!file.load().expect("load").contains_key("other.example"));
        // A later layer wins field by field.
        let over = RegistrySettings {
            insecure: Some(true),
            ..RegistrySettings::default()
        };
        let merged = first.merged(&over);
        assert_eq!(merged.insecure, Some(true));
        assert_eq!(merged.plain_http, Some(true));
    }

    #[test]
    fn bad_settings_are_refused_and_leave_the_file_alone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = RegistryFile::new(dir.path().join("registries.yaml"));
        file.update("a.example", |s| s.rate = Some(1.0))
            .expect("set");
        let before = std::fs::read(file.path()).expect("read");
        let e = file
            .update("a.example", |s| s.rate = Some(-1.0))
            .expect_err("a negative rate");
        assert!(e.to_string().contains("positive"), "{e}");
        let e = file
            .update("a.example", |s| {
                s.mirrors = vec!["https://m.example".into()]
            })
            .expect_err("a URL for a mirror");
        assert!(e.to_string().contains("HOST[:PORT][/PREFIX]"), "{e}");
        let e = file
            .update("a.example", |s| s.cert_file = Some("c.pem".into()))
            .expect_err("a certificate without a key");
        assert!(e.to_string().contains("key"), "{e}");
        assert_eq!(std::fs::read(file.path()).expect("read"), before);
        std::fs::write(file.path(), "a.example:\n  colour: red\n").expect("write");
        let e = file.load().expect_err("an unknown field");
        assert!(e.to_string().contains("colour"), "{e}");
    }

    #[test]
    fn concurrent_updates_of_different_hosts_all_land() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("registries.yaml");
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let file = RegistryFile::new(&path);
                std::thread::spawn(move || {
                    file.update(&format!("host{i}.example"), |s| {
                        s.rate = Some(f64::from(i + 1))
                    })
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("thread").expect("update");
        }
        let hosts = RegistryFile::new(&path).load().expect("load");
        assert_eq!(hosts.len(), 8, "{hosts:?}");
    }
}
