//! Looking at and changing what a target holds: `inspect`, `resolve`,
//! `tag`, `untag`, `tags`, `repos`, `manifest …` and `gc`.

use std::io::Read;

use anyhow::Context as _;
use futures::{StreamExt as _, TryStreamExt as _};
use orca::{Access, Document, ListQuery, RawManifest, Schema1, Selector};

use super::{open, resolve_root, select_platform};
use crate::cli::{Gc, ManifestCommand, Repos, Tag, Tags};
use crate::output::{Ctx, Usage, descriptor_json, size};

/// Tags `orca tag` applies at once.
const TAGS_AT_ONCE: usize = 16;

pub(crate) async fn inspect(ctx: &Ctx, args: &crate::cli::Inspect) -> anyhow::Result<()> {
    let target = args.target.as_str();
    let opened = open(ctx, target, Access::Read).await?;
    let (_, descriptor) = resolve_root(&opened).await?;
    let store = opened.store();
    let descriptor = select_platform(store, descriptor, args.platform.as_deref()).await?;
    let bytes = store.fetch_bytes(&descriptor).await?;
    let document = RawManifest::new(descriptor.media_type.clone(), bytes).parse()?;
    let mut text = format!(
        "{target}\n  media type: {}\n  digest:     {}\n  size:       {}",
        descriptor.media_type, descriptor.digest, descriptor.size
    );
    let mut json = descriptor_json(&descriptor);
    // An image's config media type is no artifact type worth naming.
    if let Some(artifact_type) = document
        .artifact_type()
        .filter(|t| ![orca::MediaType::OCI_CONFIG, orca::MediaType::DOCKER_CONFIG].contains(t))
    {
        text.push_str(&format!("\n  artifact:   {artifact_type}"));
        json["artifactType"] = artifact_type.as_str().into();
    }
    match &document {
        Document::Index(index) => {
            text.push_str("\n  manifests:");
            for member in &index.manifests {
                let platform = member
                    .platform
                    .as_ref()
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "-".into());
                text.push_str(&format!(
                    "\n    {platform:<16} {} {}",
                    member.digest,
                    size(member.size)
                ));
            }
            json["manifests"] = index.manifests.iter().map(descriptor_json).collect();
        }
        Document::Manifest(manifest) => {
            let total: u64 = manifest.layers.iter().map(|l| l.size).sum();
            text.push_str(&format!(
                "\n  config:     {} {}",
                manifest.config.media_type, manifest.config.digest
            ));
            json["config"] = descriptor_json(&manifest.config);
            if [orca::MediaType::OCI_CONFIG, orca::MediaType::DOCKER_CONFIG]
                .contains(&manifest.config.media_type)
                && let Ok(bytes) = store.fetch_bytes(&manifest.config).await
                && let Ok(config) = serde_json::from_slice::<serde_json::Value>(&bytes)
            {
                let field =
                    |name: &str| config.get(name).and_then(|v| v.as_str()).map(str::to_owned);
                let platform = [field("os"), field("architecture"), field("variant")]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join("/");
                text.push_str(&format!("\n  platform:   {platform}"));
                json["platform"] = platform.into();
                if let Some(created) = field("created") {
                    text.push_str(&format!("\n  created:    {created}"));
                    json["created"] = created.into();
                }
            }
            text.push_str(&format!(
                "\n  layers:     {} ({})",
                manifest.layers.len(),
                size(total)
            ));
            for layer in &manifest.layers {
                let title = layer.title().map(|t| format!(" {t}")).unwrap_or_default();
                text.push_str(&format!(
                    "\n    {} {}{title}",
                    layer.digest,
                    size(layer.size)
                ));
            }
            json["layers"] = manifest.layers.iter().map(descriptor_json).collect();
        }
        _ => {}
    }
    if let Some(subject) = document.subject() {
        text.push_str(&format!("\n  subject:    {}", subject.digest));
        json["subject"] = descriptor_json(subject);
    }
    if !document.annotations().is_empty() {
        json["annotations"] = serde_json::to_value(document.annotations())?;
        for (key, value) in document.annotations() {
            text.push_str(&format!("\n  {key}: {value}"));
        }
    }
    ctx.emit(&text, &json)
}

