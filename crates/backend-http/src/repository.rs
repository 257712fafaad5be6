//! [`RegistryBackend`]: one repository of a registry, and the wire
//! helpers every operation on it uses — paths and scopes, capped reads,
//! error answers, `Location`, `Link` and `Content-Range` parsing. The
//! operations (`upload`, `download`, `untag`) build on this; `backend`
//! implements the `Backend` contract on top of them.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use orca_core::{Capabilities, Descriptor, Digest, Error, MediaType, Result};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, LINK, LOCATION, RANGE};
use reqwest::{Method, Response, StatusCode};

use crate::client::{Client, Request};
use crate::error::{convert, read_error};

/// Every manifest type orca reads, for `Accept`.
pub(crate) const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.artifact.manifest.v1+json";
/// [`MANIFEST_ACCEPT`] and schema 1, asked for only when it is allowed.
const MANIFEST_ACCEPT_SCHEMA1: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.artifact.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v1+prettyjws, \
     application/vnd.docker.distribution.manifest.v1+json";

/// The `Accept` of manifest requests: schema 1 only when it is allowed.
pub(crate) fn manifest_accept() -> &'static str {
    if orca_core::model::schema1_allowed() {
        MANIFEST_ACCEPT_SCHEMA1
    } else {
        MANIFEST_ACCEPT
    }
}
pub(crate) const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";
pub(crate) const OCI_FILTERS_APPLIED: &str = "oci-filters-applied";
/// Reads of one metadata document, when its body keeps breaking off.
const READ_ATTEMPTS: u32 = 3;
/// Tags asked for per page when listing.
pub(crate) const TAG_PAGE: usize = 1000;

/// Tuning shared by the repositories of a registry.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) max_metadata_size: u64,
    pub(crate) chunk_threshold: u64,
    pub(crate) chunk_size: u64,
    /// Where open upload sessions are remembered, when uploads resume.
    pub(crate) sessions: Option<crate::sessions::Sessions>,
}

/// One repository of a registry.
#[derive(Clone)]
pub struct RegistryBackend {
    pub(crate) client: Arc<Client>,
    pub(crate) repository: String,
    pub(crate) place: String,
    pub(crate) capabilities: Capabilities,
    /// Whether the registry indexes subjects (Referrers API): probed when
    /// the repository is opened, then learnt from `OCI-Subject` on pushes.
    pub(crate) referrers_api: Arc<AtomicBool>,
    pub(crate) options: Arc<Options>,
}

impl RegistryBackend {
    /// Whether the registry says this repository does not exist
    /// (`NAME_UNKNOWN` from its tag list); `false` when it cannot tell.
    pub async fn repository_unknown(&self) -> bool {
        let request = crate::client::Request::new(
            reqwest::Method::GET,
            format!("{}?n=1", self.path("tags/list")),
        );
        match self.client.send(&request, &self.scope(false), "tags").await {
            Ok(response) if response.status() == reqwest::StatusCode::NOT_FOUND => {
                let error = crate::error::read_error(response).await;
                error.details_codes().any(|code| code == "NAME_UNKNOWN")
            }
            _ => false,
        }
    }

