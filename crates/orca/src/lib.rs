//! orca for Rust users: one dependency for the OCI content model, the
//! verifying [`Store`], the operations (copy, artifacts, referrers, index
//! creation) and every backend, each behind a feature of the same name
//! (all on by default): [`fs`] (layouts and archives), [`http`]
//! (registries) and [`s3`] (object stores).
//!
//! The main operation is at the root: [`copy()`] moves the graph under a
//! manifest or index between any two stores, with [`CopyOptions`].

pub use orca_core::*;

pub use orca_core::copy::{CopyOptions, CopyReport, Event, Progress, copy};

/// OCI image layout directories, and oci-archive / docker-archive tars.
#[cfg(feature = "fs")]
pub use orca_backend_fs as fs;
/// Registries, through the OCI distribution API.
#[cfg(feature = "http")]
pub use orca_backend_http as http;
/// OCI image layouts in S3 and other object stores.
#[cfg(feature = "s3")]
pub use orca_backend_s3 as s3;
