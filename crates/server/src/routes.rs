//! The spec's endpoint table: a request path read into the route it names.
//! Repository names hold slashes, so the path is read from its end (the
//! last `/manifests/`, `/blobs/`, …), then the name is checked.

use crate::errors::ApiError;

/// What a request path names.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// `/v2/`.
    Ping,
    /// `/v2/_catalog`.
    Catalog,
    /// `/v2/<name>/tags/list`.
    Tags { name: String },
    /// `/v2/<name>/manifests/<reference>`.
    Manifest { name: String, reference: String },
    /// `/v2/<name>/blobs/<digest>`.
    Blob { name: String, digest: String },
    /// `/v2/<name>/blobs/uploads/` (a new session).
    Uploads { name: String },
    /// `/v2/<name>/blobs/uploads/<id>`.
    Upload { name: String, id: String },
    /// `/v2/<name>/referrers/<digest>`.
    Referrers { name: String, digest: String },
}

impl Route {
    /// The repository the route names, to be changed in place.
    pub(crate) fn name_mut(&mut self) -> Option<&mut String> {
        match self {
            Route::Tags { name }
            | Route::Manifest { name, .. }
            | Route::Blob { name, .. }
            | Route::Uploads { name }
            | Route::Upload { name, .. }
            | Route::Referrers { name, .. } => Some(name),
            Route::Ping | Route::Catalog => None,
        }
    }

    /// The route's name in metrics.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Route::Ping => "ping",
            Route::Catalog => "catalog",
            Route::Tags { .. } => "tags",
            Route::Manifest { .. } => "manifest",
            Route::Blob { .. } => "blob",
            Route::Uploads { .. } | Route::Upload { .. } => "upload",
            Route::Referrers { .. } => "referrers",
        }
    }
}

/// The route of `path`; `None` for a path outside the API.
pub(crate) fn route(path: &str) -> Result<Option<Route>, ApiError> {
    let Some(rest) = path.strip_prefix("/v2") else {
        return Ok(None);
    };
    if rest.is_empty() || rest == "/" {
        return Ok(Some(Route::Ping));
    }
    let Some(rest) = rest.strip_prefix('/') else {
        return Ok(None);
    };
    if rest == "_catalog" {
        return Ok(Some(Route::Catalog));
    }
    let named = |name: &str| -> Result<String, ApiError> {
        orca::model::reference::validate_repository(name)
            .map_err(|why| ApiError::name_invalid(name, why))?;
        Ok(name.to_owned())
    };
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Ok(Some(Route::Tags { name: named(name)? }));
    }
    if let Some(name) = rest
        .strip_suffix("/blobs/uploads/")
        .or_else(|| rest.strip_suffix("/blobs/uploads"))
    {
        return Ok(Some(Route::Uploads { name: named(name)? }));
    }
    if let Some((name, id)) = rest.rsplit_once("/blobs/uploads/") {
        return Ok(Some(Route::Upload {
            name: named(name)?,
            id: id.to_owned(),
        }));
    }
    if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
        return Ok(Some(Route::Blob {
            name: named(name)?,
            digest: digest.to_owned(),
        }));
    }
    if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        return Ok(Some(Route::Manifest {
            name: named(name)?,
            reference: reference.to_owned(),
        }));
    }
    if let Some((name, digest)) = rest.rsplit_once("/referrers/") {
        return Ok(Some(Route::Referrers {
            name: named(name)?,
            digest: digest.to_owned(),
        }));
    }
    Ok(None)
}

/// The query's values for `key`, decoded.
pub(crate) fn query_values(query: Option<&str>, key: &str) -> Vec<String> {
    let Some(query) = query else {
        return Vec::new();
    };
    query
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k) == key).then(|| decode(v))
        })
        .collect()
}

/// The query's first value for `key`.
pub(crate) fn query_value(query: Option<&str>, key: &str) -> Option<String> {
    query_values(query, key).into_iter().next()
}

/// Percent-decoding of a query component (`+` is a space).
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_read_from_their_end() {
        assert_eq!(route("/v2/").ok().flatten(), Some(Route::Ping));
        assert_eq!(
            route("/v2/a/b/manifests/v1").ok().flatten(),
            Some(Route::Manifest {
                name: "a/b".into(),
                reference: "v1".into()
            })
        );
        assert_eq!(
            route("/v2/blobs/blobs/uploads/x").ok().flatten(),
            Some(Route::Upload {
                name: "blobs".into(),
                id: "x".into()
            })
        );
        assert_eq!(
            route("/v2/a/blobs/uploads/").ok().flatten(),
            Some(Route::Uploads { name: "a".into() })
        );
        assert!(route("/v2/A/tags/list").is_err());
        assert!(route("/v2/a/../b/tags/list").is_err());
        assert_eq!(route("/other").ok().flatten(), None);
        assert_eq!(
            query_values(Some("tag=a&x=1&tag=b%2Bc"), "tag"),
            ["a", "b+c"]
        );
    }
}