    /// The repository name.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub(crate) fn scope(&self, push: bool) -> String {
        let actions = if push { "pull,push" } else { "pull" };
        format!("repository:{}:{actions}", self.repository)
    }

    pub(crate) fn path(&self, rest: &str) -> String {
        self.client.url(&format!("/v2/{}/{rest}", self.repository))
    }

    pub(crate) async fn fail(
        &self,
        response: Response,
        operation: &'static str,
        what: String,
    ) -> Error {
        let retry = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .map(std::time::Duration::from_secs);
        convert(
            read_error(response).await,
            &self.place,
            operation,
            what,
            retry,
        )
    }

    pub(crate) fn endpoint(descriptor: &Descriptor) -> &'static str {
        if descriptor.media_type.is_manifest() {
            "manifests"
        } else {
            "blobs"
        }
    }

    pub(crate) fn what(descriptor: &Descriptor) -> String {
        let kind = if descriptor.media_type.is_manifest() {
            "manifest"
        } else {
            "blob"
        };
        format!("{kind} {}", descriptor.digest)
    }

    /// Checks `Docker-Content-Digest`, when the registry sends it.
    pub(crate) fn check_digest(&self, headers: &HeaderMap, expected: &Digest) -> Result<()> {
        let Some(sent) = headers
            .get(DOCKER_CONTENT_DIGEST)
            .and_then(|v| v.to_str().ok())
        else {
            return Ok(());
        };
        let sent = Digest::parse(sent.trim())?;
        if &sent != expected {
            return Err(Error::DigestMismatch {
                what: format!("Docker-Content-Digest for {expected}"),
                place: self.place.clone(),
                expected: expected.clone(),
                actual: sent,
            });
        }
        Ok(())
    }

    /// [`get_capped`] on this repository, with its pull scope and limit.
    pub(crate) async fn get_capped(
        &self,
        request: &Request,
        operation: &'static str,
        what: &str,
    ) -> Result<std::result::Result<(HeaderMap, Bytes), Response>> {
        let scope = self.scope(false);
        let read = Read {
            place: &self.place,
            scope: &scope,
            operation,
            what,
            limit: self.options.max_metadata_size,
        };
        get_capped(&self.client, request, &read).await
    }

    /// GETs a manifest.
    pub(crate) async fn get_manifest(
        &self,
        reference: &str,
    ) -> Result<(MediaType, Bytes, HeaderMap)> {
        let request = Request::new(Method::GET, self.path(&format!("manifests/{reference}")))
            .header(ACCEPT, manifest_accept());
        let (headers, bytes) = match self.get_capped(&request, "fetch", "manifest").await? {
            Ok(read) => read,
            Err(response) => {
                return Err(self
                    .fail(response, "fetch", format!("manifest {reference}"))
                    .await);
            }
        };
        let media_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(MediaType::from)
            .unwrap_or(MediaType::OCI_MANIFEST);
        Ok((media_type, bytes, headers))
    }

    /// GETs a blob from `offset` on (a `Range` request past the start,
    /// which must be answered with 206).
    pub(crate) async fn get_blob(&self, descriptor: &Descriptor, offset: u64) -> Result<Response> {
        let mut request = Request::new(
            Method::GET,
            self.path(&format!("blobs/{}", descriptor.digest)),
        );
        if offset > 0 {
            request = request.header(RANGE, format!("bytes={offset}-"));
        }
        let response = self
            .client
            .send(&request, &self.scope(false), "fetch")
            .await?;
        match response.status() {
            StatusCode::PARTIAL_CONTENT if offset > 0 => {
                // The bytes must start where the download stopped, or they
                // would be spliced in at the wrong place.
                let start = response
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(range_start);
                if start != Some(offset) {
                    return Err(Error::Backend {
                        backend: self.place.clone(),
                        operation: "fetch",
                        source: format!(
                            "asked for {} from byte {offset}, the registry answered Content-Range {:?}",
                            descriptor.digest,
                            response.headers().get(reqwest::header::CONTENT_RANGE)
                        )
                        .into(),
                    });
                }
                Ok(response)
            }
            s if s.is_success() && offset == 0 => Ok(response),
            s if s.is_success() => Err(Error::Unsupported {
                operation: "resuming a download (the registry ignored Range)",
                place: self.place.clone(),
            }),
            _ => Err(self.fail(response, "fetch", Self::what(descriptor)).await),
        }
    }

    /// Follows `Link: <…>; rel="next"`.
    pub(crate) fn next_link(&self, headers: &HeaderMap) -> Option<String> {
        let target = headers
            .get_all(LINK)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(next_target)?;
        Some(self.client.resolve_location(&target))
    }
}

impl fmt::Display for RegistryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.place)
    }
}

impl fmt::Debug for RegistryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryBackend")
            .field("place", &self.place)
            .field("capabilities", &self.capabilities)
            .finish_non_exhaustive()
    }
}

