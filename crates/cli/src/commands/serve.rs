//! `orca serve ROOT`: a registry over a root of repositories (memory,
//! `oci:DIR`, `s3://BUCKET/PREFIX`, a plugin's `SCHEME://LOCATION`), until
//! Ctrl-C or `SIGTERM`, when requests in flight finish.

use anyhow::Context as _;

use crate::cli::Serve;
use crate::output::Ctx;

/// How long requests in flight may take to finish once told to stop.
const SHUTDOWN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

pub(crate) async fn serve(ctx: &Ctx, args: Serve) -> anyhow::Result<()> {
    let root = orca::Root::open(&args.root, &ctx.open)
        .with_context(|| format!("opening {}", args.root))?;
    let mut limits = orca_server::Limits::default();
    limits.refuse_sparse = args.refuse_sparse;
    limits.idle = args.idle_timeout;
    let server = orca_server::Server::with_limits(root, limits);
    let _collector = args.gc_every.map(|every| {
        ctx.note(&format!(
            "collecting garbage every {} (grace {})",
            humantime::format_duration(every),
            humantime::format_duration(args.gc_grace)
        ));
        server.collect_every(every, args.gc_grace)
    });
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let address = listener.local_addr()?;
    ctx.note(&format!("serving {} at http://{address}", args.root));
    // On Ctrl-C or SIGTERM no new connection is taken; requests in flight
    // finish, for at most SHUTDOWN_DEADLINE (upload sessions stay in the
    // store, so a client continues them at the next server).
    let stopping = std::sync::Arc::new(tokio::sync::Notify::new());
    let told = stopping.clone();
    let signal = async move {
        super::sync::stop_signal().await;
        told.notify_one();
    };
    let deadline = async move {
        stopping.notified().await;
        tokio::time::sleep(SHUTDOWN_DEADLINE).await;
    };
    tokio::select! {
        served = server.serve(listener, signal) => {
            served.with_context(|| format!("serving {}", args.root))?;
            ctx.note("stopped");
        }
        () = deadline => {
            ctx.note(&format!(
                "stopped; requests still running after {}s were cut (their upload sessions stay resumable)",
                SHUTDOWN_DEADLINE.as_secs()
            ));
        }
    }
    Ok(())
}
