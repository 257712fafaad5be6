//! `orca cache ls|size|prune`: the content cache that `--cache DIR` (or
//! `ORCA_CACHE`) names, which every command reading a registry fills.

use crate::cli::CacheCommand;
use crate::output::{Ctx, Usage, size};

pub(crate) fn cache(ctx: &Ctx, command: CacheCommand) -> anyhow::Result<()> {
    let Some(dir) = &ctx.open.cache else {
        return Err(Usage("no content cache: give --cache DIR or set ORCA_CACHE".into()).into());
    };
    let cache = orca::ContentCache::new(dir);
    match command {
        CacheCommand::Ls => {
            let entries = cache.entries()?;
            let text: Vec<String> = entries
                .iter()
                .map(|e| {
                    format!(
                        "{}  {:>10}  {}  {}",
                        e.digest,
                        size(e.size),
                        humantime::format_rfc3339_seconds(e.used),
                        e.sources.join(",")
                    )
                })
                .collect();
            let json: Vec<_> = entries
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "digest": e.digest.to_string(),
                        "size": e.size,
                        "used": humantime::format_rfc3339_seconds(e.used).to_string(),
                        "sources": e.sources,
                    })
                })
                .collect();
            ctx.emit(&text.join("\n"), &serde_json::Value::Array(json))
        }
        CacheCommand::Size => {
            let entries = cache.entries()?;
            let bytes: u64 = entries.iter().map(|e| e.size).sum();
            ctx.emit(
                &format!(
                    "{} in {} blob(s) in {}",
                    size(bytes),
                    entries.len(),
                    dir.display()
                ),
                &serde_json::json!({ "blobs": entries.len(), "bytes": bytes, "dir": dir }),
            )
        }
        CacheCommand::Prune(args) => {
            if !args.all && args.older_than.is_none() && args.max_size.is_none() {
                return Err(Usage(
                    "say what to prune: --all, --older-than DURATION or --max-size SIZE".into(),
                )
                .into());
            }
            let pruned = cache.prune(args.all, args.older_than, args.max_size)?;
            ctx.emit(
                &format!("removed {} blob(s), {}", pruned.entries, size(pruned.bytes)),
                &serde_json::json!({ "removed": pruned.entries, "bytes": pruned.bytes }),
            )
        }
    }
}
