//! Verification of streamed content against its descriptor: bytes are hashed
//! as they pass, a body longer than announced fails at once, and a wrong
//! digest or short body fails as the stream's last item.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::stream::{BoxStream, Stream};

use crate::body::Body;
use crate::error::{Error, Result};
use crate::model::{Descriptor, Digest, Digester};

/// Wraps `body` so that it yields an error unless its bytes are exactly
/// `descriptor.size` long and hash to `descriptor.digest`.
///
/// `place` names where the bytes come from or go to, for error messages.
pub fn verified(body: Body, descriptor: &Descriptor, place: &str) -> Body {
    if descriptor.media_type.essence() == crate::model::MediaType::DOCKER_SCHEMA1_SIGNED.as_str() {
        return verified_signed_schema1(body, descriptor, place);
    }
    let state = Verifier {
        inner: body.into_stream(),
        digester: Some(Digester::new(descriptor.digest.algorithm())),
        expected: Some(descriptor.digest.clone()),
        size: descriptor.size,
        seen: 0,
        done: false,
        label: Arc::new(Label::new(descriptor, place)),
    };
    Body::new(descriptor.size, state).vouched(descriptor.digest.clone())
}

/// A signed schema-1 manifest checked against the digest of its payload
/// (the document without its signatures), which is what names it: read
/// whole (a manifest is small), then handed on in one piece.
fn verified_signed_schema1(body: Body, descriptor: &Descriptor, place: &str) -> Body {
    let expected = descriptor.clone();
    let label = Label::new(descriptor, place);
    let stream = futures::stream::once(async move {
        let bytes = body.bytes(expected.size).await?;
        if bytes.len() as u64 != expected.size {
            return Err(Error::SizeMismatch {
                what: label.what.clone(),
                expected: expected.size,
                actual: bytes.len() as u64,
                place: label.place.clone(),
            });
        }
        let actual = crate::model::schema1::schema1_digest(&expected.media_type, &bytes);
        if actual != expected.digest {
            return Err(Error::DigestMismatch {
                what: label.what.clone(),
                expected: expected.digest.clone(),
                actual,
                place: label.place.clone(),
            });
        }
        Ok(bytes)
    });
    Body::new(descriptor.size, stream).vouched(descriptor.digest.clone())
}

/// `body` checked against `descriptor` once: as it is, when its own stream
/// already checks that digest (it was fetched through a `Store`), else
/// wrapped by [`verified`].
pub(crate) fn verified_once(body: Body, descriptor: &Descriptor, place: &str) -> Body {
    if body.len() == descriptor.size && body.vouched_for() == Some(&descriptor.digest) {
        body
    } else {
        verified(body, descriptor, place)
    }
}

/// Wraps `body` so that it yields an error unless exactly `len` bytes pass
/// (for ranges, whose digest cannot be checked).
pub fn length_checked(body: Body, len: u64, what: String, place: &str) -> Body {
    let state = Verifier {
        inner: body.into_stream(),
        digester: None,
        expected: None,
        size: len,
        seen: 0,
        done: false,
        label: Arc::new(Label {
            what,
            place: place.to_owned(),
        }),
    };
    Body::new(len, state)
}

struct Label {
    what: String,
    place: String,
}

impl Label {
    fn new(descriptor: &Descriptor, place: &str) -> Self {
        Label {
            what: descriptor.label(),
            place: place.to_owned(),
        }
    }
}

struct Verifier {
    inner: BoxStream<'static, Result<Bytes>>,
    /// `None` for length-only verification.
    digester: Option<Digester>,
    expected: Option<Digest>,
    size: u64,
    seen: u64,
    done: bool,
    label: Arc<Label>,
}

impl Verifier {
    fn size_error(&self) -> Error {
        Error::SizeMismatch {
            what: self.label.what.clone(),
            place: self.label.place.clone(),
            expected: self.size,
            actual: self.seen,
        }
    }
}

impl Stream for Verifier {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        let Poll::Ready(item) = this.inner.as_mut().poll_next(cx) else {
            return Poll::Pending;
        };
        match item {
            Some(Ok(chunk)) => {
                this.seen += chunk.len() as u64;
                if this.seen > this.size {
                    this.done = true;
                    return Poll::Ready(Some(Err(this.size_error())));
                }
                if let Some(digester) = this.digester.as_mut() {
                    digester.update(&chunk);
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Some(Err(e)) => {
                this.done = true;
                Poll::Ready(Some(Err(e)))
            }
            None => {
                this.done = true;
                if this.seen != this.size {
                    return Poll::Ready(Some(Err(this.size_error())));
                }
                if let (Some(digester), Some(expected)) =
                    (this.digester.take(), this.expected.take())
                {
                    let actual = digester.finish();
                    if actual != expected {
                        return Poll::Ready(Some(Err(Error::DigestMismatch {
                            what: this.label.what.clone(),
                            place: this.label.place.clone(),
                            expected,
                            actual,
                        })));
                    }
                }
                Poll::Ready(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MediaType;
    use futures::{StreamExt, stream};

    fn chunks(parts: &[&'static [u8]]) -> Body {
        let len = parts.iter().map(|p| p.len() as u64).sum();
        Body::new(
            len,
            stream::iter(
                parts
                    .iter()
                    .map(|p| Ok(Bytes::from_static(p)))
                    .collect::<Vec<_>>(),
            ),
        )
    }

    async fn drain(body: Body) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut body = body;
        while let Some(chunk) = body.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn passes_matching_content() {
        let desc = Descriptor::of(MediaType::OCTET_STREAM, b"hello world");
        let out = drain(verified(chunks(&[b"hello ", b"world"]), &desc, "test")).await;
        assert_eq!(out.expect("verified"), b"hello world");
    }

    #[tokio::test]
    async fn digest_mismatch_is_the_last_item() {
        let desc = Descriptor::of(MediaType::OCTET_STREAM, b"hello world");
        let mut body = verified(chunks(&[b"hello ", b"WORLD"]), &desc, "test");
        assert!(body.next().await.expect("first").is_ok());
        assert!(body.next().await.expect("second").is_ok());
        let err = body
            .next()
            .await
            .expect("error item")
            .expect_err("mismatch");
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert!(err.to_string().contains("blob sha256:"), "{err}");
        assert!(body.next().await.is_none());
    }

    #[tokio::test]
    async fn too_long_fails_at_once_and_too_short_at_the_end() {
        let desc = Descriptor::of(MediaType::OCTET_STREAM, b"hello");
        let err = drain(verified(chunks(&[b"hello", b"!"]), &desc, "test"))
            .await
            .expect_err("long");
        assert!(
            matches!(
                err,
                Error::SizeMismatch {
                    expected: 5,
                    actual: 6,
                    ..
                }
            ),
            "{err}"
        );
        let err = drain(verified(chunks(&[b"hell"]), &desc, "test"))
            .await
            .expect_err("short");
        assert!(
            matches!(
                err,
                Error::SizeMismatch {
                    expected: 5,
                    actual: 4,
                    ..
                }
            ),
            "{err}"
        );
        let err = drain(length_checked(chunks(&[b"hel"]), 2, "range".into(), "test"))
            .await
            .expect_err("range");
        assert!(
            matches!(
                err,
                Error::SizeMismatch {
                    expected: 2,
                    actual: 3,
                    ..
                }
            ),
            "{err}"
        );
    }
}
