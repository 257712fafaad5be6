//! The command line's grammar: global options and one subcommand each,
//! with help text that shows an example.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

mod global;
mod hosting;

pub(crate) use global::{Format, Global};
pub(crate) use hosting::{
    DestEnd, Host, RegistryCommand, RegistrySet, Serve, Setting, SrcEnd, Tls,
};

/// Move OCI images and artifacts between registries, image layouts,
/// archives and object stores, verifying every byte.
#[derive(Debug, Parser)]
#[command(
    name = "orca",
    version,
    about,
    after_help = "Targets:\n  HOST[:PORT]/REPO[:TAG|@DIGEST]   a registry repository (docker:// optional; no host = Docker Hub)\n  oci:PATH[:TAG|@DIGEST]           an OCI image layout directory\n  oci-archive:FILE[:TAG]           an OCI layout in a tar\n  docker-archive:FILE[:REPO:TAG]   a `docker save` tar\n  s3://BUCKET/PREFIX[:TAG|@DIGEST] an OCI image layout in S3 (AWS_* environment)\n\nExit status:\n  0 success, 1 failure, 2 a mistake in what was typed, 3 not found,\n  4 credentials missing or rejected, 130 interrupted (after cleaning up)\n\nExample:\n  orca cp alpine:3 oci:./alpine:3"
)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Copy an image, index or artifact (and what it names) between targets.
    #[command(
        after_help = "Examples:\n  orca cp oci:./layout:v1 localhost:5000/app:v1\n  orca cp --platform linux/amd64 alpine:3 oci-archive:alpine.tar:3\n  orca cp --all-tags localhost:5000/app s3://bucket/app"
    )]
    Cp(Cp),
    /// Push files as an artifact.
    #[command(
        after_help = "Example:\n  orca push oci:./layout:sbom sbom.json:application/spdx+json --artifact-type application/vnd.example.sbom"
    )]
    Push(Push),
    /// Pull an artifact's files into a directory (by their titles; a
    /// packed directory is unpacked).
    #[command(after_help = "Example:\n  orca pull oci:./layout:sbom -o ./out")]
    Pull(Pull),
    /// Attach files to a manifest as a referrer.
    #[command(
        after_help = "Example:\n  orca attach localhost:5000/app:v1 sig.json --artifact-type application/vnd.example.signature"
    )]
    Attach(Attach),
    /// List the referrers of a manifest (a tree; --format json for scripts).
    #[command(after_help = "Example:\n  orca discover localhost:5000/app:v1 --depth 2")]
    Discover(Discover),
    /// Show a manifest or index: media type, digest, platforms, layers, config.
    #[command(after_help = "Example:\n  orca inspect oci:./layout:v1 --platform linux/arm64")]
    Inspect(Inspect),
    /// Print an image's configuration (the config blob's exact bytes).
    #[command(
        after_help = "Example:\n  orca config localhost:5000/app:v1 --platform linux/amd64 | jq .config"
    )]
    Config(Inspect),
    /// Print the digest a tag resolves to.
    #[command(after_help = "Example:\n  orca resolve localhost:5000/app:v1")]
    Resolve(One),
    /// Point more tags at the manifest a target names.
    #[command(after_help = "Example:\n  orca tag oci:./layout:v1 latest stable")]
    Tag(Tag),
    /// Remove a tag (the manifest stays).
    #[command(after_help = "Example:\n  orca untag oci:./layout:old")]
    Untag(One),
    /// List the tags of a repository, layout, archive or bucket.
    #[command(after_help = "Example:\n  orca tags localhost:5000/app --exclude-digest-tags")]
    Tags(Tags),
    /// List the repositories of a registry.
    #[command(after_help = "Example:\n  orca repos localhost:5000")]
    Repos(Repos),
    /// Read, write or delete manifests.
    #[command(subcommand)]
    Manifest(ManifestCommand),
    /// Read, write or delete blobs (layers, configs) by digest.
    #[command(subcommand)]
    Blob(BlobCommand),
    /// Build an index from images (members by digest, the index by tag).
    #[command(subcommand)]
    Index(IndexCommand),
    /// Remove blobs nothing reachable names, from a layout or bucket.
    #[command(
        after_help = "Unreachable blobs younger than --grace are kept, so pushes running meanwhile are safe;\na tag made while it runs is never left naming a removed blob.\n\nExamples:\n  orca gc oci:./layout --dry-run\n  orca gc s3://bucket/mirror --grace 1h\n  orca gc oci:./layout --grace 0 --force   # no one else writes"
    )]
    Gc(Gc),
    /// Mirror repositories as a YAML file says (see docs/sync.md): tag
    /// filters, platforms, referrers, prune; re-runs copy only what changed.
    #[command(
        after_help = "Example:\n  orca sync mirror.yaml --dry-run\n  orca sync mirror.yaml --format json\n  orca sync mirror.yaml --watch 10m"
    )]
    Sync(SyncArgs),
    /// Log in to a registry: check the credentials, then keep them where
    /// docker keeps them (its credential helper, or config.json).
    #[command(
        after_help = "Example:\n  echo \"$TOKEN\" | orca login registry.example -u me --password-stdin"
    )]
    Login(Host),
    /// Forget the credentials of a registry.
    #[command(after_help = "Example:\n  orca logout registry.example")]
    Logout(Host),
    /// Settings per registry host, kept in a file every command and sync
    /// read: TLS, CA, client certificate, mirrors, request rate.
    #[command(subcommand)]
    Registry(RegistryCommand),
    /// The content cache (--cache DIR or ORCA_CACHE): list it, size it,
    /// prune it.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Print the digest of files (or stdin, `-`), as orca computes it.
    #[command(after_help = "Example:\n  orca digest layer.tar --algorithm sha512")]
    Digest(DigestArgs),
    /// Show the loaded plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Serve a registry (the OCI distribution API, with the Referrers API)
    /// over a root of repositories, one OCI image layout each.
    #[command(
        after_help = "Roots:\n  memory                    in this process, gone when it stops\n  oci:DIR                   DIR/<repo>/ is an OCI image layout (skopeo, umoci and orca cp oci: read it)\n  s3://BUCKET[/PREFIX]      the same layouts in a bucket (AWS_* environment)\n  SCHEME://LOCATION         a plugin's layout storage (--plugin)\n\nExample:\n  orca serve oci:./registry --listen 127.0.0.1:5000"
    )]
    Serve(Serve),
    /// Print shell completions.
    #[command(after_help = "Example:\n  orca completions bash > /etc/bash_completion.d/orca")]
    Completions(Completions),
    /// Print the version.
    #[command(after_help = "Example:\n  orca version --format json")]
    Version,
}

