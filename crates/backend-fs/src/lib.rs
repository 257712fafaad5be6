//! orca-backend-fs: an OCI image layout directory as an orca backend —
//! `oci-layout`, `index.json` (tags are `org.opencontainers.image.ref.name`
//! annotations) and `blobs/<alg>/<hex>` — crash-safe and safe for
//! concurrent processes — and the `oci-archive` and `docker-archive` tars.

mod archive;
mod backend;
mod docker_archive;
mod error;
mod files;
mod gc;
mod oci_archive;
mod tar_writer;

pub use backend::LayoutBackend;
pub use docker_archive::{export_docker_archive, import_docker_archive};
pub use oci_archive::{Imported, export_oci_archive, import_oci_archive};
