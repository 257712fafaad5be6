//! `orca sync`: runs a mirror configuration once and reports per image.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use orca::sync::{Action, ImageReport};

use crate::cli::SyncArgs;
use crate::output::{Ctx, size};
use crate::progress::Display;

/// Runs the configuration once, or with `--watch` again and again until a
/// signal. A signal during a run drops it where it stands: every target
/// publishes content only once it is whole and tags last, so what it
/// holds stays valid (an archive being staged is left as it was).
pub(crate) async fn sync(ctx: &Ctx, args: SyncArgs) -> anyhow::Result<()> {
    if args.watch.is_some_and(|pause| pause.is_zero()) {
        return Err(crate::output::Usage(
            "--watch needs a pause between runs (30s, 5m, 1h): 0 would run again at once, forever"
                .into(),
        )
        .into());
    }
    let config = orca::mirror::Config::load(&args.config)?;
    let mut stop = std::pin::pin!(stop_signal());
    let Some(interval) = args.watch else {
        let mut run = Box::pin(once(ctx, &args, &config));
        tokio::select! {
            done = &mut run => return done,
            () = &mut stop => {}
        }
        drop(run);
        return Err(super::interrupted("the targets hold what was done")
            .await
            .into());
    };
    loop {
        // Each run of a watch is dated, so a log says when it ran.
        ctx.note(&format!(
            "orca: sync run at {}",
            humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        ));
        let done = tokio::select! {
            done = once(ctx, &args, &config) => done,
            () = &mut stop => return Ok(()),
        };
        // A failed run is reported; watching goes on.
        if let Err(e) = done {
            ctx.note(&format!("orca: {}", orca::error::chain(e.as_ref())));
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = &mut stop => return Ok(()),
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub(crate) async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// One run, reported.
async fn once(ctx: &Ctx, args: &SyncArgs, config: &orca::mirror::Config) -> anyhow::Result<()> {
    let display = Display::new(ctx).map(Arc::new);
    let started = Instant::now();
    let progress = display.clone().map(|d| d as Arc<dyn orca::copy::Progress>);
    let shard = args.shard.unwrap_or(orca::mirror::Shard::All);
    if matches!(shard, orca::mirror::Shard::Part { .. }) && config.prunes() {
        ctx.note("orca: prune and gc wait for the run with --shard finish");
    }
    let outcome = orca::mirror::run_shard(config, args.dry_run, &ctx.open, progress, shard).await;
    if let Some(display) = &display {
        display.finish();
    }
    let report = outcome.with_context(|| format!("syncing {}", args.config.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    let count = |action: Action| report.iter().filter(|r| r.action == action).count();
    let failed = count(Action::Failed);
    let bytes: u64 = report.iter().map(|r| r.bytes).sum();
    let mut text: Vec<String> = report.iter().map(line).collect();
    text.push(format!(
        "{} copied, {} up to date, {} pruned, {} would copy, {} would prune, {} failed; {} in {seconds:.1}s",
        count(Action::Copied),
        count(Action::UpToDate),
        count(Action::Pruned),
        count(Action::WouldCopy),
        count(Action::WouldPrune),
        failed,
        size(bytes),
    ));
    ctx.emit(
        &text.join("\n"),
        &serde_json::json!({
            "images": report,
            "summary": {
                "copied": count(Action::Copied),
                "upToDate": count(Action::UpToDate),
                "pruned": count(Action::Pruned),
                "wouldCopy": count(Action::WouldCopy),
                "wouldPrune": count(Action::WouldPrune),
                "failed": failed,
                "bytes": bytes,
                "seconds": seconds,
            },
        }),
    )?;
    if failed > 0 {
        anyhow::bail!("{failed} of {} images failed", report.len());
    }
    Ok(())
}

/// One image's line: what happened, from where to where.
fn line(report: &ImageReport) -> String {
    let action = match report.action {
        Action::Copied => "copied",
        Action::UpToDate => "up to date",
        Action::Pruned => "pruned",
        Action::WouldCopy => "would copy",
        Action::WouldPrune => "would prune",
        Action::Failed => "failed",
    };
    let tag = report
        .tag
        .as_deref()
        .map(|t| format!(":{t}"))
        .unwrap_or_default();
    let mut line = match report.action {
        Action::Pruned | Action::WouldPrune => format!("{action:<11} {}{tag}", report.target),
        _ => format!(
            "{action:<11} {}{tag} -> {}{tag}",
            report.source, report.target
        ),
    };
    if report.bytes > 0 {
        line.push_str(&format!(" ({})", size(report.bytes)));
    }
    if let Some(error) = &report.error {
        line.push_str(&format!(": {error}"));
    }
    line
}
