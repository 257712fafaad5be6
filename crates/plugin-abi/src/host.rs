//! The host side: loads a plugin library, checks it before touching
//! anything else (the ABI version first, then the table's size), and
//! opens backends from it that implement `orca_core::Backend` like any
//! linked one, and layout storages the host's own engine runs over. The
//! library stays loaded while any backend, body or buffer from it lives.

use std::any::Any;
use std::ffi::c_void;
use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use orca_core::{
    Backend, Body, Capabilities, Descriptor, Digest, Error, ListPage, ListQuery, MediaType,
    PushOptions, Referrers, Result, Selector,
};

use crate::ffi::{
    BackendV1, FfiOutcome, FfiSlice, FfiStream, OUTCOME_OK, Operation, PluginV1, StorageV1,
};
use crate::stream::{self, Keep};
use crate::wire::{Answer, Args, WireCapabilities, decode, encode};
use crate::{ABI_VERSION, ENTRY_SYMBOL, STORAGE_SYMBOL, VERSION_SYMBOL};

mod storage;
pub use storage::PluginStorage;

/// A loaded plugin library.
#[derive(Clone)]
pub struct Plugin {
    library: Arc<libloading::Library>,
    table: *const PluginV1,
    /// The storage table, when the plugin exports one.
    storage: Option<StorageV1>,
    path: PathBuf,
}

// SAFETY: the table is immutable static data of the library, which the
// `Arc` keeps loaded.
unsafe impl Send for Plugin {}
// SAFETY: as above.
unsafe impl Sync for Plugin {}

fn load_error(path: &Path, reason: impl fmt::Display) -> Error {
    Error::InvalidInput {
        what: format!("plugin {}", path.display()),
        reason: reason.to_string(),
    }
}

