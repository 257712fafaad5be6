//! [`S3Builder`]: an [`S3Backend`] from an `s3://bucket/prefix` URL, with
//! credentials, region and endpoint from the standard `AWS_*` environment.

use std::sync::Arc;
use std::time::Duration;

use object_store::ClientConfigKey;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use orca_core::{Error, Result};

use orca_core::layout::Layout;

use crate::backend::{Bucket, S3Backend};

/// Builds an [`S3Backend`] for an S3 (or S3-compatible) bucket.
#[derive(Clone)]
pub struct S3Builder {
    url: String,
    allow_http: bool,
    endpoint: Option<String>,
    region: Option<String>,
    credentials: Option<(String, String)>,
    part_size: Option<usize>,
    concurrency: Option<usize>,
    invalid_certificates: bool,
    idle_timeout: Duration,
    unconditional: bool,
    credentials_file: Option<(std::path::PathBuf, String)>,
}

/// How long a read may make no progress before its connection counts as
/// stalled (and how much slack a write gets past its size's due time).
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The slowest upload rate a write is given time for: a part (or a whole
/// blob below the part size) may take its size at this rate, plus the
/// idle timeout. object_store hands a request's body to the connection
/// whole, so its progress cannot be watched; this is the nearest limit.
const MIN_UPLOAD_RATE: u64 = 64 * 1024;

impl std::fmt::Debug for S3Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Builder")
            .field("url", &self.url)
            .field("allow_http", &self.allow_http)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<redacted>"),
            )
            .field("part_size", &self.part_size)
            .field("concurrency", &self.concurrency)
            .field("invalid_certificates", &self.invalid_certificates)
            .finish()
    }
}

impl S3Builder {
    /// A builder for `s3://bucket[/prefix]`. Credentials and region come
    /// from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
    /// `AWS_DEFAULT_REGION`/`AWS_REGION`; `AWS_ENDPOINT_URL` names an
    /// S3-compatible server. What the environment leaves out is read from
    /// the AWS shared files (`~/.aws/credentials` and `~/.aws/config`,
    /// profile `AWS_PROFILE` or `default`, `endpoint_url` included).
    pub fn new(url: impl Into<String>) -> Self {
        S3Builder {
            url: url.into(),
            allow_http: false,
            endpoint: None,
            region: None,
            credentials: None,
            part_size: None,
            concurrency: None,
            invalid_certificates: false,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            unconditional: false,
            credentials_file: None,
        }
    }

    /// Allows a plain-HTTP endpoint (off by default, whatever the
    /// environment says).
    pub fn allow_http(mut self, allow: bool) -> Self {
        self.allow_http = allow;
        self
    }

    /// Accepts any TLS certificate (explicitly insecure; off by default,
    /// whatever `AWS_ALLOW_INVALID_CERTIFICATES` says).
    pub fn allow_invalid_certificates(mut self, allow: bool) -> Self {
        self.invalid_certificates = allow;
        self
    }

