//! The plugin side of the storage table: turns an `ObjectStorage` (a
//! layout's directory, a bucket prefix) into the table the host runs its
//! layout engine over. Small objects go back and forth as one-chunk
//! streams, blobs as streams; everything runs on the plugin's runtime.

use std::ffi::c_void;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use async_ffi::FfiFuture;
use bytes::Bytes;
use orca_core::layout::{Changed, Condition, ObjectStorage, Version};
use orca_core::{Body, Error, Result};

use super::{dispatch, opened, runtime, success_with};
use crate::ffi::{
    FfiBuf, FfiOutcome, FfiSlice, FfiStream, STORAGE_ADOPTS, STORAGE_RESUMABLE, StorageV1,
};
use crate::stream::{self, buf};
use crate::wire::{STORAGE_OPERATIONS, StorageAnswer, StorageArgs, WireListed, encode};

/// An opened storage, behind the handle the host holds.
struct GuestStorage {
    storage: Arc<dyn ObjectStorage>,
}

extern "C" fn release(handle: *mut c_void) {
    // SAFETY: made by `open_storage` with `Box::into_raw`, released once.
    let guest = unsafe { Box::from_raw(handle.cast::<GuestStorage>()) };
    let _ = catch_unwind(AssertUnwindSafe(move || {
        let _entered = runtime().enter();
        drop(guest);
    }));
}

/// The storage behind a handle.
fn storage(handle: *const c_void) -> Arc<dyn ObjectStorage> {
    // SAFETY: the host passes back the handle `open_storage` made, alive
    // until `release`.
    unsafe { &*handle.cast::<GuestStorage>() }.storage.clone()
}

extern "C" fn describe(handle: *const c_void) -> FfiBuf {
    let answered = catch_unwind(AssertUnwindSafe(|| storage(handle).to_string()));
    buf(Bytes::from(
        answered.unwrap_or_else(|_| "plugin storage".to_owned()),
    ))
}

extern "C" fn traits(handle: *const c_void) -> u32 {
    catch_unwind(AssertUnwindSafe(|| {
        let storage = storage(handle);
        let mut bits = 0;
        if storage.resumable() {
            bits |= STORAGE_RESUMABLE;
        }
        if storage.adopts() {
            bits |= STORAGE_ADOPTS;
        }
        bits
    }))
    // Nothing claimed: the host neither resumes nor adopts.
    .unwrap_or(0)
}

fn needed<T>(value: Option<T>, what: &str) -> Result<T> {
    value.ok_or_else(|| Error::InvalidInput {
        what: "plugin storage call".into(),
        reason: format!("no {what} given"),
    })
}

/// An answer, with `bytes` as its stream when there are any.
fn answered(answer: &StorageAnswer, bytes: Option<Body>) -> FfiOutcome {
    let mut outcome = success_with(encode(answer));
    if let Some(body) = bytes {
        outcome.stream =
            stream::export(body, Some(runtime().handle().clone()), stream::Side::Plugin);
    }
    outcome
}

