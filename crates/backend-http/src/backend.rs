//! [`RegistryBackend`]: one repository of a registry, over the OCI
//! distribution API. Manifests are sent and received as exact bytes;
//! `Docker-Content-Digest` is checked; metadata responses are capped.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use orca_core::{
    Backend, Body, Capabilities, Descriptor, Digest, Error, Index, ListPage, ListQuery, MediaType,
    PushOptions, RawManifest, Referrers, Result, Selector,
};
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, LINK, LOCATION, RANGE};
use reqwest::{Method, Response, StatusCode};

use crate::client::{Client, Request};
use crate::error::{convert, read_error};
use crate::upload;

/// Every manifest type orca reads, for `Accept`.
pub(crate) const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.artifact.manifest.v1+json";
const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";
const OCI_FILTERS_APPLIED: &str = "oci-filters-applied";
/// Reads of one metadata document, when its body keeps breaking off.
const READ_ATTEMPTS: u32 = 3;
/// Tags asked for per page when listing.
const TAG_PAGE: usize = 1000;
/// Most pages followed through `Link` in one listing; more is an error,
/// never a silently cut list.
const MAX_PAGES: u64 = 10_000;

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
    pub(crate) options: Arc<crate::builder::Options>,
}

impl RegistryBackend {
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

    fn endpoint(descriptor: &Descriptor) -> &'static str {
        if descriptor.media_type.is_manifest() {
            "manifests"
        } else {
            "blobs"
        }
    }

    fn what(descriptor: &Descriptor) -> String {
        let kind = if descriptor.media_type.is_manifest() {
            "manifest"
        } else {
            "blob"
        };
        format!("{kind} {}", descriptor.digest)
    }

    /// Checks `Docker-Content-Digest`, when the registry sends it.
    fn check_digest(&self, headers: &HeaderMap, expected: &Digest) -> Result<()> {
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

    /// Reads a metadata body, refusing more than the configured cap.
    pub(crate) async fn read_capped(&self, response: Response, what: &str) -> Result<Bytes> {
        let limit = self.options.max_metadata_size;
        if let Some(len) = response.content_length()
            && len > limit
        {
            return Err(Error::LimitExceeded {
                what: format!("{what} from {} ({len} bytes)", self.place),
                limit,
            });
        }
        let mut buffer = BytesMut::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.network("read", e))?;
            if (buffer.len() + chunk.len()) as u64 > limit {
                return Err(Error::LimitExceeded {
                    what: format!("{what} from {}", self.place),
                    limit,
                });
            }
            buffer.extend_from_slice(&chunk);
        }
        Ok(buffer.freeze())
    }

    pub(crate) fn network(&self, operation: &'static str, e: reqwest::Error) -> Error {
        Error::Backend {
            backend: self.place.clone(),
            operation,
            source: Box::new(e.without_url()),
        }
    }

    /// GETs a manifest's exact bytes.
    /// GETs a manifest. A connection lost while its body arrives is
    /// answered by asking again (a GET is idempotent), a few times.
    async fn get_manifest(&self, reference: &str) -> Result<(MediaType, Bytes, HeaderMap)> {
        let request = Request::new(Method::GET, self.path(&format!("manifests/{reference}")))
            .header(ACCEPT, MANIFEST_ACCEPT);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let response = self
                .client
                .send(&request, &self.scope(false), "fetch")
                .await?;
            if !response.status().is_success() {
                return Err(self
                    .fail(response, "fetch", format!("manifest {reference}"))
                    .await);
            }
            let headers = response.headers().clone();
            let media_type = headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(MediaType::from)
                .unwrap_or(MediaType::OCI_MANIFEST);
            match self.read_capped(response, "manifest").await {
                Ok(bytes) => return Ok((media_type, bytes, headers)),
                Err(Error::Backend { .. }) if attempt < READ_ATTEMPTS => {
                    tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
                }
                Err(e) => return Err(e),
            }
        }
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

    /// Refuses a `Link` that leads back to a page already read, which
    /// would otherwise be followed until the page cap.
    fn check_page(
        &self,
        seen: &mut std::collections::HashSet<String>,
        url: &str,
        what: &str,
    ) -> Result<()> {
        if seen.insert(url.to_owned()) {
            return Ok(());
        }
        Err(Error::Backend {
            backend: self.place.clone(),
            operation: "list",
            source: format!("the {what}'s Link header leads back to {url}, a page already read")
                .into(),
        })
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

#[async_trait]
impl Backend for RegistryBackend {
    fn capabilities(&self) -> Capabilities {
        let mut capabilities = self.capabilities;
        capabilities.referrers_api = self.referrers_api.load(Ordering::Relaxed);
        capabilities
    }

    async fn exists(&self, descriptor: &Descriptor) -> Result<bool> {
        let mut request = Request::new(
            Method::HEAD,
            self.path(&format!(
                "{}/{}",
                Self::endpoint(descriptor),
                descriptor.digest
            )),
        );
        if descriptor.media_type.is_manifest() {
            request = request.header(ACCEPT, MANIFEST_ACCEPT);
        }
        let response = self
            .client
            .send(&request, &self.scope(false), "exists")
            .await?;
        match response.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.fail(response, "exists", Self::what(descriptor)).await),
        }
    }

    async fn fetch(&self, descriptor: &Descriptor) -> Result<Body> {
        if descriptor.media_type.is_manifest() {
            let (_, bytes, headers) = self.get_manifest(&descriptor.digest.to_string()).await?;
            self.check_digest(&headers, &descriptor.digest)?;
            return Ok(Body::from_bytes(bytes));
        }
        let response = self.get_blob(descriptor, 0).await?;
        let len = response.content_length().unwrap_or(descriptor.size);
        Ok(crate::download::resuming(
            self.clone(),
            descriptor.clone(),
            response,
            len,
        ))
    }

    async fn push(&self, descriptor: &Descriptor, body: Body, options: &PushOptions) -> Result<()> {
        if descriptor.media_type.is_manifest() {
            let bytes = body.bytes(self.options.max_metadata_size).await?;
            // A manifest addressed by another algorithm than the registry's
            // canonical sha256 is put by digest first, so it is reachable
            // by its own digest and not only as the tag's sha256.
            if descriptor.digest.algorithm() != orca_core::Algorithm::Sha256
                && options.tag.is_some()
            {
                let by_digest = descriptor.digest.to_string();
                upload::put_manifest(self, descriptor, bytes.clone(), &by_digest).await?;
            }
            let reference = options
                .tag
                .clone()
                .unwrap_or_else(|| descriptor.digest.to_string());
            return upload::put_manifest(self, descriptor, bytes, &reference).await;
        }
        if self.exists(descriptor).await? {
            return Ok(());
        }
        upload::push_blob(self, descriptor, body, options.offset).await
    }

    async fn partial(&self, descriptor: &Descriptor) -> Result<u64> {
        Ok(upload::open_session(self, descriptor)
            .await?
            .map_or(0, |(_, held)| held))
    }

    async fn delete(&self, descriptor: &Descriptor) -> Result<()> {
        let request = Request::new(
            Method::DELETE,
            self.path(&format!(
                "{}/{}",
                Self::endpoint(descriptor),
                descriptor.digest
            )),
        );
        let response = self
            .client
            .send(&request, &self.scope(true), "delete")
            .await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(self.fail(response, "delete", Self::what(descriptor)).await)
        }
    }

    async fn resolve(&self, selector: &Selector) -> Result<Descriptor> {
        let reference = selector.to_string();
        let what = match selector {
            Selector::Tag(tag) => format!("tag {tag}"),
            Selector::Digest(d) => format!("manifest {d}"),
        };
        let request = Request::new(Method::HEAD, self.path(&format!("manifests/{reference}")))
            .header(ACCEPT, MANIFEST_ACCEPT);
        let response = self
            .client
            .send(&request, &self.scope(false), "resolve")
            .await?;
        if !response.status().is_success() {
            return Err(self.fail(response, "resolve", what).await);
        }
        let headers = response.headers();
        let media_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(MediaType::from);
        let digest = headers
            .get(DOCKER_CONTENT_DIGEST)
            .and_then(|v| v.to_str().ok())
            .map(|d| Digest::parse(d.trim()))
            .transpose()?;
        let size = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let (Some(media_type), Some(digest), Some(size)) = (media_type, digest, size) {
            return Ok(Descriptor::new(media_type, digest, size));
        }
        // Registries that leave something out of HEAD: read the manifest.
        let (media_type, bytes, _) = self.get_manifest(&reference).await?;
        Ok(Descriptor::of(media_type, &bytes))
    }

    async fn tag(&self, descriptor: &Descriptor, tag: &str) -> Result<()> {
        let (media_type, bytes, headers) =
            self.get_manifest(&descriptor.digest.to_string()).await?;
        self.check_digest(&headers, &descriptor.digest)?;
        let raw = RawManifest::new(media_type, bytes.clone());
        if raw.digest() != descriptor.digest {
            return Err(Error::DigestMismatch {
                what: format!("manifest {}", descriptor.digest),
                place: self.place.clone(),
                expected: descriptor.digest.clone(),
                actual: raw.digest(),
            });
        }
        let mut tagged = descriptor.clone();
        tagged.media_type = raw.media_type().clone();
        upload::put_manifest(self, &tagged, bytes, tag).await
    }

    async fn swap_tag(&self, _: &str, _: Option<&Digest>, _: Option<&Descriptor>) -> Result<()> {
        // The distribution API has no conditional tag update.
        Err(Error::Unsupported {
            operation: "swap_tag",
            place: self.place.clone(),
        })
    }

    async fn untag(&self, tag: &str) -> Result<()> {
        crate::untag::untag(self, tag).await
    }

    async fn tags(&self, _: &ListQuery) -> Result<ListPage> {
        // Registries differ in honouring `n` (Debian's ignores it), so the
        // whole list is read here, following `Link`, and `Store` pages it.
        let mut url = Some(self.path(&format!("tags/list?n={TAG_PAGE}")));
        let mut tags = Vec::new();
        let mut pages = 0;
        let mut seen = std::collections::HashSet::new();
        while let Some(next) = url.take() {
            self.check_page(&mut seen, &next, "tag list")?;
            pages += 1;
            if pages > MAX_PAGES {
                return Err(Error::LimitExceeded {
                    what: format!("pages of the tag list of {}", self.place),
                    limit: MAX_PAGES,
                });
            }
            let request = Request::new(Method::GET, next);
            let response = self
                .client
                .send(&request, &self.scope(false), "tags")
                .await?;
            if response.status() == StatusCode::NOT_FOUND {
                // A repository nothing was pushed to yet has no tags.
                let error = read_error(response).await;
                if error.code() == Some("NAME_UNKNOWN") {
                    break;
                }
                return Err(convert(error, &self.place, "tags", "tag list".into(), None));
            }
            if !response.status().is_success() {
                return Err(self.fail(response, "tags", "tag list".into()).await);
            }
            url = self.next_link(response.headers());
            let bytes = self.read_capped(response, "tag list").await?;
            #[derive(serde::Deserialize)]
            struct TagList {
                #[serde(default)]
                tags: Option<Vec<String>>,
            }
            let list: TagList = serde_json::from_slice(&bytes).map_err(|e| Error::Backend {
                backend: self.place.clone(),
                operation: "tags",
                source: Box::new(e),
            })?;
            tags.extend(list.tags.unwrap_or_default());
        }
        tags.sort();
        tags.dedup();
        Ok(ListPage::new(tags, None))
    }

    async fn referrers(
        &self,
        subject: &Descriptor,
        artifact_type: Option<&MediaType>,
    ) -> Result<Referrers> {
        let mut url = self.path(&format!("referrers/{}", subject.digest));
        if let Some(t) = artifact_type {
            url.push_str(&format!("?artifactType={}", urlencode(t.as_str())));
        }
        let mut next = Some(url);
        let mut manifests = Vec::new();
        let mut filtered = artifact_type.is_none();
        let mut pages = 0;
        let mut seen = std::collections::HashSet::new();
        while let Some(url) = next.take() {
            self.check_page(&mut seen, &url, "referrers")?;
            pages += 1;
            if pages > MAX_PAGES {
                return Err(Error::LimitExceeded {
                    what: format!(
                        "pages of the referrers of {} in {}",
                        subject.digest, self.place
                    ),
                    limit: MAX_PAGES,
                });
            }
            let request =
                Request::new(Method::GET, url).header(ACCEPT, MediaType::OCI_INDEX.as_str());
            let response = self
                .client
                .send(&request, &self.scope(false), "referrers")
                .await?;
            if !response.status().is_success() {
                return Err(self
                    .fail(
                        response,
                        "referrers",
                        format!("referrers of {}", subject.digest),
                    )
                    .await);
            }
            if artifact_type.is_some() {
                filtered = response
                    .headers()
                    .get(OCI_FILTERS_APPLIED)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.split(',').any(|f| f.trim() == "artifactType"));
            }
            next = self.next_link(response.headers());
            let bytes = self.read_capped(response, "referrers index").await?;
            let index: Index =
                serde_json::from_slice(&bytes).map_err(|e| Error::InvalidManifest {
                    what: format!("referrers index of {} from {}", subject.digest, self.place),
                    reason: "it is not an image index".into(),
                    source: Some(Box::new(e)),
                })?;
            manifests.extend(index.manifests);
        }
        Ok(Referrers::new(manifests, filtered))
    }

    async fn mount(&self, descriptor: &Descriptor, from: &str) -> Result<bool> {
        upload::mount(self, descriptor, from).await
    }

    async fn fetch_range(&self, descriptor: &Descriptor, range: Range<u64>) -> Result<Body> {
        if range.is_empty() {
            // An empty byte range cannot be asked for; only existence matters.
            if !self.exists(descriptor).await? {
                return Err(Error::NotFound {
                    what: Self::what(descriptor),
                    place: self.place.clone(),
                });
            }
            return Ok(Body::from_bytes(Bytes::new()));
        }
        let request = Request::new(
            Method::GET,
            self.path(&format!("blobs/{}", descriptor.digest)),
        )
        .header(RANGE, format!("bytes={}-{}", range.start, range.end - 1));
        let response = self
            .client
            .send(&request, &self.scope(false), "fetch_range")
            .await?;
        let len = range.end - range.start;
        match response.status() {
            StatusCode::PARTIAL_CONTENT => {}
            StatusCode::OK if range.start == 0 && len == descriptor.size => {}
            s if s.is_success() => {
                return Err(Error::Unsupported {
                    operation: "fetch_range",
                    place: self.place.clone(),
                });
            }
            _ => {
                return Err(self
                    .fail(response, "fetch_range", Self::what(descriptor))
                    .await);
            }
        }
        let place = self.place.clone();
        let stream = response.bytes_stream().map_err(move |e| Error::Backend {
            backend: place.clone(),
            operation: "fetch_range",
            source: Box::new(e.without_url()),
        });
        Ok(Body::new(len, stream))
    }

    async fn catalog(&self, query: &ListQuery) -> Result<ListPage> {
        crate::registry::catalog(&self.client, &self.place, &self.options, query).await
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
fn range_start(value: &str) -> Option<u64> {
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
    Some(client.resolve_location(location))
}

#[cfg(test)]
mod tests {
    use super::{next_target, range_start};

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
