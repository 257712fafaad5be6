//! Registry errors: the OCI error envelope (`{"errors":[{"code":…}]}`)
//! read from a failed response and mapped once onto orca's error kinds,
//! keeping the registry's own words.

use std::fmt;
use std::time::Duration;

use orca_core::Error;
use reqwest::StatusCode;
use serde::Deserialize;

/// Most bytes of an error body read.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// One entry of the error envelope.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Detail {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// What a registry said when it refused a request.
#[derive(Debug, Clone)]
pub(crate) struct RegistryError {
    pub(crate) status: StatusCode,
    pub(crate) details: Vec<Detail>,
    pub(crate) body: String,
}

impl RegistryError {
    pub(crate) fn code(&self) -> Option<&str> {
        self.details.first().map(|d| d.code.as_str())
    }

    /// Every error code in the envelope.
    pub(crate) fn details_codes(&self) -> impl Iterator<Item = &str> {
        self.details.iter().map(|d| d.code.as_str())
    }

    fn message(&self) -> String {
        if self.details.is_empty() {
            return self.body.trim().chars().take(200).collect();
        }
        self.details
            .iter()
            .map(|d| {
                if d.message.is_empty() {
                    d.code.clone()
                } else {
                    format!("{}: {}", d.code, d.message)
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}", self.status.as_u16())?;
        let message = self.message();
        if !message.is_empty() {
            write!(f, " ({message})")?;
        }
        Ok(())
    }
}

impl std::error::Error for RegistryError {}

/// Reads a failed response into a [`RegistryError`].
pub(crate) async fn read_error(response: reqwest::Response) -> RegistryError {
    let status = response.status();
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    use futures::StreamExt;
    while let Some(Ok(chunk)) = stream.next().await {
        body.extend_from_slice(&chunk);
        if body.len() > ERROR_BODY_LIMIT {
            body.truncate(ERROR_BODY_LIMIT);
            break;
        }
    }
    #[derive(Deserialize)]
    struct Envelope {
        #[serde(default)]
        errors: Vec<Detail>,
    }
    let details = serde_json::from_slice::<Envelope>(&body)
        .map(|e| e.errors)
        .unwrap_or_default();
    RegistryError {
        status,
        details,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Maps a refusal onto orca's error kinds.
pub(crate) fn convert(
    error: RegistryError,
    place: &str,
    operation: &'static str,
    what: String,
    retry_after: Option<Duration>,
) -> Error {
    let place = place.to_owned();
    let code = error.code().unwrap_or_default().to_owned();
    match error.status {
        StatusCode::UNAUTHORIZED | StatusCode::PROXY_AUTHENTICATION_REQUIRED => {
            Error::Unauthorized {
                place,
                message: format!("{what}: {}", error.message()),
            }
        }
        StatusCode::FORBIDDEN => Error::Denied {
            place,
            message: format!("{what}: {}", error.message()),
        },
        StatusCode::NOT_FOUND => Error::NotFound { what, place },
        StatusCode::TOO_MANY_REQUESTS => Error::RateLimited { place, retry_after },
        StatusCode::METHOD_NOT_ALLOWED => Error::Unsupported { operation, place },
        StatusCode::CONFLICT | StatusCode::PRECONDITION_FAILED => Error::Conflict { what, place },
        StatusCode::PAYLOAD_TOO_LARGE => Error::LimitExceeded {
            what: format!("{what} (refused by {place})"),
            limit: 0,
        },
        // Error codes say what is wrong with a request only on a client
        // error; a server error carrying one is still the server's fault
        // (and worth retrying, not a reason to change what is sent).
        status if status.is_client_error() && code == "UNSUPPORTED" => {
            Error::Unsupported { operation, place }
        }
        status if status.is_client_error() && code.starts_with("MANIFEST_") => {
            Error::InvalidManifest {
                what: format!("{what} for {place}"),
                reason: error.message(),
                source: None,
            }
        }
        status if status.is_client_error() => Error::Rejected {
            what,
            place,
            message: error.to_string(),
        },
        _ => Error::Backend {
            backend: place,
            operation,
            source: Box::new(error),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry_error(status: u16, code: &str) -> RegistryError {
        RegistryError {
            status: StatusCode::from_u16(status).expect("status"),
            details: vec![Detail {
                code: code.into(),
                message: "said the registry".into(),
            }],
            body: String::new(),
        }
    }

    #[test]
    fn codes_count_only_on_client_errors() {
        let convert = |status, code| {
            convert(
                registry_error(status, code),
                "r.example/a",
                "push",
                "manifest".into(),
                None,
            )
        };
        assert!(matches!(
            convert(400, "MANIFEST_INVALID"),
            Error::InvalidManifest { .. }
        ));
        assert!(matches!(
            convert(400, "UNSUPPORTED"),
            Error::Unsupported { .. }
        ));
        // A 5xx that happens to carry a manifest code is a server failure:
        // no reason for an artifact to fall back to the 1.0 form.
        let server = convert(500, "MANIFEST_INVALID");
        assert!(matches!(server, Error::Backend { .. }), "{server:?}");
        assert!(matches!(convert(503, "UNSUPPORTED"), Error::Backend { .. }));
    }
}
