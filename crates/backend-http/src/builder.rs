//! [`RegistryBuilder`]: a [`Registry`] for a host, with credentials, TLS
//! settings and upload tuning.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use orca_core::capabilities::DEFAULT_MAX_MANIFEST_SIZE;
use orca_core::{Error, Result};

use crate::auth::Credentials;
use crate::client::{Client, Clients, LazyClient, Notice, Retry};
use crate::registry::Registry;
use crate::repository::Options;

/// Builds a [`Registry`].
#[derive(Clone)]
pub struct RegistryBuilder {
    host: String,
    credentials: Credentials,
    plain_http: Option<bool>,
    insecure: bool,
    ca_file: Option<PathBuf>,
    identity: Option<(PathBuf, PathBuf)>,
    idle_timeout: Duration,
    response_timeout: Duration,
    options: Options,
    retry: Retry,
    notice: Option<Notice>,
}

impl std::fmt::Debug for RegistryBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryBuilder")
            .field("host", &self.host)
            .field("credentials", &self.credentials)
            .field("plain_http", &self.plain_http)
            .field("idle_timeout", &self.idle_timeout)
            .field("response_timeout", &self.response_timeout)
            .finish_non_exhaustive()
    }
}

/// How long a transfer may make no progress (an upload not sent on, a
/// download not read on) before orca gives up on the connection and
/// retries or resumes: long enough for a busy registry, short enough that
/// a stuck connection does not hang a copy. Never a limit on how long a
/// transfer takes.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a request may wait for the response head once it is sent: with
/// the default four attempts, a server that accepts connections and never
/// answers ends a command in about two minutes.
const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

impl RegistryBuilder {
    /// A builder for `host[:port]` (`docker.io` means Docker Hub's API host).
    pub fn new(host: impl Into<String>) -> Self {
        RegistryBuilder {
            host: host.into(),
            credentials: Credentials::Anonymous,
            plain_http: None,
            insecure: false,
            ca_file: None,
            identity: None,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            notice: None,
            options: Options {
                max_metadata_size: DEFAULT_MAX_MANIFEST_SIZE,
                chunk_threshold: 256 * 1024 * 1024,
                chunk_size: 16 * 1024 * 1024,
                sessions: None,
            },
            retry: Retry::default(),
        }
    }

    /// Credentials to present.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// Speak plain HTTP. By default only loopback hosts (`localhost`,
    /// `127.*`, `[::1]`) do; every other host needs TLS.
    pub fn plain_http(mut self, plain: bool) -> Self {
        self.plain_http = Some(plain);
        self
    }

    /// Accept any TLS certificate (explicitly insecure).
    pub fn insecure(mut self, insecure: bool) -> Self {
        self.insecure = insecure;
        self
    }

    /// Trust the CA certificates in this PEM file as well.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// Present this client certificate and key (PEM files) to registries
    /// that ask for one (mutual TLS).
    pub fn client_identity(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.identity = Some((cert.into(), key.into()));
        self
    }

