//! Opening a [`TargetSpec`] as a [`Target`]: the backend it names, built
//! with the [`OpenOptions`] (registry TLS and credentials, S3 endpoint),
//! and what the target selects. Archives open for reading in place, or
//! for writing as an archive that appears when [`Target::finish`] runs.

use std::path::PathBuf;

use orca_core::{Error, Result, Selector, Store};

use crate::target::TargetSpec;

#[cfg(feature = "plugins")]
mod plugin;
#[cfg(feature = "http")]
mod registry;

#[cfg(feature = "plugins")]
pub(crate) use plugin::open_plugin;
#[cfg(feature = "plugins")]
pub(crate) use plugin::open_plugin_storage;
#[cfg(feature = "http")]
pub use registry::connect;
#[cfg(feature = "http")]
pub use registry::registry;
#[cfg(feature = "http")]
pub(crate) use registry::registry_store;

/// Told when a request is tried again after a timeout or a failed
/// connection, with a line for people.
pub type Notice = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

/// Settings for opening targets, the same for every target of a command.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct OpenOptions {
    /// Registries: speak plain HTTP (`Some(true)`) or HTTPS
    /// (`Some(false)`); by default loopback hosts speak plain HTTP and
    /// every other host HTTPS.
    pub plain_http: Option<bool>,
    /// Registries and S3: accept any TLS certificate.
    pub insecure: bool,
    /// Registries: trust these CA certificates as well (PEM).
    pub ca_file: Option<PathBuf>,
    /// Registries: a client certificate and its key (PEM files), for
    /// registries that ask for one (mutual TLS).
    pub client_identity: Option<(PathBuf, PathBuf)>,
    /// Registries: user name and password, instead of the docker config.
    pub credentials: Option<(String, String)>,
    /// Registries: the docker `config.json` to read credentials from
    /// (default: docker's own, `$DOCKER_CONFIG/config.json`).
    pub registry_config: Option<PathBuf>,
    /// Registries: send at most this many requests a second to each.
    pub requests_per_second: Option<f64>,
    /// Registries: settings per host (`HOST[:PORT]`, lower case), as the
    /// settings file holds them ([`crate::RegistryFile`]); the fields above
    /// win over them.
    #[cfg(feature = "http")]
    pub registries: std::collections::BTreeMap<String, crate::RegistrySettings>,
    /// Registries and S3: how long a transfer may make no progress before
    /// it counts as stalled (default 60 s). Never a limit on how long a
    /// transfer takes.
    pub idle_timeout: Option<std::time::Duration>,
    /// Registries: how long a sent request may wait for its answer before
    /// it is tried again (default 30 s; four attempts).
    pub response_timeout: Option<std::time::Duration>,
    /// Registries: told each time a request is tried again.
    pub on_retry: Option<Notice>,
    /// Archives written where one is: replace what it holds instead of
    /// adding to it (a file that is no image archive is never replaced).
    pub overwrite: bool,
    /// S3: the endpoint (default: `AWS_ENDPOINT_URL`, else AWS).
    pub s3_endpoint: Option<String>,
    /// S3: the region (default: `AWS_REGION` / `AWS_DEFAULT_REGION`).
    pub s3_region: Option<String>,
    /// S3: access key id and secret (default: the `AWS_*` environment,
    /// then the AWS profile).
    pub s3_credentials: Option<(String, String)>,
    /// Plugins: the loaded libraries `SCHEME://…` targets are routed to,
    /// by the scheme each declares.
    #[cfg(feature = "plugins")]
    pub plugins: Vec<orca_plugin_abi::Plugin>,
    /// Plugins: a configuration string per scheme, handed to the plugin
    /// when it opens a target.
    pub plugin_config: std::collections::BTreeMap<String, String>,
    /// Registries: read blobs through this content cache directory
    /// ([`crate::ContentCache`]), shared by every orca process using it.
    pub cache: Option<PathBuf>,
}

