//! The options every command takes: output, logging, TLS and credentials
//! for registries, S3 settings, plugins, timeouts and the content cache.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

/// How results are printed on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// For people.
    Text,
    /// One JSON document, for scripts.
    Json,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub(crate) struct Global {
    /// Output format of results (stdout).
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,
    /// More log lines on stderr (-v, -vv); backtraces with -v.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
    /// Print each HTTP exchange on stderr: method, URL (without its
    /// query), status, `WWW-Authenticate`, `Docker-Content-Digest` and
    /// time taken; never credentials.
    #[arg(long, global = true)]
    pub(crate) debug: bool,
    /// Nothing on stderr but errors.
    #[arg(short, long, global = true)]
    pub(crate) quiet: bool,
    /// No progress display.
    #[arg(long, global = true)]
    pub(crate) no_progress: bool,
    /// Accept any TLS certificate (registries and S3), and speak plain
    /// HTTP to a registry that answers only that (as crane's --insecure).
    #[arg(long, global = true)]
    pub(crate) insecure: bool,
    /// Speak plain HTTP to registries.
    #[arg(long, global = true)]
    pub(crate) plain_http: bool,
    /// Also trust the CA certificates in this PEM file (and speak HTTPS,
    /// even to a loopback registry).
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) ca_file: Option<PathBuf>,
    /// A client certificate (PEM) for registries that ask for one.
    #[arg(long, global = true, value_name = "FILE", requires = "key_file")]
    pub(crate) cert_file: Option<PathBuf>,
    /// The key of --cert-file (PEM).
    #[arg(long, global = true, value_name = "FILE", requires = "cert_file")]
    pub(crate) key_file: Option<PathBuf>,
    /// Registry user name (the password comes from --password-stdin).
    #[arg(short = 'u', long, global = true)]
    pub(crate) username: Option<String>,
    /// Read the registry password from stdin.
    #[arg(long, global = true)]
    pub(crate) password_stdin: bool,
    /// The registry password (as docker, oras and skopeo take it; other
    /// users of the machine can see it: prefer --password-stdin).
    #[arg(short = 'p', long, global = true, conflicts_with = "password_stdin")]
    pub(crate) password: Option<String>,
    /// User name and password as USER[:PASSWORD] (skopeo's --creds); no
    /// password means --password-stdin.
    #[arg(
        long,
        global = true,
        value_name = "USER[:PASSWORD]",
        conflicts_with = "username"
    )]
    pub(crate) creds: Option<String>,
    /// The docker config.json holding registry credentials.
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) registry_config: Option<PathBuf>,
    /// S3 endpoint URL (default: AWS_ENDPOINT_URL, else AWS).
    #[arg(long, global = true, value_name = "URL")]
    pub(crate) s3_endpoint: Option<String>,
    /// S3 region (default: AWS_REGION / AWS_DEFAULT_REGION).
    #[arg(long, global = true)]
    pub(crate) s3_region: Option<String>,
    /// Load a backend plugin (a shared library); repeatable. The
    /// directories in ORCA_PLUGIN_PATH are searched too.
    #[arg(long = "plugin", global = true, value_name = "PATH")]
    pub(crate) plugins: Vec<PathBuf>,
    /// A configuration string for the plugin of a scheme, SCHEME=CONFIG.
    #[arg(long = "plugin-config", global = true, value_name = "SCHEME=CONFIG")]
    pub(crate) plugin_config: Vec<String>,
    /// How long a transfer may make no progress before it counts as
    /// stalled (`60s`, `5m`; registries and S3). A transfer that keeps
    /// moving is never cut, however long it takes.
    #[arg(long, global = true, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Option<std::time::Duration>,
    /// How long a registry request may wait for its answer before it is
    /// tried again (default 30s, four attempts).
    #[arg(long, global = true, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) response_timeout: Option<std::time::Duration>,
    /// Read and copy Docker schema-1 manifests (deprecated) as they are;
    /// also ORCA_ENABLE_DEPRECATED_SCHEMA1=1.
    #[arg(long, global = true)]
    pub(crate) allow_schema1: bool,
    /// Keep blobs read from registries in this directory and read them
    /// from it next time (also ORCA_CACHE); processes share it safely.
    #[arg(long, global = true, value_name = "DIR")]
    pub(crate) cache: Option<PathBuf>,
}
