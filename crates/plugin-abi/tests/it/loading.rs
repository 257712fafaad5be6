//! Libraries that are not plugins of this ABI are refused with a clear
//! error, before anything in them but their version is called.

use orca_plugin_abi::Plugin;

use crate::common::{library, load};

fn refused(path: &std::path::Path) -> String {
    Plugin::load(path)
        .expect_err("a broken library was loaded")
        .to_string()
}

#[test]
fn broken_libraries_are_refused_clearly() {
    let wrong = refused(&library("orca_plugin_bad_abi"));
    assert!(
        wrong.contains("ABI 999") && wrong.contains("ABI 1"),
        "{wrong}"
    );
    let old = refused(&library("orca_plugin_old_table"));
    assert!(old.contains("plugin table has 16 bytes"), "{old}");
    let missing = refused(&library("orca_plugin_no_table"));
    assert!(missing.contains("no orca_plugin_v1"), "{missing}");

    let dir = tempfile::tempdir().expect("temporary directory");
    let not_library = dir.path().join("liborca_plugin_fake.so");
    std::fs::write(&not_library, b"#!/bin/sh\necho not a library\n").expect("write");
    let text = refused(&not_library);
    assert!(
        text.contains("cannot be loaded as a shared library"),
        "{text}"
    );
    let absent = refused(&dir.path().join("absent.so"));
    assert!(absent.contains("absent.so"), "{absent}");
    // Not an orca plugin at all: a library without the version function.
    let foreign = std::fs::read_dir("/usr/lib/x86_64-linux-gnu")
        .ok()
        .and_then(|mut entries| {
            entries.find_map(|e| {
                let path = e.ok()?.path();
                let name = path.file_name()?.to_str()?.to_owned();
                (name.starts_with("libz.so") || name.starts_with("libm.so")).then_some(path)
            })
        });
    if let Some(foreign) = foreign {
        let text = refused(&foreign);
        assert!(text.contains("not an orca plugin"), "{text}");
    }
}

#[test]
fn a_plugin_says_what_it_is() {
    let plugin = load("orca_plugin_fs");
    assert_eq!(plugin.name(), "fs");
    assert_eq!(plugin.scheme(), "ocidir");
    assert_eq!(plugin.abi_version(), orca_plugin_abi::ABI_VERSION);
    assert!(!plugin.version().is_empty());
}

/// Backends review m28: a plugin stays loaded after every handle on it is
/// gone (its runtime's threads still run its code), until the process
/// ends.
#[cfg(target_os = "linux")]
#[test]
fn m28_a_plugin_stays_loaded_after_its_last_handle() {
    // A copy of the example plugin under a name of its own (so no other
    // test holds the same library); not opened, so no thread of it keeps
    // it mapped on its own.
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("liborca_plugin_m28.so");
    std::fs::copy(library("orca_plugin_example"), &path).expect("copy");
    let plugin = Plugin::load(&path).expect("load");
    assert_eq!(plugin.scheme(), "flatdir");
    drop(plugin);
    let canonical = std::fs::canonicalize(&path).expect("path");
    let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
    assert!(
        maps.contains(canonical.to_str().expect("utf-8")),
        "the plugin was unloaded"
    );
}
