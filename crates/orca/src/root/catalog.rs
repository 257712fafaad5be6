//! The sorted catalog of a root: every place below it that holds an
//! `oci-layout` marker, named by its path. [`page`] walks the levels of
//! a root in name order and reads only what one page needs, so a client
//! paging through 10,000 repositories pays about the same for the last
//! page as for the first; a directory root reads its levels from the
//! filesystem ([`directory`]), a bucket through one-level listings
//! ([`Stored`]).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
#[cfg(any(feature = "s3", feature = "plugins"))]
use std::collections::HashMap;
use std::sync::Arc;

use orca_core::Result;
#[cfg(any(feature = "s3", feature = "plugins"))]
use orca_core::layout::Level;

#[cfg(feature = "fs")]
pub(super) mod directory;

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

/// What the sorted walk of [`page`] reads of a root.
pub(super) trait Levels {
    /// The children of `prefix` (a repository's name and `/`, or empty
    /// for the root) that can hold repositories, sorted.
    fn below(&mut self, prefix: &str) -> Result<Arc<[String]>>;

    /// Whether the repository `name` is a layout.
    fn is_layout(&mut self, name: &str) -> Result<bool>;

    /// The walk is about to look at these `children` of `prefix` in
    /// turn: a root whose every look is a request makes them together.
    fn ahead(&mut self, prefix: &str, children: &[String]) -> Result<()> {
        let _ = (prefix, children);
        Ok(())
    }
}

/// The repositories of a root after `last`, at most `n` (all without
/// one), sorted, and whether more follow. Steps are taken in the order of
/// their keys, so names come out sorted; a level's children are read from
/// its sorted listing from where names after `last` can start, one at a
/// time, only while the page is not yet full: the last page costs about
/// what the first does.
pub(super) fn page(
    levels: &mut impl Levels,
    last: Option<&str>,
    n: Option<usize>,
) -> Result<(Vec<String>, bool)> {
    let wanted = n.map_or(usize::MAX, |n| n.saturating_add(1));
    let mut found = Vec::new();
    let mut steps = BinaryHeap::new();
    steps.push(Reverse(Step::Below(String::new())));
    while let Some(Reverse(step)) = steps.pop() {
        if found.len() >= wanted {
            break;
        }
        let name = match step {
            Step::Name(name) => name,
            Step::Children {
                prefix,
                names,
                at,
                key,
            } => {
                if (at + 1) % AHEAD == 0 {
                    let room = wanted.saturating_sub(found.len());
                    look_ahead(levels, &prefix, &names, at + 1, last, room)?;
                }
                // The key is the child's name.
                steps.extend(Step::children(prefix, names, at + 1).map(Reverse));
                key
            }
            Step::Below(prefix) => {
                // Every name below sorts before `last`: nothing to read.
                if let Some(last) = last
                    && prefix.as_str() < last
                    && !last.starts_with(prefix.as_str())
                {
                    continue;
                }
                let names = levels.below(&prefix)?;
                let (start, beginnings) = first_after(&prefix, &names, last);
                let room = wanted.saturating_sub(found.len());
                look_ahead(levels, &prefix, &names, start, last, room)?;
                for at in beginnings {
                    steps.push(Reverse(Step::Name(format!("{prefix}{}", names[at]))));
                }
                steps.extend(Step::children(prefix, names, start).map(Reverse));
                continue;
            }
        };
        if last.is_none_or(|last| name.as_str() > last)
            && orca_core::model::reference::validate_repository(&name).is_ok()
            && levels.is_layout(&name)?
        {
            found.push(name.clone());
        }
        steps.push(Reverse(Step::Below(format!("{name}/"))));
    }
    let more = found.len() > n.unwrap_or(usize::MAX);
    found.truncate(n.unwrap_or(usize::MAX));
    Ok((found, more))
}

/// How many of a level's children [`Levels::ahead`] is told of at once.
const AHEAD: usize = 32;