pub(crate) async fn resolve(ctx: &Ctx, target: &str) -> anyhow::Result<()> {
    let opened = open(ctx, target, Access::Read).await?;
    let (_, descriptor) = resolve_root(&opened).await?;
    ctx.emit(
        &descriptor.digest.to_string(),
        &descriptor_json(&descriptor),
    )
}

/// `orca config`: the image configuration's exact bytes on stdout. Of an
/// index, the member of `--platform`; without one, an index is refused
/// with the platforms it has.
pub(crate) async fn config(ctx: &Ctx, args: &crate::cli::Inspect) -> anyhow::Result<()> {
    let opened = open(ctx, &args.target, Access::Read).await?;
    let (_, descriptor) = resolve_root(&opened).await?;
    let store = opened.store();
    let descriptor = select_platform(store, descriptor, args.platform.as_deref()).await?;
    let bytes = store.fetch_bytes(&descriptor).await?;
    let config = match RawManifest::new(descriptor.media_type.clone(), bytes).parse()? {
        Document::Manifest(manifest) => manifest.config,
        Document::Index(index) => {
            return Err(Usage(format!(
                "{} is an index of {}: pick one with --platform",
                args.target,
                index.platform_list()
            ))
            .into());
        }
        _ => anyhow::bail!("{} is no image: it has no configuration", args.target),
    };
    let bytes = store
        .fetch_bytes(&config)
        .await
        .with_context(|| format!("reading the configuration {}", config.digest))?;
    crate::output::to_stdout(&bytes)
}

pub(crate) async fn tag(ctx: &Ctx, args: Tag) -> anyhow::Result<()> {
    let opened = open(ctx, &args.target, Access::Write).await?;
    let (_, descriptor) = resolve_root(&opened).await?;
    // Several at once (as oras tags): a layout or bucket writes the tags
    // that arrive together in one change of its index.json.
    let store = opened.store();
    let tagging = args.tags.iter().map(|tag| {
        let descriptor = &descriptor;
        async move {
            store
                .tag(descriptor, tag)
                .await
                .with_context(|| format!("tagging {} as {tag}", descriptor.digest))
        }
    });
    futures::stream::iter(tagging)
        .buffered(TAGS_AT_ONCE)
        .try_collect::<Vec<()>>()
        .await?;
    opened.finish().await?;
    ctx.emit(
        &format!("{} tagged {}", descriptor.digest, args.tags.join(", ")),
        &serde_json::json!({ "manifest": descriptor_json(&descriptor), "tags": args.tags }),
    )
}

pub(crate) async fn untag(ctx: &Ctx, target: &str) -> anyhow::Result<()> {
    let opened = open(ctx, target, Access::Write).await?;
    let Some(tag) = opened.tag().map(str::to_owned) else {
        return Err(Usage(format!("{target} names no tag to remove")).into());
    };
    let descriptor = opened.store().resolve(&Selector::Tag(tag.clone())).await?;
    opened.store().untag(&tag).await?;
    opened.finish().await?;
    ctx.emit(
        &format!("untagged {tag} ({})", descriptor.digest),
        &serde_json::json!({ "tag": tag, "manifest": descriptor_json(&descriptor) }),
    )
}

pub(crate) async fn tags(ctx: &Ctx, args: Tags) -> anyhow::Result<()> {
    let opened = open(ctx, &args.target, Access::Read).await?;
    let mut tags = match (&args.last, args.n) {
        (None, None) => opened.store().tags_all().await?,
        (last, n) => {
            let query = ListQuery::page(last.clone(), n.unwrap_or(usize::MAX));
            opened.store().tags(&query).await?.entries
        }
    };
    // A registry lists no tags for a repository it does not have: that is
    // named as missing, not printed as an empty list.
    if tags.is_empty()
        && let Ok(orca::TargetSpec::Registry(reference)) = orca::TargetSpec::parse(&args.target)
    {
        let registry = orca::connect(reference.registry(), &ctx.open).await?;
        if registry
            .repository(reference.repository())
            .await?
            .repository_unknown()
            .await
        {
            return Err(orca::Error::NotFound {
                what: format!("repository {}", reference.repository()),
                place: reference.registry().to_owned(),
            }
            .into());
        }
    }
    if args.exclude_digest_tags {
        tags.retain(|t| !orca::referrers::is_digest_tag(t));
    }
    ctx.emit(&tags.join("\n"), &serde_json::json!({ "tags": tags }))
}

