//! Image references in the distribution grammar
//! (`[host[:port]/]path[:tag][@digest]`), with Docker Hub defaulting, and the
//! tag-or-digest [`Selector`] a store resolves.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::model::Digest;
use crate::model::digest::shorten;

/// The registry a reference without a host names.
pub const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_LEGACY: &str = "index.docker.io";
const OFFICIAL_NAMESPACE: &str = "library";
/// Longest repository path the grammar accepts.
pub const MAX_REPOSITORY_LEN: usize = 255;
/// Longest tag the grammar accepts.
pub const MAX_TAG_LEN: usize = 128;

/// A parsed, normalised image reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses a reference. A missing host means Docker Hub, and a single
    /// path component there gains `library/`. Neither tag nor digest is
    /// required; no tag is invented.
    pub fn parse(input: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidReference {
            input: shorten(input),
            reason,
        };
        if input.is_empty() {
            return Err(invalid("the reference is empty".into()));
        }
        if let Some((scheme, _)) = input.split_once("://") {
            return Err(invalid(format!(
                "a reference names no scheme: drop {scheme:?}:// (write host/repository:tag)"
            )));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => {
                let digest = Digest::parse(digest).map_err(|e| match e {
                    Error::InvalidDigest { reason, .. } => {
                        invalid(format!("digest {:?}: {reason}", shorten(digest)))
                    }
                    other => other,
                })?;
                (rest, Some(digest))
            }
            None => (input, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let tag = &rest[last_slash + i + 1..];
                validate_tag(tag).map_err(invalid)?;
                (&rest[..last_slash + i], Some(tag.to_owned()))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(invalid("the repository name is empty".into()));
        }
        let (registry, path) = split_registry(name);
        validate_registry(registry).map_err(invalid)?;
        validate_repository(path).map_err(invalid)?;
        let registry = if registry == DOCKER_HUB_LEGACY {
            DOCKER_HUB
        } else {
            registry
        };
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("{OFFICIAL_NAMESPACE}/{path}")
        } else {
            path.to_owned()
        };
        // The grammar's limit covers the whole name, host included.
        let name_len = registry.len() + 1 + repository.len();
        if name_len > MAX_REPOSITORY_LEN {
            return Err(invalid(format!(
                "the name (host and repository) is {name_len} characters long, at most \
                 {MAX_REPOSITORY_LEN} are allowed"
            )));
        }
        Ok(Reference {
            registry: registry.to_owned(),
            repository,
            tag,
            digest,
        })
    }

    /// The registry host, with port if any (`docker.io`, `localhost:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path (`library/alpine`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if the reference has one.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if the reference has one.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What to resolve in the repository: the digest when there is one
    /// (it is the stronger claim), else the tag, else `None`.
    pub fn selector(&self) -> Option<Selector> {
        match (&self.digest, &self.tag) {
            (Some(d), _) => Some(Selector::Digest(d.clone())),
            (None, Some(t)) => Some(Selector::Tag(t.clone())),
            (None, None) => None,
        }
    }

    /// The same repository with another tag (and no digest).
    pub fn with_tag(&self, tag: &str) -> Result<Self> {
        validate_tag(tag).map_err(|reason| Error::InvalidReference {
            input: shorten(tag),
            reason,
        })?;
        Ok(Reference {
            tag: Some(tag.to_owned()),
            digest: None,
            ..self.clone()
        })
    }

    /// The same repository pinned to a digest (and no tag).
    pub fn with_digest(&self, digest: Digest) -> Self {
        Reference {
            tag: None,
            digest: Some(digest),
            ..self.clone()
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Reference::parse(s)
    }
}

/// A manifest inside one repository: by tag or by digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Selector {
    /// A tag, validated against the tag grammar.
    Tag(String),
    /// A digest.
    Digest(Digest),
}

impl Selector {
    /// Parses a tag or a digest: anything with a `:` must be a digest.
    pub fn parse(input: &str) -> Result<Self> {
        if input.contains(':') {
            return Digest::parse(input).map(Selector::Digest);
        }
        validate_tag(input).map_err(|reason| Error::InvalidReference {
            input: shorten(input),
            reason,
        })?;
        Ok(Selector::Tag(input.to_owned()))
    }

    /// Checks a tag against the grammar `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
    pub fn tag(tag: &str) -> Result<Self> {
        validate_tag(tag).map_err(|reason| Error::InvalidReference {
            input: shorten(tag),
            reason,
        })?;
        Ok(Selector::Tag(tag.to_owned()))
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Tag(t) => f.write_str(t),
            Selector::Digest(d) => d.fmt(f),
        }
    }
}

impl From<Digest> for Selector {
    fn from(d: Digest) -> Self {
        Selector::Digest(d)
    }
}

fn split_registry(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        _ => (DOCKER_HUB, name),
    }
}

pub(crate) fn validate_tag(tag: &str) -> std::result::Result<(), String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut chars = tag.chars();
    match chars.next() {
        None => return Err("the tag is empty".into()),
        Some(c) if !word(c) => {
            return Err(format!(
                "tag {:?} must start with a letter, digit or '_'",
                shorten(tag)
            ));
        }
        Some(_) => {}
    }
    if let Some(bad) = chars.find(|&c| !(word(c) || c == '.' || c == '-')) {
        return Err(format!(
            "tag {:?} contains {bad:?}; allowed are letters, digits, '_', '.' and '-'",
            shorten(tag)
        ));
    }
    if tag.len() > MAX_TAG_LEN {
        return Err(format!(
            "the tag is {} characters long, at most {MAX_TAG_LEN} are allowed",
            tag.len()
        ));
    }
    Ok(())
}

