//! The grammar of how orca reaches and serves registries: a registry host
//! argument, `cp`'s settings for one end, `orca registry` (settings per
//! host) and `orca serve` (a registry of orca's own).

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

/// `orca registry`: the settings file (`ORCA_REGISTRIES_FILE`, else
/// `$XDG_CONFIG_HOME/orca/registries.yaml`, else
/// `~/.config/orca/registries.yaml`). Flags given on the command line win
/// over what it says.
#[derive(Debug, Subcommand)]
pub(crate) enum RegistryCommand {
    /// Change the settings of a host (the ones given; the others stay).
    #[command(
        after_help = "Examples:\n  orca registry set registry.local:5000 --tls disabled\n  orca registry set registry.example --cacert ./ca.pem --rate 10\n  orca registry set docker.io --mirror mirror.gcr.io\n  orca registry set registry.example --unset mirrors"
    )]
    Set(RegistrySet),
    /// Print the settings of a host.
    #[command(after_help = "Example:\n  orca registry get registry.local:5000 --format json")]
    Get(Host),
    /// List the hosts that have settings.
    #[command(after_help = "Example:\n  orca registry ls")]
    Ls,
    /// Remove every setting of a host.
    #[command(after_help = "Example:\n  orca registry rm registry.local:5000")]
    Rm(Host),
}

/// How a registry's TLS is set (regctl's `--tls`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Tls {
    /// HTTPS with verified certificates.
    Enabled,
    /// HTTPS, any certificate accepted.
    Insecure,
    /// Plain HTTP.
    Disabled,
}

/// A setting `orca registry set --unset` removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Setting {
    /// `--tls` (back to HTTPS, or plain HTTP for loopback hosts).
    Tls,
    /// `--cacert`.
    Cacert,
    /// `--client-cert` and `--client-key`.
    ClientCert,
    /// `--mirror`.
    Mirrors,
    /// `--rate`.
    Rate,
}

/// `orca registry set`.
#[derive(Debug, Args)]
pub(crate) struct RegistrySet {
    /// The registry host (`registry.example:5000`; `docker.io` for Docker Hub).
    pub(crate) host: String,
    /// enabled (HTTPS), insecure (HTTPS, any certificate) or disabled
    /// (plain HTTP).
    #[arg(long, value_enum)]
    pub(crate) tls: Option<Tls>,
    /// Also trust the CA certificates in this PEM file.
    #[arg(long, value_name = "FILE")]
    pub(crate) cacert: Option<PathBuf>,
    /// A client certificate (PEM) to present.
    #[arg(long, value_name = "FILE", requires = "client_key")]
    pub(crate) client_cert: Option<PathBuf>,
    /// The key of --client-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    pub(crate) client_key: Option<PathBuf>,
    /// A registry to read content from first, HOST[:PORT][/PREFIX]
    /// (repeat for several, tried in order; replaces the list): manifests
    /// and blobs by digest come from the first that has them, verified;
    /// tags are always resolved at the host itself.
    #[arg(long = "mirror", value_name = "HOST[/PREFIX]")]
    pub(crate) mirrors: Vec<String>,
    /// At most this many requests a second (regctl's --req-per-sec).
    #[arg(long, alias = "req-per-sec", value_name = "N")]
    pub(crate) rate: Option<f64>,
    /// Remove a setting (repeatable).
    #[arg(long, value_enum, value_name = "SETTING")]
    pub(crate) unset: Vec<Setting>,
}

/// `orca serve`.
#[derive(Debug, Args)]
pub(crate) struct Serve {
    /// Where the repositories are: memory, oci:DIR, s3://BUCKET[/PREFIX]
    /// or a plugin's SCHEME://LOCATION (or the config's `root`).
    pub(crate) root: Option<String>,
    /// A YAML configuration (docs/serve.md); the flags go over it.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// The address to listen on (default 127.0.0.1:5000; port 0: any free
    /// port, said on stderr).
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) listen: Option<String>,
    /// Garbage-collect every repository this often (`1h`), beside the
    /// pushes it serves and other replicas; off unless given.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) gc_every: Option<std::time::Duration>,
    /// What that collection keeps: blobs written less than this long ago
    /// (default 24h).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) gc_grace: Option<std::time::Duration>,
    /// Refuse manifests that name content the repository does not hold
    /// (by default they are taken, as the spec allows: sparse manifests).
    #[arg(long)]
    pub(crate) refuse_sparse: bool,
    /// How long a request body may send nothing before the request is
    /// given up (408; default 60s).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) idle_timeout: Option<std::time::Duration>,
    /// At most this many uploads at once; more are answered 429 (default
    /// 256).
    #[arg(long, value_name = "N")]
    pub(crate) max_uploads: Option<usize>,
    /// The largest blob accepted, in bytes (413 beyond); no limit unless
    /// given.
    #[arg(long, value_name = "BYTES")]
    pub(crate) max_blob_size: Option<u64>,
    /// Users and their bcrypt password hashes (`htpasswd -B`): basic auth.
    #[arg(long, value_name = "FILE")]
    pub(crate) htpasswd: Option<PathBuf>,
    /// What a request without credentials may do once users or tokens are
    /// set: none, read (the default) or write.
    #[arg(long, value_parser = ["none", "read", "write"])]
    pub(crate) anonymous: Option<String>,
    /// Serve HTTPS with this certificate chain (PEM); `SIGHUP` reads it
    /// and its key again.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Ask clients for a certificate from this CA (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_client_ca: Option<PathBuf>,
}

/// A command on a registry host.
#[derive(Debug, Args)]
pub(crate) struct Host {
    /// The registry host (`registry.example:5000`; `docker.io` for Docker Hub).
    pub(crate) host: String,
}

/// `cp`'s settings for its source end only; the global ones go to both.
#[derive(Debug, Args)]
pub(crate) struct SrcEnd {
    /// Speak plain HTTP to the source registry.
    #[arg(id = "src_plain_http", long = "src-plain-http")]
    pub(crate) plain_http: bool,
    /// Accept any TLS certificate from the source (skopeo's
    /// --src-tls-verify=false).
    #[arg(id = "src_insecure", long = "src-insecure")]
    pub(crate) insecure: bool,
    /// Also trust these CA certificates (PEM) at the source.
    #[arg(id = "src_ca_file", long = "src-ca-file", value_name = "FILE")]
    pub(crate) ca_file: Option<PathBuf>,
    /// The S3 endpoint of the source.
    #[arg(id = "src_s3_endpoint", long = "src-s3-endpoint", value_name = "URL")]
    pub(crate) s3_endpoint: Option<String>,
}

/// `cp`'s settings for its destination end only.
#[derive(Debug, Args)]
pub(crate) struct DestEnd {
    /// Speak plain HTTP to the destination registry.
    #[arg(id = "dest_plain_http", long = "dest-plain-http")]
    pub(crate) plain_http: bool,
    /// Accept any TLS certificate from the destination (skopeo's
    /// --dest-tls-verify=false).
    #[arg(id = "dest_insecure", long = "dest-insecure")]
    pub(crate) insecure: bool,
    /// Also trust these CA certificates (PEM) at the destination.
    #[arg(id = "dest_ca_file", long = "dest-ca-file", value_name = "FILE")]
    pub(crate) ca_file: Option<PathBuf>,
    /// The S3 endpoint of the destination.
    #[arg(id = "dest_s3_endpoint", long = "dest-s3-endpoint", value_name = "URL")]
    pub(crate) s3_endpoint: Option<String>,
}
