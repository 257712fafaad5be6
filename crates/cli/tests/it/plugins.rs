//! Backends from plugins in the CLI: `--plugin` and `ORCA_PLUGIN_PATH`
//! load them, `SCHEME://…` targets reach them, `plugin list` shows them,
//! and `cp` moves content between a linked backend and a plugin's.

use std::path::PathBuf;

use crate::common::{digest, json, ok, orca, seed_image};

/// The fs backend built as a plugin (`scripts/test` builds it).
fn fs_plugin() -> PathBuf {
    orca_testkit::plugin_library("orca_plugin_fs")
}

#[test]
fn plugin_targets_work_end_to_end() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path();
    let plugin = fs_plugin();
    let plugin = plugin.to_str().expect("utf-8");
    let image = seed_image(&path.join("linked"), "v1", b"through a plugin\n");
    let through = format!("ocidir://{}:v1", path.join("plugged").display());

    // Linked → plugin → linked, digests kept.
    let copied = json(
        path,
        &["--plugin", plugin, "cp", "oci:./linked:v1", &through],
    );
    assert_eq!(digest(&copied["copied"][0]["manifest"]), image);
    let resolved = json(path, &["--plugin", plugin, "resolve", &through]);
    assert_eq!(digest(&resolved), image);
    ok(path, &["--plugin", plugin, "cp", &through, "oci:./back:v1"]);
    assert_eq!(digest(&json(path, &["resolve", "oci:./back:v1"])), image);
    // It is a real layout on disk, readable without the plugin.
    assert_eq!(digest(&json(path, &["resolve", "oci:./plugged:v1"])), image);

    // push → tags → pull on the plugin's target.
    std::fs::write(path.join("note.txt"), b"a note\n").expect("write");
    let note = format!("ocidir://{}:note", path.join("plugged").display());
    json(path, &["--plugin", plugin, "push", &note, "note.txt"]);
    let tags = json(
        path,
        &[
            "--plugin",
            plugin,
            "tags",
            &format!("ocidir://{}", path.join("plugged").display()),
        ],
    );
    assert_eq!(tags["tags"], serde_json::json!(["note", "v1"]));
    let out = path.join("out");
    json(
        path,
        &[
            "--plugin",
            plugin,
            "pull",
            &note,
            "-o",
            out.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(
        std::fs::read(out.join("note.txt")).expect("pulled"),
        b"a note\n"
    );

    // gc on the plugin's layout: this orca's collector, over the storage
    // the plugin opens. The note, untagged, is garbage once out of grace.
    let layout = format!("ocidir://{}", path.join("plugged").display());
    ok(
        path,
        &["--plugin", plugin, "manifest", "delete", "-f", &note],
    );
    let kept = json(path, &["--plugin", plugin, "gc", &layout]);
    assert_eq!(kept["blobs"].as_array().map(Vec::len), Some(0), "{kept}");
    let collected = json(
        path,
        &["--plugin", plugin, "gc", &layout, "--grace", "0", "--force"],
    );
    assert_eq!(
        collected["blobs"].as_array().map(Vec::len),
        Some(2),
        "the note's layer and config: {collected}"
    );
    assert_eq!(digest(&json(path, &["resolve", "oci:./plugged:v1"])), image);
    ok(path, &["cp", "oci:./plugged:v1", "oci:./again:v1"]);

    // Without the plugin, the scheme is unknown: a usage error that says so.
    let missing = crate::common::run(path, &["resolve", &through]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .contains("no plugin provides the scheme ocidir://")
    );
}

#[test]
fn plugins_are_found_and_listed() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path();
    let plugins = path.join("plugins");
    std::fs::create_dir_all(&plugins).expect("dir");
    std::fs::copy(
        fs_plugin(),
        plugins.join(fs_plugin().file_name().expect("name")),
    )
    .expect("copy");
    let output = orca(path)
        .current_dir(path)
        .env("ORCA_PLUGIN_PATH", &plugins)
        .args(["plugin", "list", "--format", "json"])
        .output()
        .expect("run orca");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let plugin = &listed["plugins"][0];
    assert_eq!(plugin["name"], "fs");
    assert_eq!(plugin["scheme"], "ocidir");
    assert_eq!(plugin["abiVersion"], 1);
    assert_eq!(plugin["storage"], true, "{plugin}");
    assert!(
        plugin["path"]
            .as_str()
            .is_some_and(|p| p.starts_with(plugins.to_str().expect("utf-8")))
    );
    let capabilities = plugin["capabilities"].as_array().expect("capabilities");
    assert!(capabilities.iter().any(|c| c == "delete"), "{plugin}");

    // A file that is no plugin, given by path: exit 1 with the reason.
    std::fs::write(path.join("not-a-plugin.so"), b"nope").expect("write");
    let bad = crate::common::run(path, &["--plugin", "not-a-plugin.so", "plugin", "list"]);
    assert_eq!(bad.status.code(), Some(1));
    let said = String::from_utf8_lossy(&bad.stderr);
    assert!(said.contains("loading plugin not-a-plugin.so"), "{said}");
}