/// `orca cp`.
#[derive(Debug, Args)]
pub(crate) struct Cp {
    /// Where from.
    pub(crate) source: String,
    /// Where to.
    pub(crate) destination: String,
    /// Only this platform (os/arch[/variant]); repeat for several.
    #[arg(long = "platform", value_name = "PLATFORM")]
    pub(crate) platforms: Vec<String>,
    /// Copy the referrers (signatures, SBOMs) too.
    #[arg(long, short = 'r')]
    pub(crate) referrers: bool,
    /// Copy the digest tags (sha256-….sig and the like) too.
    #[arg(long)]
    pub(crate) digest_tags: bool,
    /// Walk and repair what the destination already has.
    #[arg(long)]
    pub(crate) force: bool,
    /// Copy layers hosted elsewhere (foreign URLs) too.
    #[arg(long)]
    pub(crate) include_external: bool,
    /// Copy every tag of the source repository.
    #[arg(long, short = 'a')]
    pub(crate) all_tags: bool,
    /// skopeo's `--all` (every platform of an index): what orca copies by
    /// default. Said so, rather than taken for --all-tags.
    #[arg(long, hide = true)]
    pub(crate) all: bool,
    /// Transfers at once.
    #[arg(long, default_value_t = 4)]
    pub(crate) concurrency: usize,
    /// Convert Docker media types to OCI ones on the way (`oci`), as
    /// `skopeo copy --format oci` does: manifests get new bytes, so new
    /// digests (said on stderr); blobs are untouched. skopeo reads only
    /// OCI media types from a layout. (`--format` is the output format.)
    #[arg(long, value_name = "FORMAT", value_parser = ["oci"])]
    pub(crate) image_format: Option<String>,
    /// Credentials for the source registry only, USER[:PASSWORD] (no
    /// password: --password-stdin); the global ones go to both ends.
    #[arg(long, value_name = "USER[:PASSWORD]")]
    pub(crate) src_creds: Option<String>,
    /// Credentials for the destination registry only, USER[:PASSWORD].
    #[arg(long, value_name = "USER[:PASSWORD]")]
    pub(crate) dest_creds: Option<String>,
    /// What differs at the source end only (TLS, CA, S3 endpoint).
    #[command(flatten)]
    pub(crate) src: SrcEnd,
    /// What differs at the destination end only.
    #[command(flatten)]
    pub(crate) dest: DestEnd,
    /// Between two layouts on one filesystem, hard-link blobs instead of
    /// copying them (or, between two prefixes of one bucket, copy them
    /// server-side). Their bytes are not read, so not verified again.
    #[arg(long)]
    pub(crate) link: bool,
    /// Into an oci-archive or docker-archive that exists: replace what it
    /// holds (by default the copy is added to it, as sync does). A file
    /// that is no image archive is never replaced.
    #[arg(long)]
    pub(crate) overwrite: bool,
}