impl Plugin {
    /// Loads the library at `path` and checks that it is an orca plugin of
    /// this ABI: its version function first, then the size of its table.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        // SAFETY: loading runs the library's initialisers; a plugin is
        // code the user chose to run.
        let library = unsafe { libloading::Library::new(path) }.map_err(|e| {
            load_error(
                path,
                format!("it cannot be loaded as a shared library ({e})"),
            )
        })?;
        // SAFETY: the symbol is looked up with the signature the ABI gives it.
        let version =
            unsafe { library.get::<extern "C" fn() -> u32>(VERSION_SYMBOL) }.map_err(|_| {
                load_error(
                    path,
                    "it is not an orca plugin: it has no orca_plugin_abi_version function",
                )
            })?;
        let version = version();
        if version != ABI_VERSION {
            return Err(load_error(
                path,
                format!(
                    "it was built for plugin ABI {version}, and this orca speaks ABI {ABI_VERSION}"
                ),
            ));
        }
        // SAFETY: as above.
        let entry = unsafe { library.get::<extern "C" fn() -> *const PluginV1>(ENTRY_SYMBOL) }
            .map_err(|_| {
                load_error(
                    path,
                    "it declares plugin ABI 1 but has no orca_plugin_v1 table",
                )
            })?;
        let table = entry();
        if table.is_null() {
            return Err(load_error(path, "its orca_plugin_v1 table is missing"));
        }
        // SAFETY: the size is the table's first field, read before anything
        // that depends on the layout.
        let size = unsafe { std::ptr::read(table.cast::<usize>()) };
        if size != std::mem::size_of::<PluginV1>() {
            return Err(load_error(
                path,
                format!(
                    "its plugin table has {size} bytes where this orca expects {} (it was built with another orca-plugin-abi); rebuild it",
                    std::mem::size_of::<PluginV1>()
                ),
            ));
        }
        let storage = storage_table(&library, path)?;
        let library = Arc::new(library);
        // A loaded plugin stays loaded until the process ends (backends
        // review m28): its runtime's threads, and tasks it spawned, outlive
        // every handle, and unloading the code under them is safe only
        // where the platform happens to refuse it. One reference is kept
        // for good.
        std::mem::forget(library.clone());
        Ok(Plugin {
            library,
            table,
            storage,
            path: path.to_owned(),
        })
    }

    /// Whether it offers the object storage of a layout
    /// ([`Plugin::open_storage`]).
    pub fn offers_storage(&self) -> bool {
        self.storage.is_some()
    }

    /// Opens the object storage of the layout `target` names, for the
    /// host's layout engine to run over (`orca_core::layout::Layout::new`):
    /// the same place [`Plugin::open`] opens for that target.
    /// `Error::Unsupported` when the plugin exports no storage.
    pub async fn open_storage(&self, target: &str, config: &str) -> Result<PluginStorage> {
        let Some(vtable) = self.storage else {
            return Err(Error::Unsupported {
                operation: "layout storage (the engine's garbage collection)",
                place: format!("plugin {} ({}://)", self.name(), self.scheme()),
            });
        };
        let (handle, keep) = self
            .opened(vtable.open, vtable.release, "a storage", target, config)
            .await?;
        Ok(PluginStorage::new(vtable, handle.0, keep))
    }

    /// Calls one of the plugin's `open` functions: the handle it made,
    /// and what keeps the library loaded while it lives. A handle that
    /// comes with an error is released, not leaked.
    async fn opened(
        &self,
        open: extern "C" fn(FfiSlice, FfiSlice) -> async_ffi::FfiFuture<FfiOutcome>,
        release: extern "C" fn(*mut c_void),
        what: &str,
        target: &str,
        config: &str,
    ) -> Result<(Opened, Keep)> {
        let keep: Keep = Some(self.library.clone() as Arc<dyn Any + Send + Sync>);
        let future = open(
            FfiSlice::new(target.as_bytes()),
            FfiSlice::new(config.as_bytes()),
        );
        let outcome = future.await;
        if outcome.status != OUTCOME_OK {
            if !outcome.handle.is_null() {
                release(outcome.handle);
            }
            return Err(stream::error_from(outcome.payload, &keep));
        }
        drop(stream::bytes(outcome.payload, &keep));
        if outcome.handle.is_null() {
            return Err(load_error(
                &self.path,
                format!("it opened {what} but handed back none"),
            ));
        }
        Ok((Opened(outcome.handle), keep))
    }

    fn table(&self) -> &PluginV1 {
        // SAFETY: checked in `load`; the library is loaded while `self` is.
        unsafe { &*self.table }
    }

    fn text(slice: FfiSlice) -> String {
        // SAFETY: static strings of the loaded library.
        String::from_utf8_lossy(unsafe { slice.as_bytes() }).into_owned()
    }

    /// The plugin's name.
    pub fn name(&self) -> String {
        Self::text(self.table().name)
    }

    /// The plugin's own version.
    pub fn version(&self) -> String {
        Self::text(self.table().version)
    }

    /// The URL scheme it serves (`gcs` for `gcs://…`).
    pub fn scheme(&self) -> String {
        Self::text(self.table().scheme)
    }

    /// The ABI version it was built for.
    pub fn abi_version(&self) -> u32 {
        self.table().abi_version
    }

    /// Where it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens a backend: `target` is what follows `scheme://`, `config` a
    /// string the plugin reads as it likes.
    pub async fn open(&self, target: &str, config: &str) -> Result<PluginBackend> {
        let vtable = self.table().backend;
        let (handle, keep) = self
            .opened(
                self.table().open,
                vtable.release,
                "a backend",
                target,
                config,
            )
            .await?;
        let described = stream::bytes((vtable.describe)(handle.0), &keep);
        Ok(PluginBackend {
            vtable,
            handle: handle.0,
            name: String::from_utf8_lossy(&described).into_owned(),
            keep,
        })
    }
}

/// The plugin's storage table, if it exports one, checked like its main
/// table (present, then of this build's size) before it is copied.
fn storage_table(library: &libloading::Library, path: &Path) -> Result<Option<StorageV1>> {
    // SAFETY: the symbol is looked up with the signature the ABI gives it.
    let Ok(entry) = (unsafe { library.get::<extern "C" fn() -> *const StorageV1>(STORAGE_SYMBOL) })
    else {
        return Ok(None);
    };
    let table = entry();
    if table.is_null() {
        return Err(load_error(
            path,
            "its orca_plugin_storage_v1 table is missing",
        ));
    }
    // SAFETY: the size is the table's first field, read before the rest.
    let size = unsafe { std::ptr::read(table.cast::<usize>()) };
    if size != std::mem::size_of::<StorageV1>() {
        return Err(load_error(
            path,
            format!(
                "its storage table has {size} bytes where this orca expects {} (it was built with another orca-plugin-abi); rebuild it",
                std::mem::size_of::<StorageV1>()
            ),
        ));
    }
    // SAFETY: checked above; the table is static data of the library and
    // holds only function pointers, copied out here.
    Ok(Some(unsafe { *table }))
}

