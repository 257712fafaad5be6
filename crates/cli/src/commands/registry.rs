//! `orca registry set|get|ls|rm`: the per-registry settings file, as
//! `regctl registry set` keeps it. Every command reads the file when it
//! starts (see `main::context`); this module only changes and shows it.

use anyhow::Context as _;
use orca::{RegistryFile, RegistrySettings};

use crate::cli::{RegistryCommand, RegistrySet, Setting, Tls};
use crate::output::{Ctx, Usage};

pub(crate) fn registry(ctx: &Ctx, command: RegistryCommand) -> anyhow::Result<()> {
    let file = RegistryFile::default_location().ok_or_else(|| {
        Usage(
            "no place for the settings file: set HOME, XDG_CONFIG_HOME or ORCA_REGISTRIES_FILE"
                .into(),
        )
    })?;
    match command {
        RegistryCommand::Set(args) => set(ctx, &file, args),
        RegistryCommand::Get(args) => {
            let host = args.host.to_ascii_lowercase();
            let hosts = file.load()?;
            let settings = hosts.get(&host).cloned().unwrap_or_default();
            ctx.emit(&describe(&host, &settings), &json(&host, &settings))
        }
        RegistryCommand::Ls => {
            let hosts = file.load()?;
            let text: Vec<String> = hosts
                .iter()
                .map(|(host, settings)| summary(host, settings))
                .collect();
            let json: Vec<_> = hosts
                .iter()
                .map(|(host, settings)| json(host, settings))
                .collect();
            ctx.emit(&text.join("\n"), &serde_json::Value::Array(json))
        }
        RegistryCommand::Rm(args) => {
            let host = args.host.to_ascii_lowercase();
            let had = file.load()?.contains_key(&host);
            file.update(&host, |s| *s = RegistrySettings::default())?;
            let text = if had {
                format!("removed the settings of {host}")
            } else {
                format!("{host} had no settings")
            };
            ctx.emit(&text, &serde_json::json!({ "host": host, "removed": had }))
        }
    }
}

fn set(ctx: &Ctx, file: &RegistryFile, args: RegistrySet) -> anyhow::Result<()> {
    if args.host.contains('/') || args.host.is_empty() {
        return Err(Usage(format!(
            "{:?} is no registry host: give HOST[:PORT] (registry.example:5000)",
            args.host
        ))
        .into());
    }
    // Files are kept by absolute path, so the settings hold from any
    // working directory.
    let absolute = |path: &std::path::PathBuf| -> anyhow::Result<std::path::PathBuf> {
        std::fs::canonicalize(path).with_context(|| format!("reading {}", path.display()))
    };
    let cacert = args.cacert.as_ref().map(absolute).transpose()?;
    let client_cert = args.client_cert.as_ref().map(absolute).transpose()?;
    let client_key = args.client_key.as_ref().map(absolute).transpose()?;
    let nothing = args.tls.is_none()
        && cacert.is_none()
        && client_cert.is_none()
        && args.mirrors.is_empty()
        && args.rate.is_none()
        && args.unset.is_empty();
    if nothing {
        return Err(Usage(
            "say what to set: --tls, --cacert, --client-cert/--client-key, --mirror, --rate or --unset"
                .into(),
        )
        .into());
    }
    let host = args.host.to_ascii_lowercase();
    let settings = file.update(&host, |s| {
        for setting in &args.unset {
            match setting {
                Setting::Tls => {
                    s.plain_http = None;
                    s.insecure = None;
                }
                Setting::Cacert => s.ca_file = None,
                Setting::ClientCert => {
                    s.cert_file = None;
                    s.key_file = None;
                }
                Setting::Mirrors => s.mirrors.clear(),
                Setting::Rate => s.rate = None,
            }
        }
        match args.tls {
            Some(Tls::Enabled) => {
                s.plain_http = Some(false);
                s.insecure = None;
            }
            Some(Tls::Insecure) => {
                s.plain_http = Some(false);
                s.insecure = Some(true);
            }
            Some(Tls::Disabled) => {
                s.plain_http = Some(true);
                s.insecure = None;
            }
            None => {}
        }
        if cacert.is_some() {
            s.ca_file = cacert;
        }
        if client_cert.is_some() {
            s.cert_file = client_cert;
            s.key_file = client_key;
        }
        if !args.mirrors.is_empty() {
            s.mirrors = args.mirrors.clone();
        }
        if args.rate.is_some() {
            s.rate = args.rate;
        }
    })?;
    ctx.note(&format!("settings kept in {}", file.path().display()));
    ctx.emit(&describe(&host, &settings), &json(&host, &settings))
}

/// What `--tls` a host's settings amount to.
fn tls(settings: &RegistrySettings) -> Option<&'static str> {
    match (settings.plain_http, settings.insecure) {
        (Some(true), _) => Some("disabled"),
        (_, Some(true)) => Some("insecure"),
        (Some(false), _) => Some("enabled"),
        _ => None,
    }
}

/// The settings of a host, one per line.
fn describe(host: &str, settings: &RegistrySettings) -> String {
    if settings.is_empty() {
        return format!("{host}: no settings (orca's defaults)");
    }
    let mut lines = vec![format!("{host}:")];
    if let Some(tls) = tls(settings) {
        lines.push(format!("  tls: {tls}"));
    }
    if let Some(ca) = &settings.ca_file {
        lines.push(format!("  cacert: {}", ca.display()));
    }
    if let (Some(cert), Some(key)) = (&settings.cert_file, &settings.key_file) {
        lines.push(format!("  client-cert: {}", cert.display()));
        lines.push(format!("  client-key: {}", key.display()));
    }
    for mirror in &settings.mirrors {
        lines.push(format!("  mirror: {mirror}"));
    }
    if let Some(rate) = settings.rate {
        lines.push(format!("  rate: {rate} requests/s"));
    }
    lines.join("\n")
}

/// A host and its settings on one line, for `ls`.
fn summary(host: &str, settings: &RegistrySettings) -> String {
    let mut parts = Vec::new();
    if let Some(tls) = tls(settings) {
        parts.push(format!("tls={tls}"));
    }
    if settings.ca_file.is_some() {
        parts.push("cacert".to_owned());
    }
    if settings.cert_file.is_some() {
        parts.push("client-cert".to_owned());
    }
    if !settings.mirrors.is_empty() {
        parts.push(format!("mirrors={}", settings.mirrors.join(",")));
    }
    if let Some(rate) = settings.rate {
        parts.push(format!("rate={rate}"));
    }
    format!("{host}\t{}", parts.join(" "))
}

fn json(host: &str, settings: &RegistrySettings) -> serde_json::Value {
    serde_json::json!({
        "host": host,
        "tls": tls(settings),
        "cacert": settings.ca_file,
        "clientCert": settings.cert_file,
        "clientKey": settings.key_file,
        "mirrors": settings.mirrors,
        "rate": settings.rate,
    })
}
