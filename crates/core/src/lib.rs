//! orca-core: the OCI content model, the [`Backend`] contract every storage
//! backend implements, and [`Store`], the verifying handle callers hold.
//!
//! Files stand on floors and import only downward: the model (`model`),
//! the contract (`error`, `body`, `verify`, `capabilities`, `backend`,
//! `retry`),
//! the shared rules (`layout`, `referrers`), the handle (`store`), then the
//! operations (`copy`, `artifact`, `index`, `sync`), implementations and
//! checks (`memory`, `conformance`).

pub mod artifact;
pub mod backend;
pub mod body;
pub mod bundle;
pub mod capabilities;
pub mod cleanup;
pub mod convert;
pub mod copy;
pub mod error;
pub mod index;
pub mod layout;
pub mod memory;
pub mod model;
pub mod referrers;
mod retry;
pub mod store;
pub mod sync;
pub mod verify;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use backend::{Backend, ListPage, ListQuery, Pages, PushOptions, Referrers};
pub use body::Body;
pub use capabilities::Capabilities;
pub use error::{Error, Result};
pub use memory::{MemoryBackend, MemoryRegistry};
pub use model::{
    Algorithm, Descriptor, Digest, Digester, Document, Index, Manifest, MediaType, Platform,
    RawManifest, Reference, Schema1, Selector,
};
pub use store::Store;

pub use async_trait::async_trait;
