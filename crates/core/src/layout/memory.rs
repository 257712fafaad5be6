//! [`MemoryStorage`]: object storage in memory, so a layout (and every
//! guarantee of the layout engine) can live in a process with nothing on
//! disk — for tests, and for a throwaway served store. Clones share the
//! same objects, as two handles on one bucket do.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use super::storage::{Condition, Level, Listed, ObjectStorage, Version};
use crate::body::Body;
use crate::error::{Error, Result};
use crate::model::Descriptor;

/// One stored object.
#[derive(Clone)]
struct Object {
    bytes: Bytes,
    version: u64,
    modified: SystemTime,
}

/// Object storage in memory; clones share it.
#[derive(Clone, Default)]
pub struct MemoryStorage {
    name: Arc<str>,
    objects: Arc<Mutex<HashMap<String, Object>>>,
    versions: Arc<std::sync::atomic::AtomicU64>,
}

impl MemoryStorage {
    /// An empty storage called `name` in messages.
    pub fn new(name: &str) -> Self {
        MemoryStorage {
            name: name.into(),
            ..MemoryStorage::default()
        }
    }

    fn objects(&self) -> std::sync::MutexGuard<'_, HashMap<String, Object>> {
        self.objects.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn put(&self, key: &str, bytes: Bytes) -> u64 {
        let version = self
            .versions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        self.objects().insert(
            key.to_owned(),
            Object {
                bytes,
                version,
                modified: SystemTime::now(),
            },
        );
        version
    }

    /// Sets when `key` was last written (tests of age rules).
    pub fn set_modified(&self, key: &str, at: SystemTime) {
        if let Some(object) = self.objects().get_mut(key) {
            object.modified = at;
        }
    }
}

impl fmt::Debug for MemoryStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStorage")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for MemoryStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "memory-layout:{}", self.name)
    }
}

fn version(number: u64) -> Version {
    Version(number.to_string())
}

#[async_trait]
impl ObjectStorage for MemoryStorage {
    fn resumable(&self) -> bool {
        false
    }

    async fn read(&self, key: &str, limit: u64) -> Result<Option<(Bytes, Version)>> {
        let Some(object) = self.objects().get(key).cloned() else {
            return Ok(None);
        };
        if object.bytes.len() as u64 > limit {
            return Err(Error::LimitExceeded {
                what: format!("{self}/{key}"),
                limit,
            });
        }
        Ok(Some((object.bytes, version(object.version))))
    }

    async fn write(&self, key: &str, bytes: Bytes, condition: Condition) -> Result<()> {
        // The check and the write under one lock: the compare-and-swap.
        let mut objects = self.objects();
        let holds = match (&condition, objects.get(key)) {
            (Condition::Absent, None) => true,
            (Condition::Matches(expected), Some(object)) => *expected == version(object.version),
            _ => false,
        };
        if !holds {
            return Err(Error::Conflict {
                what: key.to_owned(),
                place: self.to_string(),
            });
        }
        let number = self
            .versions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        objects.insert(
            key.to_owned(),
            Object {
                bytes,
                version: number,
                modified: SystemTime::now(),
            },
        );
        Ok(())
    }

    async fn size(&self, key: &str) -> Result<Option<u64>> {
        Ok(self.objects().get(key).map(|o| o.bytes.len() as u64))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        Ok(self
            .objects()
            .iter()
            .filter(|(key, _)| key.starts_with(prefix))
            .map(|(key, object)| Listed {
                key: key.clone(),
                size: object.bytes.len() as u64,
                modified: Some(object.modified),
            })
            .collect())
    }

    async fn list_level(&self, prefix: &str) -> Result<Option<Level>> {
        // `a` and `a/` name the same level, as in an object store.
        let prefix = match prefix.trim_end_matches('/') {
            "" => String::new(),
            trimmed => format!("{trimmed}/"),
        };
        Ok(Some(Level::of(
            &prefix,
            self.objects().keys().map(String::as_str),
        )))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.objects().remove(key);
        Ok(())
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Option<Body>> {
        let Some(object) = self.objects().get(key).cloned() else {
            return Ok(None);
        };
        let bytes = match range {
            Some(range) => {
                let end = usize::try_from(range.end.min(object.bytes.len() as u64)).unwrap_or(0);
                let start = usize::try_from(range.start).unwrap_or(end).min(end);
                object.bytes.slice(start..end)
            }
            None => object.bytes,
        };
        Ok(Some(crate::body::chunked(bytes)))
    }

    async fn put_blob(&self, descriptor: &Descriptor, body: Body, _offset: u64) -> Result<()> {
        // Checked whole before it appears: a body that fails, or is not
        // the content it claims, publishes nothing.
        let place = self.to_string();
        let bytes = crate::verify::verified(body, descriptor, &place)
            .bytes(descriptor.size)
            .await?;
        self.put(&super::blob_path(&descriptor.digest), bytes);
        Ok(())
    }

    async fn partial(&self, _descriptor: &Descriptor) -> Result<u64> {
        Ok(0)
    }

    fn adopts(&self) -> bool {
        false
    }

    async fn adopt(&self, _from: &str, _key: &str, _size: u64) -> Result<bool> {
        Ok(false)
    }

    async fn clean_staging(&self, _age: Duration) -> Result<usize> {
        Ok(0)
    }
}
