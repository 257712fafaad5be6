//! The `Backend` contract for a registry repository: each operation of
//! the contract over the distribution API, built on the repository's wire
//! helpers and the upload, download and untag operations.

use std::ops::Range;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use orca_core::{
    Backend, Body, Capabilities, Descriptor, Digest, Error, Index, ListPage, ListQuery, MediaType,
    Pages, PushOptions, RawManifest, Referrers, Result, Selector,
};
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, RANGE};
use reqwest::{Method, StatusCode};

use crate::client::Request;
use crate::error::{convert, read_error};
use crate::repository::{
    DOCKER_CONTENT_DIGEST, OCI_FILTERS_APPLIED, RegistryBackend, TAG_PAGE, urlencode,
};
use crate::upload;

#[async_trait]
impl Backend for RegistryBackend {
    fn capabilities(&self) -> Capabilities {
        let mut capabilities = self.capabilities;
        capabilities.referrers_api = self.referrers_api.load(Ordering::Relaxed);
        capabilities
    }

    async fn exists(&self, descriptor: &Descriptor) -> Result<bool> {
        Ok(self.stat(descriptor).await?.is_some())
    }

    async fn stat(&self, descriptor: &Descriptor) -> Result<Option<u64>> {
        let mut request = Request::new(
            Method::HEAD,
            self.path(&format!(
                "{}/{}",
                Self::endpoint(descriptor),
                descriptor.digest
            )),
        );
        if descriptor.media_type.is_manifest() {
            request = request.header(ACCEPT, crate::repository::manifest_accept());
        }
        let response = self
            .client
            .send(&request, &self.scope(false), "exists")
            .await?;
        match response.status() {
            s if s.is_success() => {
                let length = response
                    .headers()
                    .get(reqwest::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                match length {
                    Some(length) => Ok(Some(length)),
                    // Present, of a size the registry did not say.
                    None => Ok(Some(descriptor.size)),
                }
            }
            StatusCode::NOT_FOUND => Ok(None),
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
            return match &options.tag {
                // One addressed by another algorithm than sha256 goes by
                // its digest, so it is reachable by its own digest and not
                // only as the tag's sha256.
                Some(tag) => upload::put_tagged(self, descriptor, bytes, tag).await,
                None => {
                    let by_digest = descriptor.digest.to_string();
                    upload::put_manifest(self, descriptor, bytes, &by_digest)
                        .await
                        .map(drop)
                }
            };
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
        let gone_already = response.status() == StatusCode::NOT_FOUND
            && response
                .extensions()
                .get::<crate::client::AfterUnknown>()
                .is_some();
        if response.status().is_success() || gone_already {
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
            .header(ACCEPT, crate::repository::manifest_accept());
        let response = self
            .client
            .send(&request, &self.scope(false), "resolve")
            .await?;
        if !response.status().is_success() {
            // A HEAD's 404 carries no body to tell a missing tag from a
            // missing repository: the tag list does (`NAME_UNKNOWN`).
            if response.status() == reqwest::StatusCode::NOT_FOUND
                && matches!(selector, Selector::Tag(_))
                && self.repository_unknown().await
            {
                return Err(Error::NotFound {
                    what: format!("repository {}", self.repository),
                    place: self.client.host.clone(),
                });
            }
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

    async fn fetch_tagged(&self, tag: &str) -> Result<(Descriptor, Body)> {
        // One GET: the body, its type and the digest the registry names
        // it by. The Store checks the bytes against that digest as they
        // are read; with no digest sent, the bytes name themselves.
        let (media_type, bytes, headers) = self.get_manifest(tag).await?;
        let sent = headers
            .get(DOCKER_CONTENT_DIGEST)
            .and_then(|v| v.to_str().ok())
            .map(|v| Digest::parse(v.trim()))
            .transpose()?;
        let descriptor = match sent {
            Some(digest) => Descriptor::new(media_type, digest, bytes.len() as u64),
            None => Descriptor::of(media_type, &bytes),
        };
        Ok((descriptor, Body::from_bytes(bytes)))
    }

    async fn tag(&self, descriptor: &Descriptor, tag: &str) -> Result<()> {
        let (media_type, bytes, headers) =
            self.get_manifest(&descriptor.digest.to_string()).await?;
        self.check_digest(&headers, &descriptor.digest)?;
        let raw = RawManifest::new(media_type, bytes.clone());
        let actual = orca_core::Digest::compute(descriptor.digest.algorithm(), &bytes);
        if actual != descriptor.digest {
            return Err(Error::DigestMismatch {
                what: format!("manifest {}", descriptor.digest),
                place: self.place.clone(),
                expected: descriptor.digest.clone(),
                actual,
            });
        }
        let mut tagged = descriptor.clone();
        tagged.media_type = raw.media_type().clone();
        upload::put_tagged(self, &tagged, bytes, tag).await
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
        let mut pages = Pages::new("tag list", self.place.clone());
        while let Some(next) = url.take() {
            pages.next(&next)?;
            let request = Request::new(Method::GET, next);
            let (headers, bytes) = match self.get_capped(&request, "tags", "tag list").await? {
                Ok(read) => read,
                Err(response) if response.status() == StatusCode::NOT_FOUND => {
                    // A repository nothing was pushed to yet has no tags.
                    let error = read_error(response).await;
                    if error.code() == Some("NAME_UNKNOWN") {
                        break;
                    }
                    return Err(convert(error, &self.place, "tags", "tag list".into(), None));
                }
                Err(response) => {
                    return Err(self.fail(response, "tags", "tag list".into()).await);
                }
            };
            url = self.next_link(&headers);
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
            let list = list.tags.unwrap_or_default();
            pages.read(list.len())?;
            tags.extend(list);
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
        let mut pages = Pages::new(
            format!("referrers of {}", subject.digest),
            self.place.clone(),
        );
        while let Some(url) = next.take() {
            pages.next(&url)?;
            let request =
                Request::new(Method::GET, url).header(ACCEPT, MediaType::OCI_INDEX.as_str());
            let read = self
                .get_capped(&request, "referrers", "referrers index")
                .await?;
            let (headers, bytes) = match read {
                Ok(read) => read,
                Err(response) => {
                    let what = format!("referrers of {}", subject.digest);
                    return Err(self.fail(response, "referrers", what).await);
                }
            };
            if artifact_type.is_some() {
                filtered = headers
                    .get(OCI_FILTERS_APPLIED)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.split(',').any(|f| f.trim() == "artifactType"));
            }
            next = self.next_link(&headers);
            let index: Index =
                serde_json::from_slice(&bytes).map_err(|e| Error::InvalidManifest {
                    what: format!("referrers index of {} from {}", subject.digest, self.place),
                    reason: "it is not an image index".into(),
                    source: Some(Box::new(e)),
                })?;
            pages.read(index.manifests.len())?;
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
            StatusCode::PARTIAL_CONTENT => {
                // The bytes must be the ones asked for (backends m9).
                let start = response
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(crate::repository::range_start);
                if start != Some(range.start) {
                    return Err(Error::Backend {
                        backend: self.place.clone(),
                        operation: "fetch_range",
                        source: format!(
                            "asked for bytes {}-{} of {}, the registry answered Content-Range {:?}",
                            range.start,
                            range.end - 1,
                            descriptor.digest,
                            response.headers().get(reqwest::header::CONTENT_RANGE)
                        )
                        .into(),
                    });
                }
            }
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
