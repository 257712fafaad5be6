//! The whole conformance suite against orca's layout backend loaded as a
//! plugin: the same checks, the same results as linked.

use orca_core::Store;
use orca_core::conformance::Subject;

async fn make() -> Subject {
    let plugin = crate::common::load("orca_plugin_fs");
    let dir = tempfile::tempdir().expect("temporary directory");
    let target = dir.path().join("layout");
    let backend = plugin
        .open(target.to_str().expect("utf-8 path"), "")
        .await
        .expect("open a layout through the plugin");
    let sibling = dir.path().join("sibling");
    let sibling = sibling.to_str().expect("utf-8 path").to_owned();
    let sibling_store = Store::new(plugin.open(&sibling, "").await.expect("open the sibling"));
    Subject::new(Store::new(backend))
        .with_sibling(sibling_store, sibling)
        .with_guard(dir)
}

orca_core::conformance_tests!(make);

/// The example plugin, written from scratch against the contract.
mod example {
    use super::*;

    async fn make() -> Subject {
        let plugin = crate::common::load("orca_plugin_example");
        let dir = tempfile::tempdir().expect("temporary directory");
        let backend = plugin
            .open(dir.path().to_str().expect("utf-8 path"), "")
            .await
            .expect("open a directory through the example plugin");
        Subject::new(Store::new(backend)).with_guard(dir)
    }

    orca_core::conformance_tests!(make);
}

/// orca's S3 backend loaded as a plugin, against moto.
mod s3 {
    use super::*;

    async fn make() -> Subject {
        let plugin = crate::common::load("orca_plugin_s3");
        let (target, config) = crate::common::moto_target("conformance");
        let backend = plugin
            .open(&target, &config)
            .await
            .expect("open a bucket prefix through the s3 plugin");
        // Another prefix of the same bucket, to mount from.
        let (sibling_target, _) = crate::common::moto_target("sibling");
        let sibling = sibling_target
            .split_once('/')
            .map_or(sibling_target.as_str(), |(_, prefix)| prefix)
            .to_owned();
        let sibling_store = Store::new(
            plugin
                .open(&sibling_target, &config)
                .await
                .expect("open the sibling"),
        );
        Subject::new(Store::new(backend)).with_sibling(sibling_store, sibling)
    }

    orca_core::conformance_tests!(make);
}
