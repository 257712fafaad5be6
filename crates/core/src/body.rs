//! [`Body`]: content as a sized stream of byte chunks, so blobs of any size
//! move through orca with flat memory.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::stream::{self, BoxStream, Stream, StreamExt};

use crate::error::{Error, Result};
use crate::model::Digest;

/// A stream of byte chunks with the length it promises to deliver.
///
/// A consumer must read a body to its end: errors, including a digest
/// mismatch found by verification, arrive as the last item.
pub struct Body {
    len: u64,
    stream: BoxStream<'static, Result<Bytes>>,
    /// The digest this body's stream already checks its bytes against
    /// (set by [`crate::verify::verified`]): a body fetched through one
    /// `Store` and pushed through another is hashed once, not twice.
    vouched: Option<Digest>,
}

impl Body {
    /// A body of `len` bytes delivered by `stream`.
    pub fn new<S>(len: u64, stream: S) -> Self
    where
        S: Stream<Item = Result<Bytes>> + Send + 'static,
    {
        Body {
            len,
            stream: stream.boxed(),
            vouched: None,
        }
    }

    /// A body of bytes already in memory (small content: manifests, configs).
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Self {
        let bytes: Bytes = bytes.into();
        let len = bytes.len() as u64;
        let chunks = if bytes.is_empty() {
            None
        } else {
            Some(Ok(bytes))
        };
        Body::new(len, stream::iter(chunks))
    }

    /// The number of bytes the body promises.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the body promises no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads the whole body into memory, refusing bodies over `limit` bytes
    /// before reading any. For small content only.
    pub async fn bytes(mut self, limit: u64) -> Result<Bytes> {
        if self.len > limit {
            return Err(Error::LimitExceeded {
                what: format!("content of {} bytes", self.len),
                limit,
            });
        }
        let capacity = usize::try_from(self.len).unwrap_or(usize::MAX);
        let mut buffer = BytesMut::with_capacity(capacity);
        while let Some(chunk) = self.stream.next().await {
            let chunk = chunk?;
            if (buffer.len() + chunk.len()) as u64 > limit {
                return Err(Error::LimitExceeded {
                    what: "content read into memory".into(),
                    limit,
                });
            }
            buffer.extend_from_slice(&chunk);
        }
        Ok(buffer.freeze())
    }

    /// The underlying stream.
    pub fn into_stream(self) -> BoxStream<'static, Result<Bytes>> {
        self.stream
    }

    /// Marks the body as one whose stream ends with an error unless its
    /// bytes hash to `digest`.
    pub(crate) fn vouched(mut self, digest: Digest) -> Self {
        self.vouched = Some(digest);
        self
    }

    /// The digest the body's own stream checks, if any.
    pub(crate) fn vouched_for(&self) -> Option<&Digest> {
        self.vouched.as_ref()
    }

    /// The body with its stream passed through `observe`, which may watch
    /// the chunks or end the stream with an error but must not change a
    /// byte: what the stream checks still holds.
    pub(crate) fn observed<S>(
        self,
        observe: impl FnOnce(BoxStream<'static, Result<Bytes>>) -> S,
    ) -> Self
    where
        S: Stream<Item = Result<Bytes>> + Send + 'static,
    {
        Body {
            len: self.len,
            stream: observe(self.stream).boxed(),
            vouched: self.vouched,
        }
    }
}

impl Stream for Body {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // A body someone has started to read no longer carries all the
        // bytes its check counts: pushed on, it is hashed again.
        self.vouched = None;
        self.stream.as_mut().poll_next(cx)
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Body")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// A body streaming `bytes` in slices of [`CHUNK`] bytes (no copies), as
/// the in-memory stores serve content.
pub(crate) fn chunked(bytes: Bytes) -> Body {
    const CHUNK: usize = 1024 * 1024;
    let len = bytes.len() as u64;
    let chunks = (0..bytes.len())
        .step_by(CHUNK)
        .map(move |start| Ok(bytes.slice(start..(start + CHUNK).min(bytes.len()))));
    Body::new(len, futures::stream::iter(chunks.collect::<Vec<_>>()))
}