    /// How long a transfer may make no progress before the connection
    /// counts as stalled: an upload whose body is not sent on fails, and a
    /// stalled download resumes with `Range` (default 60 s). A transfer
    /// that keeps moving is never cut, however long it takes.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout.max(Duration::from_millis(10));
        self
    }

    /// How long a sent request may wait for the response head before it
    /// is tried again (default 30 s).
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout.max(Duration::from_millis(10));
        self
    }

    /// Calls `notice` with a line for people each time a request is tried
    /// again after a timeout or a failed connection.
    pub fn on_retry(mut self, notice: Notice) -> Self {
        self.notice = Some(notice);
        self
    }

    /// Blobs larger than this are uploaded in chunks.
    pub fn chunk_threshold(mut self, bytes: u64) -> Self {
        self.options.chunk_threshold = bytes;
        self
    }

    /// Size of upload chunks (raised to the registry's minimum if it says one).
    pub fn chunk_size(mut self, bytes: u64) -> Self {
        self.options.chunk_size = bytes.max(1);
        self
    }

    /// Remember open chunked uploads in `dir`, so an upload a killed or
    /// cancelled process left is continued by the next push of the same
    /// blob to the same repository (capability `resume`). Off by default.
    pub fn resume_uploads(mut self, dir: impl Into<PathBuf>) -> Self {
        self.options.sessions = Some(crate::sessions::Sessions::new(dir.into()));
        self
    }

    /// Largest manifest or metadata response read.
    pub fn max_metadata_size(mut self, bytes: u64) -> Self {
        self.options.max_metadata_size = bytes;
        self
    }

    /// Attempts per request for transient failures (at least 1).
    pub fn retries(mut self, attempts: u32) -> Self {
        self.retry.attempts = attempts.max(1);
        self
    }

    /// Sends at most this many requests a second to the host, across
    /// every repository and task of the registry handle (none: no limit).
    pub fn requests_per_second(mut self, rate: Option<f64>) -> Self {
        // At least one request an hour: a rate near zero would otherwise
        // overflow the pause between requests (backends m11).
        self.retry.pace = rate.filter(|r| r.is_finite() && *r > 0.0).map(|r| {
            Duration::try_from_secs_f64(1.0 / r).map_or(Duration::from_secs(3600), |d| {
                d.min(Duration::from_secs(3600))
            })
        });
        self
    }

    /// Whether `host[:port]` names this machine: `localhost`, or an
    /// address in 127.0.0.0/8 or `::1` — parsed, so `127.corp.example`
    /// is not loopback.
    fn is_loopback(host: &str) -> bool {
        let name = match host.strip_prefix('[') {
            Some(rest) => rest.split(']').next().unwrap_or(rest),
            None => host
                .rsplit_once(':')
                .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
                .map_or(host, |(name, _)| name),
        };
        name.eq_ignore_ascii_case("localhost")
            || name
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// The HTTP client of this registry with `redirects`: its timeouts
    /// (reqwest's read timeout only when `read_timeout`: it would cut an
    /// upload that takes long), trusted roots and client certificate.
    fn client(
        &self,
        redirects: reqwest::redirect::Policy,
        read_timeout: bool,
    ) -> Result<reqwest::Client> {
        let invalid = |reason: String| Error::InvalidInput {
            what: format!("registry {:?}", self.host),
            reason,
        };
        let mut http = reqwest::Client::builder()
            .redirect(redirects)
            .user_agent(concat!("orca/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .danger_accept_invalid_certs(self.insecure);
        if read_timeout {
            http = http.read_timeout(self.idle_timeout);
        }
        if let Some(path) = &self.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| invalid(format!("cannot read CA file {}: {e}", path.display())))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| invalid(format!("CA file {} is not PEM: {e}", path.display())))?
            {
                http = http.add_root_certificate(cert);
            }
        }
        if let Some((cert, key)) = &self.identity {
            let mut pem = std::fs::read(cert).map_err(|e| {
                invalid(format!(
                    "cannot read certificate file {}: {e}",
                    cert.display()
                ))
            })?;
            pem.push(b'\n');
            pem.extend(
                std::fs::read(key)
                    .map_err(|e| invalid(format!("cannot read key file {}: {e}", key.display())))?,
            );
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                invalid(format!(
                    "{} and {} are not a PEM certificate and key: {e}",
                    cert.display(),
                    key.display()
                ))
            })?;
            http = http.identity(identity);
        }
        http.build().map_err(|e| Error::Backend {
            backend: self.host.clone(),
            operation: "configure",
            source: Box::new(e),
        })
    }

    /// Builds the registry handle. Nothing is contacted yet.
    pub fn build(self) -> Result<Registry> {
        let invalid = |reason: String| Error::InvalidInput {
            what: format!("registry {:?}", self.host),
            reason,
        };
        orca_core::Reference::parse(&format!("{}/probe", self.host))
            .map_err(|e| invalid(e.to_string()))?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let api_host = if self.host == "docker.io" {
            "registry-1.docker.io".to_owned()
        } else {
            self.host.clone()
        };
        let plain = self
            .plain_http
            .unwrap_or_else(|| Self::is_loopback(&self.host));
        let scheme = if plain { "http" } else { "https" };
        let http = self.client(redirects(), true)?;
        let upload = {
            let builder = self.clone();
            LazyClient::new(move || builder.client(redirects(), false))
        };
        // The token service gets credentials: it is followed nowhere.
        let token = {
            let builder = self.clone();
            LazyClient::new(move || builder.client(reqwest::redirect::Policy::none(), true))
        };
        let client = Client::new(
            Clients {
                http,
                token,
                upload,
                limits: crate::watch::Limits {
                    idle: self.idle_timeout,
                    response: self.response_timeout,
                },
                notice: self.notice.clone(),
            },
            format!("{scheme}://{api_host}"),
            self.host.clone(),
            self.credentials,
            self.retry,
        );
        Ok(Registry {
            client: Arc::new(client),
            options: Arc::new(self.options),
            referrers_api: Arc::default(),
        })
    }
}

/// Redirects (to a CDN or a bucket) are followed, never from HTTPS down
/// to plain HTTP; reqwest drops credentials on any redirect to another
/// host.
fn redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let downgrade = attempt.url().scheme() != "https"
            && attempt.previous().iter().any(|u| u.scheme() == "https");
        if downgrade {
            attempt.error("a redirect from HTTPS to plain HTTP was refused")
        } else if attempt.previous().len() > 10 {
            attempt.error("more than 10 redirects")
        } else {
            attempt.follow()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::RegistryBuilder;

    /// Backends review m11: a rate near zero is one request an hour, not
    /// a panic.
    #[test]
    fn m11_a_tiny_rate_does_not_panic() {
        for rate in [1e-30, f64::MIN_POSITIVE, 1e-300] {
            RegistryBuilder::new("127.0.0.1:5000")
                .requests_per_second(Some(rate))
                .build()
                .expect("built");
        }
    }

    #[test]
    fn loopback_is_decided_from_the_address() {
        for host in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
            "[::1]",
        ] {
            assert!(RegistryBuilder::is_loopback(host), "{host}");
        }
        for host in [
            "127.corp.example",
            "127.corp.example:5000",
            "registry.example",
            "10.0.0.1:5000",
            "[2001:db8::1]:5000",
            "localhost.evil.example",
        ] {
            assert!(!RegistryBuilder::is_loopback(host), "{host}");
        }
    }
}