pub(crate) async fn repos(ctx: &Ctx, args: Repos) -> anyhow::Result<()> {
    // A bundle (a layout, an archive, a bucket prefix, a plugin's) lists
    // the repositories its names hold.
    if let Ok(spec) = orca::TargetSpec::parse(&args.host)
        && !matches!(spec, orca::TargetSpec::Registry(_))
    {
        let mut all = orca::repositories(&args.host, &ctx.open)
            .await
            .with_context(|| format!("listing the repositories of {}", args.host))?;
        if let Some(last) = &args.last {
            all.retain(|name| name > last);
        }
        if let Some(n) = args.n {
            all.truncate(n);
        }
        return ctx.emit(&all.join("\n"), &serde_json::json!({ "repositories": all }));
    }
    // `HOST/PREFIX` lists the repositories under the prefix (as sync reads
    // it); the host alone, all of them.
    let (host, prefix) = match args.host.split_once('/') {
        Some((host, prefix)) => (host, Some(format!("{}/", prefix.trim_end_matches('/')))),
        None => (args.host.as_str(), None),
    };
    let registry = orca::connect(host, &ctx.open).await?;
    let listed = match (args.n, &prefix) {
        // One page of `n`.
        (Some(n), None) => registry
            .catalog(&ListQuery::page(args.last.clone(), n))
            .await
            .map(|page| page.entries),
        _ => registry.catalog_all(args.last.clone()).await,
    };
    let mut all = listed.with_context(|| format!("listing the repositories of {}", args.host))?;
    if let Some(prefix) = &prefix {
        all.retain(|name| name.starts_with(prefix.as_str()));
        if let Some(n) = args.n {
            all.truncate(n);
        }
    }
    ctx.emit(&all.join("\n"), &serde_json::json!({ "repositories": all }))
}

pub(crate) async fn manifest(ctx: &Ctx, command: ManifestCommand) -> anyhow::Result<()> {
    match command {
        ManifestCommand::Get { target, platform } => {
            let opened = open(ctx, &target, Access::Read).await?;
            let (_, descriptor) = resolve_root(&opened).await?;
            let descriptor =
                select_platform(opened.store(), descriptor, platform.as_deref()).await?;
            let bytes = opened.store().fetch_bytes(&descriptor).await?;
            crate::output::to_stdout(&bytes)
        }
        ManifestCommand::Head { target } => {
            let opened = open(ctx, &target, Access::Read).await?;
            let (_, descriptor) = resolve_root(&opened).await?;
            ctx.emit(
                &format!(
                    "{} {} {}",
                    descriptor.media_type, descriptor.digest, descriptor.size
                ),
                &descriptor_json(&descriptor),
            )
        }
        ManifestCommand::Put { target, file } => {
            let mut bytes = Vec::new();
            if file == "-" {
                std::io::stdin()
                    .read_to_end(&mut bytes)
                    .context("reading the manifest from stdin")?;
            } else {
                bytes = std::fs::read(&file).with_context(|| format!("reading {file}"))?;
            }
            let raw = RawManifest::detect(bytes, Schema1::here())
                .with_context(|| format!("reading the manifest in {file}"))?;
            let opened = open(ctx, &target, Access::Write).await?;
            let descriptor = match opened.selector() {
                // Stored under the digest named (sha512 too), which the
                // bytes must match.
                Some(Selector::Digest(digest)) => {
                    let descriptor = orca::Descriptor::new(
                        raw.media_type().clone(),
                        digest.clone(),
                        raw.bytes().len() as u64,
                    );
                    opened
                        .store()
                        .push(&descriptor, orca::Body::from_bytes(raw.bytes().clone()))
                        .await
                        .map(|()| descriptor)
                }
                _ => opened.store().push_manifest(&raw, opened.tag()).await,
            }
            .with_context(|| format!("storing the manifest in {target}"))?;
            opened.finish().await?;
            ctx.emit(
                &descriptor.digest.to_string(),
                &descriptor_json(&descriptor),
            )
        }
        ManifestCommand::Delete { target, force } => {
            super::refuse_archive(&target)?;
            let opened = open(ctx, &target, Access::Write).await?;
            let (_, descriptor) = resolve_root(&opened).await?;
            super::confirm(
                force,
                &format!(
                    "delete manifest {} (and every tag on it) from {target}?",
                    descriptor.digest
                ),
            )?;
            opened.store().delete(&descriptor).await?;
            ctx.emit(
                &format!("deleted {}", descriptor.digest),
                &descriptor_json(&descriptor),
            )
        }
    }
}

