//! The levels of a directory root, read from the filesystem: a
//! directory's sorted subdirectories are kept while it is unchanged, so
//! paging a catalog does not list the same directories again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use orca_core::{Error, Result};

use super::{Levels, holds_repositories, page};

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

/// The repositories under `dir`, in no order: those with a name a
/// repository can have, as the catalog lists them.
pub(in crate::root) fn layouts_under(dir: &Path) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let mut queue = vec![PathBuf::new()];
    while let Some(relative) = queue.pop() {
        let here = dir.join(&relative);
        let layout = is_layout(&here);
        if layout
            && let Some(name) = relative.to_str()
            && !name.is_empty()
        {
            let name = name.replace(std::path::MAIN_SEPARATOR, "/");
            if orca_core::model::reference::validate_repository(&name).is_ok() {
                found.push(name);
            }
        }
        for name in subdirectories(&here, layout)? {
            queue.push(relative.join(name));
        }
    }
    Ok(found)
}

/// The sorted subdirectories of directories already listed, with the
/// identity each directory had then: a directory's times change whenever
/// an entry is added, removed or renamed in it, so an unchanged identity
/// means an unchanged listing. Listings of directories changed within the
/// last second are not kept (timestamps are coarse: a change in the same
/// tick as the listing would keep the same identity).
static LISTED: Mutex<Option<HashMap<(PathBuf, bool), Listed>>> = Mutex::new(None);

/// How many directory listings [`LISTED`] keeps before it starts over.
const LISTINGS_KEPT: usize = 4096;

/// A directory's sorted subdirectories and the identity it had then.
type Listed = (DirStamp, Arc<[String]>);

/// A directory's identity: device, inode, size, modification and change
/// times.
type DirStamp = (u64, u64, u64, i64, i64, i64, i64);

fn dir_stamp(meta: &std::fs::Metadata) -> DirStamp {
    use std::os::unix::fs::MetadataExt;
    (
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec(),
    )
}

/// The subdirectories below `here` that can hold repositories, sorted,
/// listed again only when the directory changed.
fn sorted_subdirectories(here: &Path, in_layout: bool) -> Result<Arc<[String]>> {
    let Ok(meta) = std::fs::metadata(here) else {
        let mut names = subdirectories(here, in_layout)?;
        names.sort();
        return Ok(Arc::from(names));
    };
    let stamp = dir_stamp(&meta);
    let key = (here.to_path_buf(), in_layout);
    if let Some((seen, names)) = LISTED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .and_then(|listed| listed.get(&key))
        && *seen == stamp
    {
        return Ok(names.clone());
    }
    let mut names = subdirectories(here, in_layout)?;
    names.sort();
    let names: Arc<[String]> = Arc::from(names);
    // Both times: a user may set the modification time back (`cp -a`,
    // `rsync -t`), never the change time.
    let settled = {
        use std::os::unix::fs::MetadataExt;
        use std::time::{Duration, SystemTime, UNIX_EPOCH};
        let at = |secs: i64, nanos: i64| {
            Duration::new(
                u64::try_from(secs).unwrap_or(0),
                u32::try_from(nanos).unwrap_or(0),
            )
        };
        let newest = at(meta.mtime(), meta.mtime_nsec()).max(at(meta.ctime(), meta.ctime_nsec()));
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .is_ok_and(|now| now >= newest + Duration::from_secs(1))
    };
    if settled {
        let mut listed = LISTED.lock().unwrap_or_else(PoisonError::into_inner);
        let listed = listed.get_or_insert_with(HashMap::new);
        if listed.len() >= LISTINGS_KEPT {
            listed.clear();
        }
        listed.insert(key, (stamp, names.clone()));
    }
    Ok(names)
}

/// A directory root, read from the filesystem.
struct Directory<'a>(&'a Path);

impl Levels for Directory<'_> {
    fn below(&mut self, prefix: &str) -> Result<Arc<[String]>> {
        let here = self.0.join(prefix);
        let in_layout = !prefix.is_empty() && is_layout(&here);
        sorted_subdirectories(&here, in_layout)
    }

    fn is_layout(&mut self, name: &str) -> Result<bool> {
        Ok(is_layout(&self.0.join(name)))
    }
}

/// The repositories under `dir` after `last`, at most `n` (all without
/// one), sorted, and whether more follow (see [`page`]).
pub(in crate::root) fn layouts_page(
    dir: &Path,
    last: Option<&str>,
    n: Option<usize>,
) -> Result<(Vec<String>, bool)> {
    page(&mut Directory(dir), last, n)
}

#[cfg(test)]
mod tests {
    use super::super::check::{REPOSITORIES, pages_of_every_size};
    use super::*;

    /// Pages of every size give the sorted catalog, whatever sorts
    /// between a repository and those below it (`a`, `a-c`, `a/b`), and
    /// skip a layout's own directories and names no repository has.
    #[test]
    fn pages_give_the_sorted_catalog() {
        let root = tempfile::tempdir().expect("temporary directory");
        for name in REPOSITORIES {
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
        // A layout whose name no repository can have.
        std::fs::create_dir_all(root.path().join("Upper")).expect("dir");
        std::fs::write(root.path().join("Upper/oci-layout"), b"{}").expect("marker");
        let mut sorted: Vec<String> = REPOSITORIES.iter().map(|s| s.to_string()).collect();
        sorted.sort();
        let mut walked = layouts_under(root.path()).expect("walk");
        walked.sort();
        assert_eq!(walked, sorted);
        pages_of_every_size(|last, n| layouts_page(root.path(), last, n).expect("page"));
    }

    /// A listing kept for a settled directory is read again as soon as
    /// the directory changes: a repository added or removed after it was
    /// kept shows in the next page.
    #[test]
    fn kept_listings_follow_their_directory() {
        let root = tempfile::tempdir().expect("temporary directory");
        let make = |name: &str| {
            let dir = root.path().join(name);
            std::fs::create_dir_all(dir.join("blobs")).expect("dir");
            std::fs::write(dir.join("oci-layout"), b"{}").expect("marker");
        };
        for name in ["team/a", "team/b", "team/c"] {
            make(name);
        }
        let team = root.path().join("team");
        // Listings of directories changed within the last second are not
        // kept; a second later this one is.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let page = |last: Option<&str>| layouts_page(root.path(), last, Some(2)).expect("page");
        assert_eq!(page(None), (vec!["team/a".into(), "team/b".into()], true));
        assert!(
            LISTED
                .lock()
                .expect("lock")
                .as_ref()
                .is_some_and(|l| l.contains_key(&(team.clone(), false))),
            "the settled directory's listing was not kept"
        );
        make("team/bb");
        assert_eq!(
            page(Some("team/b")),
            (vec!["team/bb".into(), "team/c".into()], false)
        );
        std::fs::remove_dir_all(team.join("bb")).expect("remove");
        assert_eq!(page(Some("team/b")), (vec!["team/c".into()], false));
    }
}