/// Runs one storage operation, by its number (the order of the
/// operations in [`StorageV1`]).
async fn run(
    op: u32,
    storage: Arc<dyn ObjectStorage>,
    args: StorageArgs,
    body: Option<Body>,
) -> Result<FfiOutcome> {
    let mut answer = StorageAnswer::default();
    let mut bytes = None;
    let key = || needed(args.key.as_deref(), "key");
    match op {
        0 => {
            let found = storage.read(key()?, needed(args.limit, "limit")?).await?;
            answer.flag = Some(found.is_some());
            if let Some((data, version)) = found {
                answer.version = Some(version.0);
                bytes = Some(Body::from_bytes(data));
            }
        }
        1 => {
            let known = Version(needed(args.version.clone(), "version")?);
            match storage
                .read_changed(key()?, needed(args.limit, "limit")?, &known)
                .await?
            {
                Changed::No => answer.changed = Some(false),
                Changed::Yes(found) => {
                    answer.changed = Some(true);
                    answer.flag = Some(found.is_some());
                    if let Some((data, version)) = found {
                        answer.version = Some(version.0);
                        bytes = Some(Body::from_bytes(data));
                    }
                }
            }
        }
        2 => {
            let body = needed(body, "body")?;
            let len = body.len();
            let data = body.bytes(len).await?;
            let condition = match args.version.clone() {
                Some(version) => Condition::Matches(Version(version)),
                None => Condition::Absent,
            };
            storage.write(key()?, data, condition).await?;
        }
        3 => answer.number = storage.size(key()?).await?,
        4 => {
            let listed = storage.list(key()?).await?;
            answer.listed = Some(listed.iter().map(WireListed::from).collect());
        }
        5 => storage.delete(key()?).await?,
        6 => {
            let range = match (args.start, args.end) {
                (Some(start), Some(end)) => Some(start..end),
                _ => None,
            };
            let found = storage.get(key()?, range).await?;
            answer.flag = Some(found.is_some());
            bytes = found;
        }
        7 => {
            let descriptor = needed(args.descriptor.as_ref(), "descriptor")?;
            let body = needed(body, "body")?;
            storage
                .put_blob(descriptor, body, args.offset.unwrap_or(0))
                .await?;
        }
        8 => {
            let descriptor = needed(args.descriptor.as_ref(), "descriptor")?;
            answer.number = Some(storage.partial(descriptor).await?);
        }
        9 => {
            let from = needed(args.from.as_deref(), "source")?;
            let size = needed(args.size, "size")?;
            answer.flag = Some(storage.adopt(from, key()?, size).await?);
        }
        10 => {
            let age = Duration::from_millis(needed(args.age_ms, "age")?);
            answer.number = Some(storage.clean_staging(age).await? as u64);
        }
        other => {
            return Err(Error::InvalidInput {
                what: "plugin storage call".into(),
                reason: format!("operation {other} is unknown"),
            });
        }
    }
    Ok(answered(&answer, bytes))
}

extern "C" fn operation<const OP: u32>(
    handle: *const c_void,
    args: FfiSlice,
    body: FfiStream,
) -> FfiFuture<FfiOutcome> {
    let name = STORAGE_OPERATIONS
        .get(OP as usize)
        .copied()
        .unwrap_or("plugin storage");
    dispatch(
        name,
        args,
        body,
        || storage(handle),
        move |storage, args, body| run(OP, storage, args, body),
    )
}

/// Opens a storage for the host: `open` gets the target and configuration
/// strings, runs on the plugin's runtime, and its panics are caught.
pub fn open_storage<F, Fut, S>(target: FfiSlice, config: FfiSlice, open: F) -> FfiFuture<FfiOutcome>
where
    F: FnOnce(String, String) -> Fut,
    Fut: Future<Output = Result<S>> + Send + 'static,
    S: ObjectStorage,
{
    opened(target, config, open, |storage| {
        let guest = Box::new(GuestStorage {
            storage: Arc::new(storage),
        });
        Box::into_raw(guest).cast::<c_void>()
    })
}

/// The storage table a plugin exports (see [`crate::export_storage!`]).
pub fn storage_table(
    open: extern "C" fn(FfiSlice, FfiSlice) -> FfiFuture<FfiOutcome>,
) -> StorageV1 {
    StorageV1 {
        size: std::mem::size_of::<StorageV1>(),
        open,
        release,
        describe,
        traits,
        read: operation::<0>,
        read_changed: operation::<1>,
        write: operation::<2>,
        object_size: operation::<3>,
        list: operation::<4>,
        delete: operation::<5>,
        get: operation::<6>,
        put_blob: operation::<7>,
        partial: operation::<8>,
        adopt: operation::<9>,
        clean_staging: operation::<10>,
    }
}