/// Tells `levels` of the children of `prefix` the walk looks at next,
/// from `names[from]` to the end of its window of [`AHEAD`], at most
/// `room`: those whose names, or names below them, can come after `last`.
fn look_ahead(
    levels: &mut impl Levels,
    prefix: &str,
    names: &[String],
    from: usize,
    last: Option<&str>,
    room: usize,
) -> Result<()> {
    let end = names
        .len()
        .min(from.saturating_add(room))
        .min((from / AHEAD + 1) * AHEAD);
    let coming: Vec<String> = names
        .get(from..end)
        .unwrap_or_default()
        .iter()
        .filter(|child| {
            let name = format!("{prefix}{child}");
            last.is_none_or(|last| name.as_str() >= last || last.starts_with(&format!("{name}/")))
        })
        .cloned()
        .collect();
    if coming.is_empty() {
        return Ok(());
    }
    levels.ahead(prefix, &coming)
}

/// A step of the sorted walk, ordered by its key: a directory that may be
/// a repository (`NAME`), the directories below one (`NAME/`, every name
/// below sorts after it), or the next of a directory's sorted children.
#[derive(PartialEq, Eq)]
enum Step {
    /// `NAME`: a repository if it has a marker.
    Name(String),
    /// `NAME/`: what is below `NAME` (empty for the root).
    Below(String),
    /// The children of the directory `prefix` names, from `at` on: its
    /// key is the name of the child at `at`.
    Children {
        prefix: String,
        names: Arc<[String]>,
        at: usize,
        key: String,
    },
}

impl Step {
    fn key(&self) -> &str {
        match self {
            Step::Name(key) | Step::Below(key) | Step::Children { key, .. } => key,
        }
    }

    /// The children of `prefix` from `at`, or nothing past the last.
    fn children(prefix: String, names: Arc<[String]>, at: usize) -> Option<Step> {
        let key = format!("{prefix}{}", names.get(at)?);
        Some(Step::Children {
            prefix,
            names,
            at,
            key,
        })
    }
}

impl Ord for Step {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(other.key())
    }
}

impl PartialOrd for Step {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Where among the sorted children of `prefix` names after `last` can
/// start: the first child not below the next part of `last`, and the few
/// children before it that are a beginning of that part (`a` before
/// `a-c`: `a/b` sorts after `a-c`).
fn first_after(prefix: &str, names: &[String], last: Option<&str>) -> (usize, Vec<usize>) {
    let Some(rest) = last.and_then(|last| last.strip_prefix(prefix)) else {
        return (0, Vec::new());
    };
    let part = rest.split('/').next().unwrap_or(rest);
    let start = names.partition_point(|name| name.as_str() < part);
    let beginnings = (1..part.len())
        .filter(|&end| part.is_char_boundary(end))
        .filter_map(|end| {
            names
                .binary_search_by(|name| name.as_str().cmp(&part[..end]))
                .ok()
        })
        .collect();
    (start, beginnings)
}

/// A root in object storage that lists one level at a time (a bucket),
/// read through the runtime from a blocking thread: each level is one
/// listing, which tells both what is below it and whether it is a
/// layout, kept for the walk.
#[cfg(any(feature = "s3", feature = "plugins"))]
pub(super) struct Stored<S> {
    storage: S,
    runtime: tokio::runtime::Handle,
    levels: HashMap<String, (bool, Arc<[String]>)>,
}

#[cfg(any(feature = "s3", feature = "plugins"))]
impl<S: orca_core::layout::ObjectStorage> Stored<S> {
    /// A walk of `storage`, on a blocking thread of `runtime`.
    pub(super) fn new(storage: S, runtime: tokio::runtime::Handle) -> Self {
        Stored {
            storage,
            runtime,
            levels: HashMap::new(),
        }
    }

    /// Whether `prefix` is a layout, and its children that can hold
    /// repositories, sorted: listed once per walk.
    fn level(&mut self, prefix: &str) -> Result<(bool, Arc<[String]>)> {
        if let Some(level) = self.levels.get(prefix) {
            return Ok(level.clone());
        }
        let level = self.runtime.block_on(list_level(&self.storage, prefix))?;
        Ok(self.keep(prefix, level))
    }

