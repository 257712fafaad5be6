//! orca-plugin-abi: the versioned C ABI through which orca loads backends
//! built as shared libraries, and both of its sides.
//!
//! - A plugin is a `cdylib` crate that implements `orca_core::Backend`
//!   and writes one [`export_backend!`] line naming its name, the URL
//!   scheme it serves and an `async fn open(target, config)`.
//! - A host calls [`Plugin::load`] (which checks the ABI version first,
//!   then the table's size, and refuses a mismatch before touching
//!   anything else), then [`Plugin::open`] for each backend it wants: a
//!   [`PluginBackend`] is an `orca_core::Backend` like any linked one.
//!
//! - A plugin whose backend is an OCI image layout may also write one
//!   [`export_storage!`] line: the host then opens the layout's object
//!   storage ([`Plugin::open_storage`], a [`PluginStorage`]) and runs its
//!   own layout engine over it, garbage collection included.
//!
//! What crosses: `#[repr(C)]` tables of `extern "C"` functions
//! ([`ffi`]); futures as `async-ffi` futures; arguments, answers and
//! errors as JSON (errors keep their kind, so `Store` and the copy engine
//! behave as with a linked backend); bodies as streams of owned chunks,
//! never copied (`Bytes` leave as buffers that own them and arrive through
//! `Bytes::from_owner`). Each plugin runs its operations on its own tokio
//! runtime, entered on every poll, and a panic on its side becomes an
//! error. This is the one crate of orca that needs `unsafe`.

#![allow(unsafe_code)]

pub mod ffi;
pub mod guest;
mod host;
mod stream;
mod wire;

pub use async_ffi;
pub use host::{Plugin, PluginBackend, PluginStorage};

/// The ABI this crate speaks; a host refuses plugins of any other. Any
/// change to the tables in `ffi` (an entry added, removed, reordered or
/// retyped) is a new ABI: bump this, and add a new table beside the old.
/// The layout of ABI 1 is pinned by compile-time assertions in `ffi`.
pub const ABI_VERSION: u32 = 1;
/// The function every plugin exports, returning its ABI version.
pub const VERSION_SYMBOL: &[u8] = b"orca_plugin_abi_version\0";
/// The function a plugin of ABI 1 exports, returning its table.
pub const ENTRY_SYMBOL: &[u8] = b"orca_plugin_v1\0";

/// The function a plugin that offers storage exports (optional, with any
/// ABI 1 plugin), returning its [`ffi::StorageV1`] table.
pub const STORAGE_SYMBOL: &[u8] = b"orca_plugin_storage_v1\0";

/// Exports a backend from a `cdylib` crate: its name, the URL scheme it
/// serves, and an `async fn open(target: String, config: String) ->
/// orca_core::Result<B>` where `B: Backend`:
///
/// ```text
/// orca_plugin_abi::export_backend!(name: "example", scheme: "example", open: open);
/// ```
#[macro_export]
macro_rules! export_backend {
    (name: $name:expr, scheme: $scheme:expr, open: $open:path $(,)?) => {
        /// The plugin ABI this library was built for.
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn orca_plugin_abi_version() -> u32 {
            $crate::ABI_VERSION
        }

        /// The plugin's table.
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn orca_plugin_v1() -> *const $crate::ffi::PluginV1 {
            static TABLE: ::std::sync::OnceLock<$crate::ffi::PluginV1> =
                ::std::sync::OnceLock::new();
            TABLE.get_or_init(|| {
                $crate::guest::table(
                    $name,
                    env!("CARGO_PKG_VERSION"),
                    $scheme,
                    __orca_plugin_open,
                )
            }) as *const $crate::ffi::PluginV1
        }

        extern "C" fn __orca_plugin_open(
            target: $crate::ffi::FfiSlice,
            config: $crate::ffi::FfiSlice,
        ) -> $crate::async_ffi::FfiFuture<$crate::ffi::FfiOutcome> {
            $crate::guest::open(target, config, |target, config| $open(target, config))
        }
    };
}

/// Exports, beside the backend, the object storage of an OCI image layout
/// (optional): an `async fn open(target: String, config: String) ->
/// orca_core::Result<S>` where `S: orca_core::layout::ObjectStorage`,
/// opening the same place the backend's `open` opens for that target:
///
/// ```text
/// orca_plugin_abi::export_storage!(open: open_storage);
/// ```
#[macro_export]
macro_rules! export_storage {
    (open: $open:path $(,)?) => {
        /// The plugin's storage table.
        #[allow(unsafe_code)]
        #[unsafe(no_mangle)]
        pub extern "C" fn orca_plugin_storage_v1() -> *const $crate::ffi::StorageV1 {
            static TABLE: ::std::sync::OnceLock<$crate::ffi::StorageV1> =
                ::std::sync::OnceLock::new();
            TABLE.get_or_init(|| $crate::guest::storage_table(__orca_plugin_open_storage))
                as *const $crate::ffi::StorageV1
        }

        extern "C" fn __orca_plugin_open_storage(
            target: $crate::ffi::FfiSlice,
            config: $crate::ffi::FfiSlice,
        ) -> $crate::async_ffi::FfiFuture<$crate::ffi::FfiOutcome> {
            $crate::guest::open_storage(target, config, |target, config| $open(target, config))
        }
    };
}
