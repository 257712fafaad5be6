//! Finding and loading the plugin libraries the workspace built.

use orca_plugin_abi::Plugin;
pub(crate) use orca_testkit::plugin_library as library;

/// Loads the workspace's plugin `name`.
pub(crate) fn load(name: &str) -> Plugin {
    Plugin::load(library(name)).unwrap_or_else(|e| panic!("loading {name}: {e}"))
}
