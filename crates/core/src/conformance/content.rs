//! Test content for the checks: blobs of any size generated lazily, chunk by
//! chunk, with a count of how many chunks are alive so a check can tell a
//! backend that streams from one that buffers the whole body.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures::stream;

use crate::body::Body;
use crate::model::{Descriptor, Digester, MediaType};

/// Size of the chunks generated bodies deliver.
pub(super) const CHUNK: usize = 1024 * 1024;

/// Deterministic pseudo-random content of a given size, never held whole.
#[derive(Clone, Debug)]
pub struct GeneratedBlob {
    size: u64,
    seed: u64,
    block: Arc<Vec<u8>>,
}

impl GeneratedBlob {
    /// Content of `size` bytes determined by `seed`.
    pub fn new(size: u64, seed: u64) -> Self {
        let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
        let mut block = Vec::with_capacity(CHUNK);
        while block.len() < CHUNK {
            // xorshift64*: cheap and good enough to defeat compression.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            block.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        GeneratedBlob {
            size,
            seed,
            block: Arc::new(block),
        }
    }

    /// The size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    fn chunk(&self, index: u64) -> Vec<u8> {
        let start = index * CHUNK as u64;
        let len = (self.size - start).min(CHUNK as u64) as usize;
        let mut data = self.block[..len].to_vec();
        let stamp = (index ^ self.seed).to_le_bytes();
        let n = stamp.len().min(len);
        data[..n].copy_from_slice(&stamp[..n]);
        data
    }

    fn chunk_count(&self) -> u64 {
        self.size.div_ceil(CHUNK as u64)
    }

    /// The descriptor of the content (SHA-256), computed by streaming it.
    pub fn descriptor(&self, media_type: MediaType) -> Descriptor {
        let mut digester = Digester::new(crate::model::Algorithm::Sha256);
        for i in 0..self.chunk_count() {
            digester.update(&self.chunk(i));
        }
        Descriptor::new(media_type, digester.finish(), self.size)
    }

    /// The whole content in memory (for small blobs).
    pub fn to_bytes(&self) -> Bytes {
        let mut out = Vec::with_capacity(usize::try_from(self.size).unwrap_or(0));
        for i in 0..self.chunk_count() {
            out.extend_from_slice(&self.chunk(i));
        }
        out.into()
    }

    /// A body generating the content lazily.
    pub fn body(&self) -> Body {
        self.tracked_body(&LiveChunks::default())
    }

    /// A body generating the content lazily, counting live chunks in `live`.
    pub fn tracked_body(&self, live: &LiveChunks) -> Body {
        let blob = self.clone();
        let live = live.clone();
        let chunks = stream::iter(0..self.chunk_count()).map(move |i| {
            let chunk = Tracked::new(blob.chunk(i), &live);
            Ok(Bytes::from_owner(chunk))
        });
        Body::new(self.size, chunks)
    }
}

use futures::StreamExt;

/// Counts chunks of a generated body that are still referenced somewhere.
#[derive(Clone, Debug, Default)]
pub struct LiveChunks {
    inner: Arc<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    live: AtomicUsize,
    peak: AtomicUsize,
}

impl LiveChunks {
    /// The most chunks that were alive at once.
    pub fn peak(&self) -> usize {
        self.inner.peak.load(Ordering::SeqCst)
    }
}

struct Tracked {
    data: Vec<u8>,
    counts: Arc<Counts>,
}

impl Tracked {
    fn new(data: Vec<u8>, live: &LiveChunks) -> Self {
        let now = live.inner.live.fetch_add(1, Ordering::SeqCst) + 1;
        live.inner.peak.fetch_max(now, Ordering::SeqCst);
        Tracked {
            data,
            counts: live.inner.clone(),
        }
    }
}

impl AsRef<[u8]> for Tracked {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.counts.live.fetch_sub(1, Ordering::SeqCst);
    }
}
