//! The content model: digests, media types, platforms, descriptors,
//! references and manifests. Nothing here knows about storage.

pub mod descriptor;
pub mod detect;
pub mod digest;
pub mod manifest;
pub mod media_type;
pub mod platform;
pub mod reference;
pub mod schema1;

pub use descriptor::{ANNOTATION_CREATED, ANNOTATION_REF_NAME, ANNOTATION_TITLE, Descriptor};
pub use detect::{Schema1, detect_media_type};
pub use digest::{Algorithm, Digest, Digester};
pub use manifest::{ArtifactManifest, Document, Index, Manifest, RawManifest};
pub use media_type::MediaType;
pub use platform::Platform;
pub use reference::{Reference, Selector};
pub use schema1::{Schema1Manifest, allow_schema1, schema1_allowed, with_schema1};
