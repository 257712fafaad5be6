//! orca-backend-fs: an OCI image layout directory as an orca backend —
//! `oci-layout`, `index.json` (tags are `org.opencontainers.image.ref.name`
//! annotations) and `blobs/<alg>/<hex>` — crash-safe and safe for
//! concurrent processes.

mod backend;
mod error;
mod files;
mod gc;

pub use backend::LayoutBackend;
