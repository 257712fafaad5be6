//! Directories in artifacts, as oras puts them there: a directory pushed as
//! a file becomes one gzip-compressed tar layer whose entries sit under the
//! directory's name, titled with that name and annotated to be unpacked
//! (`io.deis.oras.content.unpack`) with the digest of the tar itself
//! (`io.deis.oras.content.digest`). A pull unpacks such a layer into a
//! directory of that name, beside, and renames it into place whole once
//! every entry is written and the tar's digest matched.
//!
//! Packing is deterministic (no owners, fixed times), so the same tree
//! gives the same digest. Unpacking takes files, directories and symbolic
//! links that stay inside the directory; anything else — a path that
//! climbs out, an absolute link, a device — fails the pull and leaves
//! nothing behind.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::model::{Algorithm, Descriptor, Digest, Digester, MediaType};
use crate::store::Store;

/// Annotation saying a layer is a packed directory to unpack on pull.
pub const ANNOTATION_UNPACK: &str = "io.deis.oras.content.unpack";
/// Annotation holding the digest of a packed directory's uncompressed tar.
pub const ANNOTATION_CONTENT_DIGEST: &str = "io.deis.oras.content.digest";
/// The media type of a directory pushed without one (oras's default).
pub const DIRECTORY_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// A writer that hashes and counts what goes through it.
struct Hashing<W> {
    inner: W,
    digester: Digester,
    size: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.digester.update(&buf[..written]);
        self.size += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes what comes through it.
struct Reading<R> {
    inner: R,
    digester: Digester,
}

impl<R: Read> Read for Reading<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.digester.update(&buf[..read]);
        Ok(read)
    }
}