impl std::fmt::Debug for OpenOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Credentials and plugin configurations may hold secrets.
        let mut debug = f.debug_struct("OpenOptions");
        debug
            .field("plain_http", &self.plain_http)
            .field("insecure", &self.insecure)
            .field("ca_file", &self.ca_file)
            .field("client_identity", &self.client_identity)
            .field(
                "credentials",
                &self
                    .credentials
                    .as_ref()
                    .map(|(user, _)| (user, "<redacted>")),
            )
            .field("registry_config", &self.registry_config)
            .field("requests_per_second", &self.requests_per_second);
        #[cfg(feature = "http")]
        debug.field("registries", &self.registries);
        debug
            .field("idle_timeout", &self.idle_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("overwrite", &self.overwrite)
            .field("cache", &self.cache)
            .field("s3_endpoint", &self.s3_endpoint)
            .field("s3_region", &self.s3_region)
            .field(
                "s3_credentials",
                &self
                    .s3_credentials
                    .as_ref()
                    .map(|(key, _)| (key, "<redacted>")),
            )
            .field(
                "plugin_config",
                &self.plugin_config.keys().collect::<Vec<_>>(),
            );
        debug.finish_non_exhaustive()
    }
}

impl OpenOptions {
    /// The defaults: TLS verified, credentials from docker's config.
    pub fn new() -> Self {
        OpenOptions::default()
    }
}

/// Whether a target is read from or written to (archives differ).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Content is read: an archive, or a layout (directory or bucket
    /// prefix with an `oci-layout` file), must exist.
    Read,
    /// Content is written: an archive is created, with what an archive
    /// already there holds (unless [`OpenOptions::overwrite`]), and put in
    /// place of the file when [`Target::finish`] runs.
    Write,
}

/// An opened target: its store, what it selects, and (for an archive
/// being written) what finishing it takes.
#[derive(Debug)]
pub struct Target {
    store: Store,
    selector: Option<Selector>,
    /// Whether the target string named its selector (a registry target
    /// that names none reads as `latest`, as docker reads it).
    named: bool,
    #[cfg(feature = "fs")]
    writer: Option<orca_backend_fs::ArchiveWriter>,
    /// A bundle named whole (a layout, bucket prefix, archive or plugin
    /// layout with no repository): its repositories are reached through it.
    bundle: Option<std::sync::Arc<dyn orca_core::Backend>>,
    name: String,
}

impl Target {
    /// The store to read from or write to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The tag or digest the target string named, if any.
    pub fn selector(&self) -> Option<&Selector> {
        self.selector.as_ref()
    }

    /// The tag the target string named, if it named one.
    pub fn tag(&self) -> Option<&str> {
        match &self.selector {
            Some(Selector::Tag(tag)) => Some(tag),
            _ => None,
        }
    }

    /// The tag a copy of `root` into this target gets: the one the target
    /// names, else the source's own tag; none when the target names a
    /// digest, or the source was named by digest and the target names no
    /// tag (a registry's implied `latest` is not taken: a copy by digest
    /// moves no tag).
    pub fn tag_for(&self, root: &Selector) -> Option<String> {
        match (&self.selector, root) {
            (_, Selector::Digest(_)) if !self.named => None,
            (Some(Selector::Tag(tag)), _) | (None, Selector::Tag(tag)) => Some(tag.clone()),
            _ => None,
        }
    }

    /// What to read: the tag or digest named, or else the only tag the
    /// store has; an error that lists the tags when there are several or
    /// none.
    pub async fn root(&self) -> Result<Selector> {
        if let Some(selector) = &self.selector {
            return Ok(selector.clone());
        }
        let mut tags = self.store.tags_all().await?;
        // Referrers indexes are not what a target means.
        tags.retain(|t| !orca_core::referrers::is_fallback_tag(t));
        match tags.as_slice() {
            [one] => Ok(Selector::Tag(one.clone())),
            [] => Err(Error::InvalidReference {
                input: self.name.clone(),
                reason: "it names no tag or digest, and holds no tags".into(),
            }),
            many => Err(Error::InvalidReference {
                input: self.name.clone(),
                reason: format!(
                    "it names no tag or digest, and holds several tags: {}",
                    many.join(", ")
                ),
            }),
        }
    }

