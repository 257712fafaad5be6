//! The `orca` command line: parses arguments, opens targets through the
//! `orca` library, runs one command, and prints results on stdout (text or
//! JSON), progress and logs on stderr. Exit status: 0 ok, 1 failure,
//! 2 usage (bad arguments or targets).

mod cli;
mod commands;
mod output;
mod progress;

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;

use crate::cli::{Cli, Global};
use crate::output::Ctx;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version are printed by clap and are not failures.
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let verbose = cli.global.verbose;
    let plain_http = cli.global.plain_http;
    let quiet = cli.global.quiet;
    let multi = progress::init_logging(verbose, quiet, cli.global.debug);
    if matches!(cli.command, cli::Command::Serve(_)) {
        few_malloc_arenas();
    }
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
        .and_then(|runtime| {
            runtime.block_on(async {
                let ctx = context(&cli.global, multi)?;
                commands::run(&ctx, cli.command).await
            })
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if output::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            for (i, line) in lines(&e).iter().enumerate() {
                if i == 0 {
                    eprintln!("orca: {line}");
                } else {
                    eprintln!("  because: {line}");
                }
            }
            if let Some(hint) = hint(&e, plain_http) {
                eprintln!("hint: {hint}");
            }
            if verbose > 0 {
                eprintln!("{}", e.backtrace());
            }
            ExitCode::from(exit_code(&e))
        }
    }
}

/// The error's chain, each cause once: a cause whose text a line before
/// already holds (a library that repeats its source in its message) is
/// left out.
fn lines(e: &anyhow::Error) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || lines.iter().any(|line| line.contains(&text)) {
            continue;
        }
        lines.push(text);
    }
    lines
}

/// A server streams each blob through whichever blocking thread reads it;
/// glibc gives every such thread an arena of its own and keeps what they
/// freed, so a server's resident memory grew with the threads that ever
/// read (115 MiB after 8 clients pulled one 512 MiB blob, 36 MiB with one
/// arena). Two arenas keep it flat; set before any thread starts.
fn few_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called
    // before the runtime starts its threads, and M_ARENA_MAX takes any
    // positive count.
    #[allow(unsafe_code)]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// One line on what to do, for the mistakes people make most.
fn hint(e: &anyhow::Error, plain_http: bool) -> Option<String> {
    let text = e
        .chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    let core = e.chain().find_map(|c| c.downcast_ref::<orca::Error>());
    if !plain_http
        && (text.contains("InvalidContentType")
            || text.contains("wrong version number")
            || text.contains("received corrupt message"))
    {
        return Some(
            "the server answered plain HTTP, not HTTPS: add --plain-http (or --insecure, which also accepts any certificate)".into(),
        );
    }
    // With no credentials, the S3 client asks the instance metadata service
    // (at 169.254.169.254, or AWS_METADATA_ENDPOINT) for some.
    if text.contains("169.254.169.254")
        || text.contains("instance metadata")
        || text.contains("/latest/api/token")
        || text.contains("/latest/meta-data")
    {
        return Some(
            "no AWS credentials were found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (and AWS_ENDPOINT_URL or --s3-endpoint for a server other than AWS)".into(),
        );
    }
    match core {
        Some(orca::Error::Unauthorized { place, .. }) => {
            let host = place.split('/').next().unwrap_or(place);
            Some(format!(
                "the user name or password was missing or rejected by {host}: orca login {host}, or give --username with --password-stdin"
            ))
        }
        Some(orca::Error::Denied { place, .. }) => Some(format!(
            "{place} knows who you are but does not let you do this: check the repository's permissions"
        )),
        _ => None,
    }
}

/// The exit status: 130 for a command a signal stopped (as a shell reports
/// Ctrl-C), 2 for what the user typed wrong (a target, an argument), 3 for
/// what is not there (a tag, a repository, a layout), 4 for credentials
/// missing, rejected or not allowed, 1 for any other failure.
fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<output::Interrupted>().is_some() {
        return 130;
    }
    match e.chain().find_map(|c| c.downcast_ref::<orca::Error>()) {
        Some(orca::Error::NotFound { .. }) => return 3,
        Some(orca::Error::Unauthorized { .. } | orca::Error::Denied { .. }) => return 4,
        _ => {}
    }
    let usage = e.chain().any(|cause| {
        cause.downcast_ref::<output::Usage>().is_some()
            || matches!(
                cause.downcast_ref::<orca::Error>(),
                Some(orca::Error::InvalidReference { .. } | orca::Error::InvalidDigest { .. })
            )
    });
    if usage { 2 } else { 1 }
}

