//! The plugin side: turns a `Backend` into the C table a host loads.
//! Every operation runs on the plugin's own tokio runtime (entered on
//! every poll, so a backend's timers, files and sockets work whatever
//! drives the future), and a panic anywhere becomes an error.

use std::ffi::c_void;
use std::future::Future;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use async_ffi::{FfiFuture, FutureExt as _};
use bytes::Bytes;
use orca_core::{Backend, Digest, Error, ListQuery, MediaType, PushOptions, Result, Selector};

use crate::ffi::{
    BackendV1, FfiBuf, FfiOutcome, FfiSlice, FfiStream, OUTCOME_ERROR, OUTCOME_OK, PluginV1,
};
use crate::stream::{self, buf, empty, error_buf, panicked};
use crate::wire::{Answer, Args, OPERATIONS, WireCapabilities, decode, encode};

mod storage;
pub use storage::{open_storage, storage_table};

/// A plugin's own runtime, started on first use.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("orca-plugin")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("a plugin cannot start its runtime: {e}"))
    })
}

/// A future run inside the plugin's runtime, its panics caught — when
/// polled, and when dropped (the host drops it on its own thread, and a
/// panic there would abort the host).
struct Guarded<F> {
    inner: Option<Pin<Box<F>>>,
    operation: &'static str,
}

impl<F: Future<Output = FfiOutcome>> Future for Guarded<F> {
    type Output = FfiOutcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<FfiOutcome> {
        let operation = self.operation;
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(failure(&panicked(
                operation,
                &"polled after it panicked or ended",
            )));
        };
        let polled = catch_unwind(AssertUnwindSafe(|| {
            let _entered = runtime().enter();
            inner.as_mut().poll(cx)
        }));
        match polled {
            Ok(poll) => poll,
            Err(panic) => {
                // What is left of a future that panicked is not polled again.
                self.inner = None;
                Poll::Ready(failure(&panicked(operation, panic.as_ref())))
            }
        }
    }
}

impl<F> Drop for Guarded<F> {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            let _entered = runtime().enter();
            let _ = catch_unwind(AssertUnwindSafe(move || drop(inner)));
        }
    }
}

fn guarded(
    operation: &'static str,
    future: impl Future<Output = FfiOutcome> + Send + 'static,
) -> FfiFuture<FfiOutcome> {
    Guarded {
        inner: Some(Box::pin(future)),
        operation,
    }
    .into_ffi()
}

fn failure(e: &Error) -> FfiOutcome {
    FfiOutcome {
        status: OUTCOME_ERROR,
        payload: error_buf(e),
        handle: std::ptr::null_mut(),
        stream: FfiStream::none(),
    }
}

fn success(answer: &Answer) -> FfiOutcome {
    success_with(encode(answer))
}

/// Success, with an encoded answer.
fn success_with(payload: Vec<u8>) -> FfiOutcome {
    FfiOutcome {
        status: OUTCOME_OK,
        payload: buf(Bytes::from(payload)),
        handle: std::ptr::null_mut(),
        stream: FfiStream::none(),
    }
}

/// An opened backend, behind the handle the host holds.
struct Guest {
    backend: Arc<dyn Backend>,
}

extern "C" fn release(handle: *mut c_void) {
    // SAFETY: made by `open` with `Box::into_raw`, released once.
    let guest = unsafe { Box::from_raw(handle.cast::<Guest>()) };
    let _ = catch_unwind(AssertUnwindSafe(move || {
        let _entered = runtime().enter();
        drop(guest);
    }));
}

/// The backend behind a handle.
fn backend(handle: *const c_void) -> Arc<dyn Backend> {
    // SAFETY: the host passes back the handle `open` made, alive until
    // `release`.
    unsafe { &*handle.cast::<Guest>() }.backend.clone()
}

extern "C" fn capabilities(handle: *const c_void) -> FfiBuf {
    let answered = catch_unwind(AssertUnwindSafe(|| {
        let _entered = runtime().enter();
        WireCapabilities::from(backend(handle).capabilities())
    }));
    match answered {
        Ok(wire) => buf(Bytes::from(encode(&wire))),
        // No capabilities at all: the host refuses every optional call.
        Err(_) => buf(Bytes::from(encode(&WireCapabilities::from(
            orca_core::Capabilities::NONE,
        )))),
    }
}

