//! One function per command, each a thin layer over the `orca` library:
//! open the targets, call the operation, print the result.

mod artifacts;
mod blob;
mod cache;
mod content;
mod copy;
mod login;
mod registry;
mod serve;
mod sync;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context as _;
use orca::{
    Access, Descriptor, Document, MediaType, Platform, RawManifest, Selector, Store, Target,
};

use crate::cli::Command;
use crate::output::{Ctx, Usage};

/// Runs one command.
pub(crate) async fn run(ctx: &Ctx, command: Command) -> anyhow::Result<()> {
    if ctx.username.is_some()
        && ctx.open.credentials.is_none()
        && !matches!(command, Command::Login(_))
    {
        return Err(Usage(
            "--username needs --password-stdin (or --password, which other users of the machine can see)".into(),
        )
        .into());
    }
    match command {
        Command::Login(args) => login::login(ctx, &args.host).await,
        Command::Logout(args) => login::logout(ctx, &args.host),
        Command::Registry(sub) => registry::registry(ctx, sub),
        Command::Cp(args) => interruptible(copy::cp(ctx, args)).await,
        Command::Push(args) => interruptible(artifacts::push(ctx, args)).await,
        Command::Pull(args) => interruptible(artifacts::pull(ctx, args)).await,
        Command::Attach(args) => interruptible(artifacts::attach(ctx, args)).await,
        Command::Discover(args) => artifacts::discover(ctx, args).await,
        Command::Inspect(args) => content::inspect(ctx, &args).await,
        Command::Config(args) => content::config(ctx, &args).await,
        Command::Resolve(args) => content::resolve(ctx, &args.target).await,
        Command::Tag(args) => content::tag(ctx, args).await,
        Command::Untag(args) => content::untag(ctx, &args.target).await,
        Command::Tags(args) => content::tags(ctx, args).await,
        Command::Repos(args) => content::repos(ctx, args).await,
        Command::Manifest(sub) => content::manifest(ctx, sub).await,
        Command::Index(sub) => interruptible(copy::index(ctx, sub)).await,
        Command::Blob(sub) => interruptible(blob::blob(ctx, sub)).await,
        Command::Plugin(crate::cli::PluginCommand::List) => plugins(ctx).await,
        Command::Digest(args) => blob::digest(ctx, args),
        Command::Cache(sub) => cache::cache(ctx, sub),
        Command::Gc(args) => content::gc(ctx, args).await,
        Command::Sync(args) => sync::sync(ctx, args).await,
        Command::Serve(args) => serve::serve(ctx, args).await,
        Command::Completions(args) => {
            use clap::CommandFactory;
            let mut command = crate::cli::Cli::command();
            let mut script = Vec::new();
            clap_complete::generate(args.shell, &mut command, "orca", &mut script);
            crate::output::to_stdout(&script)
        }
        Command::Version => ctx.emit(
            &format!("orca {}", env!("CARGO_PKG_VERSION")),
            &serde_json::json!({ "version": env!("CARGO_PKG_VERSION") }),
        ),
    }
}

/// How long an interrupted command waits for its clean-up (upload
/// sessions cancelled, multipart uploads aborted) before it exits.
const CLEANUP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs a command that moves content until it ends, or until Ctrl-C or
/// `SIGTERM`: then the command is dropped where it stands (its guards hand
/// their clean-up to `orca::cleanup`), the clean-up is waited for (at most
/// [`CLEANUP_DEADLINE`]), and the error says what was cleaned up and what
/// was kept for a re-run (exit status 130).
pub(crate) async fn interruptible(
    work: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let mut work = Box::pin(work);
    let stop = sync::stop_signal();
    tokio::select! {
        done = &mut work => return done,
        () = stop => {}
    }
    drop(work);
    Err(interrupted("").await.into())
}