fn validate_registry(registry: &str) -> std::result::Result<(), String> {
    let bad = |why: &str| Err(format!("registry host {registry:?} {why}"));
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let Some((addr, after)) = rest.split_once(']') else {
            return bad("opens '[' without closing it");
        };
        if addr.is_empty() || !addr.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return bad("is not a valid IPv6 address");
        }
        match after {
            "" => (None, None),
            p => match p.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return bad("has text after the IPv6 address"),
            },
        }
    } else {
        match registry.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(registry), None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()))
    {
        return bad("has a port that is not a number");
    }
    if let Some(host) = host {
        for label in host.split('.') {
            let ok = !label.is_empty()
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return bad(
                    "is not a valid host name (labels of letters, digits and inner '-', joined by '.')",
                );
            }
        }
    }
    Ok(())
}

/// Checks a repository path (lowercase components separated by `/`, as
/// the distribution spec names repositories); the reason when it is not one.
pub fn validate_repository(path: &str) -> std::result::Result<(), String> {
    for component in path.split('/') {
        validate_component(component).map_err(|why| {
            if component.is_empty() {
                format!("repository {:?} has an empty path component", shorten(path))
            } else {
                format!("repository path component {:?} {why}", shorten(component))
            }
        })?;
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn validate_component(component: &str) -> std::result::Result<(), &'static str> {
    if component.is_empty() {
        return Err("is empty");
    }
    if component.chars().any(|c| c.is_ascii_uppercase()) {
        return Err("must be lowercase");
    }
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Err("must start and end with a lowercase letter or digit");
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|b| b == b'-');
        if !ok {
            return Err("has a separator other than '.', '_', '__' or dashes");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";

    #[test]
    fn parses_and_normalises() {
        let cases = [
            ("busybox", "docker.io", "library/busybox", None),
            ("index.docker.io/foo", "docker.io", "library/foo", None),
            ("foo/bar:1.0", "docker.io", "foo/bar", Some("1.0")),
            ("localhost/a", "localhost", "a", None),
            (
                "localhost:5000/a/b_c__d-e--f.g:tag",
                "localhost:5000",
                "a/b_c__d-e--f.g",
                Some("tag"),
            ),
            ("[::1]:5000/repo:t", "[::1]:5000", "repo", Some("t")),
            ("Example/repo", "Example", "repo", None),
            (
                "test.com:5000",
                "docker.io",
                "library/test.com",
                Some("5000"),
            ),
        ];
        for (input, registry, repository, tag) in cases {
            let r = Reference::parse(input).expect(input);
            assert_eq!(
                (r.registry(), r.repository(), r.tag()),
                (registry, repository, tag),
                "{input}"
            );
            assert_eq!(Reference::parse(&r.to_string()).expect("reparse"), r);
        }
        let r = Reference::parse(&format!("reg.io/x:t@{D}")).expect("digest");
        assert_eq!(r.digest().map(ToString::to_string).as_deref(), Some(D));
        assert_eq!(
            r.selector(),
            Some(Selector::Digest(Digest::parse(D).expect("d")))
        );
    }

    #[test]
    fn malformed_references_name_the_bad_part() {
        let long_tag = "t".repeat(129);
        let long_repo = format!("reg.io/{}", "a".repeat(256));
        let cases: Vec<(String, &str)> = vec![
            ("".into(), "empty"),
            (":tag".into(), "repository name is empty"),
            ("UPPER".into(), "\"UPPER\" must be lowercase"),
            ("reg.io/a//b".into(), "empty path component"),
            ("reg.io/a-".into(), "must start and end"),
            ("reg.io/a.-b".into(), "separator"),
            ("reg.io/a:-t".into(), "must start with"),
            ("reg.io/a:t!".into(), "contains '!'"),
            (format!("reg.io/a:{long_tag}"), "at most 128"),
            (long_repo, "at most 255"),
            // 240 path characters fit alone, not with the host.
            (
                format!("a-long-registry-host.example/{}", "b".repeat(240)),
                "host and repository",
            ),
            ("http://reg.io/a:tag".into(), "drop \"http\"://"),
            ("https://reg.io/a".into(), "drop \"https\"://"),
            ("reg.io/a@sha256:abc".into(), "digest \"sha256:abc\""),
            ("bad_host.io/a".into(), "registry host \"bad_host.io\""),
            ("reg.io:port/a".into(), "port that is not a number"),
            ("[::1/a".into(), "'['"),
        ];
        for (input, expected) in cases {
            let err = Reference::parse(&input).expect_err(&input).to_string();
            assert!(err.contains(expected), "{input}: {err}");
            assert!(err.starts_with("invalid reference"), "{input}: {err}");
        }
    }

    #[test]
    fn selectors() {
        assert_eq!(
            Selector::parse("v1").expect("tag"),
            Selector::Tag("v1".into())
        );
        assert!(matches!(
            Selector::parse(D).expect("digest"),
            Selector::Digest(_)
        ));
        assert!(Selector::parse("sha256:zz").is_err());
        assert!(Selector::parse(".hidden").is_err());
    }
}
