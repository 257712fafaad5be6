//! orca-backend-s3: an OCI image layout under a bucket prefix as an orca
//! backend, through `object_store` — so it runs on S3 and S3-compatible
//! servers, and on object_store's other stores (in-memory, local files).
//! The layout rules are core's (`orca_core::layout`), shared with the
//! directory backend, so a layout synced between the two stays valid.

mod backend;
mod builder;
mod error;
mod profile;
mod upload;

pub use backend::{Bucket, S3Backend};
pub use builder::S3Builder;
