//! What crosses the boundary as JSON: operation arguments and results,
//! capabilities, and errors — each error kind with its fields, so the
//! host rebuilds the same `orca_core::Error` a linked backend would have
//! returned, and `Store`, the copy engine and the conformance suite
//! treat a plugin exactly like a linked backend.

use std::time::Duration;

use orca_core::{Capabilities, Digest, Error, Result};
use serde::{Deserialize, Serialize};

/// An error as it crosses.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum WireError {
    NotFound {
        what: String,
        place: String,
    },
    AlreadyExists {
        what: String,
        place: String,
    },
    DigestMismatch {
        what: String,
        place: String,
        expected: String,
        actual: String,
    },
    SizeMismatch {
        what: String,
        place: String,
        expected: u64,
        actual: u64,
    },
    Unsupported {
        operation: String,
        place: String,
    },
    Unauthorized {
        place: String,
        message: String,
    },
    Denied {
        place: String,
        message: String,
    },
    InvalidReference {
        input: String,
        reason: String,
    },
    InvalidDigest {
        input: String,
        reason: String,
    },
    InvalidManifest {
        what: String,
        reason: String,
        cause: Option<String>,
    },
    Schema1Refused {
        what: String,
    },
    InvalidInput {
        what: String,
        reason: String,
    },
    RateLimited {
        place: String,
        retry_after_ms: Option<u64>,
    },
    Conflict {
        what: String,
        place: String,
    },
    LimitExceeded {
        what: String,
        limit: u64,
    },
    Rejected {
        what: String,
        place: String,
        message: String,
    },
    Failed {
        doing: String,
        cause: String,
    },
    Backend {
        backend: String,
        operation: String,
        cause: String,
    },
}

/// The causes of an error, joined, for the kinds that carry one.
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    orca_core::error::chain(error)
}

impl From<&Error> for WireError {
    fn from(e: &Error) -> Self {
        match e {
            Error::NotFound { what, place } => WireError::NotFound {
                what: what.clone(),
                place: place.clone(),
            },
            Error::AlreadyExists { what, place } => WireError::AlreadyExists {
                what: what.clone(),
                place: place.clone(),
            },
            Error::DigestMismatch {
                what,
                place,
                expected,
                actual,
            } => WireError::DigestMismatch {
                what: what.clone(),
                place: place.clone(),
                expected: expected.to_string(),
                actual: actual.to_string(),
            },
            Error::SizeMismatch {
                what,
                place,
                expected,
                actual,
            } => WireError::SizeMismatch {
                what: what.clone(),
                place: place.clone(),
                expected: *expected,
                actual: *actual,
            },
            Error::Unsupported { operation, place } => WireError::Unsupported {
                operation: (*operation).to_owned(),
                place: place.clone(),
            },
            Error::Unauthorized { place, message } => WireError::Unauthorized {
                place: place.clone(),
                message: message.clone(),
            },
            Error::Denied { place, message } => WireError::Denied {
                place: place.clone(),
                message: message.clone(),
            },
            Error::InvalidReference { input, reason } => WireError::InvalidReference {
                input: input.clone(),
                reason: reason.clone(),
            },
            Error::InvalidDigest { input, reason } => WireError::InvalidDigest {
                input: input.clone(),
                reason: reason.clone(),
            },
            Error::InvalidManifest {
                what,
                reason,
                source,
            } => WireError::InvalidManifest {
                what: what.clone(),
                reason: reason.clone(),
                cause: source.as_ref().map(|s| causes(s.as_ref())),
            },
            Error::Schema1Refused { what } => WireError::Schema1Refused { what: what.clone() },
            Error::InvalidInput { what, reason } => WireError::InvalidInput {
                what: what.clone(),
                reason: reason.clone(),
            },
            Error::RateLimited { place, retry_after } => WireError::RateLimited {
                place: place.clone(),
                retry_after_ms: retry_after.map(|d| d.as_millis() as u64),
            },
            Error::Conflict { what, place } => WireError::Conflict {
                what: what.clone(),
                place: place.clone(),
            },
            Error::LimitExceeded { what, limit } => WireError::LimitExceeded {
                what: what.clone(),
                limit: *limit,
            },
            Error::Rejected {
                what,
                place,
                message,
            } => WireError::Rejected {
                what: what.clone(),
                place: place.clone(),
                message: message.clone(),
            },
            Error::Failed { doing, source } => WireError::Failed {
                doing: doing.clone(),
                cause: causes(source.as_ref()),
            },
            Error::Backend {
                backend,
                operation,
                source,
            } => WireError::Backend {
                backend: backend.clone(),
                operation: (*operation).to_owned(),
                cause: causes(source.as_ref()),
            },
            other => WireError::Backend {
                backend: String::new(),
                operation: "plugin".to_owned(),
                cause: other.to_string(),
            },
        }
    }
}