/// Removes the file or directory it names when dropped, unless disarmed.
struct Scratch(Option<PathBuf>);

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            if path.is_dir() {
                let _ = std::fs::remove_dir_all(&path);
            } else {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

fn invalid(what: &Path, reason: impl std::fmt::Display) -> Error {
    Error::InvalidInput {
        what: format!("directory {}", what.display()),
        reason: reason.to_string(),
    }
}

/// A name in `dir` no one else uses, made with `make` (which fails with
/// `AlreadyExists` when the name is taken).
fn fresh<T>(
    dir: &Path,
    label: &str,
    make: impl Fn(&Path) -> std::io::Result<T>,
) -> Result<(PathBuf, T)> {
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    for _ in 0..64 {
        let path = dir.join(format!(
            ".orca-{label}-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        match make(&path) {
            Ok(made) => return Ok((path, made)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(invalid(&path, e)),
        }
    }
    Err(Error::Conflict {
        what: format!("a temporary name for {label}: 64 names were taken"),
        place: dir.display().to_string(),
    })
}

/// Packs `dir` as a gzip-compressed tar whose entries sit under `title`,
/// into a new file in `scratch`; returns the file, the digest and size of
/// what it holds (hashed as it was written), and the digest of the
/// uncompressed tar.
fn pack(dir: &Path, title: &str, scratch: &Path) -> Result<(Scratch, Digest, u64, Digest)> {
    let (path, file) = fresh(scratch, "pack", |p| {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(p)
    })?;
    let guard = Scratch(Some(path));
    let written = Hashing {
        inner: file,
        digester: Digester::new(Algorithm::Sha256),
        size: 0,
    };
    let gzip = flate2::write::GzEncoder::new(written, flate2::Compression::default());
    let mut builder = tar::Builder::new(Hashing {
        inner: gzip,
        digester: Digester::new(Algorithm::Sha256),
        size: 0,
    });
    builder.mode(tar::HeaderMode::Deterministic);
    builder.follow_symlinks(false);
    builder
        .append_dir_all(title, dir)
        .map_err(|e| invalid(dir, e))?;
    let hashing = builder.into_inner().map_err(|e| invalid(dir, e))?;
    let tar_digest = hashing.digester.finish();
    let written = hashing.inner.finish().map_err(|e| invalid(dir, e))?;
    written.inner.sync_all().map_err(|e| invalid(dir, e))?;
    Ok((guard, written.digester.finish(), written.size, tar_digest))
}

/// Pushes the directory at `path` as one layer (see the module), titled
/// `title` (the directory's name when `None`), of `media_type` (default
/// [`DIRECTORY_MEDIA_TYPE`]). The tar is packed into a temporary file
/// (streamed, then removed), which is pushed as a file is.
pub async fn push_directory_reported(
    store: &Store,
    path: &Path,
    media_type: Option<MediaType>,
    title: Option<&str>,
    progress: Option<&std::sync::Arc<dyn crate::copy::Progress>>,
) -> Result<Descriptor> {
    let title = match title {
        Some(t) => t.to_owned(),
        None => path
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().and_then(OsStr::to_str).map(str::to_owned))
            .ok_or_else(|| invalid(path, "it has no name to title it with"))?,
    };
    super::check_title(&title)?;
    let (dir, name) = (path.to_owned(), title.clone());
    let scratch = std::env::temp_dir();
    let (packed, digest, size, tar_digest) =
        tokio::task::spawn_blocking(move || pack(&dir, &name, &scratch))
            .await
            .map_err(|e| invalid(path, e))??;
    let packed_path = packed.0.clone().unwrap_or_default();
    let media_type = media_type.unwrap_or_else(|| MediaType::new(DIRECTORY_MEDIA_TYPE));
    // Hashed as it was packed: read once more only to be pushed.
    let descriptor = Descriptor::new(media_type, digest, size);
    let mut descriptor =
        super::push_hashed(store, &packed_path, descriptor, title, progress).await?;
    drop(packed);
    descriptor
        .annotations
        .insert(ANNOTATION_CONTENT_DIGEST.to_owned(), tar_digest.to_string());
    descriptor
        .annotations
        .insert(ANNOTATION_UNPACK.to_owned(), "true".to_owned());
    Ok(descriptor)
}

/// Whether a pulled layer is a packed directory to unpack.
pub(super) fn is_packed_directory(layer: &Descriptor) -> bool {
    layer
        .annotations
        .get(ANNOTATION_UNPACK)
        .is_some_and(|v| v == "true")
}

/// Unpacks the verified layer file `archive` (a tar, gzip-compressed or
/// not) whose entries sit under `name`, into a new directory beside
/// `target` (in `parent`); returns that directory, to be renamed into
/// place. Checks the tar's digest against `expected` when the layer names
/// one.
pub(super) fn unpack(
    archive: &Path,
    parent: &Path,
    name: &OsStr,
    expected: Option<&str>,
) -> Result<PathBuf> {
    let what = Path::new(name);
    let (staging, ()) = fresh(parent, "unpack", |p| std::fs::create_dir(p))?;
    let mut guard = Scratch(Some(staging.clone()));
    let mut file = std::fs::File::open(archive).map_err(|e| invalid(archive, e))?;
    let mut magic = [0u8; 2];
    let gzipped = file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    drop(file);
    let file = std::fs::File::open(archive).map_err(|e| invalid(archive, e))?;
    let reader: Box<dyn Read> = if gzipped {
        Box::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)))
    } else {
        Box::new(std::io::BufReader::new(file))
    };
    let mut tar = tar::Archive::new(Reading {
        inner: reader,
        digester: Digester::new(Algorithm::Sha256),
    });
    for entry in tar.entries().map_err(|e| invalid(what, e))? {
        let mut entry = entry.map_err(|e| invalid(what, e))?;
        let path = entry.path().map_err(|e| invalid(what, e))?.into_owned();
        let relative = within(&path, name).ok_or_else(|| {
            invalid(
                what,
                format!("entry {} is not inside {}", path.display(), what.display()),
            )
        })?;
        if relative.as_os_str().is_empty() {
            continue;
        }
        // No entry is written through a link an earlier entry made: links
        // stay where they are named, so reading them lexically is exact.
        let mut ancestor = staging.clone();
        for part in relative.parent().into_iter().flat_map(Path::components) {
            ancestor.push(part);
            if std::fs::symlink_metadata(&ancestor).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(invalid(
                    what,
                    format!("entry {} goes through a link", relative.display()),
                ));
            }
        }
        let at = staging.join(&relative);
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Directory => {
                std::fs::create_dir_all(&at).map_err(|e| invalid(what, e))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(dir) = at.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| invalid(what, e))?;
                }
                let mut out = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&at)
                    .map_err(|e| invalid(what, format!("{}: {e}", relative.display())))?;
                std::io::copy(&mut entry, &mut out).map_err(|e| invalid(what, e))?;
                #[cfg(unix)]
                if let Ok(mode) = entry.header().mode() {
                    use std::os::unix::fs::PermissionsExt as _;
                    let _ = out.set_permissions(std::fs::Permissions::from_mode(mode & 0o777));
                }
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(|e| invalid(what, e))?
                    .ok_or_else(|| invalid(what, "a link names no target"))?
                    .into_owned();
                if !stays_inside(&relative, &link) {
                    return Err(invalid(
                        what,
                        format!(
                            "link {} -> {} leads outside the directory",
                            relative.display(),
                            link.display()
                        ),
                    ));
                }
                if let Some(dir) = at.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| invalid(what, e))?;
                }
                #[cfg(unix)]
                std::os::unix::fs::symlink(&link, &at).map_err(|e| invalid(what, e))?;
                #[cfg(not(unix))]
                return Err(invalid(what, "symbolic links are unpacked on Unix only"));
            }
            other => {
                return Err(invalid(
                    what,
                    format!(
                        "entry {} is a {other:?}: orca unpacks files, directories and links that stay inside",
                        relative.display()
                    ),
                ));
            }
        }
    }
    // The digest covers the whole tar, padding included.
    let mut reading = tar.into_inner();
    std::io::copy(&mut reading, &mut std::io::sink()).map_err(|e| invalid(what, e))?;
    let got = reading.digester.finish();
    if let Some(expected) = expected
        && got.to_string() != expected
    {
        return Err(Error::DigestMismatch {
            what: format!("the tar of directory {}", what.display()),
            place: format!("annotation {ANNOTATION_CONTENT_DIGEST}"),
            expected: Digest::parse(expected).map_err(|_| {
                invalid(
                    what,
                    format!("{ANNOTATION_CONTENT_DIGEST} {expected:?} is no digest"),
                )
            })?,
            actual: got,
        });
    }
    guard.0 = None;
    Ok(staging)
}