    /// One repository of the bundle the target names whole (`oci:DIR`,
    /// `s3://B/P`, `oci-archive:FILE`, a plugin's layout); `None` for a
    /// registry repository or a target that names one repository.
    pub fn repository(&self, name: &str) -> Option<Result<Store>> {
        let bundle = self.bundle.clone()?;
        Some(orca_core::bundle::Namespaced::new(bundle, name).map(Store::new))
    }

    /// The target string for `tag` (or, with no tag, `digest`) in this
    /// target's place, and in `repository` of it when given: what a user
    /// types to reach it (`oci:./dir:v1`, `host/repo@sha256:…`,
    /// `oci:./dir:REPO:TAG`).
    pub fn reference(
        &self,
        repository: Option<&str>,
        tag: Option<&str>,
        digest: Option<&orca_core::Digest>,
    ) -> String {
        let mut base = self.name.as_str();
        if self.named
            && let Some(selector) = &self.selector
        {
            let suffix = match selector {
                Selector::Tag(tag) => format!(":{tag}"),
                Selector::Digest(digest) => format!("@{digest}"),
            };
            base = base.strip_suffix(suffix.as_str()).unwrap_or(base);
        }
        let mut reference = base.to_owned();
        if let Some(repository) = repository {
            reference.push(':');
            reference.push_str(repository);
        }
        match (tag, digest) {
            (Some(tag), _) => {
                reference.push(':');
                reference.push_str(tag);
            }
            (None, Some(digest)) => {
                reference.push('@');
                reference.push_str(&digest.to_string());
            }
            (None, None) => {}
        }
        reference
    }

    /// Completes the target: an archive being written is put in place.
    /// Other targets have nothing to finish. Until it runs, an archive
    /// target leaves no file behind.
    pub async fn finish(self) -> Result<()> {
        #[cfg(feature = "fs")]
        if let Some(writer) = &self.writer {
            writer.finish().await?;
        }
        Ok(())
    }
}

/// Opens a target string (see [`crate::FORMS`]).
pub async fn open(target: &str, access: Access, options: &OpenOptions) -> Result<Target> {
    let spec = TargetSpec::parse(target)?;
    open_spec(target, &spec, access, options).await
}

