//! orca-backend-fs: an OCI image layout directory as an orca backend —
//! `oci-layout`, `index.json` (tags are `org.opencontainers.image.ref.name`
//! annotations) and `blobs/<alg>/<hex>` — crash-safe and safe for
//! concurrent processes. The layout rules and the engine (tags, delete,
//! garbage collection) are core's, shared with the bucket backend; this
//! crate is the [`Directory`] they run over; and the `oci-archive` and `docker-archive` tars as
//! backends too: [`Archive`] reads one in place, [`ArchiveWriter`] writes
//! one that appears only when finished. Copying to or from an archive is a
//! `copy` like any other.

mod archive;
mod archive_read;
mod archive_write;
mod backend;
mod builder;
mod docker_archive;
mod error;
mod files;
#[cfg(unix)]
mod shared;

pub use archive_read::{Archive, ArchiveImage};
pub use archive_write::{ArchiveFormat, ArchiveWriter};
pub use backend::{Directory, LayoutBackend, file_body};
pub use builder::{LayoutBuilder, open};
#[cfg(unix)]
pub use shared::{prune_pool, share_blob};