/// Percent-encodes a query value.
pub(crate) fn urlencode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `Location` of a response, resolved against the registry.
/// The target of the `rel="next"` link among the comma-separated links of
/// one `Link` header value.
pub(crate) fn next_target(header: &str) -> Option<String> {
    // Commas may appear inside `<…>`, so split at `>` boundaries.
    let mut rest = header;
    while let Some(open) = rest.find('<') {
        let close = open + rest[open..].find('>')?;
        let target = &rest[open + 1..close];
        let params_end = rest[close..].find(',').map_or(rest.len(), |i| close + i);
        let params = &rest[close + 1..params_end];
        let is_next = params.split(';').any(|p| {
            let p = p.trim();
            p.strip_prefix("rel=")
                .map(|v| v.trim_matches('"'))
                .is_some_and(|v| v.split_whitespace().any(|r| r.eq_ignore_ascii_case("next")))
        });
        if is_next {
            return Some(target.to_owned());
        }
        rest = &rest[params_end..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    None
}

/// The first byte of a `Content-Range: bytes START-END/TOTAL` value.
pub(crate) fn range_start(value: &str) -> Option<u64> {
    value
        .trim()
        .strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

pub(crate) fn location(client: &Client, response: &Response) -> Option<String> {
    let location = response.headers().get(LOCATION)?.to_str().ok()?;
    // A relative Location is relative to the URL it answered (RFC 3986),
    // not to the host's root (backends m11).
    if !location.starts_with('/') && !location.contains("://") {
        return relative_to(response.url(), location);
    }
    Some(client.resolve_location(location))
}

/// `reference` resolved against `base` as RFC 3986 says.
fn relative_to(base: &reqwest::Url, reference: &str) -> Option<String> {
    base.join(reference).ok().map(String::from)
}

/// What a capped metadata read is about, for [`get_capped`].
pub(crate) struct Read<'a> {
    /// The registry or repository, for messages.
    pub(crate) place: &'a str,
    /// The token scope the request needs.
    pub(crate) scope: &'a str,
    /// The operation, for messages.
    pub(crate) operation: &'static str,
    /// The document, for messages.
    pub(crate) what: &'a str,
    /// The largest body read.
    pub(crate) limit: u64,
}

/// Sends a GET for a metadata document and reads its body, capped. A
/// connection lost while the body arrives is answered by asking again (a
/// GET is idempotent), a few times. An answer that is not a success is
/// handed back for the caller to judge.
pub(crate) async fn get_capped(
    client: &Client,
    request: &Request,
    read: &Read<'_>,
) -> Result<std::result::Result<(HeaderMap, Bytes), Response>> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let response = client.send(request, read.scope, read.operation).await?;
        if !response.status().is_success() {
            return Ok(Err(response));
        }
        let headers = response.headers().clone();
        match read_capped(response, read).await {
            Ok(bytes) => return Ok(Ok((headers, bytes))),
            Err(Error::Backend { .. }) if attempt < READ_ATTEMPTS => {
                tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Reads a metadata body, refusing one longer than the limit before or
/// while it arrives.
async fn read_capped(response: Response, read: &Read<'_>) -> Result<Bytes> {
    // Named by the digest the registry gives it, when it gives one (a
    // manifest fetched by tag).
    let digest = response
        .headers()
        .get(DOCKER_CONTENT_DIGEST)
        .and_then(|v| v.to_str().ok())
        .map(|d| format!(" {}", d.trim()))
        .unwrap_or_default();
    let too_long = |detail: String| Error::LimitExceeded {
        what: format!("{}{digest} from {}{detail}", read.what, read.place),
        limit: read.limit,
    };
    if let Some(len) = response.content_length()
        && len > read.limit
    {
        return Err(too_long(format!(" ({len} bytes)")));
    }
    // However it trickles, a capped read ends: within a minute, plus the
    // cap's time at 16 KiB/s (backends m6; one byte a minute never trips
    // an idle timeout).
    let deadline = std::time::Duration::from_secs(60 + read.limit / (16 * 1024));
    let reading = async {
        let mut buffer = BytesMut::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| Error::Backend {
                backend: read.place.to_owned(),
                operation: "read",
                source: Box::new(e.without_url()),
            })?;
            if (buffer.len() + chunk.len()) as u64 > read.limit {
                return Err(too_long(String::new()));
            }
            buffer.extend_from_slice(&chunk);
        }
        Ok(buffer.freeze())
    };
    tokio::time::timeout(deadline, reading)
        .await
        .unwrap_or_else(|_| {
            Err(Error::Backend {
                backend: read.place.to_owned(),
                operation: "read",
                source: format!(
                    "the {} took longer than {} s to arrive",
                    read.what,
                    deadline.as_secs()
                )
                .into(),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::{next_target, range_start, relative_to};

    /// Backends review m11: a relative Location is resolved against the
    /// URL it answered, not the host's root.
    #[test]
    fn m11_a_relative_location_is_relative_to_the_request() {
        let base = reqwest::Url::parse("http://h:5000/v2/a/blobs/uploads/").expect("url");
        assert_eq!(
            relative_to(&base, "x?_state=1").as_deref(),
            Some("http://h:5000/v2/a/blobs/uploads/x?_state=1")
        );
        assert_eq!(
            relative_to(&base, "../y").as_deref(),
            Some("http://h:5000/v2/a/blobs/y")
        );
    }

    #[test]
    fn the_next_link_is_the_one_marked_next() {
        assert_eq!(
            next_target(r#"</v2/a/tags/list?n=2&last=b>; rel="next""#).as_deref(),
            Some("/v2/a/tags/list?n=2&last=b")
        );
        // Not the first URL when another relation comes first.
        assert_eq!(
            next_target(
                r#"</v2/a/tags/list?n=2>; rel="prev", </v2/a/tags/list?n=2&last=d>; rel="next""#
            )
            .as_deref(),
            Some("/v2/a/tags/list?n=2&last=d")
        );
        assert_eq!(
            next_target(r#"</x?a=1,2>; rel=next"#).as_deref(),
            Some("/x?a=1,2")
        );
        assert_eq!(next_target(r#"</v2/a/tags/list?n=2>; rel="prev""#), None);
        assert_eq!(next_target(r#"</v2/x>; title="next""#), None);
        assert_eq!(next_target("garbage <"), None);
    }

    #[test]
    fn content_ranges_name_their_start() {
        assert_eq!(range_start("bytes 100-199/200"), Some(100));
        assert_eq!(range_start("bytes */200"), None);
        assert_eq!(range_start("items 1-2/3"), None);
    }
}
