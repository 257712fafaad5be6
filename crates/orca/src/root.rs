//! A root of many repositories, one OCI image layout each, as `orca serve`
//! keeps them: `oci:DIR` holds `DIR/<repo>/`, `s3://BUCKET/PREFIX` holds
//! `PREFIX/<repo>/`, `SCHEME://LOCATION` a plugin's `LOCATION/<repo>`, and
//! `memory` keeps them in the process. Each repository is a [`Store`] over
//! the layout engine, with its object storage beside it for what a server
//! keeps next to the layout (upload sessions), so every replica on the same
//! directory or bucket sees the same state. On a directory, a blob pushed
//! to several repositories is stored once: each layout's file is a hard
//! link to one in `DIR/_shared/` (a name no repository can have).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use orca_core::layout::{Condition, Layout, ObjectStorage};
use orca_core::{Error, Result, Store};

use crate::open::OpenOptions;

#[cfg(any(feature = "fs", feature = "s3", feature = "plugins"))]
mod catalog;
#[cfg(feature = "fs")]
use catalog::directory::{layouts_page, layouts_under};

/// Runs file work on tokio's blocking pool; its failure, or the pool's,
/// is `doing` that failed.
#[cfg(all(feature = "fs", unix))]
async fn blocking_io<T: Send + 'static>(
    doing: String,
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    let failed = |source: Box<dyn std::error::Error + Send + Sync>, doing: String| Error::Failed {
        doing,
        source,
    };
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(failed(Box::new(e), doing)),
        Err(e) => Err(failed(Box::new(e), doing)),
    }
}

/// Where a directory root keeps the one copy of blobs its repositories
/// share.
#[cfg(feature = "fs")]
const SHARED_DIR: &str = "_shared";

/// Where a root keeps a server's records beside its repositories (a
/// name no repository can have).
const RECORDS_DIR: &str = "_records";

/// Collects one repository's layout.
type Collect = Arc<
    dyn Fn(
            orca_core::layout::GcOptions,
        ) -> futures::future::BoxFuture<'static, Result<orca_core::layout::GcReport>>
        + Send
        + Sync,
>;

/// One repository of a [`Root`].
#[derive(Clone)]
pub struct Repository {
    /// Its content, through the layout engine.
    pub store: Store,
    /// The object storage of its layout.
    pub storage: Arc<dyn ObjectStorage>,
    /// Where its layout is, as the storage's `adopt` takes it (a directory,
    /// a bucket prefix); empty where nothing can be adopted.
    pub location: String,
    collect: Collect,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("store", &self.store)
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl Repository {
    /// Garbage-collects the repository's layout, safely beside writers in
    /// any process (see [`orca_core::layout::Layout::gc`]).
    pub async fn gc(
        &self,
        options: &orca_core::layout::GcOptions,
    ) -> Result<orca_core::layout::GcReport> {
        (self.collect)(options.clone()).await
    }
}

#[derive(Debug)]
enum Kind {
    Memory,
    #[cfg(feature = "fs")]
    Directory(std::path::PathBuf),
    #[cfg(feature = "s3")]
    Bucket(String),
    #[cfg(feature = "plugins")]
    Plugin {
        scheme: String,
        location: String,
    },
}

/// Many repositories, one layout each, under one place.
#[derive(Debug)]
pub struct Root {
    kind: Kind,
    name: String,
    options: OpenOptions,
    opened: Mutex<BTreeMap<String, Repository>>,
    /// Repositories known to hold a layout (a marker is never removed
    /// while the root is served), so asking costs no I/O a second time.
    marked: Mutex<std::collections::HashSet<String>>,
}

impl Root {
    /// Opens the root `target` names: `memory`, `oci:DIR`,
    /// `s3://BUCKET[/PREFIX]` or `SCHEME://LOCATION` (a loaded plugin that
    /// offers the storage table). Nothing is created until a repository is
    /// written.
    pub fn open(target: &str, options: &OpenOptions) -> Result<Root> {
        let bad = |reason: &str| Error::InvalidReference {
            input: target.to_owned(),
            reason: format!(
                "{reason}; a root of repositories is memory, oci:DIR, s3://BUCKET[/PREFIX] or a plugin's SCHEME://LOCATION"
            ),
        };
        let kind = if target == "memory" {
            Kind::Memory
        } else if let Some(dir) = target.strip_prefix("oci:") {
            #[cfg(feature = "fs")]
            {
                if dir.is_empty() || dir.contains(':') {
                    return Err(bad("oci: names one directory, without a tag"));
                }
                Kind::Directory(dir.into())
            }
            #[cfg(not(feature = "fs"))]
            return Err(bad(&format!("this build has no directory backend ({dir})")));
        } else if let Some(place) = target.strip_prefix("s3://") {
            #[cfg(feature = "s3")]
            {
                if place.contains(':') {
                    return Err(bad("s3:// names a bucket and prefix, without a tag"));
                }
                Kind::Bucket(target.trim_end_matches('/').to_owned())
            }
            #[cfg(not(feature = "s3"))]
            return Err(bad(&format!("this build has no S3 backend ({place})")));
        } else if let Some((scheme, location)) = target.split_once("://") {
            #[cfg(feature = "plugins")]
            {
                let offered = options
                    .plugins
                    .iter()
                    .any(|p| p.scheme() == scheme && p.offers_storage());
                if !offered {
                    return Err(bad(&format!(
                        "no loaded plugin offers layout storage for {scheme}://"
                    )));
                }
                Kind::Plugin {
                    scheme: scheme.to_owned(),
                    location: location.trim_end_matches('/').to_owned(),
                }
            }
            #[cfg(not(feature = "plugins"))]
            return Err(bad(&format!(
                "this build loads no plugins ({scheme}://{location})"
            )));
        } else {
            return Err(bad("unknown kind of root"));
        };
        Ok(Root {
            kind,
            name: target.to_owned(),
            options: options.clone(),
            opened: Mutex::new(BTreeMap::new()),
            marked: Mutex::new(std::collections::HashSet::new()),
        })
    }

