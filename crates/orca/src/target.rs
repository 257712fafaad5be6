//! Target strings: one syntax, shared by the CLI and Rust users, for every
//! place that holds OCI content — a registry repository, a layout
//! directory, an oci-archive or docker-archive tar, an S3 prefix, or a
//! backend a plugin provides — parsed into a [`TargetSpec`] and opened as a
//! [`Target`](crate::Target): a store and what to select in it.

use std::fmt;
use std::path::PathBuf;

use orca_core::{Error, Reference, Result, Selector};

/// The forms a target string takes, for error messages.
pub const FORMS: &str = "\
HOST[:PORT]/REPO[:TAG|@DIGEST] (a registry; docker:// optional; a name without a host is on Docker Hub), \
oci:PATH[:TAG|@DIGEST], oci-archive:FILE[:TAG], docker-archive:FILE[:REPO:TAG], s3://BUCKET/PREFIX[:TAG|@DIGEST], \
a bundle's repository as oci:PATH:REPO[:TAG|@DIGEST], oci-archive:FILE:REPO[:TAG], s3://BUCKET/PREFIX:REPO[:TAG|@DIGEST], \
SCHEME://… (a plugin backend)";

/// A parsed target string: where the content is, and what is selected.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TargetSpec {
    /// A registry repository; the reference carries the tag or digest.
    Registry(Reference),
    /// An OCI image layout directory.
    Layout {
        /// The directory.
        path: PathBuf,
        /// One repository of the layout as a bundle (its `REPO:TAG` names).
        repository: Option<String>,
        /// The tag or digest, if given.
        selector: Option<Selector>,
    },
    /// An oci-archive tar.
    OciArchive {
        /// The tar file.
        path: PathBuf,
        /// One repository of the archive as a bundle (its `REPO:TAG`
        /// names), as `oci-archive:FILE:REPO:TAG` says.
        repository: Option<String>,
        /// The tag, if given.
        tag: Option<String>,
    },
    /// A docker-archive tar (`docker save` format).
    DockerArchive {
        /// The tar file.
        path: PathBuf,
        /// The image name (`repo:tag`), if given.
        name: Option<(String, String)>,
    },
    /// An OCI image layout under an S3 prefix.
    S3 {
        /// `s3://bucket/prefix`, without the repository and selector.
        url: String,
        /// One repository of the layout as a bundle, as
        /// `s3://BUCKET/PREFIX:REPO:TAG` says.
        repository: Option<String>,
        /// The tag or digest, if given.
        selector: Option<Selector>,
    },
    /// A scheme no built-in backend serves: a plugin's.
    Plugin {
        /// The scheme (before `://`).
        scheme: String,
        /// Everything after `://`.
        rest: String,
    },
}

fn bad(input: &str, reason: impl fmt::Display) -> Error {
    Error::InvalidReference {
        input: input.to_owned(),
        reason: format!("{reason}; a target is one of: {FORMS}"),
    }
}

/// Why a target with no scheme is no registry image, when it plainly is
/// not: a path (`./x`, `/x`, `~/x`), a file or directory here that is an
/// archive or layout, or a `HOST:PORT` with no repository (which would
/// otherwise read as Docker Hub's image `HOST` tagged `PORT`).
fn not_a_registry(input: &str) -> Option<String> {
    let guess = |path: &str| {
        let on_disk = std::path::Path::new(path);
        if on_disk.is_dir() {
            format!("did you mean oci:{path} (a layout directory)?")
        } else if on_disk.is_file() {
            format!("did you mean oci-archive:{path} or docker-archive:{path}?")
        } else {
            format!("did you mean oci:{path} (a layout) or oci-archive:{path} (a tar)?")
        }
    };
    let path = input.split(['@']).next().unwrap_or(input);
    if [".", ".."].contains(&path) || ["./", "../", "/", "~"].iter().any(|p| path.starts_with(p)) {
        return Some(format!(
            "it is a path, not a registry image: {}",
            guess(path)
        ));
    }
    if !input.contains('/') {
        if let Some((host, port)) = input.split_once(':')
            && !port.is_empty()
            && port.chars().all(|c| c.is_ascii_digit())
            && (host == "localhost" || host.contains('.'))
        {
            return Some(format!(
                "{input} names a registry but no repository: write {input}/REPOSITORY[:TAG]"
            ));
        }
        let archive = [".tar", ".tgz", ".tar.gz", ".oci"]
            .iter()
            .any(|suffix| input.ends_with(suffix));
        if archive && std::path::Path::new(input).is_file() {
            return Some(format!("{input} is a file here: {}", guess(input)));
        }
    }
    None
}

