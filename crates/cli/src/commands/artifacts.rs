//! Artifacts: `push`, `pull`, `attach`, `discover`.

use anyhow::Context as _;
use orca::{Access, Files, Form, MediaType, Selector};

use super::{annotations, file_arg, open, resolve_root, select_platform};
use crate::cli::{ArtifactArgs, Attach, Discover, Pull, Push};
use crate::output::{Ctx, Usage, descriptor_json};

/// The media type of a file given without one.
const DEFAULT_FILE_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";

fn files(args: &ArtifactArgs, list: &[String]) -> anyhow::Result<Files> {
    let default = MediaType::new(DEFAULT_FILE_TYPE);
    // A directory is packed as a gzip-compressed tar, as oras packs it.
    let directory = MediaType::new(orca::artifact::DIRECTORY_MEDIA_TYPE);
    let mut files = Files::new(
        MediaType::new(&args.artifact_type),
        list.iter()
            .map(|f| {
                let (path, media_type) = file_arg(f, &default);
                let given = f.len() > path.as_os_str().len();
                if path.is_dir() && !given {
                    (path, directory.clone())
                } else {
                    (path, media_type)
                }
            })
            .collect(),
    );
    for (path, _) in &files.files {
        if !path.is_file() && !path.is_dir() {
            return Err(Usage(format!(
                "{} is neither a file nor a directory",
                path.display()
            ))
            .into());
        }
    }
    files.annotations = annotations(&args.annotations, args.annotation_file.as_ref())?;
    Ok(files)
}

fn form_name(form: Form) -> &'static str {
    match form {
        Form::V1_0 => "OCI 1.0 (artifact type as the config media type)",
        _ => "OCI 1.1 (artifactType)",
    }
}

pub(crate) async fn push(ctx: &Ctx, args: Push) -> anyhow::Result<()> {
    let target = open(ctx, &args.target, Access::Write).await?;
    let mut files = files(&args.artifact, &args.files)?;
    files.form = match args.oci_version.as_str() {
        "1.0" => Form::V1_0,
        "1.1" => Form::V1_1,
        _ => Form::Auto,
    };
    if let Some(config) = &args.config {
        files.config = Some(file_arg(
            config,
            &MediaType::new("application/vnd.oci.image.config.v1+json"),
        ));
    }
    let subject = match &args.subject {
        Some(subject) => {
            let selector =
                Selector::parse(subject).map_err(|e| Usage(format!("--subject: {e}")))?;
            Some(target.store().resolve(&selector).await?)
        }
        None => None,
    };
    let display = crate::progress::Display::new(ctx).map(std::sync::Arc::new);
    let progress = display
        .clone()
        .map(|d| d as std::sync::Arc<dyn orca::Progress>);
    let started = std::time::Instant::now();
    let packed = orca::push_files_reported(
        target.store(),
        &files,
        subject.as_ref(),
        target.tag(),
        progress.as_ref(),
    )
    .await;
    if let Some(display) = &display {
        display.finish();
    }
    let packed = packed.with_context(|| format!("pushing to {}", args.target))?;
    if let Some(display) = &display {
        ctx.note(&display.summary("pushed", started.elapsed()));
    }
    if let Some(path) = &args.export_manifest {
        let bytes = target.store().fetch_bytes(&packed.descriptor).await?;
        crate::commands::write_whole(path, &bytes)
            .with_context(|| format!("exporting the manifest to {}", path.display()))?;
    }
    target.finish().await?;
    let mut json = descriptor_json(&packed.descriptor);
    json["form"] = match packed.form {
        Form::V1_0 => "1.0",
        _ => "1.1",
    }
    .into();
    ctx.emit(
        &format!(
            "pushed {} as {}",
            packed.descriptor.digest,
            form_name(packed.form)
        ),
        &json,
    )
}