/// `orca push`.
#[derive(Debug, Args)]
pub(crate) struct Push {
    /// Where to (with a tag).
    pub(crate) target: String,
    /// Files, each FILE or FILE:MEDIATYPE. A directory is packed as one
    /// gzip-compressed tar layer (as oras packs it) that `pull` unpacks.
    #[arg(required = true)]
    pub(crate) files: Vec<String>,
    #[command(flatten)]
    pub(crate) artifact: ArtifactArgs,
    /// Also write the manifest pushed to this file (oras's
    /// --export-manifest).
    #[arg(long, value_name = "FILE")]
    pub(crate) export_manifest: Option<PathBuf>,
    /// A config file, FILE or FILE:MEDIATYPE (default: the empty config).
    #[arg(long, value_name = "FILE[:MEDIATYPE]")]
    pub(crate) config: Option<String>,
    /// The manifest this artifact refers to.
    #[arg(long, value_name = "TARGET")]
    pub(crate) subject: Option<String>,
    /// Manifest form: auto (1.1, else 1.0), 1.0 or 1.1.
    #[arg(long, default_value = "auto", value_parser = ["auto", "1.0", "1.1"])]
    pub(crate) oci_version: String,
}

/// What an artifact is: its type and annotations.
#[derive(Debug, Args)]
pub(crate) struct ArtifactArgs {
    /// The artifact type.
    #[arg(long, default_value = "application/vnd.unknown.artifact.v1")]
    pub(crate) artifact_type: String,
    /// A manifest annotation, KEY=VALUE; repeatable.
    #[arg(long = "annotation", short = 'a', value_name = "KEY=VALUE")]
    pub(crate) annotations: Vec<String>,
    /// A JSON file of annotations (`{"$manifest": {"k": "v"}}` or `{"k": "v"}`).
    #[arg(long, value_name = "FILE")]
    pub(crate) annotation_file: Option<PathBuf>,
}

/// `orca pull`.
#[derive(Debug, Args)]
pub(crate) struct Pull {
    /// Where from.
    pub(crate) target: String,
    /// The directory to write the files into.
    #[arg(short, long, default_value = ".")]
    pub(crate) output: PathBuf,
    /// Of an index, the member of this platform.
    #[arg(long)]
    pub(crate) platform: Option<String>,
    /// Replace files of the same names in the output directory (by
    /// default a pull that would replace one is refused, before anything
    /// is written).
    #[arg(long)]
    pub(crate) overwrite: bool,
}

/// `orca attach`.
#[derive(Debug, Args)]
pub(crate) struct Attach {
    /// The manifest to attach to.
    pub(crate) subject: String,
    /// Files, each FILE or FILE:MEDIATYPE.
    #[arg(required = true)]
    pub(crate) files: Vec<String>,
    #[command(flatten)]
    pub(crate) artifact: ArtifactArgs,
}

/// `orca discover`.
#[derive(Debug, Args)]
pub(crate) struct Discover {
    /// The manifest whose referrers to list.
    pub(crate) target: String,
    /// Only referrers of this artifact type.
    #[arg(long)]
    pub(crate) artifact_type: Option<String>,
    /// Levels of referrers to show: 1 for the subject's own, 2 with their
    /// referrers too, and so on (at least 1).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) depth: u32,
}

/// A command on one target.
#[derive(Debug, Args)]
pub(crate) struct One {
    /// The target.
    pub(crate) target: String,
}

/// `orca inspect`.
#[derive(Debug, Args)]
pub(crate) struct Inspect {
    /// The target.
    pub(crate) target: String,
    /// Of an index, the member of this platform.
    #[arg(long)]
    pub(crate) platform: Option<String>,
}

