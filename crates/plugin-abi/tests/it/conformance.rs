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
        let server = orca_testkit::MotoServer::shared();
        let bucket = format!("orca-plugin-{}", std::process::id());
        server.create_bucket(&bucket).expect("bucket");
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let prefix = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // Keys from a credentials file, never the configuration string.
        let credentials =
            std::env::temp_dir().join(format!("orca-plugin-credentials-{}", std::process::id()));
        std::fs::write(
            &credentials,
            "[conformance]\naws_access_key_id = orca-test-key\naws_secret_access_key = orca-test-secret\n",
        )
        .expect("credentials file");
        let config = format!(
            "endpoint={},region=us-east-1,credentials-file={},profile=conformance,allow-http",
            server.endpoint(),
            credentials.display()
        );
        let backend = plugin
            .open(&format!("{bucket}/conformance-{prefix}"), &config)
            .await
            .expect("open a bucket prefix through the s3 plugin");
        let sibling = format!("sibling-{prefix}");
        let sibling_store = Store::new(
            plugin
                .open(&format!("{bucket}/{sibling}"), &config)
                .await
                .expect("open the sibling"),
        );
        Subject::new(Store::new(backend)).with_sibling(sibling_store, sibling)
    }

    orca_core::conformance_tests!(make);
}
