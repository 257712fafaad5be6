//! Finding the plugin libraries the workspace built.

use std::path::PathBuf;

use orca_plugin_abi::Plugin;

/// The path of the workspace's plugin library `name` (`orca_plugin_fs`).
pub(crate) fn library(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    // target/<profile>/deps/it-… → target/<profile>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory");
    let file = format!(
        "{}{name}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    let path = dir.join(&file);
    assert!(
        path.exists(),
        "{} is missing: build the plugins first (scripts/test does): cargo build -p orca-plugin-fs -p orca-plugin-s3 -p orca-plugin-example -p orca-plugin-testing -p orca-plugin-bad-abi -p orca-plugin-old-table -p orca-plugin-no-table",
        path.display()
    );
    path
}

/// Loads the workspace's plugin `name`.
pub(crate) fn load(name: &str) -> Plugin {
    Plugin::load(library(name)).unwrap_or_else(|e| panic!("loading {name}: {e}"))
}
