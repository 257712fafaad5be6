//! A plugin for orca's tests (scheme `testing://`): an in-memory backend
//! whose configuration string makes it misbehave — `panic=fetch` panics
//! when a fetch starts, `panic=stream` in the middle of a fetched body,
//! `panic=exists` in `exists`; `sleep` waits on a tokio timer first (the
//! plugin's own runtime must drive it); `drain=spawn` reads a pushed body
//! in a task of its own (on the plugin's threads, as an HTTP client's
//! connection task does); `panic=drop` panics when a push it is still
//! running is dropped.

use std::fmt;
use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use orca_core::{
    Backend, Body, Capabilities, Descriptor, Digest, ListPage, ListQuery, MediaType, MemoryBackend,
    PushOptions, Referrers, Result, Selector,
};

orca_plugin_abi::export_backend!(name: "testing", scheme: "testing", open: open);

async fn open(target: String, config: String) -> Result<Testing> {
    Ok(Testing {
        inner: MemoryBackend::new(),
        name: format!("testing://{target}"),
        config,
    })
}

/// Panics when dropped while a push runs (a `Drop` the host must survive).
struct PanicOnDrop;

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("told to panic when a push is dropped");
        }
    }
}

struct Testing {
    inner: MemoryBackend,
    name: String,
    config: String,
}

impl Testing {
    fn wants(&self, what: &str) -> bool {
        self.config.split(',').any(|o| o.trim() == what)
    }

    /// A push, with the body drained in a task of its own if told.
    async fn push_body(&self, d: &Descriptor, body: Body, o: &PushOptions) -> Result<()> {
        if self.wants("drain=spawn") {
            let len = body.len();
            let drained = tokio::spawn(async move {
                let mut body = body;
                let mut bytes = Vec::new();
                while let Some(chunk) = body.next().await {
                    bytes.extend_from_slice(&chunk?);
                }
                Ok::<_, orca_core::Error>(bytes)
            })
            .await
            .map_err(|e| orca_core::Error::Backend {
                backend: self.name.clone(),
                operation: "push",
                source: Box::new(e),
            })??;
            let body = Body::new(
                len,
                futures::stream::iter([Ok(bytes::Bytes::from(drained))]),
            );
            return self.inner.push(d, body, o).await;
        }
        self.inner.push(d, body, o).await
    }

    async fn maybe_sleep(&self) {
        if self.wants("sleep") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl fmt::Display for Testing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl fmt::Debug for Testing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Testing").field("name", &self.name).finish()
    }
}

#[async_trait]
impl Backend for Testing {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn exists(&self, d: &Descriptor) -> Result<bool> {
        if self.wants("panic=exists") {
            panic!("told to panic in exists");
        }
        self.maybe_sleep().await;
        self.inner.exists(d).await
    }
    async fn stat(&self, d: &Descriptor) -> Result<Option<u64>> {
        self.inner.stat(d).await
    }
    async fn fetch(&self, d: &Descriptor) -> Result<Body> {
        if self.wants("panic=fetch") {
            panic!("told to panic in fetch");
        }
        self.maybe_sleep().await;
        let body = self.inner.fetch(d).await?;
        if !self.wants("panic=stream") {
            return Ok(body);
        }
        let len = body.len();
        let mut seen = 0;
        Ok(Body::new(
            len,
            body.into_stream().map(move |chunk| {
                seen += 1;
                if seen > 1 {
                    panic!("told to panic in the middle of a body");
                }
                chunk
            }),
        ))
    }
    async fn push(&self, d: &Descriptor, body: Body, o: &PushOptions) -> Result<()> {
        self.maybe_sleep().await;
        // Made only when asked for: a made one panics when it goes.
        let bomb = if self.wants("panic=drop") {
            Some(PanicOnDrop)
        } else {
            None
        };
        let pushed = self.push_body(d, body, o).await;
        // A push that ran to its end disarms it.
        std::mem::forget(bomb);
        pushed
    }
    async fn partial(&self, d: &Descriptor) -> Result<u64> {
        self.inner.partial(d).await
    }
    async fn delete(&self, d: &Descriptor) -> Result<()> {
        self.inner.delete(d).await
    }
    async fn resolve(&self, s: &Selector) -> Result<Descriptor> {
        self.inner.resolve(s).await
    }
    async fn tag(&self, d: &Descriptor, t: &str) -> Result<()> {
        self.inner.tag(d, t).await
    }
    async fn untag(&self, t: &str) -> Result<()> {
        self.inner.untag(t).await
    }
    async fn swap_tag(&self, t: &str, e: Option<&Digest>, n: Option<&Descriptor>) -> Result<()> {
        self.inner.swap_tag(t, e, n).await
    }
    async fn tags(&self, q: &ListQuery) -> Result<ListPage> {
        self.inner.tags(q).await
    }
    async fn referrers(&self, s: &Descriptor, a: Option<&MediaType>) -> Result<Referrers> {
        self.inner.referrers(s, a).await
    }
    async fn mount(&self, d: &Descriptor, f: &str) -> Result<bool> {
        self.inner.mount(d, f).await
    }
    async fn fetch_range(&self, d: &Descriptor, r: Range<u64>) -> Result<Body> {
        self.inner.fetch_range(d, r).await
    }
    async fn catalog(&self, q: &ListQuery) -> Result<ListPage> {
        self.inner.catalog(q).await
    }
}
