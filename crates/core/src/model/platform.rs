//! Platforms (`os/arch[/variant]`): parsing, the usual normalisation of
//! architecture aliases, and matching a wanted platform against a candidate.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The platform a manifest runs on, as carried in index entries and configs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture (`amd64`, `arm64`, …).
    pub architecture: String,
    /// Operating system (`linux`, `windows`, …).
    pub os: String,
    /// Operating system version (Windows build numbers).
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    /// Required operating system features.
    #[serde(rename = "os.features", default, skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
    /// CPU variant (`v7`, `v8`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Fields this version of orca does not know, kept as they were.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Platform {
    /// A platform from OS and architecture, normalised.
    pub fn new(os: &str, architecture: &str) -> Self {
        Platform {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            ..Platform::default()
        }
        .normalized()
    }

    /// Parses `os/arch[/variant]`, normalising aliases (`x86_64` → `amd64`,
    /// `aarch64` → `arm64`, …).
    pub fn parse(input: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidInput {
            what: format!("platform {input:?}"),
            reason: reason.to_owned(),
        };
        let parts: Vec<&str> = input.split('/').collect();
        if !(2..=3).contains(&parts.len()) {
            return Err(invalid("expected os/arch or os/arch/variant"));
        }
        if parts.iter().any(|p| p.is_empty()) {
            return Err(invalid("a part is empty"));
        }
        let valid = |p: &str| {
            p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        };
        if !parts.iter().all(|p| valid(p)) {
            return Err(invalid(
                "only letters, digits, '_', '-' and '.' are allowed",
            ));
        }
        let mut platform = Platform {
            os: parts[0].to_owned(),
            architecture: parts[1].to_owned(),
            variant: parts.get(2).map(|v| (*v).to_owned()),
            ..Platform::default()
        };
        platform = platform.normalized();
        Ok(platform)
    }

    /// The same platform with OS lowercased, architecture aliases resolved
    /// and default variants (`arm64/v8`, `amd64/v1`) dropped.
    pub fn normalized(mut self) -> Self {
        self.os = self.os.to_ascii_lowercase();
        if self.os == "macos" {
            self.os = "darwin".into();
        }
        let arch = self.architecture.to_ascii_lowercase();
        let variant = self.variant.take().map(|v| v.to_ascii_lowercase());
        let (arch, variant) = match arch.as_str() {
            "x86_64" | "x86-64" | "amd64" => ("amd64", variant.filter(|v| v != "v1")),
            "i386" | "386" | "i686" => ("386", variant),
            "aarch64" | "arm64" => ("arm64", variant.filter(|v| v != "v8" && v != "8")),
            "armhf" => ("arm", Some("v7".to_owned())),
            "armel" => ("arm", Some("v6".to_owned())),
            "arm" => (
                "arm",
                Some(match variant.as_deref() {
                    None | Some("7") | Some("v7") => "v7".to_owned(),
                    Some("6") => "v6".to_owned(),
                    Some("5") => "v5".to_owned(),
                    Some("8") => "v8".to_owned(),
                    Some(other) => other.to_owned(),
                }),
            ),
            other => {
                self.architecture = other.to_owned();
                self.variant = variant;
                return self;
            }
        };
        self.architecture = arch.to_owned();
        self.variant = variant;
        self
    }

    /// Whether a candidate (say, an index entry) satisfies this wanted
    /// platform: same OS and architecture after normalisation, the same
    /// variant when one is wanted, and the same OS version when one is wanted.
    pub fn matches(&self, candidate: &Platform) -> bool {
        let want = self.clone().normalized();
        let have = candidate.clone().normalized();
        want.os == have.os
            && want.architecture == have.architecture
            && (want.variant.is_none() || want.variant == have.variant)
            && (want.os_version.is_none() || want.os_version == have.os_version)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Platform::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_normalise() {
        let p = Platform::parse("linux/x86_64").expect("parse");
        assert_eq!(p.to_string(), "linux/amd64");
        assert_eq!(
            Platform::parse("Linux/aarch64/v8")
                .expect("parse")
                .to_string(),
            "linux/arm64"
        );
        assert_eq!(
            Platform::parse("linux/armhf").expect("parse").to_string(),
            "linux/arm/v7"
        );
        assert_eq!(
            Platform::parse("linux/arm").expect("parse").to_string(),
            "linux/arm/v7"
        );
        assert_eq!(
            Platform::parse("linux/arm64/v9")
                .expect("parse")
                .to_string(),
            "linux/arm64/v9"
        );
    }

    #[test]
    fn malformed_platforms_name_the_problem() {
        for (input, reason) in [
            ("linux", "expected os/arch"),
            ("linux/", "a part is empty"),
            ("a/b/c/d", "expected os/arch"),
            ("linux/am d64", "only letters"),
        ] {
            let err = Platform::parse(input).expect_err(input).to_string();
            assert!(err.contains(reason) && err.contains(input), "{err}");
        }
    }

    #[test]
    fn matching() {
        let want = Platform::parse("linux/arm64").expect("parse");
        let mut have = Platform::new("linux", "aarch64");
        have.variant = Some("v8".into());
        assert!(want.matches(&have));
        assert!(!want.matches(&Platform::new("linux", "amd64")));
        let want_v6 = Platform::parse("linux/arm/v6").expect("parse");
        assert!(!want_v6.matches(&Platform::new("linux", "arm")));
        assert!(
            Platform::parse("linux/arm")
                .expect("parse")
                .matches(&Platform::new("linux", "armhf"))
        );
    }

    #[test]
    fn serde_keeps_unknown_fields() {
        let json = r#"{"architecture":"amd64","os":"linux","os.version":"1","x-extra":true}"#;
        let p: Platform = serde_json::from_str(json).expect("parse");
        assert_eq!(p.os_version.as_deref(), Some("1"));
        let back = serde_json::to_string(&p).expect("serialise");
        assert_eq!(back, json);
    }
}
