//! Converting object_store's errors into orca's, once, naming the bucket
//! and key; the store's error stays the source.

use orca_core::Error;

/// Converts an object_store error about `key` during `operation`.
pub(crate) fn convert(
    place: &str,
    operation: &'static str,
    what: String,
    e: object_store::Error,
) -> Error {
    match e {
        object_store::Error::NotFound { .. } => Error::NotFound {
            what,
            place: place.to_owned(),
        },
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            Error::Conflict {
                what,
                place: place.to_owned(),
            }
        }
        object_store::Error::Unauthenticated { source, .. } => Error::Unauthorized {
            place: place.to_owned(),
            message: format!("{what}: {source}"),
        },
        object_store::Error::PermissionDenied { source, .. } => Error::Denied {
            place: place.to_owned(),
            message: format!("{what}: {source}"),
        },
        other => Error::Backend {
            backend: place.to_owned(),
            operation,
            source: Box::new(other),
        },
    }
}