/// `orca tag`.
#[derive(Debug, Args)]
pub(crate) struct Tag {
    /// The manifest to tag.
    pub(crate) target: String,
    /// The new tags.
    #[arg(required = true)]
    pub(crate) tags: Vec<String>,
}

/// `orca tags`.
#[derive(Debug, Args)]
pub(crate) struct Tags {
    /// The repository, layout, archive or bucket.
    pub(crate) target: String,
    /// Leave out digest tags (`sha256-…`).
    #[arg(long)]
    pub(crate) exclude_digest_tags: bool,
    /// Start after this tag.
    #[arg(long)]
    pub(crate) last: Option<String>,
    /// At most this many tags.
    #[arg(short)]
    pub(crate) n: Option<usize>,
}

/// `orca repos`.
#[derive(Debug, Args)]
pub(crate) struct Repos {
    /// The registry host, or a bundle (oci:DIR, oci-archive:FILE,
    /// docker-archive:FILE, s3://BUCKET/PREFIX, a plugin's SCHEME://…).
    pub(crate) host: String,
    /// Start after this repository.
    #[arg(long)]
    pub(crate) last: Option<String>,
    /// At most this many repositories.
    #[arg(short)]
    pub(crate) n: Option<usize>,
}

/// `orca manifest …`.
#[derive(Debug, Subcommand)]
pub(crate) enum ManifestCommand {
    /// Print a manifest's exact bytes.
    #[command(after_help = "Example:\n  orca manifest get oci:./layout:v1 --platform linux/arm64")]
    Get {
        /// The manifest.
        target: String,
        /// Of an index, the member of this platform.
        #[arg(long)]
        platform: Option<String>,
    },
    /// Print a manifest's descriptor (media type, digest, size).
    #[command(after_help = "Example:\n  orca manifest head localhost:5000/app:v1")]
    Head {
        /// The manifest.
        target: String,
    },
    /// Store a manifest from a file or stdin (`-`), its media type detected.
    #[command(after_help = "Example:\n  orca manifest put oci:./layout:v2 manifest.json")]
    Put {
        /// Where to (a tag, or none to store by digest).
        target: String,
        /// The file, or `-` for stdin.
        #[arg(default_value = "-")]
        file: String,
    },
    /// Delete a manifest (and its tags). Asks first on a terminal;
    /// elsewhere (scripts) it needs `--force`.
    #[command(after_help = "Example:\n  orca manifest delete -f oci:./layout:old")]
    Delete {
        /// The manifest.
        target: String,
        /// Delete without asking.
        #[arg(short, long)]
        force: bool,
    },
}

/// `orca blob …`.
#[derive(Debug, Subcommand)]
pub(crate) enum BlobCommand {
    /// Write a blob to a file, or to stdout (`-`), verified.
    #[command(after_help = "Example:\n  orca blob get localhost:5000/app@sha256:… -o layer.tar")]
    Get {
        /// The blob (`…@DIGEST`).
        target: String,
        /// The file, or `-` for stdout.
        #[arg(short, long, default_value = "-")]
        output: String,
    },
    /// Print a blob's size, or fail if it is absent.
    #[command(after_help = "Example:\n  orca blob head oci:./layout@sha256:…")]
    Head {
        /// The blob (`…@DIGEST`).
        target: String,
    },
    /// Store a file, or stdin (`-`), as a blob; prints its descriptor.
    #[command(after_help = "Example:\n  orca blob put oci:./layout layer.tar")]
    Put {
        /// Where to.
        target: String,
        /// The file, or `-` for stdin.
        #[arg(default_value = "-")]
        file: String,
        /// The media type its descriptor says.
        #[arg(long, default_value = "application/octet-stream")]
        media_type: String,
    },
    /// Delete a blob (an image that uses it breaks). Asks first on a
    /// terminal; elsewhere (scripts) it needs `--force`.
    #[command(after_help = "Example:\n  orca blob delete -f oci:./layout@sha256:…")]
    Delete {
        /// The blob (`…@DIGEST`).
        target: String,
        /// Delete without asking.
        #[arg(short, long)]
        force: bool,
    },
}

