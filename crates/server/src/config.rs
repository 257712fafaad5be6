//! `orca serve --config FILE`: the server's settings in YAML (see
//! `docs/serve.md`), read into [`Config`]; the command line's flags go
//! over them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::auth::{Access, Auth, Rule, TokenAuth};
use crate::{Limits, TlsFiles};

/// A server configuration file.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the repositories are (`memory`, `oci:DIR`, `s3://B/P`,
    /// `SCHEME://LOCATION`).
    pub root: Option<String>,
    /// The address to listen on.
    pub listen: Option<String>,
    /// Garbage collection.
    #[serde(default)]
    pub gc: GcConfig,
    /// Limits on requests.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Who may do what.
    #[serde(default)]
    pub auth: AuthConfig,
    /// HTTPS.
    pub tls: Option<TlsConfig>,
    /// Pull-through namespaces.
    #[serde(default)]
    pub upstreams: Vec<UpstreamConfig>,
}

/// One of `upstreams:`.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The path prefix clients reach it under (`docker.io`).
    pub namespace: String,
    /// The upstream registry, `host[:port]`; its credentials and TLS
    /// settings are the client's (docker `config.json`, `orca registry`).
    pub registry: String,
    /// How long a cached tag is served without asking upstream (`5m`).
    pub fresh_for: Option<String>,
    /// Tags (globs: `v*`) never asked about again once cached.
    #[serde(default)]
    pub immutable_tags: Vec<String>,
    /// Whether one-component names get `library/` (default: for Docker
    /// Hub).
    pub library: Option<bool>,
    /// Whether bare names this server does not hold are read from here
    /// (Docker's `registry-mirrors`); one upstream at most.
    #[serde(default)]
    pub default: bool,
    /// The most the namespace's cached content may take (`20GiB`): past
    /// it, the collection evicts the images pulled least recently.
    pub budget: Option<String>,
    /// An image pulled this recently is never evicted (`10m`).
    pub keep_for: Option<String>,
    /// The user name for the upstream (with `password_file`), instead of
    /// the server's docker `config.json` and credential helpers.
    pub username: Option<String>,
    /// A file holding the upstream's password or access token (one line).
    pub password_file: Option<PathBuf>,
}

/// `gc:`.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcConfig {
    /// How often (`1h`); off when absent.
    pub every: Option<String>,
    /// What a collection keeps (`24h`).
    pub grace: Option<String>,
}

/// `limits:`.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// The largest manifest, in bytes.
    pub manifest_bytes: Option<u64>,
    /// How long a request body may send nothing (`60s`).
    pub idle_timeout: Option<String>,
    /// Refuse manifests naming content the repository lacks.
    pub refuse_sparse: Option<bool>,
    /// Uploads at once (default 256).
    pub uploads: Option<usize>,
    /// The largest blob, in bytes (no limit when absent).
    pub blob_bytes: Option<u64>,
    /// The most a page of the Referrers API holds, in bytes (1 MiB).
    pub referrers_page_bytes: Option<usize>,
}

/// `auth:`.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// What a request without credentials may do: `none`, `read` or
    /// `write` (default `read` once users or tokens are configured).
    pub anonymous: Option<Access>,
    /// An htpasswd file of bcrypt hashes.
    pub htpasswd: Option<PathBuf>,
    /// Per-repository rules for htpasswd users.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Bearer tokens from an external token service.
    pub token: Option<TokenConfig>,
}

/// `auth: token:`.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Where clients get tokens.
    pub realm: String,
    /// The service tokens are issued for.
    pub service: String,
    /// The issuer tokens name.
    pub issuer: String,
    /// The PEM certificate or public key tokens are signed with.
    pub key: PathBuf,
}

/// `tls:`.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// CA certificates clients must present a certificate from (PEM);
    /// no client certificates are asked for when absent.
    pub client_ca: Option<PathBuf>,
}

fn duration(text: &str, what: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{what} {text:?}: {e}"))
}