    /// Keeps what `level` says of `prefix` for the walk, and says it.
    pub(super) fn keep(&mut self, prefix: &str, level: Level) -> (bool, Arc<[String]>) {
        let layout = !prefix.is_empty()
            && level
                .objects
                .iter()
                .any(|name| name == orca_core::layout::OCI_LAYOUT_FILE);
        let below: Arc<[String]> = level
            .below
            .into_iter()
            .filter(|name| holds_repositories(name, layout))
            .collect();
        self.levels
            .insert(prefix.to_owned(), (layout, below.clone()));
        (layout, below)
    }
}

/// What is directly under `prefix` of `storage`: one listing where it
/// lists levels, else taken from everything below.
#[cfg(any(feature = "s3", feature = "plugins"))]
async fn list_level<S: orca_core::layout::ObjectStorage>(
    storage: &S,
    prefix: &str,
) -> Result<Level> {
    match storage.list_level(prefix).await? {
        Some(level) => Ok(level),
        None => {
            let listed = storage.list(prefix).await?;
            Ok(Level::of(
                prefix,
                listed.iter().map(|listed| listed.key.as_str()),
            ))
        }
    }
}

#[cfg(any(feature = "s3", feature = "plugins"))]
impl<S: orca_core::layout::ObjectStorage> Levels for Stored<S> {
    fn below(&mut self, prefix: &str) -> Result<Arc<[String]>> {
        Ok(self.level(prefix)?.1)
    }

    fn is_layout(&mut self, name: &str) -> Result<bool> {
        Ok(self.level(&format!("{name}/"))?.0)
    }

    /// Lists the levels of the coming children together, so a page of
    /// 100 repositories costs a few round trips, not 100.
    fn ahead(&mut self, prefix: &str, children: &[String]) -> Result<()> {
        use futures::StreamExt;
        let wanted: Vec<String> = children
            .iter()
            .map(|child| format!("{prefix}{child}/"))
            .filter(|level| !self.levels.contains_key(level))
            .collect();
        let storage = &self.storage;
        let listed: Vec<(String, Result<Level>)> = self.runtime.block_on(
            futures::stream::iter(wanted)
                .map(|level| async move {
                    let listed = list_level(storage, &level).await;
                    (level, listed)
                })
                .buffered(AHEAD)
                .collect(),
        );
        for (level, listed) in listed {
            self.keep(&level, listed?);
        }
        Ok(())
    }
}

/// What the walks' tests share.
#[cfg(test)]
mod check {
    /// Repositories whose names sort between a repository and those
    /// below it (`a`, `a-c`, `a/b`, `a0`).
    pub(super) const REPOSITORIES: [&str; 9] = [
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

    /// Asserts that `walk` (a page after a name, of at most a size) gives
    /// [`REPOSITORIES`], sorted, whole and by pages of every size.
    pub(super) fn pages_of_every_size(
        mut walk: impl FnMut(Option<&str>, Option<usize>) -> (Vec<String>, bool),
    ) {
        let mut sorted: Vec<String> = REPOSITORIES.iter().map(|s| s.to_string()).collect();
        sorted.sort();
        assert_eq!(walk(None, None), (sorted.clone(), false));
        for size in 1..=sorted.len() + 1 {
            let mut paged = Vec::new();
            let mut last: Option<String> = None;
            loop {
                let (page, more) = walk(last.as_deref(), Some(size));
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

#[cfg(all(test, any(feature = "s3", feature = "plugins")))]
mod tests {
    use super::check::{REPOSITORIES, pages_of_every_size};
    use super::*;
    use orca_core::layout::{Condition, MemoryStorage, ObjectStorage};

    /// A root in storage that lists levels pages the sorted catalog whatever
    /// sorts between a repository and those below it, reading only levels:
    /// a layout's own places, hidden and shared names, and names no
    /// repository can have are skipped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stored_root_pages_the_sorted_catalog_by_levels() {
        let storage = MemoryStorage::new("root");
        let mut keys: Vec<String> = REPOSITORIES
            .iter()
            .flat_map(|name| {
                [
                    format!("{name}/oci-layout"),
                    format!("{name}/index.json"),
                    format!("{name}/blobs/sha256/00"),
                ]
            })
            .collect();
        keys.extend(
            [
                "a/blobs/x/oci-layout",
                "a/uploads/y/oci-layout",
                "_shared/q/oci-layout",
                ".hidden/r/oci-layout",
                "Upper/oci-layout",
                "empty/dir/file",
            ]
            .map(str::to_owned),
        );
        for key in &keys {
            storage
                .write(key, bytes::Bytes::from_static(b"{}"), Condition::Absent)
                .await
                .expect("write");
        }
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            pages_of_every_size(|last, n| {
                let mut walk = Stored::new(storage.clone(), runtime.clone());
                page(&mut walk, last, n).expect("page")
            });
        })
        .await
        .expect("walk");
    }
}
