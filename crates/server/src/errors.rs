//! The distribution spec's errors, in one place: each has its code, its
//! HTTP status and a message; an `orca::Error` from a store becomes
//! the one that says what went wrong, and bad input is never a 500.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An error answered as the spec's JSON body `{"errors": [...]}`.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The spec's code (`BLOB_UNKNOWN`, `MANIFEST_INVALID`, …).
    pub code: &'static str,
    /// What went wrong, for people.
    pub message: String,
    /// Headers the answer carries as well (`Range` on a 416).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    /// The blob is not in the repository.
    pub fn blob_unknown(what: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
            format!("blob unknown to registry: {what}"),
        )
    }

    /// The upload session does not exist (any more).
    pub fn upload_unknown(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "BLOB_UPLOAD_UNKNOWN",
            format!("blob upload unknown to registry: {id}"),
        )
    }

    /// A blob past the server's size limit.
    pub fn blob_too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "SIZE_INVALID",
            format!("a blob may have at most {limit} bytes"),
        )
    }

    /// The upload is not acceptable.
    pub fn upload_invalid(why: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID", why)
    }

    /// A digest that is malformed or does not match the content.
    pub fn digest_invalid(why: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "DIGEST_INVALID", why)
    }

    /// The manifest is not there.
    pub fn manifest_unknown(what: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
            format!("manifest unknown: {what}"),
        )
    }

    /// The manifest is malformed or not acceptable.
    pub fn manifest_invalid(why: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", why)
    }

    /// A repository name that is not one.
    pub fn name_invalid(name: &str, why: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "NAME_INVALID",
            format!("invalid repository name {name:?}: {why}"),
        )
    }

    /// The repository does not exist.
    pub fn name_unknown(name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            format!("repository name not known to registry: {name}"),
        )
    }

    /// A length or range that does not fit.
    pub fn size_invalid(why: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "SIZE_INVALID", why)
    }

    /// A request this registry does not serve.
    pub fn unsupported(why: impl Into<String>) -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", why)
    }

    /// A range that is not where the upload stands: 416, with the range
    /// the session holds.
    pub fn range_not_satisfiable(offset: u64, why: impl Into<String>) -> Self {
        let mut error = Self::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "BLOB_UPLOAD_INVALID",
            why,
        );
        error.headers.push((
            header::RANGE,
            HeaderValue::from_str(&format!("0-{}", offset.saturating_sub(1)))
                .unwrap_or(HeaderValue::from_static("0-0")),
        ));
        error
    }

    /// Adds a header to the answer.
    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
}

/// Whether `error`, or anything that caused it, is a timeout.
fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cause = error.source();
    }
    false
}

/// What a request body's failure is answered: its silence past the idle
/// limit is `408`, breaking off `400`.
fn body_answer(timed_out: bool, what: String) -> ApiError {
    if timed_out {
        ApiError::new(StatusCode::REQUEST_TIMEOUT, "BLOB_UPLOAD_INVALID", what)
    } else {
        ApiError::upload_invalid(format!("the request body broke off: {what}"))
    }
}

/// A request body that broke off or stalled, wherever in a store's error
/// it surfaced.
fn body_failure(e: &(dyn std::error::Error + 'static)) -> Option<ApiError> {
    let mut cause = Some(e);
    while let Some(error) = cause {
        if let Some(orca::Error::Failed { doing, .. }) = error.downcast_ref::<orca::Error>()
            && doing.contains("request body")
        {
            return Some(body_answer(timed_out(error), e.to_string()));
        }
        cause = error.source();
    }
    None
}

/// A request body's failure while it was read for an upload.
pub(crate) fn broken_body(e: &axum::Error) -> ApiError {
    body_answer(timed_out(e), e.to_string())
}

impl From<orca::Error> for ApiError {
    fn from(e: orca::Error) -> Self {
        use orca::Error as E;
        if let Some(answer) = body_failure(&e) {
            return answer;
        }
        let message = e.to_string();
        match &e {
            E::NotFound { what, .. } if what.starts_with("tag") || what.starts_with("manifest") => {
                ApiError::new(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", message)
            }
            E::NotFound { .. } => ApiError::new(StatusCode::NOT_FOUND, "BLOB_UNKNOWN", message),
            E::DigestMismatch { .. } | E::InvalidDigest { .. } => ApiError::digest_invalid(message),
            E::SizeMismatch { .. } => ApiError::size_invalid(message),
            E::InvalidManifest { .. } => ApiError::manifest_invalid(message),
            E::InvalidReference { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "NAME_INVALID", message)
            }
            E::LimitExceeded { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID", message)
            }
            E::InvalidInput { .. } | E::Rejected { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", message)
            }
            E::Unsupported { .. } => ApiError::unsupported(message),
            E::Conflict { .. } => ApiError::new(StatusCode::CONFLICT, "DENIED", message),
            E::Unauthorized { .. } => {
                ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
            }
            E::Denied { .. } => ApiError::new(StatusCode::FORBIDDEN, "DENIED", message),
            E::RateLimited { .. } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", message)
            }
            _ => {
                tracing::warn!(error = %e, "store failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", message)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "errors": [{ "code": self.code, "message": self.message, "detail": null }]
        });
        let mut response = (self.status, axum::Json(body)).into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}

/// What a handler answers.
pub(crate) type Answer = Result<Response, ApiError>;