extern "C" fn describe(handle: *const c_void) -> FfiBuf {
    let answered = catch_unwind(AssertUnwindSafe(|| backend(handle).to_string()));
    buf(Bytes::from(
        answered.unwrap_or_else(|_| "plugin".to_owned()),
    ))
}

/// What `resolve` looks up: the tag as the backend names it when the host
/// sent one, or the selector read in the reference grammar.
fn selector(args: &Args) -> Result<Selector> {
    match &args.tag {
        Some(tag) => Ok(Selector::Tag(tag.clone())),
        None => Selector::parse(args.selector.as_deref().unwrap_or_default()),
    }
}

fn descriptor(args: &Args) -> Result<orca_core::Descriptor> {
    args.descriptor.clone().ok_or_else(|| Error::InvalidInput {
        what: "plugin call".into(),
        reason: "no descriptor given".into(),
    })
}

/// Runs one operation, by its number (the order of [`BackendV1`]).
async fn run(
    op: u32,
    backend: Arc<dyn Backend>,
    args: Args,
    body: Option<orca_core::Body>,
) -> Result<FfiOutcome> {
    let mut answer = Answer::default();
    match op {
        0 => answer.flag = Some(backend.exists(&descriptor(&args)?).await?),
        1 => answer.number = backend.stat(&descriptor(&args)?).await?,
        2 | 13 => {
            let d = descriptor(&args)?;
            let body = if op == 2 {
                backend.fetch(&d).await?
            } else {
                let range: Range<u64> = args.start.unwrap_or(0)..args.end.unwrap_or(0);
                backend.fetch_range(&d, range).await?
            };
            let mut outcome = success(&answer);
            outcome.stream =
                stream::export(body, Some(runtime().handle().clone()), stream::Side::Plugin);
            return Ok(outcome);
        }
        3 => {
            let d = descriptor(&args)?;
            let body = body.ok_or_else(|| Error::InvalidInput {
                what: "plugin push".into(),
                reason: "no body given".into(),
            })?;
            let mut options = match &args.tag {
                Some(tag) => PushOptions::tagged(tag.clone()),
                None => PushOptions::default(),
            };
            options.offset = args.offset.unwrap_or(0);
            options.list = args.list.unwrap_or(false);
            backend.push(&d, body, &options).await?;
        }
        4 => answer.number = Some(backend.partial(&descriptor(&args)?).await?),
        5 => backend.delete(&descriptor(&args)?).await?,
        6 => answer.descriptor = Some(backend.resolve(&selector(&args)?).await?),
        7 => {
            backend
                .tag(&descriptor(&args)?, args.tag.as_deref().unwrap_or_default())
                .await?
        }
        8 => {
            backend
                .untag(args.tag.as_deref().unwrap_or_default())
                .await?
        }
        9 => {
            let expected = args.expected.as_deref().map(Digest::parse).transpose()?;
            backend
                .swap_tag(
                    args.tag.as_deref().unwrap_or_default(),
                    expected.as_ref(),
                    args.descriptor.as_ref(),
                )
                .await?;
        }
        10 | 14 => {
            let query = match args.limit {
                Some(limit) => ListQuery::page(args.last.clone(), limit),
                None => {
                    let mut all = ListQuery::all();
                    all.last = args.last.clone();
                    all
                }
            };
            let page = if op == 10 {
                backend.tags(&query).await?
            } else {
                backend.catalog(&query).await?
            };
            answer.entries = Some(page.entries);
            answer.next = page.next;
        }
        11 => {
            let artifact_type = args.artifact_type.as_deref().map(MediaType::new);
            let found = backend
                .referrers(&descriptor(&args)?, artifact_type.as_ref())
                .await?;
            answer.manifests = Some(found.manifests);
            answer.filtered = Some(found.filtered);
        }
        12 => {
            answer.flag = Some(
                backend
                    .mount(
                        &descriptor(&args)?,
                        args.from.as_deref().unwrap_or_default(),
                    )
                    .await?,
            )
        }
        other => {
            return Err(Error::InvalidInput {
                what: "plugin call".into(),
                reason: format!("operation {other} is unknown"),
            });
        }
    }
    Ok(success(&answer))
}

extern "C" fn operation<const OP: u32>(
    handle: *const c_void,
    args: FfiSlice,
    body: FfiStream,
) -> FfiFuture<FfiOutcome> {
    let name = OPERATIONS.get(OP as usize).copied().unwrap_or("plugin");
    dispatch(
        name,
        args,
        body,
        || backend(handle),
        move |backend, args, body| run(OP, backend, args, body),
    )
}

