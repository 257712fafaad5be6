//! Bytes across the boundary without copying: a `bytes::Bytes` leaves as
//! an [`FfiBuf`] that owns it, and arrives as a `Bytes` whose owner frees
//! it through the sender's `release` (`Bytes::from_owner`); a `Body`
//! leaves as an [`FfiStream`] and arrives as a `Body` again.

use std::any::Any;
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_ffi::{ContextExt, FfiContext, FfiPoll};
use bytes::Bytes;
use futures::stream::{BoxStream, Stream, StreamExt};
use orca_core::{Body, Error, Result};

use crate::ffi::{CHUNK_DATA, CHUNK_END, CHUNK_ERROR, FfiBuf, FfiChunk, FfiStream};
use crate::wire::{WireError, decode, encode};

/// What keeps the other side's code loaded while its values live.
pub(crate) type Keep = Option<Arc<dyn Any + Send + Sync>>;

/// An empty buffer.
pub(crate) fn empty() -> FfiBuf {
    FfiBuf {
        ptr: std::ptr::NonNull::dangling().as_ptr(),
        len: 0,
        owner: std::ptr::null_mut(),
        release: None,
    }
}

extern "C" fn release_bytes(owner: *mut c_void) {
    // SAFETY: `owner` came from `Box::into_raw` in `buf`, and is released
    // exactly once.
    drop(unsafe { Box::from_raw(owner.cast::<Bytes>()) });
}

/// Hands `bytes` over, without copying.
pub(crate) fn buf(bytes: Bytes) -> FfiBuf {
    if bytes.is_empty() {
        return empty();
    }
    let (ptr, len) = (bytes.as_ptr(), bytes.len());
    let owner = Box::into_raw(Box::new(bytes)).cast::<c_void>();
    FfiBuf {
        ptr,
        len,
        owner,
        release: Some(release_bytes),
    }
}

/// A buffer from the other side, freed by its `release` when dropped.
struct Foreign {
    buf: FfiBuf,
    _keep: Keep,
}

// SAFETY: the buffer is owned, immutable while shared, and its release
// function may run on any thread (both sides hand over only `Bytes`).
unsafe impl Send for Foreign {}
// SAFETY: as above; reads of immutable bytes.
unsafe impl Sync for Foreign {}

impl AsRef<[u8]> for Foreign {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the sender keeps the bytes alive until `release`.
        unsafe {
            crate::ffi::FfiSlice {
                ptr: self.buf.ptr,
                len: self.buf.len,
            }
            .as_bytes()
        }
    }
}

impl Drop for Foreign {
    fn drop(&mut self) {
        if let Some(release) = self.buf.release {
            release(self.buf.owner);
        }
    }
}

/// Takes over a buffer from the other side, without copying.
pub(crate) fn bytes(buf: FfiBuf, keep: &Keep) -> Bytes {
    if buf.len == 0 {
        if let Some(release) = buf.release {
            release(buf.owner);
        }
        return Bytes::new();
    }
    Bytes::from_owner(Foreign {
        buf,
        _keep: keep.clone(),
    })
}

/// An error as a buffer.
pub(crate) fn error_buf(e: &Error) -> FfiBuf {
    buf(Bytes::from(encode(&WireError::from(e))))
}

/// An error that came across.
pub(crate) fn error_from(buf: FfiBuf, keep: &Keep) -> Error {
    let bytes = bytes(buf, keep);
    match decode::<WireError>(&bytes, "error") {
        Ok(wire) => wire.into(),
        Err(e) => e,
    }
}

/// A panic's message.
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned())
}

/// The error a panic in a plugin becomes.
pub(crate) fn panicked(operation: &'static str, panic: &(dyn Any + Send)) -> Error {
    Error::Backend {
        backend: "plugin".to_owned(),
        operation,
        source: format!("the plugin panicked: {}", panic_message(panic)).into(),
    }
}

/// Which side a body came from, so a panic inside it names the right one.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Side {
    /// A body the plugin sends (a fetch).
    Plugin,
    /// A body the host sends (a push).
    Host,
}

fn panicked_in(side: Side, panic: &(dyn Any + Send)) -> Error {
    match side {
        Side::Plugin => panicked("fetch", panic),
        Side::Host => Error::Backend {
            backend: "host".to_owned(),
            operation: "push",
            source: format!(
                "the body the host sent panicked (a fault of the host, not the plugin): {}",
                panic_message(panic)
            )
            .into(),
        },
    }
}