/// A handle a plugin's `open` made, on its way to its owner.
struct Opened(*mut c_void);

// SAFETY: a handle is the plugin's `Send + Sync` backend or storage, only
// passed back to it.
unsafe impl Send for Opened {}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name())
            .field("scheme", &self.scheme())
            .field("path", &self.path)
            .finish()
    }
}

/// A backend a plugin opened; an `orca_core::Backend` like any other.
pub struct PluginBackend {
    vtable: BackendV1,
    handle: *mut c_void,
    keep: Keep,
    name: String,
}

// SAFETY: the plugin's backend is `Send + Sync` (the ABI requires a
// `Backend`), and the handle is only passed back to it.
unsafe impl Send for PluginBackend {}
// SAFETY: as above.
unsafe impl Sync for PluginBackend {}

impl Drop for PluginBackend {
    fn drop(&mut self) {
        if !self.handle.is_null() {
            (self.vtable.release)(self.handle);
        }
    }
}

impl fmt::Display for PluginBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl fmt::Debug for PluginBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginBackend")
            .field("name", &self.name)
            .finish()
    }
}

impl PluginBackend {
    /// Calls one operation; the answer, and the body it carried if any.
    async fn call(
        &self,
        op: Operation,
        args: &Args,
        body: Option<Body>,
    ) -> Result<(Answer, Option<Body>)> {
        let (payload, body) = invoke(op, self.handle, &self.keep, &encode(args), body).await?;
        let answer: Answer = if payload.is_empty() {
            Answer::default()
        } else {
            decode(&payload, "answer")?
        };
        Ok((answer, body))
    }

    async fn answer(&self, op: Operation, args: Args) -> Result<Answer> {
        Ok(self.call(op, &args, None).await?.0)
    }

    fn about(descriptor: &Descriptor) -> Args {
        Args {
            descriptor: Some(descriptor.clone()),
            ..Args::default()
        }
    }

    fn body(&self, found: Option<Body>) -> Result<Body> {
        found.ok_or_else(|| Error::Backend {
            backend: self.name.clone(),
            operation: "fetch",
            source: "the plugin answered without a body".into(),
        })
    }
}

/// Calls one operation of a handle: the arguments (encoded, lent for the
/// call only), and a body for the plugin to poll. The answer's bytes, and
/// the body it carried. The call starts before this returns, so the
/// future holds no pointer of the plugin's.
fn invoke(
    op: Operation,
    handle: *mut c_void,
    keep: &Keep,
    args: &[u8],
    body: Option<Body>,
) -> impl Future<Output = Result<(bytes::Bytes, Option<Body>)>> + Send + 'static {
    let body = match body {
        // Polled by the plugin on its own threads: the host's own code in
        // the body (a file read, a timer) runs in the host's runtime.
        Some(body) => stream::export(
            body,
            tokio::runtime::Handle::try_current().ok(),
            stream::Side::Host,
        ),
        None => FfiStream::none(),
    };
    let future = op(handle, FfiSlice::new(args), body);
    let keep = keep.clone();
    async move {
        let outcome: FfiOutcome = future.await;
        if outcome.status != OUTCOME_OK {
            if !outcome.stream.state.is_null() {
                drop(stream::import(outcome.stream, keep.clone()));
            }
            return Err(stream::error_from(outcome.payload, &keep));
        }
        let payload = stream::bytes(outcome.payload, &keep);
        // The body is taken over before the answer is read, so an answer
        // that does not decode still releases it (backends m27).
        let body =
            (!outcome.stream.state.is_null()).then(|| stream::import(outcome.stream, keep.clone()));
        Ok((payload, body))
    }
}

fn query(query: &ListQuery) -> Args {
    Args {
        last: query.last.clone(),
        limit: query.limit,
        ..Args::default()
    }
}

#[async_trait]
impl Backend for PluginBackend {
    fn capabilities(&self) -> Capabilities {
        let text = stream::bytes((self.vtable.capabilities)(self.handle), &self.keep);
        decode::<WireCapabilities>(&text, "capabilities")
            .map(Capabilities::from)
            .unwrap_or(Capabilities::NONE)
    }

    async fn exists(&self, descriptor: &Descriptor) -> Result<bool> {
        let answer = self
            .answer(self.vtable.exists, Self::about(descriptor))
            .await?;
        Ok(answer.flag.unwrap_or(false))
    }