impl Config {
    /// Reads the file at `path`; what is wrong is said with the file's
    /// name.
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The pull-through namespaces, their registries reached with
    /// `options` (credentials, TLS, per-registry settings).
    pub fn upstreams(&self, options: &orca::OpenOptions) -> Result<Vec<crate::Upstream>, String> {
        let mut upstreams = Vec::new();
        for upstream in &self.upstreams {
            let what = format!("upstreams: {}", upstream.namespace);
            orca::model::reference::validate_repository(&upstream.namespace)
                .map_err(|e| format!("{what}: the namespace must be a repository path: {e}"))?;
            let fresh_for = match &upstream.fresh_for {
                Some(text) => duration(text, &format!("{what}: fresh_for"))?,
                None => Duration::from_secs(300),
            };
            let budget = match &upstream.budget {
                Some(text) => Some(
                    orca::parse_size(text).map_err(|e| format!("{what}: budget {text:?}: {e}"))?,
                ),
                None => None,
            };
            if budget.is_some() && self.gc.every.is_none() {
                return Err(format!(
                    "{what}: a budget needs gc.every: the collection removes what eviction frees"
                ));
            }
            let keep_for = match &upstream.keep_for {
                Some(text) => duration(text, &format!("{what}: keep_for"))?,
                None => Duration::from_secs(600),
            };
            let mut own = options.clone();
            match (&upstream.username, &upstream.password_file) {
                (Some(user), Some(file)) => {
                    let password = std::fs::read_to_string(file)
                        .map_err(|e| format!("{what}: password_file {}: {e}", file.display()))?;
                    let password = password.trim_end_matches(['\n', '\r']).to_owned();
                    own.credentials = Some((user.clone(), password));
                }
                (None, None) => {}
                _ => {
                    return Err(format!("{what}: username and password_file go together"));
                }
            }
            let registry = orca::registry(&upstream.registry, &own)
                .map_err(|e| format!("{what}: {}: {e}", upstream.registry))?;
            let hub = crate::cache::docker_hub(&upstream.registry);
            upstreams.push(crate::Upstream {
                namespace: upstream.namespace.clone(),
                registry,
                library: upstream.library.unwrap_or(hub),
                fresh_for,
                immutable: upstream.immutable_tags.clone(),
                default: upstream.default,
                budget,
                keep_for,
            });
        }
        if upstreams.iter().filter(|u| u.default).count() > 1 {
            return Err("upstreams: at most one may be the default".into());
        }
        Ok(upstreams)
    }

    /// The collection interval and grace, if collection is on.
    pub fn gc(&self) -> Result<Option<(Duration, Duration)>, String> {
        let Some(every) = &self.gc.every else {
            return Ok(None);
        };
        let grace = match &self.gc.grace {
            Some(grace) => duration(grace, "gc.grace")?,
            None => Duration::from_secs(24 * 60 * 60),
        };
        Ok(Some((duration(every, "gc.every")?, grace)))
    }

    /// The limits it sets, over the defaults.
    pub fn limits(&self) -> Result<Limits, String> {
        let mut limits = Limits::default();
        if let Some(bytes) = self.limits.manifest_bytes {
            limits.manifest = bytes;
        }
        if let Some(idle) = &self.limits.idle_timeout {
            limits.idle = duration(idle, "limits.idle_timeout")?;
        }
        if let Some(refuse) = self.limits.refuse_sparse {
            limits.refuse_sparse = refuse;
        }
        if let Some(uploads) = self.limits.uploads {
            limits.uploads = uploads;
        }
        if let Some(bytes) = self.limits.blob_bytes {
            limits.blob = Some(bytes);
        }
        if let Some(bytes) = self.limits.referrers_page_bytes {
            limits.referrers_page = bytes.max(1);
        }
        Ok(limits)
    }

    /// Who may do what.
    pub fn auth(&self) -> Result<Auth, String> {
        let auth = &self.auth;
        match (&auth.htpasswd, &auth.token) {
            (Some(_), Some(_)) => Err("auth: give htpasswd or token, not both".into()),
            (Some(htpasswd), None) => Auth::htpasswd(
                htpasswd,
                auth.anonymous.unwrap_or(Access::Read),
                auth.rules.clone(),
            ),
            (None, Some(token)) => {
                if !auth.rules.is_empty() {
                    return Err(
                        "auth: rules are for htpasswd users; a token grants its own access".into(),
                    );
                }
                let checked =
                    TokenAuth::new(&token.realm, &token.service, &token.issuer, &token.key)?;
                Ok(Auth::token(checked, auth.anonymous.unwrap_or(Access::Read)))
            }
            (None, None) if !auth.rules.is_empty() || auth.anonymous.is_some() => {
                Err("auth: rules and anonymous need htpasswd or token".into())
            }
            (None, None) => Ok(Auth::default()),
        }
    }

    /// The TLS files, if HTTPS is on.
    pub fn tls(&self) -> Option<TlsFiles> {
        self.tls.as_ref().map(|tls| TlsFiles {
            cert: tls.cert.clone(),
            key: tls.key.clone(),
            client_ca: tls.client_ca.clone(),
        })
    }
}
