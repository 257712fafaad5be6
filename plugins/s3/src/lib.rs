//! orca's S3 layout backend as a plugin: `s3layout://BUCKET/PREFIX`
//! targets open that prefix, with the endpoint, region and credentials of
//! the usual `AWS_*` environment or AWS profile. The configuration string
//! (comma-separated) may override the endpoint and region: `endpoint=URL`,
//! `region=NAME`, and `allow-http` for plain HTTP; and name a shared
//! credentials file to read keys from, `credentials-file=PATH` (with
//! `profile=NAME`, default `default`). Keys themselves are never taken from
//! the configuration string, which a command line shows to every user of
//! the machine.

orca_plugin_abi::export_backend!(name: "s3", scheme: "s3layout", open: open);

async fn open(target: String, config: String) -> orca_core::Result<orca_backend_s3::S3Backend> {
    let mut builder = orca_backend_s3::S3Builder::new(format!("s3://{target}"));
    let (mut file, mut profile) = (None, "default".to_owned());
    for option in config.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        match option.split_once('=') {
            Some(("endpoint", url)) => builder = builder.endpoint(url),
            Some(("region", region)) => builder = builder.region(region),
            Some(("credentials-file", path)) => file = Some(path.to_owned()),
            Some(("profile", name)) => profile = name.to_owned(),
            None if option == "allow-http" => builder = builder.allow_http(true),
            // The option's name only: a mistyped one may carry a secret.
            _ => {
                let name = option.split_once('=').map_or(option, |(name, _)| name);
                let reason = if matches!(name, "key" | "secret") {
                    "credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, the AWS profile or credentials-file=PATH, never the command line"
                } else {
                    "known options: endpoint=, region=, credentials-file=, profile=, allow-http"
                };
                return Err(orca_core::Error::InvalidInput {
                    what: format!("s3layout plugin option {name:?}"),
                    reason: reason.into(),
                });
            }
        }
    }
    if let Some(file) = file {
        builder = builder.credentials_file(file, &profile);
    }
    builder.build()
}

orca_plugin_abi::export_storage!(open: open_storage);

/// Opens the object storage of the prefix `target` names, for the host's
/// own layout engine (garbage collection); same options.
async fn open_storage(
    target: String,
    config: String,
) -> orca_core::Result<orca_backend_s3::Bucket> {
    Ok(open(target, config).await?.storage().clone())
}

#[cfg(test)]
mod tests {
    /// Backends review m17: no secret on the command line, and a mistyped
    /// option's value never echoed.
    #[tokio::test]
    async fn m17_secrets_are_neither_taken_nor_echoed() {
        for config in ["secret=THEKEY", "scret=THEKEY", "key=AKIATHEKEY"] {
            let err = super::open("bucket/p".into(), config.into())
                .await
                .expect_err(config);
            let text = format!("{err} {err:?}");
            assert!(!text.contains("THEKEY"), "{text}");
        }
    }
}