    /// The root as it was named.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Repository `name`, opened once and kept (its layout is created on
    /// first write). The name must be a valid repository name.
    pub async fn repository(&self, name: &str) -> Result<Repository> {
        orca_core::model::reference::validate_repository(name).map_err(|reason| {
            Error::InvalidReference {
                input: name.to_owned(),
                reason: reason.to_string(),
            }
        })?;
        if let Some(found) = self.lock().get(name) {
            return Ok(found.clone());
        }
        let opened = self.open_repository(name).await?;
        Ok(self.lock().entry(name.to_owned()).or_insert(opened).clone())
    }

    /// Object storage for what a server keeps about `name` beside the
    /// repositories (a cache's records of which repository holds what),
    /// under `_records/` of the root: no repository, so no catalog lists
    /// it and no collection touches it. `name` must be a valid repository
    /// name.
    pub async fn records(&self, name: &str) -> Result<Arc<dyn ObjectStorage>> {
        let kept = format!("{RECORDS_DIR}/{name}");
        orca_core::model::reference::validate_repository(name).map_err(|reason| {
            Error::InvalidReference {
                input: name.to_owned(),
                reason: reason.to_string(),
            }
        })?;
        if let Some(found) = self.lock().get(&kept) {
            return Ok(found.storage.clone());
        }
        let opened = self.open_repository(&kept).await?;
        // Kept as a layout (its marker), so the directory opens again in
        // the next process; the name keeps it out of every listing.
        write_marker(opened.storage.as_ref()).await?;
        Ok(self.lock().entry(kept).or_insert(opened).storage.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Repository>> {
        self.opened.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn open_repository(&self, name: &str) -> Result<Repository> {
        fn layout<S: ObjectStorage + Clone>(layout: Layout<S>, location: String) -> Repository {
            let storage: Arc<dyn ObjectStorage> = Arc::new(layout.storage().clone());
            let own = layout.storage().clone();
            // Another engine over the same storage: the collector's rules
            // hold between engines as between processes.
            let collect: Collect = Arc::new(move |options| {
                let engine = Layout::new(own.clone());
                Box::pin(async move { engine.gc(&options).await })
            });
            Repository {
                store: Store::new(layout),
                storage,
                location,
                collect,
            }
        }
        Ok(match &self.kind {
            Kind::Memory => layout(
                Layout::new(orca_core::layout::MemoryStorage::new(name)),
                String::new(),
            ),
            #[cfg(feature = "fs")]
            Kind::Directory(dir) => {
                let path = dir.join(name);
                let opened = orca_backend_fs::open(&path)?;
                layout(opened, path.display().to_string())
            }
            #[cfg(feature = "s3")]
            Kind::Bucket(url) => {
                let url = format!("{url}/{name}");
                let opened = crate::open::s3_builder(&url, &self.options).build()?;
                let location = opened.storage().prefix().to_owned();
                layout(opened, location)
            }
            #[cfg(feature = "plugins")]
            Kind::Plugin { scheme, location } => {
                let target = format!("{scheme}://{location}/{name}");
                let rest = format!("{location}/{name}");
                let storage =
                    crate::open::open_plugin_storage(&target, scheme, &rest, &self.options)
                        .await?
                        .ok_or_else(|| Error::InvalidReference {
                            input: target.clone(),
                            reason: format!("no loaded plugin provides {scheme}://"),
                        })?;
                // The plugin's storage takes the location as its `adopt`
                // does (a directory for the fs plugin): a mount between
                // repositories is its link or server-side copy, and one it
                // cannot make answers `false`, so the bytes go through.
                layout(Layout::new(storage), rest)
            }
        })
    }

    /// Stores blob `digest` of repository `name` once across the root: on
    /// a directory, the repository's file and every other repository's
    /// become links to one file (see [`orca_backend_fs::share_blob`]);
    /// elsewhere nothing changes. Returns whether it is shared.
    pub async fn share(&self, name: &str, digest: &orca_core::Digest) -> Result<bool> {
        match &self.kind {
            #[cfg(all(feature = "fs", unix))]
            Kind::Directory(dir) => {
                let (pool, layout) = (dir.join(SHARED_DIR), dir.join(name));
                let digest = digest.clone();
                let doing = format!("sharing blob {digest} of {name} in {}", self.name);
                blocking_io(doing, move || {
                    orca_backend_fs::share_blob(&pool, &layout, &digest)
                })
                .await
            }
            _ => {
                let _ = (name, digest);
                Ok(false)
            }
        }
    }

    /// Drops what the shared blobs of a directory root keep that no
    /// repository links to any more (their collections removed it);
    /// returns how many. Nothing to do elsewhere.
    pub async fn prune_shared(&self) -> Result<usize> {
        match &self.kind {
            #[cfg(all(feature = "fs", unix))]
            Kind::Directory(dir) => {
                let pool = dir.join(SHARED_DIR);
                let doing = format!("pruning the shared blobs in {}", pool.display());
                blocking_io(doing, move || orca_backend_fs::prune_pool(&pool)).await
            }
            _ => Ok(0),
        }
    }

    /// Whether repository `name` holds a layout (anything was pushed).
    pub async fn exists(&self, name: &str) -> Result<bool> {
        if self.is_marked(name) {
            return Ok(true);
        }
        let repository = self.repository(name).await?;
        let found = repository
            .storage
            .size(orca_core::layout::OCI_LAYOUT_FILE)
            .await?
            .is_some();
        if found {
            self.mark(name);
        }
        Ok(found)
    }

    fn is_marked(&self, name: &str) -> bool {
        self.marked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(name)
    }

    fn mark(&self, name: &str) {
        self.marked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned());
    }

    /// Makes repository `name` a layout now (its `oci-layout` marker), so
    /// what is kept beside its content before the first push (an upload
    /// session) sits in a layout that every reader recognises.
    pub async fn create(&self, name: &str) -> Result<Repository> {
        if self.is_marked(name) {
            return self.repository(name).await;
        }
        #[cfg(feature = "plugins")]
        if let Kind::Plugin { scheme, location } = &self.kind {
            // The root itself is marked too, so a plugin whose storage
            // opens only layouts (an empty place, or one with a marker) can
            // list the repositories under it.
            let target = format!("{scheme}://{location}");
            if let Ok(Some(storage)) =
                crate::open::open_plugin_storage(&target, scheme, location, &self.options).await
            {
                let _ = storage
                    .write(
                        orca_core::layout::OCI_LAYOUT_FILE,
                        orca_core::layout::marker(),
                        Condition::Absent,
                    )
                    .await;
            }
        }
        let repository = self.repository(name).await?;
        write_marker(repository.storage.as_ref()).await?;
        self.mark(name);
        Ok(repository)
    }

    /// The repositories the root holds (those with a layout), sorted.
    pub async fn repositories(&self) -> Result<Vec<String>> {
        match &self.kind {
            Kind::Memory => {
                let known = self.lock().clone();
                let mut names = Vec::new();
                for (name, repository) in known {
                    if repository
                        .storage
                        .size(orca_core::layout::OCI_LAYOUT_FILE)
                        .await?
                        .is_some()
                    {
                        names.push(name);
                    }
                }
                Ok(names)
            }
            #[cfg(feature = "fs")]
            Kind::Directory(dir) => {
                let dir = dir.clone();
                let mut names = blocking_walk(&self.name, move || layouts_under(&dir)).await?;
                names.sort();
                names.dedup();
                Ok(names)
            }
            #[cfg(any(feature = "s3", feature = "plugins"))]
            _ => Ok(self.stored_page(None, None).await?.0),
        }
    }

    /// A page of [`Root::repositories`]: those after `last`, at most `n`,
    /// and whether more follow. On a directory, and on a bucket, only the
    /// levels on the way are read (a bucket lists one level per request),
    /// so every page of a catalog of 10,000 repositories costs about what
    /// the first does; other roots list them all and take the page.
    pub async fn repositories_page(
        &self,
        last: Option<&str>,
        n: Option<usize>,
    ) -> Result<(Vec<String>, bool)> {
        match &self.kind {
            #[cfg(feature = "fs")]
            Kind::Directory(dir) => {
                let (dir, last) = (dir.clone(), last.map(str::to_owned));
                blocking_walk(&self.name, move || layouts_page(&dir, last.as_deref(), n)).await
            }
            Kind::Memory => Ok(take_page(self.repositories().await?, last, n)),
            #[cfg(any(feature = "s3", feature = "plugins"))]
            _ => self.stored_page(last, n).await,
        }
    }

    /// The repositories whose names start with `prefix` (a namespace and
    /// `/`), sorted: paged from where such names start until the first
    /// that does not, so a namespace costs what it holds, not the whole
    /// catalog.
    pub async fn repositories_under(&self, prefix: &str) -> Result<Vec<String>> {
        let mut names: Vec<String> = Vec::new();
        let mut last = prefix.to_owned();
        loop {
            let (page, more) = self
                .repositories_page(Some(&last), Some(UNDER_PAGE))
                .await?;
            let before = names.len();
            names.extend(
                page.iter()
                    .take_while(|name| name.starts_with(prefix))
                    .cloned(),
            );
            if !more || names.len() - before < page.len() {
                return Ok(names);
            }
            match names.last() {
                Some(name) => last.clone_from(name),
                None => return Ok(names),
            }
        }
    }

    /// [`Root::repositories_page`] of a root in object storage: walked one
    /// level at a time where the storage lists levels, else listed whole.
    #[cfg(any(feature = "s3", feature = "plugins"))]
    async fn stored_page(
        &self,
        last: Option<&str>,
        n: Option<usize>,
    ) -> Result<(Vec<String>, bool)> {
        match &self.kind {
            #[cfg(feature = "s3")]
            Kind::Bucket(url) => {
                let bucket = crate::open::s3_builder(url, &self.options).build()?;
                stored_page(&self.name, bucket.storage().clone(), last, n).await
            }
            #[cfg(feature = "plugins")]
            Kind::Plugin { scheme, location } => {
                let target = format!("{scheme}://{location}");
                match crate::open::open_plugin_storage(&target, scheme, location, &self.options)
                    .await
                {
                    Ok(Some(storage)) => stored_page(&self.name, storage, last, n).await,
                    // A root the plugin cannot open as storage: the
                    // repositories this process opened.
                    _ => Ok(take_page(self.lock().keys().cloned().collect(), last, n)),
                }
            }
            _ => Ok(take_page(Vec::new(), last, n)),
        }
    }
}

/// How many repositories [`Root::repositories_under`] reads a page at a
/// time.
const UNDER_PAGE: usize = 1000;

/// Runs a walk of the root `name` on tokio's blocking pool.
#[cfg(any(feature = "fs", feature = "s3", feature = "plugins"))]
async fn blocking_walk<T: Send + 'static>(
    name: &str,
    walk: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(walk)
        .await
        .map_err(|e| Error::Failed {
            doing: format!("listing the repositories of {name}"),
            source: Box::new(e),
        })?
}

/// Those of the `names` after `last`, sorted, at most `n`, and whether
/// more follow.
fn take_page(mut names: Vec<String>, last: Option<&str>, n: Option<usize>) -> (Vec<String>, bool) {
    names.sort();
    names.dedup();
    names.retain(|name| last.is_none_or(|last| name.as_str() > last));
    let more = n.is_some_and(|n| names.len() > n);
    if let Some(n) = n {
        names.truncate(n);
    }
    (names, more)
}

/// A page of the repositories of the root storage `storage` (of the root
/// `name`): walked one level at a time where it lists levels (a bucket:
/// a page reads the levels on its way, not every blob of the root), else
/// from one listing of everything, keeping the directories of keys that
/// end in `/oci-layout`.
#[cfg(any(feature = "s3", feature = "plugins"))]
async fn stored_page<S: ObjectStorage + 'static>(
    name: &str,
    storage: S,
    last: Option<&str>,
    n: Option<usize>,
) -> Result<(Vec<String>, bool)> {
    let Some(top) = storage.list_level("").await? else {
        let suffix = format!("/{}", orca_core::layout::OCI_LAYOUT_FILE);
        let names = storage
            .list("")
            .await?
            .into_iter()
            .filter_map(|listed| listed.key.strip_suffix(&suffix).map(str::to_owned))
            .filter(|name| orca_core::model::reference::validate_repository(name).is_ok())
            .collect();
        return Ok(take_page(names, last, n));
    };
    let mut walk = catalog::Stored::new(storage, tokio::runtime::Handle::current());
    walk.keep("", top);
    let last = last.map(str::to_owned);
    blocking_walk(name, move || catalog::page(&mut walk, last.as_deref(), n)).await
}

/// Makes `storage` a layout (its `oci-layout` marker), unless it is one.
async fn write_marker(storage: &dyn ObjectStorage) -> Result<()> {
    let written = storage
        .write(
            orca_core::layout::OCI_LAYOUT_FILE,
            orca_core::layout::marker(),
            Condition::Absent,
        )
        .await;
    match written {
        Ok(()) | Err(Error::Conflict { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}
