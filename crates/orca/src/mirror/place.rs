//! The two sides of a sync entry: a source or target string opened as a
//! [`Place`] (a registry, a prefix of one, one repository, or a bundle in
//! a layout, an archive, a bucket or a plugin's backend), and the stores
//! of the repositories on each side.

use std::sync::Arc;

use orca_core::sync::Pattern;
use orca_core::{Backend, Error, Result, Store};

use super::Entry;
use super::staged::Staged;
use crate::open::OpenOptions;
use crate::target::TargetSpec;

/// Where one side of an entry is.
pub(super) enum Place {
    /// A registry, with a path prefix (empty, or ending in `/`).
    Registry {
        registry: orca_backend_http::Registry,
        host: String,
        prefix: String,
        /// For a source, the options its repositories are read with
        /// (through the host's mirrors).
        reading: Option<OpenOptions>,
    },
    /// A registry repository named whole.
    Repository {
        registry: orca_backend_http::Registry,
        host: String,
        repository: String,
        /// As for `Registry`.
        reading: Option<OpenOptions>,
    },
    /// A bundle: one tag namespace holding many repositories.
    Bundle {
        backend: Arc<dyn Backend>,
        name: String,
        /// Only this repository of it (`oci:DIR:REPO`).
        repository: Option<String>,
        /// An archive target, staged in a layout.
        staged: Option<Staged>,
        /// Whether garbage collection is the layout engine's to run here
        /// (a layout directory or a bucket; a plugin's backend and an
        /// archive are not).
        collects: bool,
    },
}

/// Opens one side of an entry. An oci-archive target is staged: see
/// [`Staged`].
pub(super) async fn place(text: &str, options: &OpenOptions, target: bool) -> Result<Place> {
    let bundle =
        |backend: Arc<dyn Backend>, repository: Option<String>, collects: bool| Place::Bundle {
            backend,
            name: text.to_owned(),
            repository,
            staged: None,
            collects,
        };
    if text.starts_with("oci:") {
        // `oci:DIR` or `oci:DIR:REPO`, read as every target string is.
        let TargetSpec::Layout {
            path,
            repository,
            selector: None,
        } = TargetSpec::parse(text)?
        else {
            return Err(names_repositories(text));
        };
        let layout = orca_backend_fs::open(path)?;
        return Ok(bundle(Arc::new(layout), repository, true));
    }
    if text.starts_with("oci-archive:") {
        // Read as every target string is: `oci-archive:m.tar:v1` names a
        // tag (refused here), never a file called `m.tar:v1`.
        let TargetSpec::OciArchive {
            path,
            repository: None,
            tag: None,
        } = TargetSpec::parse(text)?
        else {
            return Err(names_repositories(text));
        };
        if target {
            let staged = Staged::new(&path)?;
            return Ok(Place::Bundle {
                backend: staged.layout.clone(),
                name: text.to_owned(),
                repository: None,
                staged: Some(staged),
                collects: false,
            });
        }
        let archive = crate::open::open_archive(path).await?;
        return Ok(bundle(Arc::new(archive), None, false));
    }
    if text.starts_with("s3://") {
        // `s3://BUCKET/PREFIX` or `s3://BUCKET/PREFIX:REPO`.
        let TargetSpec::S3 {
            url,
            repository,
            selector: None,
        } = TargetSpec::parse(text)?
        else {
            return Err(names_repositories(text));
        };
        let bucket = crate::open::s3_builder(&url, options).build()?;
        return Ok(bundle(Arc::new(bucket), repository, true));
    }
    #[cfg(feature = "plugins")]
    if let Some((scheme, rest)) = text.split_once("://")
        && let Some(opened) = crate::open::open_plugin(text, scheme, rest, options).await?
    {
        if opened.selector.is_some() {
            return Err(names_repositories(text));
        }
        return Ok(bundle(Arc::new(opened.backend), opened.repository, false));
    }
    if text.contains("://") || text.starts_with("docker-archive:") {
        return Err(Error::InvalidReference {
            input: text.to_owned(),
            reason: "a sync source or target is a registry (HOST, HOST/PREFIX or HOST/REPO), \
                     a layout bundle (oci:DIR), an oci-archive bundle (oci-archive:FILE), \
                     an S3 bundle (s3://BUCKET/PREFIX) or a bundle in a plugin's backend \
                     (SCHEME://…, the plugin loaded with --plugin or ORCA_PLUGIN_PATH)"
                .into(),
        });
    }
    let (host, path) = text.split_once('/').unwrap_or((text, ""));
    let registry = crate::open::connect(host, options).await?;
    let host = host.to_owned();
    let reading = (!target).then(|| options.clone());
    if path.is_empty() || path.ends_with('/') {
        return Ok(Place::Registry {
            registry,
            host,
            prefix: path.to_owned(),
            reading,
        });
    }
    Ok(Place::Repository {
        registry,
        host,
        repository: path.to_owned(),
        reading,
    })
}