    async fn stat(&self, descriptor: &Descriptor) -> Result<Option<u64>> {
        Ok(self
            .answer(self.vtable.stat, Self::about(descriptor))
            .await?
            .number)
    }

    async fn fetch(&self, descriptor: &Descriptor) -> Result<Body> {
        let (_, body) = self
            .call(self.vtable.fetch, &Self::about(descriptor), None)
            .await?;
        self.body(body)
    }

    async fn push(&self, descriptor: &Descriptor, body: Body, options: &PushOptions) -> Result<()> {
        let args = Args {
            tag: options.tag.clone(),
            offset: Some(options.offset),
            list: options.list.then_some(true),
            ..Self::about(descriptor)
        };
        self.call(self.vtable.push, &args, Some(body))
            .await
            .map(drop)
    }

    async fn partial(&self, descriptor: &Descriptor) -> Result<u64> {
        let answer = self
            .answer(self.vtable.partial, Self::about(descriptor))
            .await?;
        Ok(answer.number.unwrap_or(0))
    }

    async fn delete(&self, descriptor: &Descriptor) -> Result<()> {
        self.answer(self.vtable.delete, Self::about(descriptor))
            .await
            .map(drop)
    }

    async fn resolve(&self, selector: &Selector) -> Result<Descriptor> {
        let args = Args {
            selector: Some(selector.to_string()),
            tag: match selector {
                Selector::Tag(tag) => Some(tag.clone()),
                Selector::Digest(_) => None,
            },
            ..Args::default()
        };
        self.answer(self.vtable.resolve, args)
            .await?
            .descriptor
            .ok_or_else(|| Error::Backend {
                backend: self.name.clone(),
                operation: "resolve",
                source: "the plugin answered without a descriptor".into(),
            })
    }

    async fn tag(&self, descriptor: &Descriptor, tag: &str) -> Result<()> {
        let args = Args {
            tag: Some(tag.to_owned()),
            ..Self::about(descriptor)
        };
        self.answer(self.vtable.tag, args).await.map(drop)
    }

    async fn untag(&self, tag: &str) -> Result<()> {
        let args = Args {
            tag: Some(tag.to_owned()),
            ..Args::default()
        };
        self.answer(self.vtable.untag, args).await.map(drop)
    }

    async fn swap_tag(
        &self,
        tag: &str,
        expected: Option<&Digest>,
        new: Option<&Descriptor>,
    ) -> Result<()> {
        let args = Args {
            tag: Some(tag.to_owned()),
            expected: expected.map(Digest::to_string),
            descriptor: new.cloned(),
            ..Args::default()
        };
        self.answer(self.vtable.swap_tag, args).await.map(drop)
    }

    async fn tags(&self, list: &ListQuery) -> Result<ListPage> {
        let answer = self.answer(self.vtable.tags, query(list)).await?;
        Ok(ListPage::new(
            answer.entries.unwrap_or_default(),
            answer.next,
        ))
    }

    async fn referrers(
        &self,
        subject: &Descriptor,
        artifact_type: Option<&MediaType>,
    ) -> Result<Referrers> {
        let args = Args {
            artifact_type: artifact_type.map(|t| t.as_str().to_owned()),
            ..Self::about(subject)
        };
        let answer = self.answer(self.vtable.referrers, args).await?;
        Ok(Referrers::new(
            answer.manifests.unwrap_or_default(),
            answer.filtered.unwrap_or(false),
        ))
    }

    async fn mount(&self, descriptor: &Descriptor, from: &str) -> Result<bool> {
        let args = Args {
            from: Some(from.to_owned()),
            ..Self::about(descriptor)
        };
        Ok(self
            .answer(self.vtable.mount, args)
            .await?
            .flag
            .unwrap_or(false))
    }

    async fn fetch_range(&self, descriptor: &Descriptor, range: Range<u64>) -> Result<Body> {
        let args = Args {
            start: Some(range.start),
            end: Some(range.end),
            ..Self::about(descriptor)
        };
        let (_, body) = self.call(self.vtable.fetch_range, &args, None).await?;
        self.body(body)
    }

    async fn catalog(&self, list: &ListQuery) -> Result<ListPage> {
        let answer = self.answer(self.vtable.catalog, query(list)).await?;
        Ok(ListPage::new(
            answer.entries.unwrap_or_default(),
            answer.next,
        ))
    }
}
