//! Opening `SCHEME://…` targets with the loaded plugin that provides the
//! scheme: its backend (one repository of it, when it is a layout bundle
//! and the target names one), or its layout storage for `gc`.

use orca_core::{Error, Result, Selector};

use super::OpenOptions;

/// What a plugin target opened to.
pub(crate) struct Opened {
    /// The plugin's backend (the whole bundle, for a layout plugin).
    pub(crate) backend: orca_plugin_abi::PluginBackend,
    /// The repository of the bundle the target names, if any.
    pub(crate) repository: Option<String>,
    /// The tag or digest the target names, if any.
    pub(crate) selector: Option<Selector>,
}

/// Opens `input` (`SCHEME://REST`) with the loaded plugin that provides
/// the scheme: its backend, and the tag or digest `REST` ends with. `None`
/// when no loaded plugin provides it.
///
/// A plugin that keeps an OCI image layout (it offers the storage table)
/// holds a bundle, so its targets take a repository as `oci:` ones do:
/// `SCHEME://LOCATION:REPO[:TAG]`, where the location has no colon.
pub(crate) async fn open_plugin(
    input: &str,
    scheme: &str,
    rest: &str,
    options: &OpenOptions,
) -> Result<Option<Opened>> {
    let Some((plugin, config)) = loaded_plugin(scheme, options) else {
        return Ok(None);
    };
    let (location, selector) = crate::target::split_selector(input, rest)?;
    let (location, repository) = match location.split_once(':') {
        Some((place, repository)) if plugin.offers_storage() => {
            orca_core::model::reference::validate_repository(repository).map_err(|reason| {
                Error::InvalidReference {
                    input: input.to_owned(),
                    reason: format!("repository {repository:?}: {reason}"),
                }
            })?;
            (place.to_owned(), Some(repository.to_owned()))
        }
        _ => (location, None),
    };
    Ok(Some(Opened {
        backend: plugin.open(&location, &config).await?,
        repository,
        selector,
    }))
}

/// The loaded plugin that provides `scheme`, with its configuration
/// string.
fn loaded_plugin<'a>(
    scheme: &str,
    options: &'a OpenOptions,
) -> Option<(&'a orca_plugin_abi::Plugin, String)> {
    let plugin = options.plugins.iter().find(|p| p.scheme() == scheme)?;
    let config = options
        .plugin_config
        .get(scheme)
        .cloned()
        .unwrap_or_default();
    Some((plugin, config))
}

/// Opens the layout storage of `input` (`SCHEME://REST`) with the loaded
/// plugin that provides the scheme; `None` when no loaded plugin does.
pub(crate) async fn open_plugin_storage(
    input: &str,
    scheme: &str,
    rest: &str,
    options: &OpenOptions,
) -> Result<Option<orca_plugin_abi::PluginStorage>> {
    let Some((plugin, config)) = loaded_plugin(scheme, options) else {
        return Ok(None);
    };
    let (location, _) = crate::target::split_selector(input, rest)?;
    // A bundle's repository (`SCHEME://LOCATION:REPO`) is collected with
    // the whole layout.
    let location = match location.split_once(':') {
        Some((place, _)) if plugin.offers_storage() => place.to_owned(),
        _ => location,
    };
    Ok(Some(plugin.open_storage(&location, &config).await?))
}
