//! Reading a registry repository through a [`ContentCache`]: a blob the
//! cache holds intact, for a repository known to hold it, is read from
//! the cache; any other is fetched and kept while it streams, published
//! once it hashed right.

use std::io::Write as _;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use orca_core::{
    Backend, Body, Capabilities, Descriptor, Digest, Digester, Error, ListPage, ListQuery,
    MediaType, PushOptions, Referrers, Result, Selector, async_trait,
};

use super::{ContentCache, blocking, fill_name};

impl ContentCache {
    /// A registry repository's backend read through this cache; `source`
    /// names the repository (`host/repository`).
    pub(crate) fn over(&self, origin: Arc<dyn Backend>, source: String) -> Cached {
        Cached {
            origin,
            cache: self.clone(),
            source,
        }
    }
}

/// A registry repository whose blobs are read through a [`ContentCache`];
/// everything else goes to the registry.
#[derive(Debug)]
pub(crate) struct Cached {
    origin: Arc<dyn Backend>,
    cache: ContentCache,
    source: String,
}

impl std::fmt::Display for Cached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.origin.fmt(f)
    }
}

impl Cached {
    /// The cached entry of `descriptor` as a body, when the cache holds it
    /// intact and this repository is known to hold it (asked once of the
    /// registry when not known yet).
    async fn cached(&self, descriptor: &Descriptor) -> Result<Option<Body>> {
        let cache = self.cache.clone();
        let wanted = descriptor.clone();
        let source = self.source.clone();
        let doing = format!("reading {} from the cache", descriptor.digest);
        let (intact, known) = blocking(doing, move || {
            let intact = cache.check(&wanted)?;
            let known = intact && cache.sources(&wanted.digest).contains(&source);
            Ok((intact, known))
        })
        .await?;
        if !intact {
            return Ok(None);
        }
        if !known {
            // Held for another repository: this one must hold it too.
            if self.origin.stat(descriptor).await?.is_none() {
                return Err(Error::NotFound {
                    what: descriptor.label(),
                    place: self.origin.to_string(),
                });
            }
            let _ = self.cache.add_source(&descriptor.digest, &self.source);
        }
        let path = self.cache.blob_path(&descriptor.digest);
        let doing = format!("opening {}", path.display());
        let (file, len) = blocking(doing, move || {
            let file = std::fs::File::open(&path)?;
            let len = file.metadata()?.len();
            Ok((file, len))
        })
        .await?;
        tracing::debug!(digest = %descriptor.digest, "read from the content cache");
        let place = format!("the content cache {}", self.cache.dir.display());
        Ok(Some(orca_backend_fs::file_body(file, len, place)))
    }

    /// Fetches `descriptor` from the registry, keeping a copy as it
    /// streams; the copy is published once the last byte hashed right.
    async fn filled(&self, descriptor: &Descriptor) -> Result<Body> {
        let body = self.origin.fetch(descriptor).await?;
        let tmp = self.cache.dir.join("tmp");
        let temp = tmp.join(fill_name(&descriptor.digest));
        let opened = {
            let (tmp, temp) = (tmp.clone(), temp.clone());
            blocking(format!("creating {}", temp.display()), move || {
                std::fs::create_dir_all(&tmp)?;
                std::fs::File::create(&temp)
            })
            .await
        };
        let file = match opened {
            Ok(file) => file,
            Err(e) => {
                // No cache to write: the registry's bytes all the same.
                tracing::warn!(error = %e, "the content cache cannot be written");
                return Ok(body);
            }
        };
        let (to_writer, from_stream) = tokio::sync::mpsc::channel::<Fill>(16);
        let (done, published) = tokio::sync::oneshot::channel::<()>();
        let writer = Writer {
            cache: self.cache.clone(),
            descriptor: descriptor.clone(),
            source: self.source.clone(),
            temp,
        };
        std::thread::spawn(move || writer.run(file, from_stream, done));
        let len = body.len();
        let state = (body.into_stream(), Some(to_writer), Some(published));
        let stream =
            futures::stream::unfold(state, |(mut chunks, mut writer, published)| async move {
                match chunks.next().await {
                    Some(Ok(bytes)) => {
                        if let Some(sender) = &writer
                            && sender.send(Fill::Bytes(bytes.clone())).await.is_err()
                        {
                            writer = None;
                        }
                        Some((Ok(bytes), (chunks, writer, published)))
                    }
                    Some(Err(e)) => Some((Err(e), (chunks, None, None))),
                    None => {
                        // The end: the copy is published before the body ends,
                        // so the next process finds it.
                        if let Some(sender) = writer.take()
                            && sender.send(Fill::End).await.is_ok()
                            && let Some(published) = published
                        {
                            let _ = published.await;
                        }
                        None
                    }
                }
            });
        Ok(Body::new(len, stream))
    }
}

/// What a fill's writer thread is sent.
enum Fill {
    /// The next bytes.
    Bytes(Bytes),
    /// The body ended: publish if the bytes hash right.
    End,
}

/// Writes one fill into its temporary file, on a thread of its own.
struct Writer {
    cache: ContentCache,
    descriptor: Descriptor,
    source: String,
    temp: PathBuf,
}

impl Writer {
    fn run(
        self,
        mut file: std::fs::File,
        mut chunks: tokio::sync::mpsc::Receiver<Fill>,
        done: tokio::sync::oneshot::Sender<()>,
    ) {
        let mut digester = Digester::new(self.descriptor.digest.algorithm());
        let mut size = 0u64;
        let mut ended = false;
        while let Some(fill) = chunks.blocking_recv() {
            match fill {
                Fill::Bytes(bytes) => {
                    digester.update(&bytes);
                    size += bytes.len() as u64;
                    if file.write_all(&bytes).is_err() {
                        break;
                    }
                }
                Fill::End => {
                    ended = true;
                    break;
                }
            }
        }
        drop(file);
        // Published only whole and right; otherwise (the reader stopped,
        // the bytes were wrong) nothing is kept.
        let right = ended
            && digester.finish() == self.descriptor.digest
            && (self.descriptor.size == 0 || size == self.descriptor.size);
        let published = right && {
            let target = self.cache.blob_path(&self.descriptor.digest);
            target
                .parent()
                .is_some_and(|parent| std::fs::create_dir_all(parent).is_ok())
                && std::fs::rename(&self.temp, &target).is_ok()
        };
        if published {
            let _ = self.cache.add_source(&self.descriptor.digest, &self.source);
        } else {
            let _ = std::fs::remove_file(&self.temp);
        }
        let _ = done.send(());
    }
}

#[async_trait]
impl Backend for Cached {
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
        if descriptor.media_type.is_manifest() {
            // Manifests are small and a tag's may change: the registry's.
            return self.origin.fetch(descriptor).await;
        }
        match self.cached(descriptor).await {
            Ok(Some(body)) => return Ok(body),
            Ok(None) => {}
            Err(e) if e.is_not_found() => return Err(e),
            Err(e) => {
                tracing::warn!(digest = %descriptor.digest, error = %e, "the content cache failed; reading the registry");
            }
        }
        self.filled(descriptor).await
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
        self.origin.fetch_tagged(tag).await
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
        self.origin.fetch_range(descriptor, range).await
    }

    async fn catalog(&self, query: &ListQuery) -> Result<ListPage> {
        self.origin.catalog(query).await
    }
}
