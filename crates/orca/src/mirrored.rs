//! Reading a registry repository through its mirrors (the `mirrors` of its
//! [`crate::RegistrySettings`]): content named by digest — manifests and
//! blobs — is fetched from the first mirror that has it, and from the
//! registry itself when none does. Everything else (tags, referrers,
//! listings, every write) goes to the registry, so a tag always means what
//! the registry says now; `Store` verifies what a mirror sends as it
//! verifies every byte.

use std::ops::Range;
use std::sync::Arc;

use orca_core::{
    Backend, Body, Capabilities, Descriptor, Digest, ListPage, ListQuery, MediaType, PushOptions,
    Referrers, Result, Selector, async_trait,
};

/// A registry repository read through mirrors.
#[derive(Debug)]
pub(crate) struct Mirrored {
    origin: Arc<dyn Backend>,
    mirrors: Vec<Arc<dyn Backend>>,
}

impl Mirrored {
    /// `origin`, read through `mirrors` in order.
    pub(crate) fn new(origin: Arc<dyn Backend>, mirrors: Vec<Arc<dyn Backend>>) -> Self {
        Mirrored { origin, mirrors }
    }

    /// The first mirror's answer that is no error, else the origin's.
    async fn first<'a, T, F, Fut>(&'a self, ask: F) -> Result<T>
    where
        F: Fn(&'a dyn Backend) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        for mirror in &self.mirrors {
            match ask(mirror.as_ref()).await {
                Ok(answer) => {
                    tracing::debug!(%mirror, "read from mirror");
                    return Ok(answer);
                }
                Err(e) => tracing::debug!(%mirror, error = %e, "mirror missed; next"),
            }
        }
        ask(self.origin.as_ref()).await
    }
}

impl std::fmt::Display for Mirrored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.origin.fmt(f)
    }
}

#[async_trait]
impl Backend for Mirrored {
    fn capabilities(&self) -> Capabilities {
        self.origin.capabilities()
    }

    async fn exists(&self, descriptor: &Descriptor) -> Result<bool> {
        self.origin.exists(descriptor).await
    }

    async fn stat(&self, descriptor: &Descriptor) -> Result<Option<u64>> {
        self.origin.stat(descriptor).await
    }

    async fn fetch(&self, descriptor: &Descriptor) -> Result<Body> {
        self.first(|backend| backend.fetch(descriptor)).await
    }

    async fn push(&self, descriptor: &Descriptor, body: Body, options: &PushOptions) -> Result<()> {
        self.origin.push(descriptor, body, options).await
    }

    async fn partial(&self, descriptor: &Descriptor) -> Result<u64> {
        self.origin.partial(descriptor).await
    }

    async fn delete(&self, descriptor: &Descriptor) -> Result<()> {
        self.origin.delete(descriptor).await
    }

    async fn resolve(&self, selector: &Selector) -> Result<Descriptor> {
        self.origin.resolve(selector).await
    }

    async fn fetch_tagged(&self, tag: &str) -> Result<(Descriptor, Body)> {
        // The tag is the registry's; its manifest may come from a mirror.
        let descriptor = self.resolve(&Selector::Tag(tag.to_owned())).await?;
        let body = self.fetch(&descriptor).await?;
        Ok((descriptor, body))
    }

    async fn tag(&self, descriptor: &Descriptor, tag: &str) -> Result<()> {
        self.origin.tag(descriptor, tag).await
    }

    async fn untag(&self, tag: &str) -> Result<()> {
        self.origin.untag(tag).await
    }

    async fn swap_tag(
        &self,
        tag: &str,
        expected: Option<&Digest>,
        new: Option<&Descriptor>,
    ) -> Result<()> {
        self.origin.swap_tag(tag, expected, new).await
    }

    async fn tags(&self, query: &ListQuery) -> Result<ListPage> {
        self.origin.tags(query).await
    }

    async fn referrers(
        &self,
        subject: &Descriptor,
        artifact_type: Option<&MediaType>,
    ) -> Result<Referrers> {
        self.origin.referrers(subject, artifact_type).await
    }

    async fn mount(&self, descriptor: &Descriptor, from: &str) -> Result<bool> {
        self.origin.mount(descriptor, from).await
    }

    async fn fetch_range(&self, descriptor: &Descriptor, range: Range<u64>) -> Result<Body> {
        self.first(|backend| backend.fetch_range(descriptor, range.clone()))
            .await
    }

    async fn catalog(&self, query: &ListQuery) -> Result<ListPage> {
        self.origin.catalog(query).await
    }
}
