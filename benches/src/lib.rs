//! orca-benches: shared helpers for the criterion benches in `benches/`.

use bytes::Bytes;
use orca_core::Body;

/// Pseudo-random bytes (xorshift), the same for the same `len` and `seed`.
pub fn pseudo_random(len: usize, seed: u64) -> Bytes {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out.into()
}

/// `data` as a body of 1 MiB chunks (zero-copy slices), as a network or a
/// file would deliver it.
pub fn chunked(data: &Bytes) -> Body {
    const CHUNK: usize = 1024 * 1024;
    let chunks: Vec<_> = (0..data.len())
        .step_by(CHUNK)
        .map(|i| Ok(data.slice(i..(i + CHUNK).min(data.len()))))
        .collect();
    Body::new(data.len() as u64, futures::stream::iter(chunks))
}

/// Storage that counts the writes of `index.json` (the cost the scale
/// bench watches) and otherwise is the storage it wraps.
#[derive(Debug, Clone)]
pub struct CountingStorage<S> {
    inner: S,
    index_writes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<S> CountingStorage<S> {
    /// `inner`, counted.
    pub fn new(inner: S) -> Self {
        CountingStorage {
            inner,
            index_writes: Default::default(),
        }
    }

    /// How many times `index.json` was written.
    pub fn index_writes(&self) -> u64 {
        self.index_writes.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl<S: std::fmt::Display> std::fmt::Display for CountingStorage<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

#[async_trait::async_trait]
impl<S: orca_core::layout::ObjectStorage> orca_core::layout::ObjectStorage for CountingStorage<S> {
    fn resumable(&self) -> bool {
        self.inner.resumable()
    }
    async fn read(
        &self,
        key: &str,
        limit: u64,
    ) -> orca_core::Result<Option<(Bytes, orca_core::layout::Version)>> {
        self.inner.read(key, limit).await
    }
    async fn read_changed(
        &self,
        key: &str,
        limit: u64,
        known: &orca_core::layout::Version,
    ) -> orca_core::Result<orca_core::layout::Changed> {
        self.inner.read_changed(key, limit, known).await
    }
    async fn write(
        &self,
        key: &str,
        bytes: Bytes,
        condition: orca_core::layout::Condition,
    ) -> orca_core::Result<()> {
        self.write_versioned(key, bytes, condition).await.map(drop)
    }
    async fn write_versioned(
        &self,
        key: &str,
        bytes: Bytes,
        condition: orca_core::layout::Condition,
    ) -> orca_core::Result<Option<orca_core::layout::Version>> {
        let written = self.inner.write_versioned(key, bytes, condition).await?;
        if key == orca_core::layout::INDEX_FILE {
            self.index_writes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(written)
    }
    async fn size(&self, key: &str) -> orca_core::Result<Option<u64>> {
        self.inner.size(key).await
    }
    async fn list(&self, prefix: &str) -> orca_core::Result<Vec<orca_core::layout::Listed>> {
        self.inner.list(prefix).await
    }
    async fn list_level(
        &self,
        prefix: &str,
    ) -> orca_core::Result<Option<orca_core::layout::Level>> {
        self.inner.list_level(prefix).await
    }
    async fn delete(&self, key: &str) -> orca_core::Result<()> {
        self.inner.delete(key).await
    }
    async fn get(
        &self,
        key: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> orca_core::Result<Option<Body>> {
        self.inner.get(key, range).await
    }
    async fn put_blob(
        &self,
        descriptor: &orca_core::Descriptor,
        body: Body,
        offset: u64,
    ) -> orca_core::Result<()> {
        self.inner.put_blob(descriptor, body, offset).await
    }
    async fn partial(&self, descriptor: &orca_core::Descriptor) -> orca_core::Result<u64> {
        self.inner.partial(descriptor).await
    }
    fn adopts(&self) -> bool {
        self.inner.adopts()
    }
    async fn adopt(&self, from: &str, key: &str, size: u64) -> orca_core::Result<bool> {
        self.inner.adopt(from, key, size).await
    }
    async fn clean_staging(&self, age: std::time::Duration) -> orca_core::Result<usize> {
        self.inner.clean_staging(age).await
    }
}
