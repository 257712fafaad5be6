//! A layout's object storage opened by a plugin, for the host's own layout
//! engine to run over: each `ObjectStorage` call crosses as one call of the
//! plugin's storage table. Small objects cross as one-chunk streams and are
//! read back under the caller's limit.

use std::ffi::c_void;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use orca_core::layout::{Changed, Condition, Listed, ObjectStorage, Version};
use orca_core::{Body, Descriptor, Error, Result};

use super::invoke;
use crate::ffi::{Operation, STORAGE_ADOPTS, STORAGE_RESUMABLE, StorageV1};
use crate::stream::{self, Keep};
use crate::wire::{StorageAnswer, StorageArgs, decode, encode};

/// The object storage of a layout a plugin opened; the host's layout
/// engine runs over it (`Layout::new`). Clones share one handle.
#[derive(Clone)]
pub struct PluginStorage {
    inner: Arc<Handle>,
}

struct Handle {
    vtable: StorageV1,
    handle: *mut c_void,
    keep: Keep,
    name: String,
    traits: u32,
}

// SAFETY: the plugin's storage is `Send + Sync` (the ABI requires an
// `ObjectStorage`), and the handle is only passed back to it.
unsafe impl Send for Handle {}
// SAFETY: as above.
unsafe impl Sync for Handle {}

impl Drop for Handle {
    fn drop(&mut self) {
        if !self.handle.is_null() {
            (self.vtable.release)(self.handle);
        }
    }
}

impl PluginStorage {
    /// Takes over a handle the plugin's `open` made.
    pub(super) fn new(vtable: StorageV1, handle: *mut c_void, keep: Keep) -> Self {
        let described = stream::bytes((vtable.describe)(handle), &keep);
        let traits = (vtable.traits)(handle);
        PluginStorage {
            inner: Arc::new(Handle {
                vtable,
                handle,
                keep,
                name: String::from_utf8_lossy(&described).into_owned(),
                traits,
            }),
        }
    }

    /// Calls one operation; the answer, and the bytes it carried if any.
    async fn call(
        &self,
        op: Operation,
        args: &StorageArgs,
        body: Option<Body>,
    ) -> Result<(StorageAnswer, Option<Body>)> {
        let inner = &self.inner;
        let (payload, body) = invoke(op, inner.handle, &inner.keep, &encode(args), body).await?;
        let answer = if payload.is_empty() {
            StorageAnswer::default()
        } else {
            decode(&payload, "storage answer")?
        };
        Ok((answer, body))
    }

    fn vtable(&self) -> &StorageV1 {
        &self.inner.vtable
    }

    fn keyed(key: &str) -> StorageArgs {
        StorageArgs {
            key: Some(key.to_owned()),
            ..StorageArgs::default()
        }
    }

    /// The body an answer promised, or an error naming the operation.
    fn promised(&self, body: Option<Body>, operation: &'static str) -> Result<Body> {
        body.ok_or_else(|| Error::Backend {
            backend: self.inner.name.clone(),
            operation,
            source: "the plugin said the object is there but sent no bytes".into(),
        })
    }

    /// A small object's bytes and version, from an answer that found it.
    async fn object(
        &self,
        answer: StorageAnswer,
        body: Option<Body>,
        limit: u64,
    ) -> Result<Option<(Bytes, Version)>> {
        if answer.flag != Some(true) {
            return Ok(None);
        }
        let version = answer.version.ok_or_else(|| Error::Backend {
            backend: self.inner.name.clone(),
            operation: "read",
            source: "the plugin read an object but gave no version".into(),
        })?;
        let bytes = self.promised(body, "read")?.bytes(limit).await?;
        Ok(Some((bytes, Version(version))))
    }
}

impl fmt::Display for PluginStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.name)
    }
}

impl fmt::Debug for PluginStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginStorage")
            .field("name", &self.inner.name)
            .finish()
    }
}