struct Exported {
    stream: BoxStream<'static, Result<Bytes>>,
    runtime: Option<tokio::runtime::Handle>,
    side: Side,
    done: bool,
}

extern "C" fn poll_exported(state: *mut c_void, cx: *mut FfiContext<'_>) -> FfiPoll<FfiChunk> {
    // SAFETY: `state` is the `Exported` made by `export`, used by one
    // poller at a time until `release`; `cx` is live for this call.
    let (exported, cx) = unsafe { (&mut *state.cast::<Exported>(), &mut *cx) };
    if exported.done {
        return FfiPoll::Ready(FfiChunk {
            status: CHUNK_END,
            buf: empty(),
        });
    }
    let polled = catch_unwind(AssertUnwindSafe(|| {
        let _entered = exported.runtime.as_ref().map(|r| r.enter());
        cx.with_context(|cx| exported.stream.poll_next_unpin(cx))
    }));
    let chunk = match polled {
        Ok(Poll::Pending) => return FfiPoll::Pending,
        Ok(Poll::Ready(Some(Ok(bytes)))) => FfiChunk {
            status: CHUNK_DATA,
            buf: buf(bytes),
        },
        Ok(Poll::Ready(None)) => {
            exported.done = true;
            FfiChunk {
                status: CHUNK_END,
                buf: empty(),
            }
        }
        Ok(Poll::Ready(Some(Err(e)))) => {
            exported.done = true;
            FfiChunk {
                status: CHUNK_ERROR,
                buf: error_buf(&e),
            }
        }
        Err(panic) => {
            exported.done = true;
            FfiChunk {
                status: CHUNK_ERROR,
                buf: error_buf(&panicked_in(exported.side, panic.as_ref())),
            }
        }
    };
    FfiPoll::Ready(chunk)
}

extern "C" fn release_exported(state: *mut c_void) {
    // SAFETY: made by `export`, released exactly once.
    let exported = unsafe { Box::from_raw(state.cast::<Exported>()) };
    let runtime = exported.runtime.clone();
    // Dropping the stream may run the plugin's code (and need its runtime).
    let _ = catch_unwind(AssertUnwindSafe(move || {
        let _entered = runtime.as_ref().map(|r| r.enter());
        drop(exported);
    }));
}

/// Hands a body over as a stream; `runtime` is entered on every poll
/// (the plugin's, when the plugin is the one sending).
pub(crate) fn export(body: Body, runtime: Option<tokio::runtime::Handle>, side: Side) -> FfiStream {
    let len = body.len();
    let state = Box::into_raw(Box::new(Exported {
        stream: body.into_stream(),
        runtime,
        side,
        done: false,
    }));
    FfiStream {
        state: state.cast::<c_void>(),
        poll_next: Some(poll_exported),
        release: Some(release_exported),
        len,
    }
}

/// A stream from the other side.
struct Imported {
    raw: FfiStream,
    keep: Keep,
    finished: bool,
}

// SAFETY: the stream is polled by one task at a time and its functions
// may run on any thread.
unsafe impl Send for Imported {}

impl Stream for Imported {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(None);
        }
        let Some(poll_next) = this.raw.poll_next else {
            this.finished = true;
            return Poll::Ready(None);
        };
        let state = this.raw.state;
        let polled = cx.with_ffi_context(|ffi| poll_next(state, ffi as *mut FfiContext<'_>));
        match polled {
            FfiPoll::Pending => Poll::Pending,
            FfiPoll::Ready(chunk) => match chunk.status {
                CHUNK_DATA => Poll::Ready(Some(Ok(bytes(chunk.buf, &this.keep)))),
                CHUNK_END => {
                    this.finished = true;
                    Poll::Ready(None)
                }
                _ => {
                    this.finished = true;
                    Poll::Ready(Some(Err(error_from(chunk.buf, &this.keep))))
                }
            },
            FfiPoll::Panicked => {
                this.finished = true;
                Poll::Ready(Some(Err(Error::Backend {
                    backend: "plugin".to_owned(),
                    operation: "fetch",
                    source: "the other side of a plugin stream panicked".into(),
                })))
            }
        }
    }
}

impl Drop for Imported {
    fn drop(&mut self) {
        if let Some(release) = self.raw.release {
            release(self.raw.state);
        }
    }
}

/// Takes over a stream from the other side as a body; `keep` holds its
/// code loaded while the body lives.
pub(crate) fn import(raw: FfiStream, keep: Keep) -> Body {
    let len = raw.len;
    Body::new(
        len,
        Imported {
            raw,
            keep,
            finished: false,
        },
    )
}
