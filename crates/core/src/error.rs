//! The one error type of orca's libraries. Its variants are the kinds callers
//! branch on; messages name the subject and the place, and causes are kept
//! as sources rather than repeated in the message.

use std::time::Duration;

use crate::model::Digest;

/// A boxed error cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with orca's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in orca's libraries.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The content, manifest, tag or repository does not exist.
    #[error("{what} not found in {place}")]
    NotFound {
        /// What was looked for (`blob sha256:…`, `tag v1`).
        what: String,
        /// Where (the backend's display name).
        place: String,
    },
    /// The thing to create already exists.
    #[error("{what} already exists in {place}")]
    AlreadyExists {
        /// What was to be created.
        what: String,
        /// Where.
        place: String,
    },
    /// Bytes did not hash to the digest they were announced with.
    #[error("{what} from {place} does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was transferred.
        what: String,
        /// Where it came from or went to.
        place: String,
        /// The announced digest.
        expected: Digest,
        /// The digest of the bytes that arrived.
        actual: Digest,
    },
    /// Bytes were more or fewer than announced.
    #[error("{what} from {place} has the wrong size: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// What was transferred.
        what: String,
        /// Where it came from or went to.
        place: String,
        /// The announced size.
        expected: u64,
        /// The bytes that arrived (at least this many when too long).
        actual: u64,
    },
    /// The backend does not offer this operation (see `Capabilities`).
    #[error("{place} does not support {operation}")]
    Unsupported {
        /// The operation (`delete`, `referrers`, …).
        operation: &'static str,
        /// The backend.
        place: String,
    },
    /// Credentials are missing or were rejected.
    #[error("not authorized by {place}: {message}")]
    Unauthorized {
        /// The backend.
        place: String,
        /// What the server said.
        message: String,
    },
    /// The credentials are valid but not allowed this.
    #[error("access denied by {place}: {message}")]
    Denied {
        /// The backend.
        place: String,
        /// What the server said.
        message: String,
    },
    /// An image reference or tag that does not follow the grammar.
    #[error("invalid reference {input:?}: {reason}")]
    InvalidReference {
        /// The input (shortened when long).
        input: String,
        /// Which part is wrong and why.
        reason: String,
    },
    /// A digest string that does not follow the grammar.
    #[error("invalid digest {input:?}: {reason}")]
    InvalidDigest {
        /// The input (shortened when long).
        input: String,
        /// What is wrong.
        reason: String,
    },
    /// A manifest or index that cannot be read or contradicts itself.
    #[error("invalid {what}: {reason}")]
    InvalidManifest {
        /// Which document.
        what: String,
        /// What is wrong.
        reason: String,
        /// The parser's error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// Docker image manifest v2 schema 1 content, which orca does not read.
    #[error(
        "{what} is a Docker image manifest v2 schema 1, a deprecated format orca does not \
         read by default; ask its publisher for an OCI or Docker schema 2 image, or copy it \
         as it is with --allow-schema1 (ORCA_ENABLE_DEPRECATED_SCHEMA1=1)"
    )]
    Schema1Refused {
        /// Which document.
        what: String,
    },
    /// Some other argument that is malformed (a platform string, options).
    #[error("invalid {what}: {reason}")]
    InvalidInput {
        /// What was given.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// The server asks to slow down.
    #[error("rate limited by {place}{}", retry_after.map(|d| format!(" (retry after {}s)", d.as_secs())).unwrap_or_default())]
    RateLimited {
        /// The backend.
        place: String,
        /// How long the server asked to wait.
        retry_after: Option<Duration>,
    },
    /// A concurrent change won; retrying may succeed.
    #[error("conflicting change to {what} in {place}")]
    Conflict {
        /// What was being changed.
        what: String,
        /// The backend.
        place: String,
    },
    /// Content larger than a limit (manifest size, page size).
    #[error("{what} exceeds the limit of {limit} bytes")]
    LimitExceeded {
        /// What was too large.
        what: String,
        /// The limit.
        limit: u64,
    },
    /// The backend refused a request as one it does not accept (an HTTP
    /// 4xx other than those above: an unknown media type, a field it does
    /// not allow), with its own words.
    #[error("{place} refused {what}: {message}")]
    Rejected {
        /// What was refused.
        what: String,
        /// The backend.
        place: String,
        /// What the backend said.
        message: String,
    },
    /// A failure inside a backend that is none of the kinds above, with
    /// what was being done (`fetching manifest sha256:ab… from
    /// oci:./layout`): what [`Store`](crate::Store) makes of an
    /// [`Error::Backend`].
    #[error("{doing}")]
    Failed {
        /// The operation and its subject, and where.
        doing: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// A failure inside a backend that is none of the kinds above.
    #[error("{backend}: {operation} failed")]
    Backend {
        /// The backend.
        backend: String,
        /// The operation.
        operation: &'static str,
        /// The cause.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// Whether trying the same operation again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::RateLimited { .. } | Error::Conflict { .. })
    }

    /// Names what was being done when this is a bare [`Error::Backend`]
    /// (whose message names only the backend and the operation); other
    /// kinds already name their subject and are returned as they are.
    pub(crate) fn during(self, doing: impl FnOnce() -> String) -> Self {
        match self {
            Error::Backend { source, .. } => Error::Failed {
                doing: doing(),
                source,
            },
            other => other,
        }
    }

    /// Adds the digest of the document to an invalid-document error
    /// (the parser knows only the media type).
    pub(crate) fn naming(self, digest: &Digest) -> Self {
        match self {
            Error::InvalidManifest {
                what,
                reason,
                source,
            } => Error::InvalidManifest {
                what: format!("{what} {digest}"),
                reason,
                source,
            },
            Error::Schema1Refused { what } => Error::Schema1Refused {
                what: format!("{what} {digest}"),
            },
            other => other,
        }
    }

    /// Whether this is [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }
}

/// The error and its causes, joined by `: ` (what `{:#}` shows in the CLI).
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