/// The scheme a target that failed to parse as a registry image seems to
/// name (`oci-archiv:x.tar`, `dir:./x`): letters, digits and `-` before
/// its first `:`, with no `.` (which a host would have).
fn unknown_scheme(input: &str) -> Option<&str> {
    let (scheme, rest) = input.split_once(':')?;
    let word = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
        && scheme.chars().any(|c| c.is_ascii_alphabetic());
    let port = rest
        .split('/')
        .next()
        .is_some_and(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    (word && !port).then_some(scheme)
}

/// Splits `rest` into a location and an optional selector: `@DIGEST` at
/// the end, or `:TAG` after the last `/`.
pub(crate) fn split_selector(input: &str, rest: &str) -> Result<(String, Option<Selector>)> {
    if let Some((place, digest)) = rest.rsplit_once('@') {
        let selector = Selector::parse(digest).map_err(|e| bad(input, e))?;
        return Ok((place.to_owned(), Some(selector)));
    }
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    match rest[last_slash..].rfind(':') {
        Some(colon) => {
            let at = last_slash + colon;
            let tag = &rest[at + 1..];
            let selector = Selector::tag(tag).map_err(|e| bad(input, e))?;
            Ok((rest[..at].to_owned(), Some(selector)))
        }
        None => Ok((rest.to_owned(), None)),
    }
}

impl TargetSpec {
    /// Parses a target string. Anything that is none of the [`FORMS`] is
    /// `Error::InvalidReference`, naming the bad part and listing them.
    pub fn parse(input: &str) -> Result<Self> {
        if input.is_empty() {
            return Err(bad(input, "the target is empty"));
        }
        if let Some(rest) = input.strip_prefix("oci:") {
            let (location, selector) = split_selector(input, rest)?;
            // One repository of a bundle: `oci:DIR:REPO`, as skopeo names
            // it (so a directory's name cannot hold a colon here either).
            let (path, repository) = match location.split_once(':') {
                Some((dir, repository)) => {
                    orca_core::model::reference::validate_repository(repository).map_err(
                        |reason| bad(input, format!("repository {repository:?}: {reason}")),
                    )?;
                    (dir.to_owned(), Some(repository.to_owned()))
                }
                None => (location, None),
            };
            if path.is_empty() {
                return Err(bad(input, "oci: names no directory"));
            }
            return Ok(TargetSpec::Layout {
                path: path.into(),
                repository,
                selector,
            });
        }
        if let Some(rest) = input.strip_prefix("oci-archive:") {
            // `FILE`, `FILE:TAG`, `FILE:REPO` (a repository has a `/` or
            // is followed by a tag) or `FILE:REPO:TAG`, one repository of
            // a bundle as skopeo names it.
            let (path, repository, tag) = match rest.split_once(':') {
                Some((path, name)) => {
                    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
                    let (repository, tag) = match name[last_slash..].rfind(':') {
                        Some(colon) => (
                            Some(&name[..last_slash + colon]),
                            Some(&name[last_slash + colon + 1..]),
                        ),
                        None if name.contains('/') => (Some(name), None),
                        None => (None, Some(name)),
                    };
                    if let Some(repository) = repository {
                        orca_core::model::reference::validate_repository(repository).map_err(
                            |reason| bad(input, format!("repository {repository:?}: {reason}")),
                        )?;
                    }
                    if let Some(tag) = tag {
                        Selector::tag(tag).map_err(|e| bad(input, e))?;
                    }
                    (path, repository.map(str::to_owned), tag.map(str::to_owned))
                }
                None => (rest, None, None),
            };
            if path.is_empty() {
                return Err(bad(input, "oci-archive: names no file"));
            }
            return Ok(TargetSpec::OciArchive {
                path: path.into(),
                repository,
                tag,
            });
        }
        if let Some(rest) = input.strip_prefix("docker-archive:") {
            let (path, name) = match rest.split_once(':') {
                Some((path, name)) => {
                    let reference = Reference::parse(name).map_err(|e| bad(input, e))?;
                    let tag = reference.tag().unwrap_or("latest").to_owned();
                    if reference.digest().is_some() {
                        return Err(bad(
                            input,
                            "a docker-archive image is named by tag, not digest",
                        ));
                    }
                    // As `docker save` names it: Docker Hub images by their short name.
                    let repository = match reference.registry() {
                        orca_core::model::reference::DOCKER_HUB => reference
                            .repository()
                            .strip_prefix("library/")
                            .unwrap_or(reference.repository())
                            .to_owned(),
                        host => format!("{host}/{}", reference.repository()),
                    };
                    (path, Some((repository, tag)))
                }
                None => (rest, None),
            };
            if path.is_empty() {
                return Err(bad(input, "docker-archive: names no file"));
            }
            return Ok(TargetSpec::DockerArchive {
                path: path.into(),
                name,
            });
        }
        if input.starts_with("s3://") {
            let (url, selector) = split_selector(input, input)?;
            // `s3://BUCKET/PREFIX:REPO`: one repository of a bundle.
            let (url, repository) = match url["s3://".len()..].split_once(':') {
                Some((location, repository)) => {
                    orca_core::model::reference::validate_repository(repository).map_err(
                        |reason| bad(input, format!("repository {repository:?}: {reason}")),
                    )?;
                    (format!("s3://{location}"), Some(repository.to_owned()))
                }
                None => (url, None),
            };
            let bucket = url["s3://".len()..].split('/').next().unwrap_or_default();
            if bucket.is_empty() {
                return Err(bad(input, "s3:// names no bucket"));
            }
            return Ok(TargetSpec::S3 {
                url,
                repository,
                selector,
            });
        }
        let input_reference = input.strip_prefix("docker://").unwrap_or(input);
        if let Some((scheme, rest)) = input_reference.split_once("://") {
            let valid = !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
            if !valid {
                return Err(bad(input, format!("{scheme:?} is not a scheme")));
            }
            return Ok(TargetSpec::Plugin {
                scheme: scheme.to_owned(),
                rest: rest.to_owned(),
            });
        }
        if let Some(reason) = not_a_registry(input_reference) {
            return Err(bad(input, reason));
        }
        let reference = Reference::parse(input_reference).map_err(|e| match e {
            Error::InvalidReference { reason, .. } => match unknown_scheme(input_reference) {
                Some(scheme) => bad(
                    input,
                    format!("{scheme}: is no scheme orca knows ({reason})"),
                ),
                None => bad(input, reason),
            },
            other => other,
        })?;
        Ok(TargetSpec::Registry(reference))
    }

    /// The tag or digest the target names, if any.
    pub fn selector(&self) -> Option<Selector> {
        match self {
            // As docker reads a name without either.
            TargetSpec::Registry(reference) => reference
                .selector()
                .or_else(|| Some(Selector::Tag("latest".into()))),
            TargetSpec::Layout { selector, .. } | TargetSpec::S3 { selector, .. } => {
                selector.clone()
            }
            TargetSpec::OciArchive { tag, .. } => tag.clone().map(Selector::Tag),
            TargetSpec::DockerArchive { name, .. } => {
                name.as_ref().map(|(_, tag)| Selector::Tag(tag.clone()))
            }
            TargetSpec::Plugin { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(t: &str) -> Option<Selector> {
        Some(Selector::Tag(t.into()))
    }

    #[test]
    fn every_form_parses() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let cases = [
            (
                "oci:./dir:v1".to_owned(),
                TargetSpec::Layout {
                    path: "./dir".into(),
                    repository: None,
                    selector: tag("v1"),
                },
            ),
            (
                "oci:/a/b".to_owned(),
                TargetSpec::Layout {
                    path: "/a/b".into(),
                    repository: None,
                    selector: None,
                },
            ),
            (
                "oci:bundle:library/alpine:3.19".to_owned(),
                TargetSpec::Layout {
                    path: "bundle".into(),
                    repository: Some("library/alpine".into()),
                    selector: tag("3.19"),
                },
            ),
            (
                format!("oci:dir@{digest}"),
                TargetSpec::Layout {
                    path: "dir".into(),
                    repository: None,
                    selector: Some(Selector::parse(&digest).expect("digest")),
                },
            ),
            (
                "oci-archive:img.tar:v2".to_owned(),
                TargetSpec::OciArchive {
                    path: "img.tar".into(),
                    repository: None,
                    tag: Some("v2".into()),
                },
            ),
            (
                "oci-archive:b.tar:team/svc:v2.0.0".to_owned(),
                TargetSpec::OciArchive {
                    path: "b.tar".into(),
                    repository: Some("team/svc".into()),
                    tag: Some("v2.0.0".into()),
                },
            ),
            (
                "oci-archive:b.tar:team/svc".to_owned(),
                TargetSpec::OciArchive {
                    path: "b.tar".into(),
                    repository: Some("team/svc".into()),
                    tag: None,
                },
            ),
            (
                "s3://bucket/bundle:team/tool:1.0".to_owned(),
                TargetSpec::S3 {
                    url: "s3://bucket/bundle".into(),
                    repository: Some("team/tool".into()),
                    selector: tag("1.0"),
                },
            ),
            (
                "docker-archive:img.tar:alpine:3".to_owned(),
                TargetSpec::DockerArchive {
                    path: "img.tar".into(),
                    name: Some(("alpine".into(), "3".into())),
                },
            ),
            (
                "docker-archive:img.tar:localhost:5000/app".to_owned(),
                TargetSpec::DockerArchive {
                    path: "img.tar".into(),
                    name: Some(("localhost:5000/app".into(), "latest".into())),
                },
            ),
            (
                "s3://bucket/some/prefix:v3".to_owned(),
                TargetSpec::S3 {
                    url: "s3://bucket/some/prefix".into(),
                    repository: None,
                    selector: tag("v3"),
                },
            ),
            (
                "s3://bucket".to_owned(),
                TargetSpec::S3 {
                    url: "s3://bucket".into(),
                    repository: None,
                    selector: None,
                },
            ),
            (
                "gcs+x://thing/else".to_owned(),
                TargetSpec::Plugin {
                    scheme: "gcs+x".into(),
                    rest: "thing/else".into(),
                },
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                TargetSpec::parse(&input).expect(&input),
                expected,
                "{input}"
            );
        }
        for (input, registry, repository, selector) in [
            ("alpine", "docker.io", "library/alpine", tag("latest")),
            ("docker://alpine:3", "docker.io", "library/alpine", tag("3")),
            ("localhost:5000/a/b:v1", "localhost:5000", "a/b", tag("v1")),
        ] {
            let TargetSpec::Registry(reference) = TargetSpec::parse(input).expect(input) else {
                panic!("{input} is not a registry target");
            };
            assert_eq!(reference.registry(), registry, "{input}");
            assert_eq!(reference.repository(), repository, "{input}");
            let reference = reference.clone();
            assert_eq!(
                TargetSpec::Registry(reference).selector(),
                selector,
                "{input}"
            );
        }
    }

    #[test]
    fn bad_targets_name_the_bad_part_and_the_forms() {
        for (input, part) in [
            ("", "empty"),
            ("oci:", "names no directory"),
            ("oci:dir:bad tag", "bad tag"),
            ("s3://:v1", "no bucket"),
            ("Not A Reference", "Not A Reference"),
            ("oci:dir@sha256:xyz", "sha256:xyz"),
        ] {
            let err = TargetSpec::parse(input).expect_err(input);
            let text = err.to_string();
            assert!(text.contains(part), "{input}: {text}");
            assert!(text.contains("oci-archive:FILE"), "{input}: {text}");
        }
    }
}