/// Opens a parsed target; `name` is the string it came from, for errors.
pub async fn open_spec(
    name: &str,
    spec: &TargetSpec,
    access: Access,
    options: &OpenOptions,
) -> Result<Target> {
    let mut selector = spec.selector();
    let named = match spec {
        TargetSpec::Registry(reference) => reference.selector().is_some(),
        _ => selector.is_some(),
    };
    let unsupported = |feature: &str| Error::InvalidReference {
        input: name.to_owned(),
        reason: format!("this build of orca has no {feature} backend"),
    };
    #[cfg(feature = "fs")]
    let mut writer = None;
    let mut bundle: Option<std::sync::Arc<dyn orca_core::Backend>> = None;
    let store = match spec {
        #[cfg(feature = "http")]
        TargetSpec::Registry(reference) => {
            let registry = registry::connect(reference.registry(), options).await?;
            registry_store(
                &registry,
                reference.repository(),
                options,
                access == Access::Read,
            )
            .await?
        }
        #[cfg(feature = "fs")]
        TargetSpec::Layout {
            path, repository, ..
        } => {
            let layout = orca_backend_fs::open(path)?;
            if access == Access::Read {
                must_hold_a_layout(layout.storage(), &path.display().to_string()).await?;
            }
            one_repository(layout, repository.as_deref(), &mut bundle)?
        }
        #[cfg(feature = "fs")]
        TargetSpec::OciArchive { path, .. } | TargetSpec::DockerArchive { path, .. } => {
            let repository = match spec {
                TargetSpec::DockerArchive {
                    name: Some((repository, _)),
                    ..
                } => Some(repository.clone()),
                TargetSpec::OciArchive { repository, .. } => repository.clone(),
                _ => None,
            };
            match access {
                Access::Read => {
                    let archive = open_archive(path.clone()).await?;
                    if selector.is_none()
                        && repository.is_none()
                        && let [only] = archive.images()
                    {
                        selector = Some(Selector::Digest(only.descriptor.digest.clone()));
                    }
                    match repository {
                        Some(repository) => Store::new(archive.repository(&repository)),
                        None => {
                            let whole = std::sync::Arc::new(archive);
                            bundle = Some(whole.clone());
                            Store::from_arc(whole)
                        }
                    }
                }
                Access::Write => {
                    let format = match spec {
                        TargetSpec::DockerArchive { .. } => orca_backend_fs::ArchiveFormat::Docker,
                        _ => orca_backend_fs::ArchiveFormat::Oci,
                    };
                    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                        std::fs::create_dir_all(parent).map_err(|e| Error::InvalidInput {
                            what: format!("the directory of archive {}", path.display()),
                            reason: e.to_string(),
                        })?;
                    }
                    let archive = orca_backend_fs::ArchiveWriter::create(path, format)?;
                    crate::carry::prepare(path, &archive, options.overwrite).await?;
                    let archive = match repository {
                        Some(repository) => archive.repository(&repository),
                        None => {
                            bundle = Some(std::sync::Arc::new(archive.clone()));
                            archive
                        }
                    };
                    writer = Some(archive.clone());
                    Store::new(archive)
                }
            }
        }
        #[cfg(feature = "s3")]
        TargetSpec::S3 {
            url, repository, ..
        } => {
            let layout = s3_builder(url, options).build()?;
            if access == Access::Read {
                must_hold_a_layout(layout.storage(), url).await?;
            }
            one_repository(layout, repository.as_deref(), &mut bundle)?
        }
        TargetSpec::Plugin { scheme, rest } => {
            #[cfg(not(feature = "plugins"))]
            let _ = rest;
            #[cfg(feature = "plugins")]
            if let Some(opened) = open_plugin(name, scheme, rest, options).await? {
                selector = opened.selector;
                let store = match opened.repository {
                    Some(repository) => Store::new(orca_core::bundle::Namespaced::new(
                        std::sync::Arc::new(opened.backend),
                        &repository,
                    )?),
                    None => {
                        let whole = std::sync::Arc::new(opened.backend);
                        bundle = Some(whole.clone());
                        Store::from_arc(whole)
                    }
                };
                return Ok(Target {
                    store,
                    named: selector.is_some(),
                    selector,
                    #[cfg(feature = "fs")]
                    writer,
                    bundle,
                    name: name.to_owned(),
                });
            }
            return Err(Error::InvalidReference {
                input: name.to_owned(),
                reason: format!(
                    "no plugin provides the scheme {scheme}:// (load one with --plugin or ORCA_PLUGIN_PATH)"
                ),
            });
        }
        #[allow(unreachable_patterns)]
        _ => return Err(unsupported("such")),
    };
    Ok(Target {
        store,
        selector,
        named,
        #[cfg(feature = "fs")]
        writer,
        bundle,
        name: name.to_owned(),
    })
}

/// A store over `bundle`, or over one repository of it; `whole` is set
/// when the bundle is named whole.
#[cfg(any(feature = "fs", feature = "s3"))]
fn one_repository(
    bundle: impl orca_core::Backend,
    repository: Option<&str>,
    whole: &mut Option<std::sync::Arc<dyn orca_core::Backend>>,
) -> Result<Store> {
    let bundle: std::sync::Arc<dyn orca_core::Backend> = std::sync::Arc::new(bundle);
    Ok(match repository {
        Some(repository) => Store::new(orca_core::bundle::Namespaced::new(bundle, repository)?),
        None => {
            *whole = Some(bundle.clone());
            Store::from_arc(bundle)
        }
    })
}

/// A layout read from must be there: a directory or prefix without an
/// `oci-layout` file (a typo, a bucket that does not exist) is named as
/// missing, never read as an empty store.
#[cfg(any(feature = "fs", feature = "s3"))]
async fn must_hold_a_layout(
    storage: &impl orca_core::layout::ObjectStorage,
    place: &str,
) -> Result<()> {
    match storage.size(orca_core::layout::OCI_LAYOUT_FILE).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(Error::NotFound {
            what: "image layout (no oci-layout file)".into(),
            place: place.to_owned(),
        }),
        Err(Error::NotFound { .. }) => Err(Error::NotFound {
            what: "image layout".into(),
            place: place.to_owned(),
        }),
        Err(other) => Err(other),
    }
}

