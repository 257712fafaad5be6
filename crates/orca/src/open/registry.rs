//! Opening registries: a client for a host with the options' TLS
//! settings, credentials (given, docker's, the containers tools') and the
//! host's settings from the settings file; a repository read through the
//! host's mirrors.

use std::path::PathBuf;

use orca_core::{Result, Store};

use super::OpenOptions;

/// A registry client for `host`, with the options' TLS settings and
/// credentials (given, or from the docker config).
pub fn registry(host: &str, options: &OpenOptions) -> Result<orca_backend_http::Registry> {
    use orca_backend_http::{Credentials, DockerConfig, RegistryBuilder};
    let credentials = match &options.credentials {
        Some((user, password)) => Credentials::basic(user.clone(), password.clone()),
        None => {
            let config = match &options.registry_config {
                Some(path) => DockerConfig::load(path)?,
                None => DockerConfig::load_default()?,
            };
            let mut found = config.credentials_for(host)?;
            // After docker's, the files podman, buildah and skopeo write.
            if matches!(found, Credentials::Anonymous) && options.registry_config.is_none() {
                for path in containers_auth_files() {
                    if !path.is_file() {
                        continue;
                    }
                    let credentials = DockerConfig::load(&path)?.credentials_for(host)?;
                    if !matches!(credentials, Credentials::Anonymous) {
                        found = credentials;
                        break;
                    }
                }
            }
            found
        }
    };
    // What the command line says wins over the settings file.
    let settings = options
        .registries
        .get(&host.to_ascii_lowercase())
        .cloned()
        .unwrap_or_default();
    let mut builder = RegistryBuilder::new(host)
        .credentials(credentials)
        .insecure(options.insecure || settings.insecure == Some(true))
        .requests_per_second(options.requests_per_second.or(settings.rate));
    if let Some(idle) = options.idle_timeout {
        builder = builder.idle_timeout(idle);
    }
    if let Some(response) = options.response_timeout {
        builder = builder.response_timeout(response);
    }
    if let Some(notice) = &options.on_retry {
        builder = builder.on_retry(notice.clone());
    }
    let identity = options
        .client_identity
        .clone()
        .or_else(|| settings.cert_file.clone().zip(settings.key_file.clone()));
    let ca_file = options.ca_file.clone().or(settings.ca_file);
    // TLS material means TLS, even to a loopback registry.
    let tls = (ca_file.is_some() || identity.is_some()).then_some(false);
    if let Some(plain) = options.plain_http.or(settings.plain_http).or(tls) {
        builder = builder.plain_http(plain);
    }
    if let Some(ca) = ca_file {
        builder = builder.ca_file(ca);
    }
    if let Some((cert, key)) = identity {
        builder = builder.client_identity(cert, key);
    }
    builder.build()
}

/// A registry client for `host` as [`registry`] builds it; when it may
/// accept any certificate (`insecure`, on the command line or in the
/// host's settings) and would speak HTTPS, a host that answers only plain
/// HTTP is spoken to in plain HTTP, as crane's `--insecure` and skopeo's
/// `--tls-verify=false` allow (one `GET /v2/` to learn it).
pub async fn connect(host: &str, options: &OpenOptions) -> Result<orca_backend_http::Registry> {
    let client = registry(host, options)?;
    let settings = options.registries.get(&host.to_ascii_lowercase());
    let insecure = options.insecure || settings.is_some_and(|s| s.insecure == Some(true));
    let plain = options.plain_http.or(settings.and_then(|s| s.plain_http));
    if !insecure || plain == Some(true) || !client.answers_plain_http().await {
        return Ok(client);
    }
    if let Some(notice) = &options.on_retry {
        notice(&format!(
            "{host} answered plain HTTP, not HTTPS; speaking plain HTTP to it (--insecure)"
        ));
    }
    let mut plain = options.clone();
    plain.plain_http = Some(true);
    registry(host, &plain)
}

/// One repository of `registry`; read (`reading`) through the mirrors its
/// host's settings list, when they list any.
pub(crate) async fn registry_store(
    registry: &orca_backend_http::Registry,
    repository: &str,
    options: &OpenOptions,
    reading: bool,
) -> Result<Store> {
    let origin = registry.repository(repository).await?;
    // Blobs read through the content cache, when there is one.
    let cached = |backend: std::sync::Arc<dyn orca_core::Backend>| {
        #[cfg(feature = "fs")]
        if let (Some(dir), true) = (&options.cache, reading) {
            let source = format!("{}/{repository}", registry.host().to_ascii_lowercase());
            return Store::new(crate::ContentCache::new(dir).over(backend, source));
        }
        Store::from_arc(backend)
    };
    let mirrors = match options
        .registries
        .get(&registry.host().to_ascii_lowercase())
    {
        Some(settings) if reading => settings.mirrors.clone(),
        _ => return Ok(cached(std::sync::Arc::new(origin))),
    };
    if mirrors.is_empty() {
        return Ok(cached(std::sync::Arc::new(origin)));
    }
    let mut read_first: Vec<std::sync::Arc<dyn orca_core::Backend>> = Vec::new();
    for mirror in &mirrors {
        let (host, prefix) = crate::hosts::split_mirror(mirror);
        let client = connect(host, options).await?;
        read_first.push(std::sync::Arc::new(
            client.repository(&format!("{prefix}{repository}")).await?,
        ));
    }
    Ok(cached(std::sync::Arc::new(crate::mirrored::Mirrored::new(
        std::sync::Arc::new(origin),
        read_first,
    ))))
}

/// The credential files of the containers tools, in the order they read
/// them: `REGISTRY_AUTH_FILE`, then `$XDG_RUNTIME_DIR/containers/auth.json`,
/// then `~/.config/containers/auth.json` (the same format as docker's).
fn containers_auth_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(file) = std::env::var_os("REGISTRY_AUTH_FILE") {
        files.push(PathBuf::from(file));
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        files.push(PathBuf::from(dir).join("containers/auth.json"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        files.push(PathBuf::from(home).join(".config/containers/auth.json"));
    }
    files
}
