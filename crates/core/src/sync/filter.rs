//! Which tags of a repository a sync entry takes: include and exclude
//! patterns (globs, or regular expressions written `/…/`), a semver range,
//! and the newest N by version or by creation time. Digest tags
//! (`sha256-<hex>` and `sha256-<hex>.sig`-style tags that name other
//! content) are never images of their own here: they come along with the
//! image they name when the entry asks for them.

use std::collections::HashMap;
use std::fmt;
use std::time::SystemTime;

use regex::Regex;
use semver::{Version, VersionReq};

use crate::error::{Error, Result};
use crate::referrers::is_digest_tag;

/// A tag pattern: a glob (`*` any run of characters, `?` one) or, written
/// between slashes, a regular expression. Both match the whole tag.
#[derive(Clone)]
pub struct Pattern {
    source: String,
    regex: Regex,
}

impl Pattern {
    /// Parses a pattern; a bad regular expression is `InvalidInput`.
    pub fn parse(pattern: &str) -> Result<Self> {
        let anchored = match pattern
            .strip_prefix('/')
            .and_then(|rest| rest.strip_suffix('/'))
        {
            Some(expression) => format!("^(?:{expression})$"),
            None => {
                let mut expression = String::from("^");
                for c in pattern.chars() {
                    match c {
                        '*' => expression.push_str(".*"),
                        '?' => expression.push('.'),
                        c => expression.push_str(&regex::escape(&c.to_string())),
                    }
                }
                expression.push('$');
                expression
            }
        };
        let regex = Regex::new(&anchored).map_err(|e| Error::InvalidInput {
            what: format!("tag pattern {pattern:?}"),
            reason: e.to_string(),
        })?;
        Ok(Pattern {
            source: pattern.to_owned(),
            regex,
        })
    }

    /// Whether the whole of `tag` matches.
    pub fn matches(&self, tag: &str) -> bool {
        self.regex.is_match(tag)
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.source)
    }
}

/// What "newest" is measured by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NewestBy {
    /// The tag read as a version (tags that are none are left out).
    #[default]
    Semver,
    /// The `created` time in the image's configuration.
    Created,
}

/// The tags a sync entry takes from a repository.
#[derive(Clone, Debug, Default)]
pub struct TagFilter {
    /// Tags must match one of these (all tags when empty).
    pub include: Vec<Pattern>,
    /// Tags matching any of these are left out.
    pub exclude: Vec<Pattern>,
    /// Tags must be versions within this range.
    pub semver: Option<VersionReq>,
    /// Keep only the newest N of what is left.
    pub newest: Option<usize>,
    /// How newest is measured.
    pub newest_by: NewestBy,
}

impl TagFilter {
    /// Whether [`TagFilter::select`] needs creation times.
    pub fn needs_created(&self) -> bool {
        self.newest.is_some() && self.newest_by == NewestBy::Created
    }

    /// The tags that pass every filter but the newest-N one.
    pub fn candidates<'a>(&self, tags: &'a [String]) -> Vec<&'a str> {
        tags.iter()
            .map(String::as_str)
            .filter(|tag| self.admits(tag))
            .collect()
    }

    /// Whether `tag` passes every filter but the newest-N one.
    pub fn admits(&self, tag: &str) -> bool {
        !is_digest_tag(tag)
            && (self.include.is_empty() || self.include.iter().any(|p| p.matches(tag)))
            && !self.exclude.iter().any(|p| p.matches(tag))
            && self
                .semver
                .as_ref()
                .is_none_or(|range| version(tag).is_some_and(|v| range.matches(&v)))
    }

    /// The tags this filter takes, sorted; `created` gives the creation
    /// time of candidates when newest is measured by it (tags without one
    /// count as oldest).
    pub fn select(&self, tags: &[String], created: &HashMap<String, SystemTime>) -> Vec<String> {
        let mut chosen = self.candidates(tags);
        if let Some(n) = self.newest {
            match self.newest_by {
                NewestBy::Semver => {
                    chosen.retain(|tag| version(tag).is_some());
                    // Newest first; equal versions (`1.2` and `v1.2.0`) by name.
                    chosen.sort_by(|a, b| version(b).cmp(&version(a)).then(a.cmp(b)));
                }
                NewestBy::Created => {
                    chosen.sort_by(|a, b| created.get(*b).cmp(&created.get(*a)).then(a.cmp(b)));
                }
            }
            chosen.truncate(n);
        }
        let mut chosen: Vec<String> = chosen.into_iter().map(str::to_owned).collect();
        chosen.sort();
        chosen
    }
}