/// `path` (an entry of the tar) relative to `name`, when it is `name` or
/// under it and has only plain components.
fn within(path: &Path, name: &OsStr) -> Option<PathBuf> {
    let mut components = path.components().filter(|c| *c != Component::CurDir);
    match components.next() {
        Some(Component::Normal(first)) if first == name => {}
        _ => return None,
    }
    let mut relative = PathBuf::new();
    for component in components {
        match component {
            Component::Normal(part) => relative.push(part),
            _ => return None,
        }
    }
    Some(relative)
}

/// Whether a link at `at` (relative to the directory) to `target` stays
/// inside the directory, read lexically.
fn stays_inside(at: &Path, target: &Path) -> bool {
    let mut depth: Vec<&OsStr> = at
        .parent()
        .into_iter()
        .flat_map(Path::components)
        .filter_map(|c| match c {
            Component::Normal(part) => Some(part),
            _ => None,
        })
        .collect();
    for component in target.components() {
        match component {
            Component::Normal(part) => depth.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                if depth.pop().is_none() {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar entry written raw: path, kind, data or link target.
    type Entry<'a> = (&'a str, tar::EntryType, &'a str);

    /// A tar.gz of `entries` (path, kind, data or link target), built by
    /// hand so that it may hold what `tar::Builder` refuses to write.
    fn hostile(dir: &Path, entries: &[Entry<'_>]) -> PathBuf {
        let path = dir.join("layer.tar.gz");
        let file = std::fs::File::create(&path).expect("create");
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            file,
            flate2::Compression::fast(),
        ));
        for (name, kind, data) in entries {
            let mut header = tar::Header::new_old();
            {
                // Written raw: `set_path` refuses `..`, which is the point.
                let bytes = &mut header.as_old_mut().name;
                bytes[..name.len()].copy_from_slice(name.as_bytes());
            }
            header.set_entry_type(*kind);
            header.set_mode(0o644);
            if *kind == tar::EntryType::Symlink {
                header.set_link_name(data).expect("link name");
                header.set_size(0);
                header.set_cksum();
                builder.append(&header, std::io::empty()).expect("append");
            } else {
                header.set_size(data.len() as u64);
                header.set_cksum();
                builder.append(&header, data.as_bytes()).expect("append");
            }
        }
        builder.into_inner().expect("tar").finish().expect("gzip");
        path
    }

    /// What `dir` holds, but the layer file.
    fn left(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n != "layer.tar.gz")
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_packed_tree_unpacks_whole_and_its_digest_is_checked() {
        let dir = tempfile::tempdir().expect("temp dir");
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("sub")).expect("mkdir");
        std::fs::write(tree.join("a.txt"), b"a").expect("write");
        std::fs::write(tree.join("sub/b.txt"), b"b").expect("write");
        #[cfg(unix)]
        std::os::unix::fs::symlink("../a.txt", tree.join("sub/to-a")).expect("link");
        let (packed, _, _, digest) = pack(&tree, "tree", dir.path()).expect("pack");
        let (again, _, _, same) = pack(&tree, "tree", dir.path()).expect("pack again");
        assert_eq!(digest, same, "packing is deterministic");
        drop(again);
        let archive = packed.0.clone().expect("packed");
        let out = dir.path().join("out");
        std::fs::create_dir(&out).expect("mkdir");
        let unpacked = unpack(
            &archive,
            &out,
            OsStr::new("tree"),
            Some(&digest.to_string()),
        )
        .expect("unpack");
        assert_eq!(std::fs::read(unpacked.join("sub/b.txt")).expect("b"), b"b");
        #[cfg(unix)]
        assert_eq!(
            std::fs::read(unpacked.join("sub/to-a")).expect("link"),
            b"a"
        );
        std::fs::remove_dir_all(&unpacked).expect("clean");
        // A wrong tar digest: refused, nothing left behind.
        let wrong = Digest::sha256(b"another tar").to_string();
        let e = unpack(&archive, &out, OsStr::new("tree"), Some(&wrong)).expect_err("mismatch");
        assert!(matches!(e, Error::DigestMismatch { .. }), "{e}");
        assert!(left(&out).is_empty(), "{:?}", left(&out));
    }

    #[test]
    fn hostile_entries_fail_the_unpack_and_leave_nothing() {
        use tar::EntryType::{Regular, Symlink};
        let cases: &[(&str, &[Entry<'_>], &str)] = &[
            ("climbs out", &[("d/../evil", Regular, "x")], "not inside"),
            ("another name", &[("other/x", Regular, "x")], "not inside"),
            ("absolute", &[("/etc/x", Regular, "x")], "not inside"),
            ("absolute link", &[("d/l", Symlink, "/etc")], "outside"),
            ("climbing link", &[("d/l", Symlink, "../../x")], "outside"),
            (
                "through a link",
                &[("d/x", Symlink, "."), ("d/x/l", Symlink, "../out")],
                "goes through a link",
            ),
            ("a device", &[("d/dev", tar::EntryType::Char, "")], "Char"),
        ];
        for (label, entries, expected) in cases {
            let dir = tempfile::tempdir().expect("temp dir");
            let archive = hostile(dir.path(), entries);
            let e = unpack(&archive, dir.path(), OsStr::new("d"), None).expect_err(label);
            assert!(e.to_string().contains(expected), "{label}: {e}");
            assert!(
                left(dir.path()).is_empty(),
                "{label}: {:?}",
                left(dir.path())
            );
        }
    }

    #[test]
    fn links_are_read_lexically() {
        assert!(stays_inside(Path::new("a/b"), Path::new("../c")));
        assert!(stays_inside(Path::new("a/b"), Path::new("c/../d")));
        assert!(!stays_inside(Path::new("a/b"), Path::new("../../c")));
        assert!(!stays_inside(Path::new("b"), Path::new("/etc/passwd")));
        assert!(within(Path::new("dir/x/y"), OsStr::new("dir")) == Some(PathBuf::from("x/y")));
        assert!(within(Path::new("other/x"), OsStr::new("dir")).is_none());
        assert!(within(Path::new("dir/../x"), OsStr::new("dir")).is_none());
    }
}