/// The operations of the backend contract, in the order of the vtable
/// (their numbers on the plugin side).
pub(crate) const OPERATIONS: [&str; 15] = [
    "exists",
    "stat",
    "fetch",
    "push",
    "partial",
    "delete",
    "resolve",
    "tag",
    "untag",
    "swap_tag",
    "tags",
    "referrers",
    "mount",
    "fetch_range",
    "catalog",
];

/// The `&'static str` operation names errors carry, for the ones that
/// come back across the boundary.
fn operation(name: &str) -> &'static str {
    const OTHERS: &[&str] = &[
        "read",
        "write",
        "list",
        "open",
        "configure",
        "gc",
        "resume",
        "plugin",
    ];
    OPERATIONS
        .iter()
        .chain(STORAGE_OPERATIONS.iter())
        .chain(OTHERS)
        .find(|k| **k == name)
        .copied()
        .unwrap_or("plugin operation")
}

fn digest(text: &str) -> Digest {
    Digest::parse(text).unwrap_or_else(|_| Digest::sha256(text.as_bytes()))
}

impl From<WireError> for Error {
    fn from(e: WireError) -> Self {
        match e {
            WireError::NotFound { what, place } => Error::NotFound { what, place },
            WireError::AlreadyExists { what, place } => Error::AlreadyExists { what, place },
            WireError::DigestMismatch {
                what,
                place,
                expected,
                actual,
            } => Error::DigestMismatch {
                what,
                place,
                expected: digest(&expected),
                actual: digest(&actual),
            },
            WireError::SizeMismatch {
                what,
                place,
                expected,
                actual,
            } => Error::SizeMismatch {
                what,
                place,
                expected,
                actual,
            },
            WireError::Unsupported {
                operation: name,
                place,
            } => Error::Unsupported {
                operation: operation(&name),
                place,
            },
            WireError::Unauthorized { place, message } => Error::Unauthorized { place, message },
            WireError::Denied { place, message } => Error::Denied { place, message },
            WireError::InvalidReference { input, reason } => {
                Error::InvalidReference { input, reason }
            }
            WireError::InvalidDigest { input, reason } => Error::InvalidDigest { input, reason },
            WireError::InvalidManifest {
                what,
                reason,
                cause,
            } => Error::InvalidManifest {
                what,
                reason,
                source: cause.map(|c| c.into()),
            },
            WireError::Schema1Refused { what } => Error::Schema1Refused { what },
            WireError::InvalidInput { what, reason } => Error::InvalidInput { what, reason },
            WireError::RateLimited {
                place,
                retry_after_ms,
            } => Error::RateLimited {
                place,
                retry_after: retry_after_ms.map(Duration::from_millis),
            },
            WireError::Conflict { what, place } => Error::Conflict { what, place },
            WireError::LimitExceeded { what, limit } => Error::LimitExceeded { what, limit },
            WireError::Rejected {
                what,
                place,
                message,
            } => Error::Rejected {
                what,
                place,
                message,
            },
            WireError::Failed { doing, cause } => Error::Failed {
                doing,
                source: cause.into(),
            },
            WireError::Backend {
                backend,
                operation: name,
                cause,
            } => Error::Backend {
                backend,
                operation: operation(&name),
                source: cause.into(),
            },
        }
    }
}

/// Capabilities as they cross.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WireCapabilities {
    delete: bool,
    untag: bool,
    tag_list_pagination: bool,
    referrers_api: bool,
    mount: bool,
    fetch_range: bool,
    tag_compare_and_swap: bool,
    catalog: bool,
    resume: bool,
    max_manifest_size: u64,
}

