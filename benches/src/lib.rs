//! orca-benches: shared helpers for the criterion benches in `benches/`.

use bytes::Bytes;

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
