//! Blobs stored once across the layouts of one directory: a pool beside
//! them (`<pool>/blobs/<alg>/<hex>`) holds a hard link to every blob it
//! has seen, and a layout's copy of a blob the pool already holds is
//! replaced by a link to the pooled file. Each layout stays a plain OCI
//! image layout; deleting a blob from one (its garbage collection) removes
//! only that link, and [`prune_pool`] drops what no layout links to any
//! more. Races lose only sharing, never a blob: a link that fails leaves
//! each copy where it was.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use orca_core::Digest;
use orca_core::layout::blob_path;

/// Shares the blob `digest` of the layout at `layout` through `pool`:
/// links the layout's file into the pool, or replaces it with the pooled
/// file when the pool has the blob already (same size), dated now so a
/// collection's grace counts from here. Returns whether the blob is
/// shared; `false` when the layout holds no such blob, or the pool holds
/// something else under its name.
pub fn share_blob(pool: &Path, layout: &Path, digest: &Digest) -> io::Result<bool> {
    let key = blob_path(digest);
    let ours = layout.join(&key);
    let pooled = pool.join(&key);
    let mine = match fs::symlink_metadata(&ours) {
        Ok(meta) if meta.is_file() => meta,
        Ok(_) => return Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    match fs::symlink_metadata(&pooled) {
        Ok(theirs) if theirs.ino() == mine.ino() && theirs.dev() == mine.dev() => Ok(true),
        Ok(theirs) if theirs.is_file() && theirs.len() == mine.len() => {
            static COUNT: AtomicU64 = AtomicU64::new(0);
            let temp = layout.join(format!(
                "ingest/shared-{}-{}-{}",
                digest.hex(),
                std::process::id(),
                COUNT.fetch_add(1, Ordering::Relaxed)
            ));
            if let Some(dir) = temp.parent() {
                fs::create_dir_all(dir)?;
            }
            let _ = fs::remove_file(&temp);
            match fs::hard_link(&pooled, &temp) {
                Ok(()) => {}
                // Pruned meanwhile: the layout keeps its own copy.
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(e),
            }
            // Young again before it replaces the layout's copy: a
            // collection must not take the pooled file for an old one.
            let dated = File::options()
                .write(true)
                .open(&temp)
                .and_then(|f| f.set_modified(SystemTime::now()));
            if let Err(e) = dated.and_then(|()| fs::rename(&temp, &ours)) {
                let _ = fs::remove_file(&temp);
                return Err(e);
            }
            Ok(true)
        }
        Ok(_) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(dir) = pooled.parent() {
                fs::create_dir_all(dir)?;
            }
            match fs::hard_link(&ours, &pooled) {
                Ok(()) => Ok(true),
                // Another layout pooled it first: shared the next time.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Removes the pool's links that no layout shares any more (a file with
/// no other link); returns how many. A layout linking one at that moment
/// keeps its own link, and the pool only forgets it.
pub fn prune_pool(pool: &Path) -> io::Result<usize> {
    let blobs = pool.join(orca_core::layout::BLOBS_DIR);
    let algorithms = match fs::read_dir(&blobs) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for algorithm in algorithms {
        let algorithm = algorithm?;
        if !algorithm.file_type()?.is_dir() {
            continue;
        }
        for entry in fs::read_dir(algorithm.path())? {
            let entry = entry?;
            match entry.metadata() {
                Ok(meta) if meta.is_file() && meta.nlink() == 1 => {
                    match fs::remove_file(entry.path()) {
                        Ok(()) => removed += 1,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(layout: &Path, digest: &Digest, bytes: &[u8]) -> std::path::PathBuf {
        let path = layout.join(blob_path(digest));
        fs::create_dir_all(path.parent().expect("a parent")).expect("create");
        fs::write(&path, bytes).expect("write");
        path
    }

    #[test]
    fn layouts_share_one_file_and_the_pool_forgets_only_what_none_holds() {
        let root = tempfile::tempdir().expect("temporary directory");
        let (pool, a, b) = (
            root.path().join("_shared"),
            root.path().join("a"),
            root.path().join("b"),
        );
        let bytes = b"shared layer".to_vec();
        let digest = Digest::sha256(&bytes);
        let in_a = blob(&a, &digest, &bytes);
        let in_b = blob(&b, &digest, &bytes);
        // b's copy is old: replaced by the pooled file, it is dated now.
        File::options()
            .write(true)
            .open(&in_b)
            .and_then(|f| {
                f.set_modified(SystemTime::now() - std::time::Duration::from_secs(86_400))
            })
            .expect("date");
        assert!(share_blob(&pool, &a, &digest).expect("share a"));
        assert!(share_blob(&pool, &b, &digest).expect("share b"));
        assert!(
            share_blob(&pool, &b, &digest).expect("again"),
            "shared stays shared"
        );
        let (meta_a, meta_b) = (
            fs::metadata(&in_a).expect("a"),
            fs::metadata(&in_b).expect("b"),
        );
        assert_eq!(meta_a.ino(), meta_b.ino(), "one file");
        assert_eq!(meta_a.nlink(), 3, "a, b and the pool");
        assert_eq!(fs::read(&in_b).expect("read b"), bytes);
        let age = meta_b
            .modified()
            .expect("mtime")
            .elapsed()
            .unwrap_or_default();
        assert!(age.as_secs() < 60, "dated when shared: {age:?}");
        assert!(
            fs::read_dir(b.join("ingest"))
                .expect("ingest")
                .next()
                .is_none(),
            "no temporary left"
        );

        // A pool entry of another size is not taken for the blob.
        let other = Digest::sha256(b"other");
        blob(&pool, &other, b"something longer");
        blob(&a, &other, b"other");
        assert!(!share_blob(&pool, &a, &other).expect("share other"));

        // Nothing is pruned while a layout holds it; once none does, it goes.
        assert_eq!(
            prune_pool(&pool).expect("prune"),
            1,
            "only the unshared entry"
        );
        assert!(pool.join(blob_path(&digest)).exists());
        fs::remove_file(&in_a).expect("collect a");
        assert_eq!(prune_pool(&pool).expect("prune"), 0, "b still holds it");
        fs::remove_file(&in_b).expect("collect b");
        assert_eq!(prune_pool(&pool).expect("prune"), 1);
        assert!(!pool.join(blob_path(&digest)).exists());

        // A layout whose pool entry went keeps its own copy and pools it anew.
        let in_a = blob(&a, &digest, &bytes);
        assert!(share_blob(&pool, &a, &digest).expect("share anew"));
        assert_eq!(fs::metadata(&in_a).expect("a").nlink(), 2);
        assert!(!share_blob(&pool, &root.path().join("c"), &digest).expect("no blob in c"));
    }
}