/// Starts one operation: takes over everything the host lends before
/// returning (the body first, so a panic while decoding the arguments
/// still releases it: backends m27), finds what the handle names with
/// `target`, then runs `run` on the plugin's runtime, its panics caught.
fn dispatch<T, A, Fut>(
    name: &'static str,
    args: FfiSlice,
    body: FfiStream,
    target: impl FnOnce() -> T,
    run: impl FnOnce(T, A, Option<orca_core::Body>) -> Fut + Send + 'static,
) -> FfiFuture<FfiOutcome>
where
    T: Send + 'static,
    A: for<'de> serde::Deserialize<'de> + Send + 'static,
    Fut: Future<Output = Result<FfiOutcome>> + Send + 'static,
{
    let body = (!body.state.is_null()).then(|| stream::import(body, None));
    let prepared = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the host lends the arguments for this call.
        let args: Result<A> = decode(unsafe { args.as_bytes() }, "arguments");
        (target(), args)
    }));
    match prepared {
        Ok((target, args)) => guarded(name, async move {
            let result = match args {
                Ok(args) => run(target, args, body).await,
                Err(e) => Err(e),
            };
            result.unwrap_or_else(|e| failure(&e))
        }),
        Err(panic) => {
            let outcome = failure(&panicked(name, panic.as_ref()));
            async move { outcome }.into_ffi()
        }
    }
}

/// Opens a backend for the host: `open` gets the target and configuration
/// strings, runs on the plugin's runtime, and its panics are caught.
pub fn open<F, Fut, B>(target: FfiSlice, config: FfiSlice, open: F) -> FfiFuture<FfiOutcome>
where
    F: FnOnce(String, String) -> Fut,
    Fut: Future<Output = Result<B>> + Send + 'static,
    B: Backend,
{
    opened(target, config, open, |backend| {
        let guest = Box::new(Guest {
            backend: Arc::new(backend),
        });
        Box::into_raw(guest).cast::<c_void>()
    })
}

/// Runs a plugin's `open` on its runtime, its panics caught, and hands
/// what it opened over as the handle `into_handle` makes.
fn opened<F, Fut, T>(
    target: FfiSlice,
    config: FfiSlice,
    open: F,
    into_handle: impl FnOnce(T) -> *mut c_void + Send + 'static,
) -> FfiFuture<FfiOutcome>
where
    F: FnOnce(String, String) -> Fut,
    Fut: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    // SAFETY: the host lends both strings for this call.
    let (target, config) = unsafe {
        (
            String::from_utf8_lossy(target.as_bytes()).into_owned(),
            String::from_utf8_lossy(config.as_bytes()).into_owned(),
        )
    };
    let started = catch_unwind(AssertUnwindSafe(|| {
        let _entered = runtime().enter();
        open(target, config)
    }));
    match started {
        Ok(future) => guarded("open", async move {
            match future.await {
                Ok(value) => FfiOutcome {
                    status: OUTCOME_OK,
                    payload: empty(),
                    handle: into_handle(value),
                    stream: FfiStream::none(),
                },
                Err(e) => failure(&e),
            }
        }),
        Err(panic) => {
            let outcome = failure(&panicked("open", panic.as_ref()));
            async move { outcome }.into_ffi()
        }
    }
}

/// The table a plugin exports (see [`crate::export_backend!`]).
pub fn table(
    name: &'static str,
    version: &'static str,
    scheme: &'static str,
    open: extern "C" fn(FfiSlice, FfiSlice) -> FfiFuture<FfiOutcome>,
) -> PluginV1 {
    PluginV1 {
        size: std::mem::size_of::<PluginV1>(),
        abi_version: crate::ABI_VERSION,
        name: FfiSlice::new(name.as_bytes()),
        version: FfiSlice::new(version.as_bytes()),
        scheme: FfiSlice::new(scheme.as_bytes()),
        open,
        backend: BackendV1 {
            release,
            capabilities,
            describe,
            exists: operation::<0>,
            stat: operation::<1>,
            fetch: operation::<2>,
            push: operation::<3>,
            partial: operation::<4>,
            delete: operation::<5>,
            resolve: operation::<6>,
            tag: operation::<7>,
            untag: operation::<8>,
            swap_tag: operation::<9>,
            tags: operation::<10>,
            referrers: operation::<11>,
            mount: operation::<12>,
            fetch_range: operation::<13>,
            catalog: operation::<14>,
        },
    }
}
