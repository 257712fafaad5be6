//! The small object-storage contract the layout engine runs over: whole
//! reads of small objects with their version, conditional writes (the one
//! compare-and-swap every guarantee rests on), sizes, listing, deletion,
//! streamed reads, and blobs staged then published. A directory (a file
//! lock around the compare) and an object store (`If-Match` /
//! `If-None-Match`) are its two implementations.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::body::Body;
use crate::error::Result;
use crate::model::Descriptor;

/// An object's version as its storage reports it (an ETag, a content
/// hash): opaque, compared only for equality.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Version(pub String);

/// What [`ObjectStorage::read_changed`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Changed {
    /// The object is still at the version the caller knows.
    No,
    /// The object is now these bytes at this version, or absent (`None`).
    Yes(Option<(Bytes, Version)>),
}

/// One object an [`ObjectStorage::list`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// Its key, relative to the layout.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written, by the storage's clock (a file's mtime,
    /// an object's `LastModified`); `None` when the storage does not say.
    pub modified: Option<SystemTime>,
}

/// What is directly under a prefix, as [`ObjectStorage::list_level`]
/// found it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Level {
    /// The names of the objects there, sorted.
    pub objects: Vec<String>,
    /// The names of the levels below it (the next part of longer keys,
    /// without its `/`), sorted.
    pub below: Vec<String>,
}

impl Level {
    /// The level directly under `prefix` of a storage holding `keys`.
    pub fn of<'a>(prefix: &str, keys: impl IntoIterator<Item = &'a str>) -> Level {
        let (mut objects, mut below) = (BTreeSet::new(), BTreeSet::new());
        for rest in keys.into_iter().filter_map(|key| key.strip_prefix(prefix)) {
            match rest.split_once('/') {
                Some((next, _)) => below.insert(next),
                None => objects.insert(rest),
            };
        }
        let owned = |names: BTreeSet<&str>| names.into_iter().map(str::to_owned).collect();
        Level {
            objects: owned(objects),
            below: owned(below),
        }
    }
}

/// The condition a [`ObjectStorage::write`] needs to hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    /// The object does not exist.
    Absent,
    /// The object is still at this version.
    Matches(Version),
}