impl From<Capabilities> for WireCapabilities {
    fn from(c: Capabilities) -> Self {
        WireCapabilities {
            delete: c.delete,
            untag: c.untag,
            tag_list_pagination: c.tag_list_pagination,
            referrers_api: c.referrers_api,
            mount: c.mount,
            fetch_range: c.fetch_range,
            tag_compare_and_swap: c.tag_compare_and_swap,
            catalog: c.catalog,
            resume: c.resume,
            max_manifest_size: c.max_manifest_size,
        }
    }
}

impl From<WireCapabilities> for Capabilities {
    fn from(w: WireCapabilities) -> Self {
        let mut c = Capabilities::NONE;
        c.delete = w.delete;
        c.untag = w.untag;
        c.tag_list_pagination = w.tag_list_pagination;
        c.referrers_api = w.referrers_api;
        c.mount = w.mount;
        c.fetch_range = w.fetch_range;
        c.tag_compare_and_swap = w.tag_compare_and_swap;
        c.catalog = w.catalog;
        c.resume = w.resume;
        c.max_manifest_size = w.max_manifest_size;
        c
    }
}

/// The arguments of every operation, one shape for all (unused fields
/// absent).
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Args {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) descriptor: Option<orca_core::Descriptor>,
    /// What `resolve` looks up: a digest, or a tag in the reference
    /// grammar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) selector: Option<String>,
    /// A tag as the backend names it. For `resolve` it comes with
    /// `selector` and wins over it: a bundle's `REPO:TAG` names are no
    /// tags in the reference grammar (a guest built before this reads
    /// `selector` alone, and still resolves every grammatical tag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) expected: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) start: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) end: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) last: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) limit: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) from: Option<String>,
    /// `push`: list the manifest as an untagged root (absent: no; a guest
    /// built before it ignores it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) list: Option<bool>,
}

/// The result of every operation, one shape for all.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Answer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) flag: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) number: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) descriptor: Option<orca_core::Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) entries: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) next: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) manifests: Option<Vec<orca_core::Descriptor>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) filtered: Option<bool>,
}

/// Encodes a value as JSON bytes.
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// Decodes JSON bytes that came across.
pub(crate) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::InvalidInput {
        what: format!("{what} from across the plugin boundary"),
        reason: e.to_string(),
    })
}

/// The operations of the storage table, in its order (their numbers on
/// the plugin side).
pub(crate) const STORAGE_OPERATIONS: [&str; 11] = [
    "read",
    "read_changed",
    "write",
    "size",
    "list",
    "delete",
    "get",
    "put_blob",
    "partial",
    "adopt",
    "clean_staging",
];

/// The arguments of every storage operation, one shape for all.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct StorageArgs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) limit: Option<u64>,
    /// `read_changed`: the version the host knows; `write`: the version
    /// the object must be at (absent: the object must be absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) start: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) end: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) descriptor: Option<orca_core::Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) age_ms: Option<u64>,
}

/// One listed object as it crosses.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WireListed {
    pub(crate) key: String,
    pub(crate) size: u64,
    /// Milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) modified_ms: Option<u64>,
}

impl From<&orca_core::layout::Listed> for WireListed {
    fn from(l: &orca_core::layout::Listed) -> Self {
        WireListed {
            key: l.key.clone(),
            size: l.size,
            modified_ms: l.modified.and_then(|t| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .ok()
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            }),
        }
    }
}

impl From<WireListed> for orca_core::layout::Listed {
    fn from(w: WireListed) -> Self {
        orca_core::layout::Listed {
            key: w.key,
            size: w.size,
            modified: w
                .modified_ms
                .and_then(|ms| std::time::UNIX_EPOCH.checked_add(Duration::from_millis(ms))),
        }
    }
}

/// The result of every storage operation, one shape for all; bytes (a
/// read object, a streamed one) come as the outcome's stream.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct StorageAnswer {
    /// Whether the object was there (`read`, `get`), or `adopt` worked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) flag: Option<bool>,
    /// `read_changed`: whether the object changed from the known version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) changed: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) number: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) listed: Option<Vec<WireListed>>,
}
