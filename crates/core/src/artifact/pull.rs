//! Pulling an artifact's files into a directory by their titles: every
//! title checked before anything is written, each file written beside and
//! renamed into place once verified, packed directories unpacked whole,
//! and nothing followed out of the output directory.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use futures::StreamExt;

use super::{ANNOTATION_CONTENT_DIGEST, check_title, directory};
use crate::error::{Error, Result};
use crate::model::{ANNOTATION_TITLE, Descriptor, Document, Selector};
use crate::store::Store;

/// Pulls the files of the artifact `selector` names into `out`, by title,
/// and returns their paths. Every title is checked before anything is
/// written; files land whole (written beside, then renamed) and verified.
/// Layers without a title are skipped, as oras does. A file of the same
/// name already in `out` is kept: the pull is refused before anything is
/// written (see [`pull_files_with`] to replace it).
pub async fn pull_files(store: &Store, selector: &Selector, out: &Path) -> Result<Vec<PathBuf>> {
    pull_files_with(store, selector, out, false, None).await
}

/// [`pull_files`], replacing files of the same names when `overwrite`
/// says so, and reporting the transfers to `progress` as a copy does
/// (`Planned`, then `Started`, bytes and `Copied` per file).
pub async fn pull_files_with(
    store: &Store,
    selector: &Selector,
    out: &Path,
    overwrite: bool,
    progress: Option<std::sync::Arc<dyn crate::copy::Progress>>,
) -> Result<Vec<PathBuf>> {
    let (_, raw) = store.fetch_manifest(selector).await?;
    let Document::Manifest(manifest) = raw.parse()? else {
        return Err(Error::InvalidManifest {
            what: format!("artifact {selector}"),
            reason: "it is an index, not a manifest with files".into(),
            source: None,
        });
    };
    let mut seen = HashSet::new();
    let mut files = Vec::new();
    for layer in &manifest.layers {
        let Some(title) = layer.annotations.get(ANNOTATION_TITLE) else {
            continue;
        };
        check_title(title)?;
        // `a`, `./a` and `a/` are one file.
        let relative: PathBuf = Path::new(title)
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        if !seen.insert(relative.clone()) {
            return Err(Error::InvalidManifest {
                what: format!("artifact {selector}"),
                reason: format!("two files are titled {title:?}"),
                source: None,
            });
        }
        files.push((layer.clone(), relative));
    }
    let root = std::fs::canonicalize(out).map_err(|e| io_error(out, e))?;
    if !overwrite {
        // What is there already stays: refused before anything is written.
        for (_, relative) in &files {
            let at = root.join(relative);
            if std::fs::symlink_metadata(&at).is_ok() {
                return Err(Error::AlreadyExists {
                    what: format!("file {}", relative.display()),
                    place: out.display().to_string(),
                });
            }
        }
    }
    if let Some(progress) = &progress {
        progress.event(&crate::copy::Event::Planned(crate::copy::Totals {
            blobs: files.len() as u64,
            manifests: 0,
            bytes: files.iter().map(|(layer, _)| layer.size).sum(),
        }));
    }
    let mut written = Vec::new();
    for (layer, relative) in files {
        let parent = inside(&root, relative.parent().unwrap_or(Path::new("")))?;
        let name = relative.file_name().map(PathBuf::from).unwrap_or_default();
        let (temp, file) = temporary(&parent, &layer.digest)?;
        // Removed however the pull ends short of the rename: an error, or
        // the pull dropped (an interrupted command).
        let mut unfinished = RemoveOnDrop(Some(temp.clone()));
        if let Some(progress) = &progress {
            progress.event(&crate::copy::Event::Started(layer.clone()));
        }
        write_file(store, &layer, file, &temp, progress.as_ref()).await?;
        if let Some(progress) = &progress {
            progress.event(&crate::copy::Event::Copied(layer.clone()));
        }
        let target = parent.join(&name);
        if directory::is_packed_directory(&layer) {
            // A packed directory: unpacked beside, then put in place whole.
            let expected = layer.annotations.get(ANNOTATION_CONTENT_DIGEST).cloned();
            let (from, at, dir_name) = (temp.clone(), parent.clone(), name.clone());
            let unpacked = tokio::task::spawn_blocking(move || {
                directory::unpack(&from, &at, dir_name.as_os_str(), expected.as_deref())
            })
            .await
            .map_err(|e| io_error(&target, std::io::Error::other(e)))??;
            // Removed however this ends short of the rename.
            let mut unpacked_guard = RemoveDirOnDrop(Some(unpacked.clone()));
            if overwrite {
                match std::fs::symlink_metadata(&target) {
                    Ok(meta) if meta.is_dir() => {
                        std::fs::remove_dir_all(&target).map_err(|e| io_error(&target, e))?
                    }
                    Ok(_) => std::fs::remove_file(&target).map_err(|e| io_error(&target, e))?,
                    Err(_) => {}
                }
            }
            std::fs::rename(&unpacked, &target).map_err(|e| io_error(&target, e))?;
            unpacked_guard.0 = None;
            // The layer's file (`unfinished`) is removed as this turn ends.
            written.push(target);
            continue;
        }
        std::fs::rename(&temp, &target).map_err(|e| io_error(&target, e))?;
        unfinished.0 = None;
        written.push(target);
    }
    Ok(written)
}

