//! `orca blob get|head|put|delete`: content by digest, streamed to and
//! from files or stdin/stdout, verified on the way.

use std::io::Write;

use anyhow::Context as _;
use futures::StreamExt;
use orca::{Access, Descriptor, Digest, MediaType, Selector, Target};

use super::open;
use crate::output::{Ctx, Usage, descriptor_json};

/// The digest a blob target names, and its stored size.
async fn located(target: &Target, name: &str) -> anyhow::Result<Descriptor> {
    let Some(Selector::Digest(digest)) = target.selector() else {
        return Err(Usage(format!("{name} names no digest (…@sha256:…)")).into());
    };
    let probe = Descriptor::new(MediaType::OCTET_STREAM, digest.clone(), 0);
    let size = target
        .store()
        .stat(&probe)
        .await?
        .ok_or_else(|| orca::Error::NotFound {
            what: format!("blob {digest}"),
            place: target.store().to_string(),
        })?;
    Ok(Descriptor::new(
        MediaType::OCTET_STREAM,
        digest.clone(),
        size,
    ))
}

pub(crate) async fn blob(ctx: &Ctx, command: crate::cli::BlobCommand) -> anyhow::Result<()> {
    use crate::cli::BlobCommand;
    match command {
        BlobCommand::Get { target, output } => {
            let opened = open(ctx, &target, Access::Read).await?;
            let descriptor = located(&opened, &target).await?;
            let mut body = opened.store().fetch(&descriptor).await?;
            if output == "-" {
                while let Some(chunk) = body.next().await {
                    crate::output::to_stdout(&chunk?)?;
                }
                return Ok(());
            }
            // Written beside, renamed only once the whole blob checked out.
            let path = std::path::PathBuf::from(&output);
            let temp = path.with_extension("orca-partial");
            let written = async {
                let mut file = std::fs::File::create(&temp)
                    .with_context(|| format!("creating {}", temp.display()))?;
                while let Some(chunk) = body.next().await {
                    file.write_all(&chunk?)?;
                }
                file.sync_all()?;
                std::fs::rename(&temp, &path)
                    .with_context(|| format!("writing {}", path.display()))?;
                anyhow::Ok(())
            }
            .await;
            if written.is_err() {
                let _ = std::fs::remove_file(&temp);
            }
            written?;
            ctx.emit(&output, &descriptor_json(&descriptor))
        }
        BlobCommand::Head { target } => {
            let opened = open(ctx, &target, Access::Read).await?;
            let descriptor = located(&opened, &target).await?;
            ctx.emit(
                &format!("{} {}", descriptor.digest, descriptor.size),
                &descriptor_json(&descriptor),
            )
        }
        BlobCommand::Put {
            target,
            file,
            media_type,
        } => {
            let opened = open(ctx, &target, Access::Write).await?;
            let media_type = MediaType::new(&media_type);
            let path = std::path::PathBuf::from(&file);
            // What can be read only once (stdin, a pipe, a FIFO) is spooled
            // to a temporary file first; a file is read where it is. Either
            // way it is hashed, then streamed: memory stays flat.
            let regular = file != "-" && std::fs::metadata(&path).is_ok_and(|m| m.is_file());
            let spool = if regular {
                None
            } else {
                let from = path.clone();
                Some(
                    tokio::task::spawn_blocking(move || spool(&from))
                        .await?
                        .with_context(|| format!("reading the blob from {file}"))?,
                )
            };
            let read_from = spool.as_ref().map_or(path.as_path(), |s| s.path());
            // The title the helper adds belongs to artifacts, not to a bare
            // blob.
            let descriptor = orca::artifact::push_file(opened.store(), read_from, media_type, None)
                .await
                .with_context(|| format!("pushing {file}"))?
                .plain();
            drop(spool);
            opened.finish().await?;
            ctx.emit(
                &descriptor.digest.to_string(),
                &descriptor_json(&descriptor),
            )
        }
        BlobCommand::Delete { target, force } => {
            super::refuse_archive(&target)?;
            let opened = open(ctx, &target, Access::Write).await?;
            let descriptor = located(&opened, &target).await?;
            super::confirm(
                force,
                &format!(
                    "delete blob {} from {target}? Images that use it break.",
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

/// `orca digest`: each file's digest, as `sha256sum` prints it but with
/// the algorithm named.
pub(crate) fn digest(ctx: &Ctx, args: crate::cli::DigestArgs) -> anyhow::Result<()> {
    let algorithm = if args.algorithm == "sha512" {
        orca::Algorithm::Sha512
    } else {
        orca::Algorithm::Sha256
    };
    let mut text = Vec::new();
    let mut json = Vec::new();
    for file in &args.files {
        let digest = if file == "-" {
            hash_reader(&mut std::io::stdin().lock(), algorithm)?
        } else {
            let path = std::path::Path::new(file);
            let mut opened =
                std::fs::File::open(path).map_err(|e| Usage(format!("cannot read {file}: {e}")))?;
            hash_reader(&mut opened, algorithm)?
        };
        text.push(format!("{digest}  {file}"));
        json.push(serde_json::json!({ "file": file, "digest": digest.to_string() }));
    }
    ctx.emit(&text.join("\n"), &serde_json::json!({ "digests": json }))
}

/// Hashes everything `reader` yields, 1 MiB at a time.
fn hash_reader(
    reader: &mut dyn std::io::Read,
    algorithm: orca::Algorithm,
) -> anyhow::Result<Digest> {
    let mut digester = orca::Digester::new(algorithm);
    let mut buffer = vec![0u8; 1024 * 1024];
    loop {
        let n = reader.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        digester.update(&buffer[..n]);
    }
    Ok(digester.finish())
}

/// Copies what `path` (`-`: stdin) gives, once, into a new temporary file
/// (removed when dropped).
fn spool(path: &std::path::Path) -> anyhow::Result<tempfile::NamedTempFile> {
    let mut spooled = tempfile::NamedTempFile::new().context("creating a temporary file")?;
    if path == std::path::Path::new("-") {
        std::io::copy(&mut std::io::stdin().lock(), spooled.as_file_mut())?;
    } else {
        let mut source = std::fs::File::open(path)?;
        std::io::copy(&mut source, spooled.as_file_mut())?;
    }
    spooled.as_file().sync_all()?;
    Ok(spooled)
}
