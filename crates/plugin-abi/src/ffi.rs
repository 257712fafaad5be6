//! The `#[repr(C)]` types that cross the boundary: borrowed and owned
//! byte buffers, byte streams (a `poll_next`/`release` pair), operation
//! outcomes, the plugin's entry table with its backend vtable, and the
//! optional storage table. Every
//! owned value carries the function that frees it, from the side that
//! made it, so neither side frees the other's memory.

use std::ffi::c_void;

use async_ffi::{FfiContext, FfiFuture, FfiPoll};

/// Bytes borrowed for the duration of a call.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FfiSlice {
    /// The first byte (dangling when `len` is 0).
    pub ptr: *const u8,
    /// How many.
    pub len: usize,
}

impl FfiSlice {
    /// Borrows `bytes`.
    pub fn new(bytes: &[u8]) -> Self {
        FfiSlice {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        }
    }

    /// The bytes.
    ///
    /// # Safety
    /// `ptr` and `len` must describe live memory for the lifetime chosen.
    pub unsafe fn as_bytes<'a>(&self) -> &'a [u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: the caller promises the slice is live.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// Bytes owned by the side that made them, freed by its `release`.
#[repr(C)]
#[derive(Debug)]
pub struct FfiBuf {
    /// The first byte.
    pub ptr: *const u8,
    /// How many.
    pub len: usize,
    /// What keeps them alive, for `release`.
    pub owner: *mut c_void,
    /// Frees `owner`; `None` for an empty buffer.
    pub release: Option<extern "C" fn(*mut c_void)>,
}

/// A byte stream: `poll_next` until it says the end or an error, then (or
/// earlier, to abandon it) `release`, exactly once.
#[repr(C)]
#[derive(Debug)]
pub struct FfiStream {
    /// The stream's state; null for "no stream".
    pub state: *mut c_void,
    /// Polls for the next chunk.
    pub poll_next: Option<extern "C" fn(*mut c_void, *mut FfiContext<'_>) -> FfiPoll<FfiChunk>>,
    /// Frees the stream.
    pub release: Option<extern "C" fn(*mut c_void)>,
    /// How many bytes it promises.
    pub len: u64,
}

impl FfiStream {
    /// No stream.
    pub fn none() -> Self {
        FfiStream {
            state: std::ptr::null_mut(),
            poll_next: None,
            release: None,
            len: 0,
        }
    }
}

/// What one `poll_next` yields.
#[repr(C)]
#[derive(Debug)]
pub struct FfiChunk {
    /// [`CHUNK_DATA`], [`CHUNK_END`] or [`CHUNK_ERROR`].
    pub status: u32,
    /// The bytes, or the error (JSON).
    pub buf: FfiBuf,
}

/// A chunk of data.
pub const CHUNK_DATA: u32 = 0;
/// The end of the stream.
pub const CHUNK_END: u32 = 1;
/// An error (the buffer holds it as JSON); the stream is over.
pub const CHUNK_ERROR: u32 = 2;

/// What an operation returns.
#[repr(C)]
#[derive(Debug)]
pub struct FfiOutcome {
    /// [`OUTCOME_OK`] or [`OUTCOME_ERROR`].
    pub status: u32,
    /// The result, or the error, as JSON.
    pub payload: FfiBuf,
    /// A backend handle (from `open`), else null.
    pub handle: *mut c_void,
    /// A body (from `fetch`, `fetch_range`), else none.
    pub stream: FfiStream,
}

/// Success.
pub const OUTCOME_OK: u32 = 0;
/// Failure: the payload is the error.
pub const OUTCOME_ERROR: u32 = 1;

/// One operation of the backend contract: the backend handle, the
/// arguments as JSON (borrowed for the call only), and a body for `push`.
pub type Operation = extern "C" fn(*const c_void, FfiSlice, FfiStream) -> FfiFuture<FfiOutcome>;

/// The backend contract, one entry per operation of `orca_core::Backend`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BackendV1 {
    /// Frees a backend handle.
    pub release: extern "C" fn(*mut c_void),
    /// Its capabilities, as JSON.
    pub capabilities: extern "C" fn(*const c_void) -> FfiBuf,
    /// Its display name (`gcs://bucket/repo`).
    pub describe: extern "C" fn(*const c_void) -> FfiBuf,
    /// `exists`.
    pub exists: Operation,
    /// `stat`.
    pub stat: Operation,
    /// `fetch`.
    pub fetch: Operation,
    /// `push` (with its body).
    pub push: Operation,
    /// `partial`.
    pub partial: Operation,
    /// `delete`.
    pub delete: Operation,
    /// `resolve`.
    pub resolve: Operation,
    /// `tag`.
    pub tag: Operation,
    /// `untag`.
    pub untag: Operation,
    /// `swap_tag`.
    pub swap_tag: Operation,
    /// `tags`.
    pub tags: Operation,
    /// `referrers`.
    pub referrers: Operation,
    /// `mount`.
    pub mount: Operation,
    /// `fetch_range`.
    pub fetch_range: Operation,
    /// `catalog`.
    pub catalog: Operation,
}

/// What a plugin exports under [`crate::ENTRY_SYMBOL`].
#[repr(C)]
#[derive(Debug)]
pub struct PluginV1 {
    /// `size_of::<PluginV1>()` as the plugin was built: a host refuses a
    /// table of another size.
    pub size: usize,
    /// [`crate::ABI_VERSION`] as the plugin was built.
    pub abi_version: u32,
    /// The plugin's name.
    pub name: FfiSlice,
    /// Its own version.
    pub version: FfiSlice,
    /// The URL scheme it serves (`gcs` for `gcs://…` targets).
    pub scheme: FfiSlice,
    /// Opens a backend from a target string (what follows `scheme://`)
    /// and a configuration string; the outcome carries the handle.
    pub open: extern "C" fn(FfiSlice, FfiSlice) -> FfiFuture<FfiOutcome>,
    /// The operations on an opened backend.
    pub backend: BackendV1,
}

/// The storage extension (optional, ABI 1): a plugin that also exports
/// [`crate::STORAGE_SYMBOL`] hands the host the object storage of an OCI
/// image layout, and the host runs its own layout engine over it (garbage
/// collection and the layout's checks included). The table is versioned
/// by its symbol and checked by its size like the plugin's own.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StorageV1 {
    /// `size_of::<StorageV1>()` as the plugin was built.
    pub size: usize,
    /// Opens a storage from a target string (what follows `scheme://`)
    /// and a configuration string; the outcome carries the handle.
    pub open: extern "C" fn(FfiSlice, FfiSlice) -> FfiFuture<FfiOutcome>,
    /// Frees a storage handle.
    pub release: extern "C" fn(*mut c_void),
    /// Its display name.
    pub describe: extern "C" fn(*const c_void) -> FfiBuf,
    /// What it can do: [`STORAGE_RESUMABLE`] and [`STORAGE_ADOPTS`] bits.
    pub traits: extern "C" fn(*const c_void) -> u32,
    /// `read` (the bytes come back as the outcome's stream).
    pub read: Operation,
    /// `read_changed`.
    pub read_changed: Operation,
    /// `write` (the bytes go as the body).
    pub write: Operation,
    /// `size`.
    pub object_size: Operation,
    /// `list`.
    pub list: Operation,
    /// `delete`.
    pub delete: Operation,
    /// `get`.
    pub get: Operation,
    /// `put_blob` (with its body).
    pub put_blob: Operation,
    /// `partial`.
    pub partial: Operation,
    /// `adopt`.
    pub adopt: Operation,
    /// `clean_staging`.
    pub clean_staging: Operation,
}

/// A [`StorageV1::traits`] bit: an interrupted `put_blob` can be continued.
pub const STORAGE_RESUMABLE: u32 = 1;
/// A [`StorageV1::traits`] bit: `adopt` works.
pub const STORAGE_ADOPTS: u32 = 2;

// The layout of ABI 1, pinned (backends review m29): a host checks only
// the version and the table's size, so a reorder of the same size would
// pass that check and call the wrong functions. Any change here is a new
// ABI: bump `ABI_VERSION` and add a new table, never edit these.
const _: () = {
    use std::mem::{offset_of, size_of};
    let word = size_of::<usize>();
    // Every operation is one function pointer, in this order.
    assert!(offset_of!(BackendV1, release) == 0);
    assert!(offset_of!(BackendV1, capabilities) == word);
    assert!(offset_of!(BackendV1, describe) == 2 * word);
    assert!(offset_of!(BackendV1, exists) == 3 * word);
    assert!(offset_of!(BackendV1, stat) == 4 * word);
    assert!(offset_of!(BackendV1, fetch) == 5 * word);
    assert!(offset_of!(BackendV1, push) == 6 * word);
    assert!(offset_of!(BackendV1, partial) == 7 * word);
    assert!(offset_of!(BackendV1, delete) == 8 * word);
    assert!(offset_of!(BackendV1, resolve) == 9 * word);
    assert!(offset_of!(BackendV1, tag) == 10 * word);
    assert!(offset_of!(BackendV1, untag) == 11 * word);
    assert!(offset_of!(BackendV1, swap_tag) == 12 * word);
    assert!(offset_of!(BackendV1, tags) == 13 * word);
    assert!(offset_of!(BackendV1, referrers) == 14 * word);
    assert!(offset_of!(BackendV1, mount) == 15 * word);
    assert!(offset_of!(BackendV1, fetch_range) == 16 * word);
    assert!(offset_of!(BackendV1, catalog) == 17 * word);
    assert!(size_of::<BackendV1>() == 18 * word);
    assert!(offset_of!(StorageV1, size) == 0);
    assert!(offset_of!(StorageV1, open) == word);
    assert!(offset_of!(StorageV1, release) == 2 * word);
    assert!(offset_of!(StorageV1, describe) == 3 * word);
    assert!(offset_of!(StorageV1, traits) == 4 * word);
    assert!(offset_of!(StorageV1, read) == 5 * word);
    assert!(offset_of!(StorageV1, read_changed) == 6 * word);
    assert!(offset_of!(StorageV1, write) == 7 * word);
    assert!(offset_of!(StorageV1, object_size) == 8 * word);
    assert!(offset_of!(StorageV1, list) == 9 * word);
    assert!(offset_of!(StorageV1, delete) == 10 * word);
    assert!(offset_of!(StorageV1, get) == 11 * word);
    assert!(offset_of!(StorageV1, put_blob) == 12 * word);
    assert!(offset_of!(StorageV1, partial) == 13 * word);
    assert!(offset_of!(StorageV1, adopt) == 14 * word);
    assert!(offset_of!(StorageV1, clean_staging) == 15 * word);
    assert!(size_of::<StorageV1>() == 16 * word);
    assert!(offset_of!(PluginV1, size) == 0);
    assert!(offset_of!(PluginV1, abi_version) == word);
    assert!(offset_of!(PluginV1, name) < offset_of!(PluginV1, version));
    assert!(offset_of!(PluginV1, version) < offset_of!(PluginV1, scheme));
    assert!(offset_of!(PluginV1, scheme) < offset_of!(PluginV1, open));
    assert!(offset_of!(PluginV1, open) < offset_of!(PluginV1, backend));
};

// SAFETY: the table holds only function pointers and pointers to static
// strings of the library, valid while it is loaded.
unsafe impl Sync for PluginV1 {}
// SAFETY: as above; the table is never changed after it is made.
unsafe impl Send for PluginV1 {}

// SAFETY: each of these owns what it points to (or borrows static data)
// and is handed from one side to the other, never shared: moving it to
// another thread moves the ownership with it.
unsafe impl Send for FfiBuf {}
// SAFETY: as above.
unsafe impl Send for FfiStream {}
// SAFETY: as above.
unsafe impl Send for FfiChunk {}
// SAFETY: as above.
unsafe impl Send for FfiOutcome {}
