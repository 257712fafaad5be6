//! `orca cp` (one tag, or every tag, between any two targets, with
//! progress and a summary) and `orca index create`.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use orca::{Access, CopyOptions, Platform, Selector, TargetSpec};

use super::{annotations, open};
use crate::cli::{Cp, IndexCommand};
use crate::output::{Ctx, Usage, descriptor_json};
use crate::progress::{Display, summary};

/// Puts the settings of one end of a copy over the global ones.
fn one_end(
    options: &mut orca::OpenOptions,
    plain_http: bool,
    insecure: bool,
    ca_file: &Option<std::path::PathBuf>,
    s3_endpoint: &Option<String>,
) {
    if plain_http {
        options.plain_http = Some(true);
    }
    if insecure {
        options.insecure = true;
    }
    if let Some(ca) = ca_file {
        options.ca_file = Some(ca.clone());
        // TLS material means TLS, even to a loopback registry.
        if !plain_http {
            options.plain_http = Some(false);
        }
    }
    if let Some(endpoint) = s3_endpoint {
        options.s3_endpoint = Some(endpoint.clone());
    }
}

pub(crate) async fn cp(ctx: &Ctx, args: Cp) -> anyhow::Result<()> {
    if args.all {
        return Err(Usage(
            "orca copies every platform of an index unless --platform says otherwise (skopeo's --all); --all-tags (-a) copies every tag"
                .into(),
        )
        .into());
    }
    // A destination that is no target is said before the source is read.
    TargetSpec::parse(&args.destination)?;
    let mut reading = ctx.open.clone();
    one_end(
        &mut reading,
        args.src.plain_http,
        args.src.insecure,
        &args.src.ca_file,
        &args.src.s3_endpoint,
    );
    if let Some(creds) = &args.src_creds {
        reading.credentials = Some(creds_pair(creds)?);
    }
    let source = orca::open(&args.source, Access::Read, &reading)
        .await
        .with_context(|| format!("opening {}", args.source))?;
    // Seen with OCI media types, when asked to convert.
    let converting = args.image_format.is_some();
    let seen = if converting {
        orca::Store::new(orca::convert::OciView::new(source.store().clone()))
    } else {
        source.store().clone()
    };
    let mut opening = ctx.open.clone();
    opening.overwrite = args.overwrite;
    one_end(
        &mut opening,
        args.dest.plain_http,
        args.dest.insecure,
        &args.dest.ca_file,
        &args.dest.s3_endpoint,
    );
    if let Some(creds) = &args.dest_creds {
        opening.credentials = Some(creds_pair(creds)?);
    }
    let destination = orca::open(&args.destination, Access::Write, &opening)
        .await
        .with_context(|| format!("opening {}", args.destination))?;
    let mut platforms = Vec::new();
    for platform in &args.platforms {
        platforms.push(Platform::parse(platform).map_err(|e| Usage(e.to_string()))?);
    }
    let display = Display::new(ctx).map(Arc::new);
    let mut options = CopyOptions {
        concurrency: args.concurrency.max(1),
        platforms,
        referrers: args.referrers,
        digest_tags: args.digest_tags,
        external: args.include_external,
        force: args.force,
        mount_from: mount_from(&args.source, &args.destination, args.link),
        ..CopyOptions::default()
    };
    if let Some(display) = &display {
        options.progress = Some(display.clone() as Arc<dyn orca::Progress>);
    }
    // What to copy, and under which tag: every tag of the source, or the
    // one named (kept under the destination's tag, else the source's). A
    // bundle's names (`REPO:TAG`) go to the same repository of the
    // destination bundle.
    let jobs: Vec<Job> = if args.all_tags {
        let tags = source.store().tags_all().await?;
        let mut jobs = Vec::new();
        for name in tags {
            let Some((repository, tag)) = name.rsplit_once(':') else {
                if args.digest_tags || !orca::referrers::is_fallback_tag(&name) {
                    jobs.push(Job {
                        repository: None,
                        selector: Selector::Tag(name.clone()),
                        tag: Some(name),
                    });
                }
                continue;
            };
            if !args.digest_tags && orca::referrers::is_fallback_tag(tag) {
                continue;
            }
            jobs.push(Job {
                repository: Some(repository.to_owned()),
                selector: Selector::Tag(tag.to_owned()),
                tag: Some(tag.to_owned()),
            });
        }
        if jobs.iter().any(|j| j.repository.is_some()) && destination.repository("x").is_none() {
            return Err(Usage(format!(
                "{} is a bundle (it names images REPO:TAG): copy it whole into a bundle (oci:DIR, oci-archive:FILE, s3://BUCKET/PREFIX), one repository at a time ({}:REPO), or into a registry with orca sync",
                args.source, args.source
            ))
            .into());
        }
        jobs
    } else {
        let root = source.root().await?;
        let tag = destination.tag_for(&root);
        vec![Job {
            repository: None,
            selector: root,
            tag,
        }]
    };
    let started = Instant::now();
    let mut total = orca::CopyReport::default();
    let mut copied = Vec::new();
    for job in &jobs {
        let Job {
            repository,
            selector,
            tag,
        } = job;
        let report = async {
            let (from, to) = match repository {
                Some(repository) => (
                    view(&source, repository, converting)?,
                    destination
                        .repository(repository)
                        .context("the destination is no bundle")??,
                ),
                None => (seen.clone(), destination.store().clone()),
            };
            let report = orca::copy(&from, selector, &to, tag.as_deref(), &options).await?;
            anyhow::Ok(report)
        }
        .await
        .with_context(|| {
            format!(
                "copying {} to {}",
                source.reference(repository.as_deref(), Some(&selector.to_string()), None),
                args.destination
            )
        });
        let report = match report {
            Ok(report) => report,
            Err(e) => {
                if let Some(display) = &display {
                    display.finish();
                }
                return Err(e);
            }
        };
        total.copied += report.copied;
        total.bytes += report.bytes;
        total.present += report.present;
        total.mounted += report.mounted;
        total.resumed += report.resumed;
        if converting
            && let Some(root) = &report.root
            && let Ok(original) = source.store().resolve(selector).await
            && original.digest != root.digest
        {
            ctx.note(&format!(
                "converted {selector} to OCI media types: {} is now {}",
                original.digest, root.digest
            ));
        }
        let from = match selector {
            Selector::Tag(tag) => source.reference(repository.as_deref(), Some(tag), None),
            Selector::Digest(digest) => source.reference(repository.as_deref(), None, Some(digest)),
        };
        let to = destination.reference(
            repository.as_deref(),
            tag.as_deref(),
            report.root.as_ref().map(|d| &d.digest),
        );
        copied.push((from, to, tag.clone(), report.root));
    }
    if let Some(display) = &display {
        display.finish();
    }
    destination
        .finish()
        .await
        .with_context(|| format!("finishing {}", args.destination))?;
    let elapsed = started.elapsed();
    ctx.note(&summary(&total, elapsed));
    let text = copied
        .iter()
        .map(|(from, to, tag, root)| match (tag, root) {
            (Some(_), Some(root)) => format!("{from} -> {to} {}", root.digest),
            _ => format!("{from} -> {to}"),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let json = serde_json::json!({
        "source": args.source,
        "destination": args.destination,
        "copied": copied.iter().map(|(from, to, tag, root)| serde_json::json!({
            "source": from,
            "destination": to,
            "tag": tag,
            "manifest": root.as_ref().map(descriptor_json),
        })).collect::<Vec<_>>(),
        "summary": {
            "copied": total.copied,
            "present": total.present,
            "mounted": total.mounted,
            "resumed": total.resumed,
            "bytes": total.bytes,
            "seconds": elapsed.as_secs_f64(),
        },
    });
    ctx.emit(&text, &json)
}

/// One image of a copy: from which repository of a bundle (none for a
/// store named as one repository), what, and under which tag.
struct Job {
    repository: Option<String>,
    selector: Selector,
    tag: Option<String>,
}

/// One repository of the source bundle, seen as the copy sees the source
/// (converted to OCI media types when asked).
fn view(source: &orca::Target, repository: &str, converting: bool) -> anyhow::Result<orca::Store> {
    let store = source
        .repository(repository)
        .context("the source is no bundle")??;
    Ok(if converting {
        orca::Store::new(orca::convert::OciView::new(store))
    } else {
        store
    })
}

/// USER:PASSWORD as a pair (a password given on the command line is
/// visible to the machine's other users, as with skopeo's --src-creds).
fn creds_pair(creds: &str) -> anyhow::Result<(String, String)> {
    match creds.split_once(':') {
        Some((user, password)) if !user.is_empty() => Ok((user.to_owned(), password.to_owned())),
        _ => Err(Usage(format!("{creds:?} is not USER:PASSWORD")).into()),
    }
}

/// Where blobs can be mounted from instead of moved: the source
/// repository when both ends are repositories of one registry; with
/// `link`, the source layout (hard links) or the source prefix of the same
/// bucket (server-side copies).
fn mount_from(source: &str, destination: &str, link: bool) -> Option<String> {
    match (
        TargetSpec::parse(source).ok()?,
        TargetSpec::parse(destination).ok()?,
    ) {
        (TargetSpec::Registry(from), TargetSpec::Registry(to))
            if from.registry() == to.registry() && from.repository() != to.repository() =>
        {
            Some(from.repository().to_owned())
        }
        (TargetSpec::Layout { path, .. }, TargetSpec::Layout { .. }) if link => {
            Some(path.to_string_lossy().into_owned())
        }
        (TargetSpec::S3 { url: from, .. }, TargetSpec::S3 { url: to, .. }) if link => {
            let bucket = |url: &str| url["s3://".len()..].split('/').next().map(str::to_owned);
            let prefix = from["s3://".len()..]
                .split_once('/')
                .map_or("", |(_, p)| p)
                .to_owned();
            (bucket(&from) == bucket(&to)).then_some(prefix)
        }
        _ => None,
    }
}

pub(crate) async fn index(ctx: &Ctx, command: IndexCommand) -> anyhow::Result<()> {
    let IndexCommand::Create {
        target,
        sources,
        annotations: pairs,
    } = command;
    let destination = open(ctx, &target, Access::Write).await?;
    let mut inputs = Vec::new();
    for source in &sources {
        let opened = open(ctx, source, Access::Read).await?;
        let selector = opened.root().await?;
        inputs.push(orca::index::Source::new(opened.store().clone(), selector));
    }
    let annotations = orca::index::Annotations {
        index: annotations(&pairs, None)?,
        ..orca::index::Annotations::default()
    };
    let created = orca::index::create(
        destination.store(),
        &inputs,
        &annotations,
        destination.tag(),
    )
    .await
    .with_context(|| format!("creating an index in {target}"))?;
    destination.finish().await?;
    ctx.emit(
        &created.descriptor.digest.to_string(),
        &descriptor_json(&created.descriptor),
    )
}