/// What an interrupted command says, once its clean-up ran: `already`
/// says what holds whatever happened (sync: the targets hold what was
/// done).
pub(crate) async fn interrupted(already: &str) -> crate::output::Interrupted {
    let drained = orca::cleanup::drain(CLEANUP_DEADLINE).await;
    let mut line = String::from("interrupted");
    if !already.is_empty() {
        line.push_str("; ");
        line.push_str(already);
    }
    if !drained.done.is_empty() {
        line.push_str(&format!(
            "; {} open upload(s) cancelled",
            drained.done.len()
        ));
    }
    if !drained.unfinished.is_empty() {
        line.push_str(&format!(
            "; {} upload(s) still open after {} s (the registry or bucket expires them: {})",
            drained.unfinished.len(),
            CLEANUP_DEADLINE.as_secs(),
            drained.unfinished[0]
        ));
    }
    match drained.kept.as_slice() {
        [] => {}
        [one] => line.push_str(&format!("; kept for a re-run: {one}")),
        [first, rest @ ..] => line.push_str(&format!(
            "; kept for a re-run: {first}, and {} more",
            rest.len()
        )),
    }
    crate::output::Interrupted(line)
}

/// Opens a target, naming it in the error.
pub(crate) async fn open(ctx: &Ctx, target: &str, access: Access) -> anyhow::Result<Target> {
    let opened = orca::open(target, access, &ctx.open)
        .await
        .with_context(|| format!("opening {target}"))?;
    tracing::info!("opened {target} as {}", opened.store());
    Ok(opened)
}

/// Deletes are refused on archives: an archive is rewritten whole, and one
/// without the deleted content would still carry its bytes. (Tags, untags
/// and attachments rewrite it as `cp` does.)
pub(crate) fn refuse_archive(target: &str) -> anyhow::Result<()> {
    match orca::TargetSpec::parse(target) {
        Ok(orca::TargetSpec::OciArchive { .. } | orca::TargetSpec::DockerArchive { .. }) => {
            Err(Usage(format!(
                "{target}: archives are read-only for this command: copy to oci: first (orca cp -a ARCHIVE oci:DIR), delete there, and copy back with --overwrite"
            ))
            .into())
        }
        _ => Ok(()),
    }
}

/// Asks `question` on the terminal before something is destroyed, as
/// oras does: `force` skips it; with no terminal to ask on (a script), the
/// command is refused unless forced.
pub(crate) fn confirm(force: bool, question: &str) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    if force {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return Err(Usage(format!(
            "{question} Not without --force (-f): there is no terminal to ask on"
        ))
        .into());
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => anyhow::bail!("nothing deleted"),
    }
}

/// What a target names, resolved to a manifest's descriptor.
pub(crate) async fn resolve_root(target: &Target) -> anyhow::Result<(Selector, Descriptor)> {
    let selector = target.root().await?;
    let descriptor = target.store().resolve(&selector).await?;
    Ok((selector, descriptor))
}

/// Of an index, the member of `platform`; of a manifest, itself.
pub(crate) async fn select_platform(
    store: &Store,
    descriptor: Descriptor,
    platform: Option<&str>,
) -> anyhow::Result<Descriptor> {
    let Some(platform) = platform else {
        return Ok(descriptor);
    };
    let wanted = Platform::parse(platform).map_err(|e| Usage(e.to_string()))?;
    let bytes = store.fetch_bytes(&descriptor).await?;
    match RawManifest::new(descriptor.media_type.clone(), bytes).parse()? {
        Document::Index(index) => index
            .manifests
            .iter()
            .find(|m| m.platform.as_ref().is_some_and(|p| wanted.matches(p)))
            .cloned()
            .ok_or_else(|| {
                orca::Error::NotFound {
                    what: format!(
                        "a member for {wanted} in index {} (it has {})",
                        descriptor.digest,
                        index.platform_list()
                    ),
                    place: store.to_string(),
                }
                .into()
            }),
        _ => Ok(descriptor),
    }
}