#[async_trait]
impl ObjectStorage for PluginStorage {
    fn resumable(&self) -> bool {
        self.inner.traits & STORAGE_RESUMABLE != 0
    }

    async fn read(&self, key: &str, limit: u64) -> Result<Option<(Bytes, Version)>> {
        let args = StorageArgs {
            limit: Some(limit),
            ..Self::keyed(key)
        };
        let (answer, body) = self.call(self.vtable().read, &args, None).await?;
        self.object(answer, body, limit).await
    }

    async fn read_changed(&self, key: &str, limit: u64, known: &Version) -> Result<Changed> {
        let args = StorageArgs {
            limit: Some(limit),
            version: Some(known.0.clone()),
            ..Self::keyed(key)
        };
        let (answer, body) = self.call(self.vtable().read_changed, &args, None).await?;
        if answer.changed == Some(false) {
            return Ok(Changed::No);
        }
        Ok(Changed::Yes(self.object(answer, body, limit).await?))
    }

    async fn write(&self, key: &str, bytes: Bytes, condition: Condition) -> Result<()> {
        let args = StorageArgs {
            version: match condition {
                Condition::Absent => None,
                Condition::Matches(version) => Some(version.0),
            },
            ..Self::keyed(key)
        };
        self.call(self.vtable().write, &args, Some(Body::from_bytes(bytes)))
            .await
            .map(drop)
    }

    async fn size(&self, key: &str) -> Result<Option<u64>> {
        let (answer, _) = self
            .call(self.vtable().object_size, &Self::keyed(key), None)
            .await?;
        Ok(answer.number)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        let (answer, _) = self
            .call(self.vtable().list, &Self::keyed(prefix), None)
            .await?;
        Ok(answer
            .listed
            .unwrap_or_default()
            .into_iter()
            .map(Listed::from)
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.call(self.vtable().delete, &Self::keyed(key), None)
            .await
            .map(drop)
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Option<Body>> {
        let args = StorageArgs {
            start: range.as_ref().map(|r| r.start),
            end: range.as_ref().map(|r| r.end),
            ..Self::keyed(key)
        };
        let (answer, body) = self.call(self.vtable().get, &args, None).await?;
        if answer.flag != Some(true) {
            return Ok(None);
        }
        self.promised(body, "fetch").map(Some)
    }

    async fn put_blob(&self, descriptor: &Descriptor, body: Body, offset: u64) -> Result<()> {
        let args = StorageArgs {
            descriptor: Some(descriptor.clone()),
            offset: Some(offset),
            ..StorageArgs::default()
        };
        self.call(self.vtable().put_blob, &args, Some(body))
            .await
            .map(drop)
    }

    async fn partial(&self, descriptor: &Descriptor) -> Result<u64> {
        let args = StorageArgs {
            descriptor: Some(descriptor.clone()),
            ..StorageArgs::default()
        };
        let (answer, _) = self.call(self.vtable().partial, &args, None).await?;
        Ok(answer.number.unwrap_or(0))
    }

    fn adopts(&self) -> bool {
        self.inner.traits & STORAGE_ADOPTS != 0
    }

    async fn adopt(&self, from: &str, key: &str, size: u64) -> Result<bool> {
        let args = StorageArgs {
            from: Some(from.to_owned()),
            size: Some(size),
            ..Self::keyed(key)
        };
        let (answer, _) = self.call(self.vtable().adopt, &args, None).await?;
        Ok(answer.flag == Some(true))
    }

    async fn clean_staging(&self, age: Duration) -> Result<usize> {
        let args = StorageArgs {
            age_ms: Some(u64::try_from(age.as_millis()).unwrap_or(u64::MAX)),
            ..StorageArgs::default()
        };
        let (answer, _) = self.call(self.vtable().clean_staging, &args, None).await?;
        Ok(usize::try_from(answer.number.unwrap_or(0)).unwrap_or(usize::MAX))
    }
}