pub(crate) async fn pull(ctx: &Ctx, args: Pull) -> anyhow::Result<()> {
    let target = open(ctx, &args.target, Access::Read).await?;
    let (_, descriptor) = resolve_root(&target).await?;
    let descriptor = select_platform(target.store(), descriptor, args.platform.as_deref()).await?;
    if descriptor.media_type.is_index() {
        let bytes = target.store().fetch_bytes(&descriptor).await?;
        if let orca::Document::Index(index) =
            orca::RawManifest::new(descriptor.media_type.clone(), bytes).parse()?
        {
            return Err(Usage(format!(
                "{} is an index of {}: pick one with --platform",
                args.target,
                index.platform_list()
            ))
            .into());
        }
    }
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("creating {}", args.output.display()))?;
    let display = crate::progress::Display::new(ctx).map(std::sync::Arc::new);
    let started = std::time::Instant::now();
    let written = orca::artifact::pull_files_with(
        target.store(),
        &Selector::Digest(descriptor.digest.clone()),
        &args.output,
        args.overwrite,
        display
            .clone()
            .map(|d| d as std::sync::Arc<dyn orca::Progress>),
    )
    .await;
    if let Some(display) = &display {
        display.finish();
        if written.is_ok() {
            ctx.note(&display.summary("pulled", started.elapsed()));
        }
    }
    let written = written
        .map_err(|e| match e {
            orca::Error::AlreadyExists { .. } => anyhow::Error::new(e)
                .context("nothing was written: pull with --overwrite to replace what is there"),
            other => anyhow::Error::new(other),
        })
        .with_context(|| format!("pulling {}", args.target))?;
    let names: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
    ctx.emit(
        &names.join("\n"),
        &serde_json::json!({
            "manifest": descriptor_json(&descriptor),
            "files": names,
        }),
    )
}

pub(crate) async fn attach(ctx: &Ctx, args: Attach) -> anyhow::Result<()> {
    let target = open(ctx, &args.subject, Access::Write).await?;
    let files = files(&args.artifact, &args.files)?;
    let subject = target.root().await?;
    let packed = orca::attach(target.store(), &subject, &files)
        .await
        .with_context(|| format!("attaching to {}", args.subject))?;
    target.finish().await?;
    ctx.emit(
        &format!("attached {}", packed.descriptor.digest),
        &descriptor_json(&packed.descriptor),
    )
}

pub(crate) async fn discover(ctx: &Ctx, args: Discover) -> anyhow::Result<()> {
    let target = open(ctx, &args.target, Access::Read).await?;
    let subject = target.root().await?;
    let artifact_type = args.artifact_type.as_deref().map(MediaType::new);
    let found = orca::discover(
        target.store(),
        &subject,
        artifact_type.as_ref(),
        args.depth as usize,
    )
    .await
    .with_context(|| format!("listing the referrers of {}", args.target))?;
    let via = match found.via {
        Some(orca::Via::Api) => "referrers API",
        Some(orca::Via::TagSchema) => "fallback tag",
        _ => "nothing",
    };
    let mut text = format!("{} {}", args.target, found.subject.digest);
    tree(&mut text, &found.referrers, "");
    text.push_str(&format!("\n(listed by the {via})"));
    let json = serde_json::json!({
        "subject": descriptor_json(&found.subject),
        "via": match found.via {
            Some(orca::Via::Api) => "api",
            _ => "tag",
        },
        "referrers": referrers_json(&found.referrers),
    });
    ctx.emit(&text, &json)
}

/// Draws referrers as a tree: `├──` for a sibling with more after it,
/// `└──` for the last, and `│` down the side of the ones still open.
fn tree(text: &mut String, referrers: &[orca::Referrer], prefix: &str) {
    for (i, referrer) in referrers.iter().enumerate() {
        let last = i + 1 == referrers.len();
        let kind = referrer
            .descriptor
            .artifact_type
            .as_ref()
            .map(|t| t.as_str().to_owned())
            .unwrap_or_else(|| referrer.descriptor.media_type.as_str().to_owned());
        text.push_str(&format!(
            "\n{prefix}{}{kind} {}",
            if last { "└── " } else { "├── " },
            referrer.descriptor.digest
        ));
        let below = format!("{prefix}{}", if last { "    " } else { "│   " });
        tree(text, &referrer.referrers, &below);
    }
}

fn referrers_json(referrers: &[orca::Referrer]) -> Vec<serde_json::Value> {
    referrers
        .iter()
        .map(|r| {
            let mut value = descriptor_json(&r.descriptor);
            value["referrers"] = referrers_json(&r.referrers).into();
            value
        })
        .collect()
}