/// Reads a tag as a version, leniently as tags are written: a leading `v`,
/// and missing minor or patch numbers (`v1.2` is 1.2.0).
pub fn version(tag: &str) -> Option<Version> {
    let bare = tag.strip_prefix('v').unwrap_or(tag);
    if let Ok(v) = Version::parse(bare) {
        return Some(v);
    }
    // Pad the numeric core only; what follows `-` or `+` stays.
    let split = bare.find(['-', '+']).unwrap_or(bare.len());
    let (core, rest) = bare.split_at(split);
    let parts: Vec<&str> = core.split('.').collect();
    if parts.is_empty()
        || parts.len() > 3
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let mut padded = parts.join(".");
    for _ in parts.len()..3 {
        padded.push_str(".0");
    }
    Version::parse(&format!("{padded}{rest}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|t| (*t).to_owned()).collect()
    }

    fn patterns(list: &[&str]) -> Vec<Pattern> {
        list.iter()
            .map(|p| Pattern::parse(p).expect("pattern"))
            .collect()
    }

    const ALL: &[&str] = &[
        "1.0",
        "1.2.3",
        "v1.10.0",
        "2.0.0-rc.1",
        "2.0.0",
        "latest",
        "edge",
        "1.2.3-alpine",
    ];

    #[test]
    fn globs_and_regexes_match_whole_tags() {
        let filter = TagFilter {
            include: patterns(&["1.*", "/^v[0-9.]+$/"]),
            exclude: patterns(&["*-alpine"]),
            ..TagFilter::default()
        };
        let chosen = filter.select(&tags(ALL), &HashMap::new());
        assert_eq!(chosen, tags(&["1.0", "1.2.3", "v1.10.0"]));
        assert!(!Pattern::parse("1.?").expect("glob").matches("1.10"));
        assert!(Pattern::parse("1.?").expect("glob").matches("1.2"));
        // A dot in a glob is a dot.
        assert!(!Pattern::parse("1.0").expect("glob").matches("1x0"));
        let err = Pattern::parse("/(unclosed/").expect_err("bad regex");
        assert!(err.to_string().contains("(unclosed"), "{err}");
    }

    #[test]
    fn semver_ranges_read_tags_leniently() {
        let filter = TagFilter {
            semver: Some(VersionReq::parse(">=1.2, <2").expect("range")),
            ..TagFilter::default()
        };
        // A pre-release (`-alpine`, `-rc.1`) is outside a range that names
        // none, as semver ranges go.
        let chosen = filter.select(&tags(ALL), &HashMap::new());
        assert_eq!(chosen, tags(&["1.2.3", "v1.10.0"]));
        assert_eq!(version("v1.2"), Some(Version::new(1, 2, 0)));
        assert_eq!(version("7"), Some(Version::new(7, 0, 0)));
        assert_eq!(version("latest"), None);
        assert_eq!(version("1..2"), None);
    }

    #[test]
    fn newest_n_by_version_or_creation() {
        let filter = TagFilter {
            newest: Some(2),
            ..TagFilter::default()
        };
        // 2.0.0 is newer than its release candidate; names are no versions.
        let chosen = filter.select(&tags(ALL), &HashMap::new());
        assert_eq!(chosen, tags(&["2.0.0", "2.0.0-rc.1"]));

        let filter = TagFilter {
            newest: Some(2),
            newest_by: NewestBy::Created,
            ..TagFilter::default()
        };
        assert!(filter.needs_created());
        let at = |s: u64| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s);
        let created = HashMap::from([
            ("edge".to_owned(), at(300)),
            ("1.0".to_owned(), at(100)),
            ("latest".to_owned(), at(200)),
        ]);
        let chosen = filter.select(&tags(ALL), &created);
        assert_eq!(chosen, tags(&["edge", "latest"]));
    }

    #[test]
    fn digest_tags_are_never_images_of_their_own() {
        let hex = "a".repeat(64);
        let list = tags(&[
            &format!("sha256-{hex}"),
            &format!("sha256-{hex}.sig"),
            "sha256-short",
            "v1",
        ]);
        let chosen = TagFilter::default().select(&list, &HashMap::new());
        assert_eq!(chosen, tags(&["sha256-short", "v1"]));
        assert!(is_digest_tag(&format!("sha512-{}", "0".repeat(128))));
        assert!(!is_digest_tag(&format!("md5-{hex}")));
    }

    /// Core review finding C: the spec cuts a sha512 fallback tag to 64
    /// digits; the filter takes it for what it is, not an image tag.
    #[test]
    fn finding_c_the_sha512_fallback_tag_is_a_digest_tag() {
        let digest = crate::model::Digest::compute(crate::model::Algorithm::Sha512, b"x");
        let fallback = crate::referrers::fallback_tag(&digest);
        assert!(is_digest_tag(&fallback), "{fallback}");
        let list = tags(&[&fallback, &format!("{fallback}.sig"), "v1"]);
        let chosen = TagFilter::default().select(&list, &HashMap::new());
        assert_eq!(chosen, tags(&["v1"]));
        for not in [
            "sha256-",
            "sha256-abc.sig",
            "sha256-",
            &format!("sha256-{}.", "a".repeat(64)),
        ] {
            assert!(!is_digest_tag(not), "{not}");
        }
    }
}
