//! orca for Rust users: one dependency for the OCI content model, the
//! verifying [`Store`], the operations (copy, artifacts, referrers, index
//! creation) and every backend, each behind a feature of the same name
//! (all on by default): [`fs`] (layouts and archives), [`http`]
//! (registries) and [`s3`] (object stores).
//!
//! Targets are strings, as on the command line ([`FORMS`]): [`open`] turns
//! one into a [`Store`] and what it selects, and [`copy()`] moves the graph
//! under a manifest or index between any two.
//!
//! ```no_run
//! # async fn run() -> orca::Result<()> {
//! use orca::{Access, CopyOptions, OpenOptions};
//!
//! let options = OpenOptions::new();
//! let source = orca::open("oci:./layout:v1", Access::Read, &options).await?;
//! let target = orca::open("localhost:5000/app:v1", Access::Write, &options).await?;
//! let root = source.root().await?;
//! let report = orca::copy(source.store(), &root, target.store(), target.tag(), &CopyOptions::default()).await?;
//! println!("{} copied, {} bytes", report.copied, report.bytes);
//! target.finish().await?;
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "fs")]
mod carry;
#[cfg(all(feature = "http", feature = "fs"))]
pub mod content_cache;
mod helpers;
#[cfg(feature = "http")]
mod hosts;
#[cfg(feature = "sync")]
pub mod mirror;
#[cfg(feature = "http")]
mod mirrored;
mod open;
mod root;
mod target;

pub use orca_core::*;

#[cfg(all(feature = "http", feature = "fs"))]
pub use content_cache::{CacheEntry, ContentCache, Pruned};
pub use helpers::{
    Discovered, Files, Referrer, attach, copy_between, discover, parse_size, push_files,
    push_files_reported,
};
#[cfg(feature = "settings")]
pub use hosts::RegistryFile;
#[cfg(feature = "http")]
pub use hosts::RegistrySettings;
pub use open::{Access, Notice, OpenOptions, Target, gc, open, open_spec, repositories};
#[cfg(feature = "http")]
pub use open::{connect, registry};
pub use orca_core::artifact::{Form, Packed};
pub use orca_core::copy::{CopyOptions, CopyReport, Event, Progress, copy};
pub use orca_core::referrers::{ReferrerList, Via};
pub use root::{Repository, Root};
pub use target::{FORMS, TargetSpec};

/// OCI image layout directories, and oci-archive / docker-archive tars.
#[cfg(feature = "fs")]
pub use orca_backend_fs as fs;
/// Registries, through the OCI distribution API.
#[cfg(feature = "http")]
pub use orca_backend_http as http;
/// OCI image layouts in S3 and other object stores.
#[cfg(feature = "s3")]
pub use orca_backend_s3 as s3;
/// Backends loaded at run time from plugin libraries.
#[cfg(feature = "plugins")]
pub use orca_plugin_abi as plugins;

// The README's examples are compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
