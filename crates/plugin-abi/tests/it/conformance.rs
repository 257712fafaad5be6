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
    Subject::new(Store::new(backend)).with_guard(dir)
}

orca_core::conformance_tests!(make);
