//! orca's S3 layout backend as a plugin: `s3layout://BUCKET/PREFIX`
//! targets open that prefix, with the endpoint, region and credentials of
//! the usual `AWS_*` environment or AWS profile. The configuration string
//! (comma-separated) may override them: `endpoint=URL`, `region=NAME`,
//! `key=ID`, `secret=KEY`, and `allow-http` for plain HTTP.

orca_plugin_abi::export_backend!(name: "s3", scheme: "s3layout", open: open);

async fn open(target: String, config: String) -> orca_core::Result<orca_backend_s3::S3Backend> {
    let mut builder = orca_backend_s3::S3Builder::new(format!("s3://{target}"));
    let (mut key, mut secret) = (None, None);
    for option in config.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        match option.split_once('=') {
            Some(("endpoint", url)) => builder = builder.endpoint(url),
            Some(("region", region)) => builder = builder.region(region),
            Some(("key", id)) => key = Some(id.to_owned()),
            Some(("secret", value)) => secret = Some(value.to_owned()),
            None if option == "allow-http" => builder = builder.allow_http(true),
            _ => {
                return Err(orca_core::Error::InvalidInput {
                    what: format!("s3layout plugin option {option:?}"),
                    reason: "known options: endpoint=, region=, key=, secret=, allow-http".into(),
                });
            }
        }
    }
    if let (Some(key), Some(secret)) = (key, secret) {
        builder = builder.credentials(key, secret);
    }
    builder.build()
}