/// `FILE` or `FILE:MEDIATYPE` (a media type has a `/`; a path's colon
/// before one that is not is kept).
pub(crate) fn file_arg(arg: &str, default: &MediaType) -> (PathBuf, MediaType) {
    if let Some((path, media_type)) = arg.rsplit_once(':')
        && media_type.contains('/')
        && !path.is_empty()
    {
        return (PathBuf::from(path), MediaType::new(media_type));
    }
    (PathBuf::from(arg), default.clone())
}

/// `KEY=VALUE` annotations, and those of an annotation file.
pub(crate) fn annotations(
    pairs: &[String],
    file: Option<&PathBuf>,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading annotation file {}", file.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("annotation file {} is not JSON", file.display()))?;
        let map = value.get("$manifest").unwrap_or(&value);
        let object = map.as_object().ok_or_else(|| {
            Usage(format!(
                "annotation file {}: expected an object of strings",
                file.display()
            ))
        })?;
        for (key, value) in object {
            let value = value.as_str().ok_or_else(|| {
                Usage(format!(
                    "annotation file {}: the value of {key} is not a string",
                    file.display()
                ))
            })?;
            out.insert(key.clone(), value.to_owned());
        }
    }
    for pair in pairs {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| Usage(format!("annotation {pair:?} is not KEY=VALUE")))?;
        out.insert(key.to_owned(), value.to_owned());
    }
    Ok(out)
}

/// `orca plugin list`: what each loaded plugin is, and what a backend it
/// opens offers (when it opens one without a target).
async fn plugins(ctx: &Ctx) -> anyhow::Result<()> {
    let mut text = Vec::new();
    let mut json = Vec::new();
    for plugin in &ctx.open.plugins {
        let capabilities = match plugin.open("", "").await {
            Ok(backend) => {
                let c = orca::Backend::capabilities(&backend);
                let flags = [
                    ("delete", c.delete),
                    ("untag", c.untag),
                    ("tag_list_pagination", c.tag_list_pagination),
                    ("referrers_api", c.referrers_api),
                    ("mount", c.mount),
                    ("fetch_range", c.fetch_range),
                    ("tag_compare_and_swap", c.tag_compare_and_swap),
                    ("catalog", c.catalog),
                    ("resume", c.resume),
                ];
                Some(
                    flags
                        .iter()
                        .filter(|(_, on)| *on)
                        .map(|(name, _)| (*name).to_owned())
                        .collect::<Vec<_>>(),
                )
            }
            Err(_) => None,
        };
        text.push(format!(
            "{} {}://  ABI {}  version {}  {}\n  capabilities: {}\n  layout storage (gc): {}",
            plugin.name(),
            plugin.scheme(),
            plugin.abi_version(),
            plugin.version(),
            plugin.path().display(),
            capabilities
                .as_ref()
                .map(|c| c.join(", "))
                .unwrap_or_else(|| "(known once a target is opened)".into()),
            if plugin.offers_storage() { "yes" } else { "no" },
        ));
        json.push(serde_json::json!({
            "name": plugin.name(),
            "scheme": plugin.scheme(),
            "abiVersion": plugin.abi_version(),
            "storage": plugin.offers_storage(),
            "version": plugin.version(),
            "path": plugin.path().display().to_string(),
            "capabilities": capabilities,
        }));
    }
    if text.is_empty() {
        text.push("no plugins loaded (--plugin PATH, or ORCA_PLUGIN_PATH)".into());
    }
    ctx.emit(&text.join("\n"), &serde_json::json!({ "plugins": json }))
}

/// Writes `bytes` to `path` whole: into a new file beside it, then renamed
/// over it, so a reader never sees half of it.
pub(crate) fn write_whole(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Usage(format!("{} names no file", path.display())))?;
    let temp = path.with_file_name(format!(".{name}.orca-{}", std::process::id()));
    let written = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    Ok(written?)
}