mod cli_support {
    use std::io::Read as _;

    use anyhow::Context as _;

    /// The password on stdin, without its line end.
    pub(crate) fn password_from_stdin() -> anyhow::Result<String> {
        let mut password = String::new();
        std::io::stdin()
            .read_to_string(&mut password)
            .context("reading the password from stdin")?;
        Ok(password.trim_end_matches(['\r', '\n']).to_owned())
    }
}

/// The plugin libraries to load: those given, then every library in the
/// directories of `ORCA_PLUGIN_PATH`.
fn plugin_paths(given: &[std::path::PathBuf]) -> Vec<std::path::PathBuf> {
    let mut paths = given.to_vec();
    if let Some(dirs) = std::env::var_os("ORCA_PLUGIN_PATH") {
        for dir in std::env::split_paths(&dirs) {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut found: Vec<_> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.ends_with(std::env::consts::DLL_SUFFIX))
                })
                .collect();
            found.sort();
            paths.extend(found);
        }
    }
    paths
}

/// The settings every command shares, from the global options.
fn context(global: &Global, multi: Option<indicatif::MultiProgress>) -> anyhow::Result<Ctx> {
    let mut open = orca::OpenOptions::new();
    // TLS material means TLS, even to a loopback registry.
    open.plain_http = if global.plain_http {
        Some(true)
    } else if global.ca_file.is_some() || global.cert_file.is_some() {
        Some(false)
    } else {
        None
    };
    if let (Some(cert), Some(key)) = (&global.cert_file, &global.key_file) {
        open.client_identity = Some((cert.clone(), key.clone()));
    }
    open.insecure = global.insecure;
    open.ca_file = global.ca_file.clone();
    if let Some(file) = orca::RegistryFile::default_location() {
        open.registries = file.load()?;
    }
    open.registry_config = global.registry_config.clone();
    open.cache = global.cache.clone().or_else(|| {
        std::env::var_os("ORCA_CACHE")
            .filter(|dir| !dir.is_empty())
            .map(std::path::PathBuf::from)
    });
    open.s3_endpoint = global.s3_endpoint.clone();
    open.s3_region = global.s3_region.clone();
    if global.allow_schema1
        || std::env::var("ORCA_ENABLE_DEPRECATED_SCHEMA1").is_ok_and(|v| v == "1" || v == "true")
    {
        orca::model::allow_schema1(true);
    }
    open.idle_timeout = global.timeout;
    open.response_timeout = global.response_timeout;
    if !global.quiet {
        let multi = multi.clone();
        open.on_retry = Some(std::sync::Arc::new(move |line: &str| match &multi {
            Some(multi) => {
                let _ = multi.println(format!("orca: {line}"));
            }
            None => eprintln!("orca: {line}"),
        }));
    }
    // --creds USER[:PASSWORD] is --username with --password (or, with no
    // password, --password-stdin).
    let (username, password) = match &global.creds {
        Some(creds) => match creds.split_once(':') {
            Some((user, password)) => (Some(user.to_owned()), Some(password.to_owned())),
            None => (Some(creds.clone()), None),
        },
        None => (global.username.clone(), global.password.clone()),
    };
    let from_stdin = global.password_stdin || (global.creds.is_some() && password.is_none());
    if (from_stdin || password.is_some()) && username.is_none() {
        return Err(output::Usage("a password needs --username".into()).into());
    }
    if global.password.is_some() && !global.quiet {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
    }
    if let Some(user) = &username {
        if let Some(password) = password {
            open.credentials = Some((user.clone(), password));
        } else if from_stdin {
            open.credentials = Some((user.clone(), cli_support::password_from_stdin()?));
        }
    }
    for path in plugin_paths(&global.plugins) {
        let plugin = orca::plugins::Plugin::load(&path)
            .with_context(|| format!("loading plugin {}", path.display()))?;
        open.plugins.push(plugin);
    }
    for pair in &global.plugin_config {
        let (scheme, config) = pair.split_once('=').ok_or_else(|| {
            output::Usage(format!("--plugin-config {pair:?} is not SCHEME=CONFIG"))
        })?;
        open.plugin_config
            .insert(scheme.to_owned(), config.to_owned());
    }
    let show_progress = !global.quiet && !global.no_progress && global.format == cli::Format::Text;
    Ok(Ctx {
        open,
        format: global.format,
        quiet: global.quiet,
        progress: show_progress,
        tty: std::io::stderr().is_terminal(),
        multi,
        username,
    })
}
