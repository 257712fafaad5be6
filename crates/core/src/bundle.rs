//! Bundles: many repositories in one backend that holds a single tag
//! namespace (an OCI image layout, in a directory, an archive or a
//! bucket). Each image is named `<repository>:<tag>` in the layout's
//! `org.opencontainers.image.ref.name`, the form skopeo (`oci:DIR:REPO:TAG`)
//! and umoci (`--image DIR:REPO:TAG`) read; blobs are shared by all.
//!
//! [`Namespaced`] is one repository's view of a bundle: its tags are the
//! bundle's tags under `<repository>:`, without the prefix.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;

use crate::backend::{Backend, ListPage, ListQuery, PushOptions, Referrers};
use crate::body::Body;
use crate::capabilities::Capabilities;
use crate::error::{Error, Result};
use crate::model::{Descriptor, Digest, MediaType, Selector};

/// Every name a bundle holds, following its pages (a plugin's backend may
/// page even when asked for all) under [`Pages`](crate::backend::Pages).
async fn names(bundle: &dyn Backend) -> Result<Vec<String>> {
    crate::backend::Pages::new("names", bundle.to_string())
        .collect(ListQuery::all(), |query| async move {
            bundle.tags(&query).await
        })
        .await
}

/// The repositories a bundle holds: the distinct `<repository>` parts of
/// its `<repository>:<tag>` names, sorted. Plain tags are not counted.
pub async fn repositories(bundle: &dyn Backend) -> Result<Vec<String>> {
    let mut names: Vec<String> = names(bundle)
        .await?
        .iter()
        .filter_map(|name| name.rsplit_once(':').map(|(repository, _)| repository))
        .filter(|repository| !repository.is_empty())
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// One repository of a bundle, as a backend of its own.
#[derive(Debug, Clone)]
pub struct Namespaced {
    inner: Arc<dyn Backend>,
    repository: String,
}

impl Namespaced {
    /// The view of `repository` in `bundle`. The name must be a repository
    /// path (lowercase components separated by `/`, as registries name
    /// them); anything else is `InvalidReference`.
    pub fn new(bundle: Arc<dyn Backend>, repository: &str) -> Result<Self> {
        crate::model::reference::validate_repository(repository).map_err(|reason| {
            Error::InvalidReference {
                input: repository.to_owned(),
                reason,
            }
        })?;
        Ok(Namespaced {
            inner: bundle,
            repository: repository.to_owned(),
        })
    }

    /// The repository this view shows.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    fn full(&self, tag: &str) -> String {
        format!("{}:{tag}", self.repository)
    }

    fn selector(&self, selector: &Selector) -> Selector {
        match selector {
            Selector::Tag(tag) => Selector::Tag(self.full(tag)),
            other => other.clone(),
        }
    }
}

impl fmt::Display for Namespaced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.inner, self.repository)
    }
}

#[async_trait]
impl Backend for Namespaced {
    fn capabilities(&self) -> Capabilities {
        let mut capabilities = self.inner.capabilities();
        // Content is shared by every repository of the bundle: deleting it
        // through one would take it from the others (garbage collection
        // removes what no name holds), and mounting between them is moot.
        capabilities.delete = false;
        capabilities.mount = false;
        capabilities.catalog = false;
        // Tags are filtered out of the bundle's whole list.
        capabilities.tag_list_pagination = false;
        capabilities
    }

    async fn exists(&self, descriptor: &Descriptor) -> Result<bool> {
        // What the bundle holds, whichever repository pushed it. A referrer
        // another repository pushed is listed here by copy's repair of held
        // but unlisted referrers (`copy::relist`), not by a false answer.
        self.inner.exists(descriptor).await
    }

    async fn stat(&self, descriptor: &Descriptor) -> Result<Option<u64>> {
        self.inner.stat(descriptor).await
    }

    async fn fetch(&self, descriptor: &Descriptor) -> Result<Body> {
        self.inner.fetch(descriptor).await
    }

    async fn push(&self, descriptor: &Descriptor, body: Body, options: &PushOptions) -> Result<()> {
        let mut options = options.clone();
        options.tag = options.tag.map(|tag| self.full(&tag));
        self.inner.push(descriptor, body, &options).await
    }

    async fn partial(&self, descriptor: &Descriptor) -> Result<u64> {
        self.inner.partial(descriptor).await
    }

    async fn delete(&self, _descriptor: &Descriptor) -> Result<()> {
        // Untag it, then collect garbage: what no name holds goes.
        Err(Error::Unsupported {
            operation: "delete (from one repository of a bundle)",
            place: self.to_string(),
        })
    }

    async fn resolve(&self, selector: &Selector) -> Result<Descriptor> {
        self.inner.resolve(&self.selector(selector)).await
    }

    async fn tag(&self, descriptor: &Descriptor, tag: &str) -> Result<()> {
        self.inner.tag(descriptor, &self.full(tag)).await
    }

    async fn untag(&self, tag: &str) -> Result<()> {
        self.inner.untag(&self.full(tag)).await
    }

    async fn swap_tag(
        &self,
        tag: &str,
        expected: Option<&Digest>,
        new: Option<&Descriptor>,
    ) -> Result<()> {
        self.inner.swap_tag(&self.full(tag), expected, new).await
    }

    async fn tags(&self, query: &ListQuery) -> Result<ListPage> {
        let prefix = format!("{}:", self.repository);
        let all = names(self.inner.as_ref()).await?;
        let mut mine: Vec<String> = all
            .iter()
            .filter_map(|name| name.strip_prefix(&prefix))
            .map(str::to_owned)
            .collect();
        mine.sort();
        Ok(ListPage::slice(&mine, query))
    }

    async fn referrers(
        &self,
        subject: &Descriptor,
        artifact_type: Option<&MediaType>,
    ) -> Result<Referrers> {
        self.inner.referrers(subject, artifact_type).await
    }

    async fn mount(&self, _descriptor: &Descriptor, _from: &str) -> Result<bool> {
        Ok(false)
    }

    async fn fetch_range(&self, descriptor: &Descriptor, range: Range<u64>) -> Result<Body> {
        self.inner.fetch_range(descriptor, range).await
    }

    async fn catalog(&self, _query: &ListQuery) -> Result<ListPage> {
        Err(Error::Unsupported {
            operation: "catalog (of one repository of a bundle)",
            place: self.to_string(),
        })
    }
}