#[test]
fn sync_fills_prunes_and_restores_a_bundle_in_a_plugin_backend() {
    use crate::sync_support::{actions, same_digests, seed, write_config};
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path();
    let plugin = fs_plugin();
    let plugin = plugin.to_str().expect("utf-8");
    let registry = orca_testkit::RegistryServer::shared();
    let prefix = crate::common::unique("plugged");
    seed(
        path,
        &prefix,
        &[
            ("app", "1.0", "one"),
            ("app", "2.0", "two"),
            ("tool", "1.0", "t"),
        ],
    );
    let bundle = format!("ocidir://{}", path.join("bundle").display());
    let config = write_config(
        path,
        &format!(
            "sync:\n  - source: {}/{prefix}/\n    target: {bundle}\n    prune: true\n",
            registry.host()
        ),
    );
    let sync = |config: &str| json(path, &["--plugin", plugin, "sync", config]);
    let first = sync(&config);
    assert_eq!(actions(&first).len(), 3, "{first}");
    assert!(
        actions(&first).iter().all(|(_, a)| a == "copied"),
        "{first}"
    );
    let tags = json(path, &["--plugin", plugin, "tags", &bundle]);
    assert_eq!(
        tags["tags"],
        serde_json::json!([
            format!("{prefix}/app:1.0"),
            format!("{prefix}/app:2.0"),
            format!("{prefix}/tool:1.0")
        ])
    );
    let again = sync(&config);
    assert!(
        actions(&again).iter().all(|(_, a)| a == "up-to-date"),
        "{again}"
    );

    // One repository of the plugin's bundle, as `oci:DIR:REPO[:TAG]` names
    // one of a layout: read, written and listed.
    let app = format!("{bundle}:{prefix}/app");
    let app_tags = json(path, &["--plugin", plugin, "tags", &app]);
    assert_eq!(
        app_tags["tags"],
        serde_json::json!(["1.0", "2.0"]),
        "{app_tags}"
    );
    let from_bundle = json(
        path,
        &["--plugin", plugin, "resolve", &format!("{app}:2.0")],
    );
    let from_registry = json(
        path,
        &["resolve", &format!("{}/{prefix}/app:2.0", registry.host())],
    );
    assert_eq!(digest(&from_bundle), digest(&from_registry));
    ok(
        path,
        &[
            "--plugin",
            plugin,
            "cp",
            &format!("{app}:2.0"),
            &format!("{bundle}:{prefix}/copied:v9"),
        ],
    );
    let repos = ok(path, &["--plugin", plugin, "repos", &bundle]);
    assert!(repos.contains(&format!("{prefix}/copied\n")), "{repos}");
    let copied = json(
        path,
        &[
            "--plugin",
            plugin,
            "resolve",
            &format!("{bundle}:{prefix}/copied:v9"),
        ],
    );
    assert_eq!(digest(&copied), digest(&from_registry));
    ok(
        path,
        &[
            "--plugin",
            plugin,
            "untag",
            &format!("{bundle}:{prefix}/copied:v9"),
        ],
    );

    // A prune works on a backend without garbage collection.
    ok(
        path,
        &["untag", &format!("{}/{prefix}/app:1.0", registry.host())],
    );
    let pruned = sync(&config);
    assert!(
        actions(&pruned).contains(&(format!("{bundle}:{prefix}/app:1.0"), "pruned".into())),
        "{pruned}"
    );

    // And back out of the plugin's bundle into a registry.
    let back = format!("{prefix}-back");
    let restore = write_config(
        path,
        &format!(
            "sync:\n  - source: {bundle}\n    target: {}/{back}\n",
            registry.host()
        ),
    );
    let restored = sync(&restore);
    assert!(
        actions(&restored).iter().all(|(_, a)| a == "copied"),
        "{restored}"
    );
    same_digests(
        path,
        &format!("{}/{prefix}", registry.host()),
        &format!("{}/{back}/{prefix}", registry.host()),
        &[("app", "2.0"), ("tool", "1.0")],
    );
}
