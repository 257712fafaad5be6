//! The repositories of a directory root: every directory below it that
//! holds an `oci-layout` marker, named by its path. [`layouts_under`]
//! walks them all; [`layouts_page`] reads only what one page of the
//! sorted catalog needs, so a client paging through 10,000 repositories
//! pays about the same for the last page as for the first.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::{Path, PathBuf};

use orca_core::{Error, Result};

/// Whether a directory entry can hold repositories: not a layout's own
/// directories (a server keeps its sessions and cache records there too),
/// nor a name no repository can have (`_shared`, the root's shared blobs;
/// a server's records; hidden files).
fn holds_repositories(name: &str, in_layout: bool) -> bool {
    let own = in_layout
        && (name == orca_core::layout::BLOBS_DIR
            || name == "ingest"
            || name == "uploads"
            || name == "cache");
    !own && !name.starts_with(['_', '.'])
}

/// Whether `dir` is a layout.
fn is_layout(dir: &Path) -> bool {
    dir.join(orca_core::layout::OCI_LAYOUT_FILE).is_file()
}

/// The directories below `here` that can hold repositories, by name.
fn subdirectories(here: &Path, in_layout: bool) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(here) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::Failed {
                doing: format!("listing the repositories under {}", here.display()),
                source: Box::new(e),
            });
        }
    };
    Ok(entries
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|entry| entry.file_name().to_str().map(str::to_owned))
        .filter(|name| holds_repositories(name, in_layout))
        .collect())
}

/// The repositories under `dir`, in no order.
pub(super) fn layouts_under(dir: &Path) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let mut queue = vec![PathBuf::new()];
    while let Some(relative) = queue.pop() {
        let here = dir.join(&relative);
        let layout = is_layout(&here);
        if layout
            && let Some(name) = relative.to_str()
            && !name.is_empty()
        {
            found.push(name.replace(std::path::MAIN_SEPARATOR, "/"));
        }
        for name in subdirectories(&here, layout)? {
            queue.push(relative.join(name));
        }
    }
    Ok(found)
}

/// A step of the sorted walk: a directory that may be a repository, or
/// the directories below one. Its key orders the walk: a name, or a name
/// and `/` for what is below it (every name below sorts after that key).
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    /// `NAME`: a repository if it has a marker.
    Name(String),
    /// `NAME/`: what is below `NAME` (empty for the root).
    Below(String),
}

impl Step {
    fn key(&self) -> &str {
        match self {
            Step::Name(key) | Step::Below(key) => key,
        }
    }
}

/// The repositories under `dir` after `last`, at most `n` (all without
/// one), sorted, and whether more follow. Steps are taken in the order of
/// their keys, so names come out sorted; what is below a directory is
/// read only when it can hold a name after `last` and the page is not
/// yet full.
pub(super) fn layouts_page(
    dir: &Path,
    last: Option<&str>,
    n: Option<usize>,
) -> Result<(Vec<String>, bool)> {
    let wanted = n.map_or(usize::MAX, |n| n.saturating_add(1));
    let mut found = Vec::new();
    let mut steps = BinaryHeap::new();
    steps.push(Reverse((String::new(), Step::Below(String::new()))));
    while let Some(Reverse((_, step))) = steps.pop() {
        if found.len() >= wanted {
            break;
        }
        match step {
            Step::Name(name) => {
                if last.is_none_or(|last| name.as_str() > last) && is_layout(&dir.join(&name)) {
                    found.push(name.clone());
                }
                let below = format!("{name}/");
                steps.push(Reverse((below.clone(), Step::Below(below))));
            }
            Step::Below(prefix) => {
                // Every name below sorts before `last`: nothing to read.
                if let Some(last) = last
                    && prefix.as_str() < last
                    && !last.starts_with(prefix.as_str())
                {
                    continue;
                }
                let here = dir.join(&prefix);
                let in_layout = !prefix.is_empty() && is_layout(&here);
                for child in subdirectories(&here, in_layout)? {
                    let name = format!("{prefix}{child}");
                    let step = Step::Name(name.clone());
                    steps.push(Reverse((step.key().to_owned(), step)));
                }
            }
        }
    }
    let more = found.len() > n.unwrap_or(usize::MAX);
    found.truncate(n.unwrap_or(usize::MAX));
    Ok((found, more))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages of every size give the sorted catalog, whatever sorts
    /// between a repository and those below it (`a`, `a-c`, `a/b`), and
    /// skip a layout's own directories and names no repository has.
    #[test]
    fn pages_give_the_sorted_catalog() {
        let root = tempfile::tempdir().expect("temporary directory");
        let repositories = [
            "a",
            "a-c",
            "a/b",
            "a/b/c",
            "a0",
            "team/app1",
            "team/app10",
            "team/app2",
            "z",
        ];
        for name in repositories {
            let dir = root.path().join(name);
            std::fs::create_dir_all(dir.join("blobs/sha256")).expect("dir");
            std::fs::write(dir.join("oci-layout"), b"{}").expect("marker");
        }
        for not in [
            "a/blobs/x",
            "a/uploads/y",
            "_shared/q",
            ".hidden/r",
            "empty/dir",
        ] {
            std::fs::create_dir_all(root.path().join(not)).expect("dir");
        }
        std::fs::write(root.path().join("a/blobs/x/oci-layout"), b"{}").expect("marker");
        let mut sorted: Vec<String> = repositories.iter().map(|s| s.to_string()).collect();
        sorted.sort();
        let mut walked = layouts_under(root.path()).expect("walk");
        walked.sort();
        assert_eq!(walked, sorted);
        assert_eq!(
            layouts_page(root.path(), None, None).expect("all"),
            (sorted.clone(), false)
        );
        for size in 1..=sorted.len() + 1 {
            let mut paged = Vec::new();
            let mut last: Option<String> = None;
            loop {
                let (page, more) =
                    layouts_page(root.path(), last.as_deref(), Some(size)).expect("page");
                assert!(page.len() <= size);
                paged.extend(page.iter().cloned());
                last = page.last().cloned();
                if !more {
                    break;
                }
            }
            assert_eq!(paged, sorted, "pages of {size}");
        }
    }
}
