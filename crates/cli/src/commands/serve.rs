//! `orca serve ROOT`: a registry over a root of repositories (memory,
//! `oci:DIR`, `s3://BUCKET/PREFIX`, a plugin's `SCHEME://LOCATION`), set
//! by a YAML configuration and flags over it, until Ctrl-C or `SIGTERM`,
//! when requests in flight finish.

use anyhow::Context as _;

use crate::cli::Serve;
use crate::output::{Ctx, Usage};

/// How long requests in flight may take to finish once told to stop.
const SHUTDOWN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

pub(crate) async fn serve(ctx: &Ctx, args: Serve) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => orca_server::Config::load(path).map_err(anyhow::Error::msg)?,
        None => orca_server::Config::default(),
    };
    // The flags go over the file.
    if let Some(root) = &args.root {
        config.root = Some(root.clone());
    }
    let Some(root_name) = config.root.clone() else {
        return Err(Usage(
            "name a root to serve (memory, oci:DIR, s3://BUCKET/PREFIX), or give it in --config"
                .into(),
        )
        .into());
    };
    if let Some(htpasswd) = &args.htpasswd {
        config.auth.htpasswd = Some(htpasswd.clone());
    }
    if let Some(anonymous) = &args.anonymous {
        config.auth.anonymous = Some(match anonymous.as_str() {
            "none" => orca_server::Access::None,
            "write" => orca_server::Access::Write,
            _ => orca_server::Access::Read,
        });
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.tls = Some(orca_server::TlsConfig {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: args.tls_client_ca.clone(),
        });
    }
    let mut limits = config.limits().map_err(anyhow::Error::msg)?;
    if args.refuse_sparse {
        limits.refuse_sparse = true;
    }
    if let Some(idle) = args.idle_timeout {
        limits.idle = idle;
    }
    if let Some(uploads) = args.max_uploads {
        limits.uploads = uploads;
    }
    if let Some(bytes) = args.max_blob_size {
        limits.blob = Some(bytes);
    }
    let auth = config.auth().map_err(anyhow::Error::msg)?;
    let gc = match (config.gc().map_err(anyhow::Error::msg)?, args.gc_every) {
        (_, Some(every)) => Some((
            every,
            args.gc_grace
                .unwrap_or(std::time::Duration::from_secs(24 * 60 * 60)),
        )),
        (Some((every, grace)), None) => Some((every, args.gc_grace.unwrap_or(grace))),
        (None, None) => None,
    };
    let root =
        orca::Root::open(&root_name, &ctx.open).with_context(|| format!("opening {root_name}"))?;
    let upstreams = config.upstreams(&ctx.open).map_err(anyhow::Error::msg)?;
    for upstream in &upstreams {
        ctx.note(&format!(
            "pull-through: /v2/{}/… from {}",
            upstream.namespace,
            upstream.registry.host()
        ));
    }
    let server = orca_server::Server::caching(root, limits, auth, upstreams);
    let _collector = gc.map(|(every, grace)| {
        ctx.note(&format!(
            "collecting garbage every {} (grace {})",
            humantime::format_duration(every),
            humantime::format_duration(grace)
        ));
        server.collect_every(every, grace)
    });
    let listen = args
        .listen
        .clone()
        .or(config.listen.clone())
        .unwrap_or_else(|| "127.0.0.1:5000".to_owned());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let address = listener.local_addr()?;
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
    let served = match config.tls() {
        Some(files) => {
            let tls = orca_server::TlsListener::new(listener, files).map_err(anyhow::Error::msg)?;
            reload_on_hangup(ctx, tls.reloader());
            ctx.note(&format!("serving {root_name} at https://{address}"));
            tokio::select! {
                served = server.serve_tls(tls, signal) => Some(served),
                () = deadline => None,
            }
        }
        None => {
            ctx.note(&format!("serving {root_name} at http://{address}"));
            tokio::select! {
                served = server.serve(listener, signal) => Some(served),
                () = deadline => None,
            }
        }
    };
    match served {
        Some(served) => {
            served.with_context(|| format!("serving {root_name}"))?;
            ctx.note("stopped");
        }
        None => ctx.note(&format!(
            "stopped; requests still running after {}s were cut (their upload sessions stay resumable)",
            SHUTDOWN_DEADLINE.as_secs()
        )),
    }
    Ok(())
}

/// Reads the TLS files again on every `SIGHUP`.
fn reload_on_hangup(ctx: &Ctx, reloader: orca_server::Reloader) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let quiet = ctx.quiet;
        if let Ok(mut hangups) = signal(SignalKind::hangup()) {
            tokio::spawn(async move {
                while hangups.recv().await.is_some() {
                    match reloader.reload() {
                        Ok(()) if !quiet => eprintln!("orca: TLS certificate and key read again"),
                        Ok(()) => {}
                        Err(e) => eprintln!("orca: TLS files not reloaded, the old ones stay: {e}"),
                    }
                }
            });
        }
    }
    #[cfg(not(unix))]
    let _ = (ctx, reloader);
}
