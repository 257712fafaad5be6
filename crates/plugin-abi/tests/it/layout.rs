//! The layout engine's own checks (garbage collection beside live
//! writers) over the object storage a plugin opens: the host's engine runs
//! the collection through the plugin's storage table, and the racing
//! writer is the plugin's own backend over the same layout, which runs
//! the plugin's copy of orca. So a fence the host's collection puts up
//! must hold against a writer that links other code.

use orca_core::Store;
use orca_core::conformance::LayoutSubject;
use orca_plugin_abi::PluginStorage;

/// The fs plugin (`ocidir://`), over a fresh directory.
mod fs {
    use super::*;

    async fn make_layout() -> LayoutSubject<PluginStorage> {
        let plugin = crate::common::load("orca_plugin_fs");
        let dir = tempfile::tempdir().expect("temporary directory");
        let target = dir.path().join("layout");
        let target = target.to_str().expect("utf-8 path");
        let storage = plugin
            .open_storage(target, "")
            .await
            .expect("open a layout's storage through the plugin");
        let writer = Store::new(plugin.open(target, "").await.expect("open the layout"));
        LayoutSubject::new(storage, dir).with_writer(writer)
    }

    orca_core::layout_conformance_tests!(make_layout);
}

/// The s3 plugin (`s3layout://`), over a fresh prefix of a moto bucket.
mod s3 {
    use super::*;

    async fn make_layout() -> LayoutSubject<PluginStorage> {
        let plugin = crate::common::load("orca_plugin_s3");
        let (target, config) = crate::common::moto_target("layout");
        let storage = plugin
            .open_storage(&target, &config)
            .await
            .expect("open a bucket prefix's storage through the plugin");
        let writer = Store::new(
            plugin
                .open(&target, &config)
                .await
                .expect("open the prefix"),
        );
        LayoutSubject::new(storage, ()).with_writer(writer)
    }

    orca_core::layout_conformance_tests!(make_layout);
}

/// A plugin that exports no storage says so when asked for one.
#[tokio::test]
async fn a_plugin_without_storage_says_so() {
    let plugin = crate::common::load("orca_plugin_example");
    assert!(!plugin.offers_storage());
    let dir = tempfile::tempdir().expect("temporary directory");
    let err = plugin
        .open_storage(dir.path().to_str().expect("utf-8 path"), "")
        .await
        .expect_err("the example plugin has no storage");
    let text = err.to_string();
    assert!(
        text.contains("example") && text.contains("flatdir"),
        "{text}"
    );
    assert!(crate::common::load("orca_plugin_fs").offers_storage());
}