/// Opens an archive to read, off the async workers: a gzip one is unpacked
/// and hashed first (backends m22).
#[cfg(feature = "fs")]
pub(crate) async fn open_archive(path: PathBuf) -> Result<orca_backend_fs::Archive> {
    let name = path.display().to_string();
    tokio::task::spawn_blocking(move || orca_backend_fs::Archive::open(path))
        .await
        .map_err(|e| Error::Backend {
            backend: name,
            operation: "open",
            source: Box::new(e),
        })?
}

/// The repositories of the bundle `target` names: a layout, a bucket
/// prefix, an archive (by the `REPO:TAG` names of its images) or a
/// plugin's bundle. A registry lists its repositories through its catalog
/// instead.
pub async fn repositories(target: &str, options: &OpenOptions) -> Result<Vec<String>> {
    let spec = TargetSpec::parse(target)?;
    match &spec {
        TargetSpec::Registry(_) => Err(Error::InvalidInput {
            what: target.to_owned(),
            reason: "a registry's repositories come from its catalog".into(),
        }),
        #[cfg(feature = "fs")]
        TargetSpec::OciArchive { path, .. } | TargetSpec::DockerArchive { path, .. } => {
            let archive = open_archive(path.clone()).await?;
            let mut names: Vec<String> = archive
                .images()
                .iter()
                .filter_map(|image| image.repository())
                .map(str::to_owned)
                .collect();
            names.sort();
            names.dedup();
            Ok(names)
        }
        _ => {
            let opened = open_spec(target, &spec, Access::Read, options).await?;
            opened.store().repositories().await
        }
    }
}

/// Garbage-collects the layout or bucket `target` names (see
/// [`orca_core::layout::Layout::gc`]); other targets have no such thing.
pub async fn gc(
    target: &str,
    gc: &orca_core::layout::GcOptions,
    options: &OpenOptions,
) -> Result<orca_core::layout::GcReport> {
    #[cfg(not(feature = "s3"))]
    let _ = options;
    match TargetSpec::parse(target)? {
        #[cfg(feature = "fs")]
        TargetSpec::Layout { path, .. } => orca_backend_fs::open(path)?.gc(gc).await,
        #[cfg(feature = "s3")]
        TargetSpec::S3 { url, .. } => s3_builder(&url, options).build()?.gc(gc).await,
        // A plugin's layout: this engine collects over the storage the
        // plugin opens (plugins without one say so).
        #[cfg(feature = "plugins")]
        TargetSpec::Plugin { scheme, rest } => {
            match open_plugin_storage(target, &scheme, &rest, options).await? {
                Some(storage) => orca_core::layout::Layout::new(storage).gc(gc).await,
                None => Err(Error::InvalidInput {
                    what: target.to_owned(),
                    reason: format!(
                        "no plugin provides the scheme {scheme}:// (load one with --plugin or ORCA_PLUGIN_PATH)"
                    ),
                }),
            }
        }
        _ => Err(Error::Unsupported {
            operation: "garbage collection (only layouts, buckets and plugins' layouts have it)",
            place: target.to_owned(),
        }),
    }
}

/// An S3 builder for `url` with the options' endpoint, region and TLS
/// settings (a loopback endpoint may speak plain HTTP; others only when
/// `plain_http` says so).
#[cfg(feature = "s3")]
pub(crate) fn s3_builder(url: &str, options: &OpenOptions) -> orca_backend_s3::S3Builder {
    let mut builder =
        orca_backend_s3::S3Builder::new(url).allow_invalid_certificates(options.insecure);
    if let Some(endpoint) = &options.s3_endpoint {
        builder = builder.endpoint(endpoint.clone());
    }
    if options.plain_http == Some(true) {
        builder = builder.allow_http(true);
    }
    if let Some(region) = &options.s3_region {
        builder = builder.region(region.clone());
    }
    if let Some((key, secret)) = &options.s3_credentials {
        builder = builder.credentials(key.clone(), secret.clone());
    }
    if let Some(idle) = options.idle_timeout {
        builder = builder.idle_timeout(idle);
    }
    builder
}
