//! orca's OCI image layout backend as a plugin: `ocidir:///path/to/layout`
//! targets open the layout at that path. Built as a `cdylib`, loaded with
//! `orca --plugin` or `orca_plugin_abi::Plugin::load`.

orca_plugin_abi::export_backend!(name: "fs", scheme: "ocidir", open: open);

/// Opens the layout directory `target` names; the configuration string
/// may say `durable=false` to skip fsync.
async fn open(target: String, config: String) -> orca_core::Result<orca_backend_fs::LayoutBackend> {
    let durable = !config
        .split(',')
        .any(|option| option.trim() == "durable=false");
    orca_backend_fs::LayoutBuilder::new(target)
        .durable(durable)
        .open()
}

orca_plugin_abi::export_storage!(open: open_storage);

/// Opens the object storage of the layout directory `target` names, for
/// the host's own layout engine (garbage collection); same options.
async fn open_storage(
    target: String,
    config: String,
) -> orca_core::Result<orca_backend_fs::Directory> {
    Ok(open(target, config).await?.storage().clone())
}
