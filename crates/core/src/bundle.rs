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

/// Names a bundle that pages its tags natively is asked for at once.
const PAGE: usize = 1000;

/// The repositories a bundle holds: the distinct `<repository>` parts of
/// its `<repository>:<tag>` names, sorted. Plain tags are not counted.
///
/// A bundle that pages its tags natively (a layout) is asked for one name
/// per repository: after `REPO:…` the next name asked for is the first
/// after `REPO;` (`;` follows `:`), so a repository of 10,000 tags costs
/// what one of a single tag does.
pub async fn repositories(bundle: &dyn Backend) -> Result<Vec<String>> {
    if bundle.capabilities().tag_list_pagination {
        let mut found = Vec::new();
        let mut after: Option<String> = None;
        let mut pages = crate::backend::Pages::new("repositories", bundle.to_string());
        loop {
            let page = bundle.tags(&ListQuery::page(after.clone(), 1)).await?;
            // A bundle may answer more than asked: every name counts.
            let mut next = None;
            for name in page.entries {
                next = Some(match name.rsplit_once(':') {
                    Some((repository, _)) if !repository.is_empty() => {
                        found.push(repository.to_owned());
                        format!("{repository};")
                    }
                    // A plain tag: the next name.
                    _ => name,
                });
            }
            let (Some(next), Some(_)) = (next, page.next) else {
                break;
            };
            // A bundle that answered the same name again would loop.
            pages.next(&next)?;
            after = Some(next);
        }
        found.sort();
        found.dedup();
        return Ok(found);
    }
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

    /// A page of this repository's tags from a bundle that pages natively:
    /// its names are together in the sorted list, right after `prefix`
    /// (`REPO:`), so only they are read.
    async fn tags_under(&self, prefix: &str, query: &ListQuery) -> Result<ListPage> {
        let limit = query.limit.unwrap_or(usize::MAX);
        let mut after = format!("{prefix}{}", query.last.as_deref().unwrap_or(""));
        let mut mine = Vec::new();
        let mut more = false;
        let mut pages = crate::backend::Pages::new("tags", self.to_string());
        'pages: loop {
            // One more than wanted tells whether there is a next page.
            let ask = (limit - mine.len()).saturating_add(1).min(PAGE);
            let page = self
                .inner
                .tags(&ListQuery::page(Some(after.clone()), ask))
                .await?;
            pages.read(page.entries.len())?;
            for name in &page.entries {
                let Some(tag) = name.strip_prefix(prefix) else {
                    break 'pages;
                };
                if mine.len() == limit {
                    more = true;
                    break 'pages;
                }
                mine.push(tag.to_owned());
            }
            match page.next {
                Some(next) if !page.entries.is_empty() => {
                    pages.next(&next)?;
                    after = next;
                }
                _ => break,
            }
        }
        let next = if more { mine.last().cloned() } else { None };
        Ok(ListPage::new(mine, next))
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
        // Tags are a range of the bundle's sorted list when it pages
        // natively, else filtered out of its whole list.
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
        if self.inner.capabilities().tag_list_pagination {
            return self.tags_under(&prefix, query).await;
        }
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
