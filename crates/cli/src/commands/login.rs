//! `login` and `logout`: the password from stdin or a prompt without
//! echo, checked against the registry before it is kept.

use std::io::IsTerminal;

use anyhow::Context as _;
use orca::http::{DockerConfig, Kept};

use crate::output::{Ctx, Usage};

fn config_path(ctx: &Ctx) -> anyhow::Result<std::path::PathBuf> {
    ctx.open
        .registry_config
        .clone()
        .or_else(DockerConfig::default_path)
        .ok_or_else(|| {
            Usage("no docker config: set DOCKER_CONFIG or HOME, or give --registry-config".into())
                .into()
        })
}

pub(crate) async fn login(ctx: &Ctx, host: &str) -> anyhow::Result<()> {
    let (username, password) = match &ctx.open.credentials {
        Some(credentials) => credentials.clone(),
        None => {
            if !std::io::stdin().is_terminal() {
                return Err(Usage(
                    "give --username and --password-stdin (stdin is no terminal to ask on)".into(),
                )
                .into());
            }
            let username = match &ctx.username {
                Some(user) => user.clone(),
                None => {
                    eprint!("Username: ");
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    line.trim().to_owned()
                }
            };
            let password = rpassword::prompt_password("Password: ")?;
            (username, password)
        }
    };
    let mut options = ctx.open.clone();
    options.credentials = Some((username.clone(), password.clone()));
    let registry = orca::connect(host, &options).await?;
    registry
        .check_credentials()
        .await
        .with_context(|| format!("logging in to {host} as {username}"))?;
    let path = config_path(ctx)?;
    let kept = DockerConfig::store_login(&path, host, &username, &password)?;
    let place = match &kept {
        Kept::File(path) => path.display().to_string(),
        Kept::Helper(name) => format!("docker-credential-{name}"),
        _ => String::new(),
    };
    ctx.emit(
        &format!("logged in to {host} (credentials kept in {place})"),
        &serde_json::json!({ "host": host, "username": username, "keptIn": place }),
    )
}

pub(crate) fn logout(ctx: &Ctx, host: &str) -> anyhow::Result<()> {
    let path = config_path(ctx)?;
    let removed = DockerConfig::erase_login(&path, host)?;
    let text = if removed {
        format!("logged out of {host}")
    } else {
        format!("no credentials for {host} were kept")
    };
    ctx.emit(
        &text,
        &serde_json::json!({ "host": host, "removed": removed }),
    )
}
