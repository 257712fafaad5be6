//! [`Intercept`]: a backend for tests that forwards every call to a real
//! backend, except the few its [`Hooks`] take over — to slow a fetch down,
//! break a tag write, lie about content or learn a capability late. One
//! place for the wrappers tests use instead of one hand-written forwarder
//! each.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;

use crate::backend::{Backend, ListPage, ListQuery, PushOptions, Referrers};
use crate::body::Body;
use crate::capabilities::Capabilities;
use crate::error::Result;
use crate::model::{Descriptor, Digest, MediaType, Selector};

/// The calls a test may take over; each defaults to the inner backend's.
#[async_trait]
pub trait Hooks: fmt::Debug + Send + Sync + 'static {
    /// What the backend supports.
    fn capabilities(&self, inner: &dyn Backend) -> Capabilities {
        inner.capabilities()
    }

    /// Streams content.
    async fn fetch(&self, inner: &dyn Backend, descriptor: &Descriptor) -> Result<Body> {
        inner.fetch(descriptor).await
    }

    /// Stores content.
    async fn push(
        &self,
        inner: &dyn Backend,
        descriptor: &Descriptor,
        body: Body,
        options: &PushOptions,
    ) -> Result<()> {
        inner.push(descriptor, body, options).await
    }

    /// Resolves a tag or digest.
    async fn resolve(&self, inner: &dyn Backend, selector: &Selector) -> Result<Descriptor> {
        inner.resolve(selector).await
    }

    /// Points a tag at a manifest.
    async fn tag(&self, inner: &dyn Backend, descriptor: &Descriptor, tag: &str) -> Result<()> {
        inner.tag(descriptor, tag).await
    }

    /// Lists tags, one page.
    async fn tags(&self, inner: &dyn Backend, query: &ListQuery) -> Result<ListPage> {
        inner.tags(query).await
    }

    /// Compare-and-swap of a tag.
    async fn swap_tag(
        &self,
        inner: &dyn Backend,
        tag: &str,
        expected: Option<&Digest>,
        new: Option<&Descriptor>,
    ) -> Result<()> {
        inner.swap_tag(tag, expected, new).await
    }
}

/// A backend that forwards to `inner`, through `hooks`.
#[derive(Debug)]
pub struct Intercept<H> {
    inner: Arc<dyn Backend>,
    hooks: H,
}

impl<H: Hooks> Intercept<H> {
    /// Wraps `inner`.
    pub fn new(inner: impl Backend, hooks: H) -> Self {
        Intercept {
            inner: Arc::new(inner),
            hooks,
        }
    }
}

impl<H: fmt::Debug> fmt::Display for Intercept<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (intercepted: {:?})", self.inner, self.hooks)
    }
}

#[async_trait]
impl<H: Hooks> Backend for Intercept<H> {
    fn capabilities(&self) -> Capabilities {
        self.hooks.capabilities(self.inner.as_ref())
    }
    async fn exists(&self, d: &Descriptor) -> Result<bool> {
        self.inner.exists(d).await
    }
    async fn stat(&self, d: &Descriptor) -> Result<Option<u64>> {
        self.inner.stat(d).await
    }
    async fn fetch(&self, d: &Descriptor) -> Result<Body> {
        self.hooks.fetch(self.inner.as_ref(), d).await
    }
    async fn push(&self, d: &Descriptor, body: Body, o: &PushOptions) -> Result<()> {
        self.hooks.push(self.inner.as_ref(), d, body, o).await
    }
    async fn partial(&self, d: &Descriptor) -> Result<u64> {
        self.inner.partial(d).await
    }
    async fn delete(&self, d: &Descriptor) -> Result<()> {
        self.inner.delete(d).await
    }
    async fn resolve(&self, s: &Selector) -> Result<Descriptor> {
        self.hooks.resolve(self.inner.as_ref(), s).await
    }
    async fn tag(&self, d: &Descriptor, t: &str) -> Result<()> {
        self.hooks.tag(self.inner.as_ref(), d, t).await
    }
    async fn untag(&self, t: &str) -> Result<()> {
        self.inner.untag(t).await
    }
    async fn swap_tag(&self, t: &str, e: Option<&Digest>, n: Option<&Descriptor>) -> Result<()> {
        self.hooks.swap_tag(self.inner.as_ref(), t, e, n).await
    }
    async fn tags(&self, q: &ListQuery) -> Result<ListPage> {
        self.hooks.tags(self.inner.as_ref(), q).await
    }
    async fn referrers(&self, s: &Descriptor, a: Option<&MediaType>) -> Result<Referrers> {
        self.inner.referrers(s, a).await
    }
    async fn mount(&self, d: &Descriptor, from: &str) -> Result<bool> {
        self.inner.mount(d, from).await
    }
    async fn fetch_range(&self, d: &Descriptor, r: Range<u64>) -> Result<Body> {
        self.inner.fetch_range(d, r).await
    }
    async fn catalog(&self, q: &ListQuery) -> Result<ListPage> {
        self.inner.catalog(q).await
    }
}