/// Removes the directory it names when dropped.
struct RemoveDirOnDrop(Option<PathBuf>);

impl Drop for RemoveDirOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

/// Removes the file it names when dropped, unless told otherwise.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A new temporary file in `dir` for `digest`, of this pull's own: a file
/// (or a planted link) already at a name is never followed or overwritten,
/// and one a killed pull left behind never blocks this one.
fn temporary(dir: &Path, digest: &crate::model::Digest) -> Result<(PathBuf, std::fs::File)> {
    static PULLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let hex = digest.hex();
    for _ in 0..64 {
        let temp = dir.join(format!(
            ".orca-pull-{}-{}-{}",
            &hex[..16.min(hex.len())],
            std::process::id(),
            PULLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
        {
            Ok(file) => return Ok((temp, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error(&temp, e)),
        }
    }
    Err(Error::Conflict {
        what: "a temporary file for the pull: 64 names were taken".into(),
        place: dir.display().to_string(),
    })
}

/// Streams `layer` into `file`, the new file at `temp`, durably: a thread
/// writes one chunk while the next is fetched and hashed.
async fn write_file(
    store: &Store,
    layer: &Descriptor,
    mut file: std::fs::File,
    temp: &Path,
    progress: Option<&std::sync::Arc<dyn crate::copy::Progress>>,
) -> Result<()> {
    let mut body = store.fetch(layer).await?;
    if let Some(progress) = progress {
        body = crate::copy::reported(body, layer, progress.clone());
    }
    let (chunks, mut arriving) = tokio::sync::mpsc::channel::<Bytes>(8);
    let path = temp.to_owned();
    let writer = tokio::task::spawn_blocking(move || {
        while let Some(chunk) = arriving.blocking_recv() {
            file.write_all(&chunk).map_err(|e| io_error(&path, e))?;
        }
        file.sync_all().map_err(|e| io_error(&path, e))
    });
    let mut failure = None;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(chunk) => {
                if chunks.send(chunk).await.is_err() {
                    // The writer stopped; it tells why below.
                    break;
                }
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    drop(chunks);
    let written = writer.await.map_err(|e| Error::Backend {
        backend: temp.display().to_string(),
        operation: "write",
        source: Box::new(e),
    })?;
    match failure {
        Some(e) => Err(e),
        None => written,
    }
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::InvalidInput {
        what: format!("output {}", path.display()),
        reason: e.to_string(),
    }
}

/// The directory `relative` under `root` (canonical), created one level at
/// a time; a symbolic link on the way must stay inside `root`, and is
/// checked before anything is created beyond it.
fn inside(root: &Path, relative: &Path) -> Result<PathBuf> {
    let mut current = root.to_path_buf();
    for component in relative.components() {
        current.push(component);
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let real = std::fs::canonicalize(&current).map_err(|e| io_error(&current, e))?;
                if !real.starts_with(root) || !real.is_dir() {
                    return Err(Error::InvalidInput {
                        what: format!("output {}", current.display()),
                        reason: "a link there leads outside the output directory".into(),
                    });
                }
                current = real;
            }
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(io_error(&current, std::io::Error::other("not a directory")));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&current).map_err(|e| io_error(&current, e))?;
            }
            Err(e) => return Err(io_error(&current, e)),
        }
    }
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_out_of_the_output_directory_are_refused_before_creating() {
        let base = std::env::temp_dir().join(format!("orca-inside-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let (root, outside) = (base.join("out"), base.join("outside"));
        std::fs::create_dir_all(&root).expect("mkdir");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::os::unix::fs::symlink(&outside, root.join("link")).expect("symlink");
        let root = std::fs::canonicalize(&root).expect("canonical");
        assert!(inside(&root, Path::new("link/x")).is_err());
        assert!(!outside.join("x").exists(), "created outside");
        let made = inside(&root, Path::new("a/b")).expect("inside");
        assert!(made.is_dir() && made.starts_with(&root));
        let _ = std::fs::remove_dir_all(&base);
    }
}
