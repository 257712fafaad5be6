//! Credentials and region from the AWS shared files, as the AWS CLI reads
//! them when the environment has none: `~/.aws/credentials`
//! (`AWS_SHARED_CREDENTIALS_FILE`) and `~/.aws/config` (`AWS_CONFIG_FILE`),
//! section `AWS_PROFILE` (default `default`; `[profile NAME]` in config).

use std::collections::HashMap;
use std::path::PathBuf;

/// What a profile says.
#[derive(Default)]
pub(crate) struct Profile {
    pub(crate) access_key_id: Option<String>,
    pub(crate) secret_access_key: Option<String>,
    pub(crate) session_token: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) endpoint: Option<String>,
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profile")
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("region", &self.region)
            .finish()
    }
}

/// Reads the current profile; missing files are an empty profile.
pub(crate) fn current() -> Profile {
    let name = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".to_owned());
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let file = |variable: &str, default: &str| {
        std::env::var_os(variable)
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws").join(default)))
    };
    let credentials = file("AWS_SHARED_CREDENTIALS_FILE", "credentials")
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(|text| section(&text, &name))
        .unwrap_or_default();
    let config_section = if name == "default" {
        "default".to_owned()
    } else {
        format!("profile {name}")
    };
    let config = file("AWS_CONFIG_FILE", "config")
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(|text| section(&text, &config_section))
        .unwrap_or_default();
    let get = |key: &str| credentials.get(key).or_else(|| config.get(key)).cloned();
    Profile {
        access_key_id: get("aws_access_key_id"),
        secret_access_key: get("aws_secret_access_key"),
        session_token: get("aws_session_token"),
        region: config.get("region").cloned(),
        endpoint: config.get("endpoint_url").cloned(),
    }
}

/// The keys of profile `name` in the AWS shared credentials file at `path`.
pub(crate) fn from_credentials_file(
    path: &std::path::Path,
    name: &str,
) -> std::io::Result<(Option<String>, Option<String>, Option<String>)> {
    let text = std::fs::read_to_string(path)?;
    let keys = section(&text, name);
    Ok((
        keys.get("aws_access_key_id").cloned(),
        keys.get("aws_secret_access_key").cloned(),
        keys.get("aws_session_token").cloned(),
    ))
}

/// The `key = value` lines of section `[name]` of an INI text.
fn section(text: &str, name: &str) -> HashMap<String, String> {
    let mut inside = false;
    let mut out = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = header.trim() == name;
            continue;
        }
        if inside && let Some((key, value)) = line.split_once('=') {
            out.insert(key.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::section;

    #[test]
    fn sections_are_read_by_name() {
        let text = "[default]\naws_access_key_id = A\n# note\n[profile other]\nregion=eu-west-1\naws_access_key_id=B\n";
        assert_eq!(
            section(text, "default")
                .get("aws_access_key_id")
                .map(String::as_str),
            Some("A")
        );
        let other = section(text, "profile other");
        assert_eq!(other.get("region").map(String::as_str), Some("eu-west-1"));
        assert_eq!(
            other.get("aws_access_key_id").map(String::as_str),
            Some("B")
        );
        assert!(section(text, "missing").is_empty());
    }
}