/// How reports name one repository of a side, in the grammar of targets
/// (so a line of a report can be copied into a command): `HOST/REPO` for
/// a registry, `BUNDLE:REPO` for a bundle.
pub(super) fn label(place: &Place, repository: &str) -> String {
    match place {
        Place::Registry { .. } | Place::Repository { .. } => {
            format!("{}/{repository}", side_name(place))
        }
        Place::Bundle { .. } => format!("{}:{repository}", side_name(place)),
    }
}

/// How reports name a side: the registry host, or the bundle.
pub(super) fn side_name(place: &Place) -> String {
    match place {
        Place::Registry { host, .. } | Place::Repository { host, .. } => host.clone(),
        Place::Bundle {
            name, repository, ..
        } => match repository {
            // `oci:DIR:REPO` is named by `oci:DIR`.
            Some(repository) => name
                .strip_suffix(&format!(":{repository}"))
                .unwrap_or(name)
                .to_owned(),
            None => name.clone(),
        },
    }
}

/// The source repositories an entry takes.
pub(super) async fn repositories(entry: &Entry, source: &Place) -> Result<Vec<String>> {
    let include = globs(&entry.include)?;
    let exclude = globs(&entry.exclude)?;
    let keep = |name: &String| {
        (include.is_empty() || include.iter().any(|p| p.matches(name)))
            && !exclude.iter().any(|p| p.matches(name))
    };
    let mut names = match source {
        Place::Repository { repository, .. } => return Ok(vec![repository.clone()]),
        Place::Bundle {
            repository: Some(repository),
            ..
        } => return Ok(vec![repository.clone()]),
        Place::Registry { prefix, .. } if !entry.repositories.is_empty() => entry
            .repositories
            .iter()
            .map(|r| format!("{prefix}{r}"))
            .collect(),
        Place::Bundle { .. } if !entry.repositories.is_empty() => entry.repositories.clone(),
        Place::Registry {
            registry, prefix, ..
        } => {
            let mut all = registry.catalog_all(None).await?;
            all.retain(|name| name.starts_with(prefix.as_str()));
            all
        }
        Place::Bundle { backend, .. } => orca_core::bundle::repositories(backend.as_ref()).await?,
    };
    names.retain(keep);
    names.sort();
    names.dedup();
    Ok(names)
}

/// Patterns (globs or `/regular expressions/`) read from a setting.
pub(super) fn globs(list: &[String]) -> Result<Vec<Pattern>> {
    list.iter().map(|p| Pattern::parse(p)).collect()
}

/// Where source repository `name` lands in `target`.
pub(super) fn target_repository(target: &Place, name: &str, sources: usize) -> Result<String> {
    Ok(match target {
        Place::Registry { prefix, .. } => format!("{prefix}{name}"),
        Place::Repository { repository, .. } => format!("{repository}/{name}"),
        Place::Bundle {
            repository: Some(repository),
            name: bundle,
            ..
        } => {
            if sources > 1 {
                return Err(Error::InvalidInput {
                    what: format!("target {bundle}"),
                    reason: format!(
                        "it names one repository ({repository}) for {sources} source repositories"
                    ),
                });
            }
            repository.clone()
        }
        Place::Bundle { .. } => name.to_owned(),
    })
}

/// The store of repository `name` on one side.
pub(super) async fn store(place: &Place, name: &str) -> Result<Store> {
    Ok(match place {
        Place::Registry {
            registry, reading, ..
        }
        | Place::Repository {
            registry, reading, ..
        } => match reading {
            Some(options) => crate::open::registry_store(registry, name, options, true).await?,
            None => Store::new(registry.repository(name).await?),
        },
        Place::Bundle { backend, .. } => {
            Store::new(orca_core::bundle::Namespaced::new(backend.clone(), name)?)
        }
    })
}

/// The error for a side that names a tag or digest.
fn names_repositories(text: &str) -> Error {
    Error::InvalidReference {
        input: text.to_owned(),
        reason: "a sync source or target names repositories, not a tag or digest".into(),
    }
}