/// `orca index …`.
#[derive(Debug, Subcommand)]
pub(crate) enum IndexCommand {
    /// Create an index from images and indexes, into TARGET.
    #[command(
        after_help = "Example:\n  orca index create oci:./layout:multi oci:./layout:amd64 oci:./layout:arm64"
    )]
    Create {
        /// Where to (the index is tagged here).
        target: String,
        /// The images and indexes to gather.
        #[arg(required = true)]
        sources: Vec<String>,
        /// An index annotation, KEY=VALUE; repeatable.
        #[arg(long = "annotation", short = 'a', value_name = "KEY=VALUE")]
        annotations: Vec<String>,
    },
}

/// `orca gc`.
#[derive(Debug, Args)]
pub(crate) struct Gc {
    /// The layout (oci:PATH) or bucket (s3://…).
    pub(crate) target: String,
    /// Only report what would go.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Keep unreachable blobs written less than this long ago (`30m`,
    /// `6h`, `0`): a push running now has written them and not yet tagged
    /// its image. Below the default only when you know how long pushes
    /// here take.
    #[arg(long, value_name = "AGE", default_value = "24h", value_parser = humantime::parse_duration)]
    pub(crate) grace: std::time::Duration,
    /// Allow `--grace 0`: you know no one else writes to the store now.
    #[arg(long)]
    pub(crate) force: bool,
    /// Remove the staging of unfinished pushes now, whatever its age (by
    /// default it goes once older than the grace period, and never younger
    /// than an hour). A push running now that staged there fails.
    #[arg(long)]
    pub(crate) staging: bool,
}

/// `orca sync`.
#[derive(Debug, Args)]
pub(crate) struct SyncArgs {
    /// The configuration file.
    pub(crate) config: std::path::PathBuf,
    /// Report every copy and removal it would make; change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Keep running: sync again this long after each run ends (`30s`,
    /// `10m`, `1h`), until SIGTERM or Ctrl-C, which stop it cleanly.
    #[arg(long, value_name = "INTERVAL", value_parser = humantime::parse_duration)]
    pub(crate) watch: Option<std::time::Duration>,
    /// Take only shard I of N (I from 0) of the repositories, so N
    /// machines split the mirror; prune and gc wait for a last run with
    /// `--shard finish` (see docs/sync.md).
    #[arg(long, value_name = "I/N|finish", value_parser = orca::mirror::Shard::parse)]
    pub(crate) shard: Option<orca::mirror::Shard>,
}

/// `orca plugin …`.
#[derive(Debug, Subcommand)]
pub(crate) enum PluginCommand {
    /// List the loaded plugins: name, scheme, ABI version, path.
    #[command(after_help = "Example:\n  orca --plugin ./libmyplugin.so plugin list --format json")]
    List,
}

/// `orca digest`.
#[derive(Debug, Args)]
pub(crate) struct DigestArgs {
    /// The files; `-` for stdin.
    #[arg(required = true)]
    pub(crate) files: Vec<String>,
    /// sha256 or sha512.
    #[arg(long, default_value = "sha256", value_parser = ["sha256", "sha512"])]
    pub(crate) algorithm: String,
}

/// `orca completions`.
#[derive(Debug, Args)]
pub(crate) struct Completions {
    /// The shell.
    pub(crate) shell: clap_complete::Shell,
}

/// `orca cache`.
#[derive(Debug, Subcommand)]
pub(crate) enum CacheCommand {
    /// List the cached blobs: digest, size, last use, source repositories.
    #[command(after_help = "Example:\n  orca cache ls --cache ~/.cache/orca --format json")]
    Ls,
    /// Print how many blobs the cache holds and their bytes.
    #[command(after_help = "Example:\n  ORCA_CACHE=~/.cache/orca orca cache size")]
    Size,
    /// Remove blobs: all, those unused for a while, or the least recently
    /// used past a size (safe while other processes use the cache).
    #[command(
        after_help = "Examples:\n  orca cache prune --max-size 10GiB\n  orca cache prune --older-than 7d\n  orca cache prune --all"
    )]
    Prune(CachePrune),
}

/// `orca cache prune`.
#[derive(Debug, Args)]
pub(crate) struct CachePrune {
    /// Remove every blob.
    #[arg(long)]
    pub(crate) all: bool,
    /// Remove blobs unused this long (`7d`, `12h`).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) older_than: Option<std::time::Duration>,
    /// Then remove the least recently used until the rest take at most
    /// this (`10GiB`).
    #[arg(long, value_name = "SIZE", value_parser = orca::parse_size)]
    pub(crate) max_size: Option<u64>,
}