    /// The endpoint of an S3-compatible server (instead of `AWS_ENDPOINT_URL`).
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// The region (instead of `AWS_DEFAULT_REGION` / `AWS_REGION`).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Static credentials (instead of the environment's).
    pub fn credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        self.credentials = Some((access_key_id.into(), secret_access_key.into()));
        self
    }

    /// Credentials from profile `profile` of the AWS shared credentials
    /// file at `path` (read when the backend is built), instead of the
    /// environment's: a way to hand a plugin its keys without putting them
    /// on a command line.
    pub fn credentials_file(mut self, path: impl Into<std::path::PathBuf>, profile: &str) -> Self {
        self.credentials_file = Some((path.into(), profile.to_owned()));
        self
    }

    /// Multipart part size in bytes (at least 5 MiB, S3's minimum).
    pub fn part_size(mut self, bytes: usize) -> Self {
        self.part_size = Some(bytes);
        self
    }

    /// How long a read may make no progress before it counts as stalled
    /// (default 60 s). Writes are never limited by it: a part (or a blob
    /// below the part size) gets its size's time at 64 KiB/s, plus this.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout.max(Duration::from_millis(10));
        self
    }

    /// Go on where the server ignores conditional writes (`If-Match`,
    /// `If-None-Match`), which is refused by default: tags, referrers and
    /// garbage-collection fences then become last writer wins. Only for a
    /// bucket no other process writes to.
    pub fn allow_unconditional_writes(mut self, allow: bool) -> Self {
        self.unconditional = allow;
        self
    }

    /// Parts uploaded at once.
    pub fn concurrency(mut self, parts: usize) -> Self {
        self.concurrency = Some(parts);
        self
    }

    /// Builds the backend. Nothing is contacted until it is used.
    pub fn build(self) -> Result<S3Backend> {
        let invalid = |reason: String| Error::InvalidInput {
            what: format!("S3 location {:?}", self.url),
            reason,
        };
        let rest = self
            .url
            .strip_prefix("s3://")
            .ok_or_else(|| invalid("expected s3://bucket[/prefix]".into()))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.len() < 3
            || !bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        {
            return Err(invalid(format!(
                "bucket name {bucket:?} must be 3 or more lowercase letters, digits, '-' or '.'"
            )));
        }
        // rustls needs a process-wide crypto provider; another part of the
        // program may have installed one already, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // The environment may not turn certificate checks off: only an
        // explicit call can, as with plain HTTP.
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_allow_http(self.allow_http)
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::AllowInvalidCertificates),
                self.invalid_certificates.to_string(),
            );
        // What the environment does not say, the AWS shared files may.
        let profile = crate::profile::current();
        let region = self.region.clone().or_else(|| {
            std::env::var("AWS_DEFAULT_REGION")
                .or_else(|_| std::env::var("AWS_REGION"))
                .ok()
                .or(profile.region.clone())
        });
        if let Some(region) = region {
            builder = builder.with_region(region);
        }
        // The environment's endpoint the builder read itself; one given
        // here, or else the profile's, is set.
        let from_env = std::env::var("AWS_ENDPOINT_URL").ok();
        let endpoint = self.endpoint.clone().or_else(|| {
            from_env
                .is_none()
                .then(|| profile.endpoint.clone())
                .flatten()
        });
        if let Some(endpoint) = &endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        // What the client will use, whichever variable set it
        // (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT`, `AWS_ENDPOINT_URL_S3`, the
        // profile or this builder): TLS and loopback are decided from it.
        let effective = builder.get_config_value(&AmazonS3ConfigKey::Endpoint);
        let effective = effective.as_deref();
        // orca hashes every byte it sends against the blob's digest; over
        // TLS (which guards the bytes in transit) hashing each part again
        // for the request signature only doubles the CPU spent. A profile
        // of a 400 MiB push showed a third of orca's time in that second
        // hash. Over plain HTTP the signature still covers the payload.
        let tls = effective.is_none_or(|url| url.starts_with("https://"));
        if tls {
            builder = builder.with_config(AmazonS3ConfigKey::UnsignedPayload, "true");
        }
        // As with registries: a loopback endpoint may speak plain HTTP.
        if effective.is_some_and(is_loopback_http) {
            builder = builder.with_allow_http(true);
        }
        if let Some((path, name)) = &self.credentials_file {
            let (key, secret, token) =
                crate::profile::from_credentials_file(path, name).map_err(|e| {
                    invalid(format!(
                        "credentials file {} cannot be read ({e})",
                        path.display()
                    ))
                })?;
            let (Some(key), Some(secret)) = (key, secret) else {
                return Err(invalid(format!(
                    "credentials file {} has no aws_access_key_id and aws_secret_access_key in [{name}]",
                    path.display()
                )));
            };
            builder = builder
                .with_access_key_id(key)
                .with_secret_access_key(secret);
            if let Some(token) = token {
                builder = builder.with_token(token);
            }
        } else if let Some((key, secret)) = &self.credentials {
            builder = builder
                .with_access_key_id(key)
                .with_secret_access_key(secret);
        } else if std::env::var_os("AWS_ACCESS_KEY_ID").is_none()
            && let (Some(key), Some(secret)) = (&profile.access_key_id, &profile.secret_access_key)
        {
            builder = builder
                .with_access_key_id(key)
                .with_secret_access_key(secret);
            if let Some(token) = &profile.session_token {
                builder = builder.with_token(token);
            }
        }
        let built = |builder: AmazonS3Builder| {
            builder.build().map_err(|e| Error::Backend {
                backend: format!("s3://{bucket}"),
                operation: "configure",
                source: Box::new(e),
            })
        };
        let millis = |d: Duration| format!("{}ms", d.as_millis());
        // Reads stream for as long as they take: no limit on a whole
        // request (object_store's default is 30 s), but one on silence, so
        // a stalled connection is noticed. reqwest's read timeout runs
        // through a request's upload too, so writes go through their own
        // client, limited by their size instead.
        let reads = built(
            builder
                .clone()
                .with_config(
                    AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
                    "365days",
                )
                .with_config(
                    AmazonS3ConfigKey::Client(ClientConfigKey::ReadTimeout),
                    millis(self.idle_timeout),
                ),
        )?;
        let part = self.part_size.unwrap_or(crate::backend::DEFAULT_PART) as u64;
        let due = self.idle_timeout + Duration::from_secs(part / MIN_UPLOAD_RATE);
        let writes = built(
            builder
                .with_config(
                    AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
                    millis(due),
                )
                .with_config(
                    AmazonS3ConfigKey::Client(ClientConfigKey::ReadTimeout),
                    "365days",
                ),
        )?;
        let mut bucket = Bucket::new(Arc::new(reads), prefix, format!("s3://{rest}"))
            .with_writer(Arc::new(writes))
            .allow_unconditional_writes(self.unconditional);
        if let Some(size) = self.part_size {
            bucket = bucket.with_part_size(size)?;
        }
        if let Some(parts) = self.concurrency {
            bucket = bucket.with_concurrency(parts);
        }
        Ok(Layout::new(bucket))
    }
}

/// Whether `url` is plain HTTP to a loopback address (`localhost`,
/// `127.0.0.0/8`, `[::1]`), decided from the parsed host.
fn is_loopback_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod loopback_tests {
    use super::is_loopback_http;

    #[test]
    fn loopback_endpoints_are_told_from_the_address() {
        for url in [
            "http://127.0.0.1:9000",
            "http://localhost:9000/",
            "http://[::1]:9000",
            "http://127.9.9.9",
        ] {
            assert!(is_loopback_http(url), "{url}");
        }
        for url in [
            "https://127.0.0.1:9000",
            "http://127.corp.example:9000",
            "http://10.0.0.1",
            "http://localhost.evil.example",
        ] {
            assert!(!is_loopback_http(url), "{url}");
        }
    }
}
