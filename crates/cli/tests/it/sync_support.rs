//! What the `orca sync` tests share: configurations written to files,
//! the report read back, source images seeded on the shared registry, and
//! requests counted at a recording proxy.

use std::path::Path;

use orca_testkit::RegistryServer;

use crate::common::{ok, seed_image, unique};

/// Requests the client sent in `recorded` whose request line starts with
/// `method` and names `what` (`/manifests/`, `/blobs/`).
pub(crate) fn requests(recorded: &str, method: &str, what: &str) -> usize {
    recorded
        .lines()
        .filter(|line| line.starts_with(&format!("{method} /v2/")) && line.contains(what))
        .count()
}

pub(crate) fn write_config(path: &Path, text: &str) -> String {
    let file = path.join(format!("{}.yaml", unique("sync")));
    std::fs::write(&file, text).expect("write config");
    file.display().to_string()
}

pub(crate) fn actions(report: &serde_json::Value) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = report["images"]
        .as_array()
        .expect("images")
        .iter()
        .map(|image| {
            (
                format!(
                    "{}:{}",
                    image["target"].as_str().unwrap_or_default(),
                    image["tag"].as_str().unwrap_or_default()
                ),
                image["action"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    found.sort();
    found
}

/// Pushes images `(repository, tag, content)` under `prefix` of the shared
/// registry, by way of a scratch layout.
pub(crate) fn seed(path: &Path, prefix: &str, images: &[(&str, &str, &str)]) {
    let registry = RegistryServer::shared();
    let scratch = path.join(unique("seed"));
    for (repository, tag, content) in images {
        seed_image(&scratch, tag, content.as_bytes());
        ok(
            path,
            &[
                "cp",
                &format!("oci:{}:{tag}", scratch.display()),
                &format!("{}/{prefix}/{repository}:{tag}", registry.host()),
            ],
        );
    }
}

/// Asserts that each `(repository, tag)` names the same digest under
/// `from` and under `to` (registry bases, `HOST[/PREFIX]`).
pub(crate) fn same_digests(path: &Path, from: &str, to: &str, images: &[(&str, &str)]) {
    for (repository, tag) in images {
        let original = ok(path, &["resolve", &format!("{from}/{repository}:{tag}")]);
        let copy = ok(path, &["resolve", &format!("{to}/{repository}:{tag}")]);
        assert_eq!(original, copy, "{repository}:{tag} keeps its digest");
    }
}

pub(crate) fn tags_of(report: &serde_json::Value, entry_target: &str) -> Vec<String> {
    let mut tags: Vec<String> = report["images"]
        .as_array()
        .expect("images")
        .iter()
        .filter(|image| {
            image["target"]
                .as_str()
                .unwrap_or_default()
                .starts_with(entry_target)
        })
        .map(|image| image["tag"].as_str().unwrap_or_default().to_owned())
        .collect();
    tags.sort();
    tags
}

/// Pushes a two-platform index (linux/amd64, linux/arm64) tagged `1.0`
/// to `repository`; returns the arm64 image's digest.
pub(crate) async fn push_index(client: &orca::http::Registry, repository: &str) -> String {
    let store = orca::Store::new(client.repository(repository).await.expect("repository"));
    let mut members = Vec::new();
    for architecture in ["amd64", "arm64"] {
        let layer = orca_testkit::layer_of("arch.txt", architecture.as_bytes());
        let mut image =
            orca_testkit::push_layered_image(&store, &[&layer], architecture, None).await;
        image.platform =
            Some(orca::Platform::parse(&format!("linux/{architecture}")).expect("platform"));
        members.push(image);
    }
    let index = orca::Index {
        manifests: members.clone(),
        ..orca::Index::new()
    };
    store
        .push_manifest(&index.to_raw().expect("raw"), Some("1.0"))
        .await
        .expect("index");
    members[1].digest.to_string()
}

/// Runs `work` against stores of the shared registry's repositories.
pub(crate) fn on_registry<F, T>(work: impl FnOnce(orca::http::Registry) -> F) -> T
where
    F: std::future::Future<Output = T>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let registry = orca::registry(&RegistryServer::shared().host(), &orca::OpenOptions::new())
            .expect("registry client");
        work(registry).await
    })
}