pub(crate) async fn gc(ctx: &Ctx, args: Gc) -> anyhow::Result<()> {
    if args.grace.is_zero() && !args.force && !args.dry_run {
        anyhow::bail!(
            "--grace 0 removes the blobs a push running now has written and not yet tagged; add --force if no one else writes to {}",
            args.target
        );
    }
    let options = orca::layout::GcOptions::new()
        .dry_run(args.dry_run)
        .grace(args.grace)
        .staging_now(args.staging);
    let report = orca::gc(&args.target, &options, &ctx.open)
        .await
        .with_context(|| format!("collecting garbage in {}", args.target))?;
    let verb = if report.removed {
        "removed"
    } else {
        "would remove"
    };
    let mut text = format!(
        "{verb} {} blobs ({})",
        report.blobs.len(),
        size(report.bytes)
    );
    for (digest, bytes) in &report.blobs {
        text.push_str(&format!("\n  {digest} {}", size(*bytes)));
    }
    if !report.tags.is_empty() {
        text.push_str(&format!(
            "\n{} {} (referrers indexes of the images collected)",
            if report.removed {
                "untagged"
            } else {
                "would untag"
            },
            report.tags.join(", ")
        ));
    }
    if !report.young.is_empty() {
        let young: u64 = report.young.iter().map(|(_, s)| s).sum();
        text.push_str(&format!(
            "\nkept {} unreachable blobs ({}) written less than {} ago (--grace)",
            report.young.len(),
            size(young),
            humantime::format_duration(args.grace)
        ));
    }
    if report.staging > 0 {
        text.push_str(&format!(
            "\n{} staging of unfinished pushes {}",
            report.staging,
            if report.removed {
                "removed"
            } else {
                "would go"
            }
        ));
    }
    if !report.staging_kept.is_empty() {
        let kept: u64 = report.staging_kept.iter().map(|(_, s)| s).sum();
        text.push_str(&format!(
            "\nkept {} staging of unfinished pushes ({}): younger than {} or in use, a push may still need it (--staging removes it now)",
            report.staging_kept.len(),
            size(kept),
            humantime::format_duration(options.staging_age())
        ));
        for (key, bytes) in &report.staging_kept {
            text.push_str(&format!("\n  {key} {}", size(*bytes)));
        }
    }
    ctx.emit(
        &text,
        &serde_json::json!({
            "removed": report.removed,
            "bytes": report.bytes,
            "staging_kept": report.staging_kept.iter().map(|(k, s)| serde_json::json!({"key": k, "size": s})).collect::<Vec<_>>(),
            "staging_age_seconds": options.staging_age().as_secs(),
            "blobs": report.blobs.iter().map(|(d, s)| serde_json::json!({"digest": d.to_string(), "size": s})).collect::<Vec<_>>(),
            "staging": report.staging,
            "tags": report.tags,
            "young": report.young.iter().map(|(d, s)| serde_json::json!({"digest": d.to_string(), "size": s})).collect::<Vec<_>>(),
            "grace_seconds": args.grace.as_secs(),
        }),
    )
}
