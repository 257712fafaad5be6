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