/// Storage for one OCI image layout, addressed by keys relative to the
/// layout's root (`index.json`, `blobs/sha256/<hex>`).
///
/// Errors are core errors that name the storage (its `Display`); a missing
/// object is `None` or `false`, never an error.
#[async_trait]
pub trait ObjectStorage: fmt::Debug + fmt::Display + Send + Sync + 'static {
    /// Whether an interrupted [`ObjectStorage::put_blob`] keeps what
    /// arrived for a later one to continue ([`ObjectStorage::partial`]).
    fn resumable(&self) -> bool;

    /// Reads a small object whole, with its version; `None` when absent.
    /// An object longer than `limit` is `Error::LimitExceeded`.
    async fn read(&self, key: &str, limit: u64) -> Result<Option<(Bytes, Version)>>;

    /// [`ObjectStorage::read`], unless the object is still at version
    /// `known`. By default it reads and compares; an object store asks
    /// with `If-None-Match` and moves no bytes when nothing changed. Only
    /// a version that tells contents apart may answer `Changed::No`.
    async fn read_changed(&self, key: &str, limit: u64, known: &Version) -> Result<Changed> {
        Ok(match self.read(key, limit).await? {
            Some((_, version)) if &version == known => Changed::No,
            found => Changed::Yes(found),
        })
    }

    /// Writes a small object if `condition` holds, atomically: readers see
    /// the old bytes or the new ones. When the condition does not hold,
    /// `Error::Conflict` and nothing is written.
    async fn write(&self, key: &str, bytes: Bytes, condition: Condition) -> Result<()>;

    /// [`ObjectStorage::write`], giving the version the object now has
    /// when the storage knows it without asking again (the engine then
    /// keeps what it wrote instead of reading it back); by default `None`.
    async fn write_versioned(
        &self,
        key: &str,
        bytes: Bytes,
        condition: Condition,
    ) -> Result<Option<Version>> {
        self.write(key, bytes, condition).await.map(|()| None)
    }

    /// The size of an object; `None` when absent.
    async fn size(&self, key: &str) -> Result<Option<u64>>;

    /// Every object under `prefix` (a key ending in `/`), keyed relative
    /// to the layout, with sizes and modification times, in no particular
    /// order.
    async fn list(&self, prefix: &str) -> Result<Vec<Listed>>;

    /// What is directly under `prefix` (a key ending in `/`, or empty for
    /// the top), in one request where the storage can (an object store's
    /// delimiter listing): a walk of a tree of layouts then reads only the
    /// levels it passes. `None` (the default) where the storage can only
    /// list everything below ([`ObjectStorage::list`]).
    async fn list_level(&self, prefix: &str) -> Result<Option<Level>> {
        let _ = prefix;
        Ok(None)
    }

    /// Deletes an object; one that is already gone is no error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Streams an object, or `range` of it (within its size); `None` when
    /// absent.
    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Option<Body>>;

    /// Stages `body` (the content of `descriptor`, from byte `offset` when
    /// continuing a partial one) and publishes it at the blob's key only
    /// once the body ended without error. On any error nothing appears at
    /// the key.
    async fn put_blob(&self, descriptor: &Descriptor, body: Body, offset: u64) -> Result<()>;

    /// How many bytes of `descriptor` an interrupted `put_blob` kept.
    async fn partial(&self, descriptor: &Descriptor) -> Result<u64>;

    /// Streams what a `put_blob` of `descriptor` holds so far (one
    /// running now, or one interrupted), from byte `from` up to `to` or
    /// as far as it got; `None` where there is no such staging or the
    /// storage cannot show it (the default). The bytes are not verified:
    /// a reader trusts none of them before the blob is published.
    async fn read_partial(
        &self,
        descriptor: &Descriptor,
        from: u64,
        to: u64,
    ) -> Result<Option<Body>> {
        let _ = (descriptor, from, to);
        Ok(None)
    }

    /// Whether [`ObjectStorage::adopt`] works here (the layout's `mount`).
    fn adopts(&self) -> bool;

    /// Makes the object at `key` of another layout this storage can reach
    /// (`from`: a directory on the same filesystem, a prefix of the same
    /// bucket) appear at `key` here, without its bytes passing through
    /// orca (a hard link, a server-side copy). `false` when it cannot: the
    /// object is absent there, is not `size` bytes, or is out of reach.
    async fn adopt(&self, from: &str, key: &str, size: u64) -> Result<bool>;

    /// Removes staging that pushes killed mid-way left behind, when older
    /// than `age` (younger staging may belong to a push still running).
    /// Returns how many were removed.
    async fn clean_staging(&self, age: Duration) -> Result<usize>;

    /// Whether [`ObjectStorage::append`] and [`ObjectStorage::publish`]
    /// work here: staged bytes grow in place in one object and become a
    /// blob by a rename (a filesystem). Elsewhere a writer stages in
    /// pieces and pushes them whole.
    fn appends(&self) -> bool {
        false
    }

    /// Appends what `body` streams to the object at `key`, which must hold
    /// exactly `offset` bytes (an absent one holds none) and have no other
    /// writer appending at the same time: otherwise `Error::Conflict`, and
    /// nothing is written. Returns the object's size after. What an error
    /// part-way leaves appended stays.
    async fn append(
        &self,
        key: &str,
        offset: u64,
        body: BoxStream<'static, Result<Bytes>>,
    ) -> Result<u64> {
        let _ = (key, offset, body);
        Err(crate::Error::Unsupported {
            operation: "append",
            place: self.to_string(),
        })
    }

    /// Publishes the object at `key` as the blob `descriptor`, once its
    /// bytes hash to the digest, by a rename: nothing is copied, and the
    /// object is gone after. `false` when it cannot (absent, another
    /// writer holds it, or the storage does not append): the caller
    /// pushes its bytes instead. Content that does not match is
    /// `Error::DigestMismatch` (or `SizeMismatch`) and stays where it was.
    async fn publish(&self, key: &str, descriptor: &Descriptor) -> Result<bool> {
        let _ = (key, descriptor);
        Ok(false)
    }
}
