//! Content digests (`sha256:<hex>`, `sha512:<hex>`) and a streaming hasher.
//!
//! Only the algorithms registered by the OCI image spec that orca can verify
//! are accepted; the hex part must be lowercase and of the algorithm's length.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Digest as _;

use crate::error::{Error, Result};

/// A digest algorithm orca can compute and verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Algorithm {
    /// SHA-256, the default for everything orca writes.
    #[default]
    Sha256,
    /// SHA-512.
    Sha512,
}

impl Algorithm {
    /// The algorithm's name as it appears in a digest string.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the hex-encoded value.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "sha256" => Some(Algorithm::Sha256),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated content digest: an algorithm and its lowercase hex value.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: Box<str>,
}

impl Digest {
    /// Parses `algorithm:hex`, refusing unknown algorithms, uppercase or
    /// non-hex characters and values of the wrong length.
    pub fn parse(input: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidDigest {
            input: shorten(input),
            reason,
        };
        let Some((name, hex)) = input.split_once(':') else {
            return Err(invalid("expected <algorithm>:<hex>".into()));
        };
        let algorithm = Algorithm::from_name(name).ok_or_else(|| {
            invalid(if name.is_empty() {
                "the algorithm is empty".into()
            } else {
                format!(
                    "unsupported algorithm {:?} (orca verifies sha256 and sha512)",
                    shorten(name)
                )
            })
        })?;
        if let Some(bad) = hex.chars().find(|c| !matches!(c, '0'..='9' | 'a'..='f')) {
            return Err(invalid(format!(
                "the {algorithm} value contains {bad:?}; only lowercase hex is allowed"
            )));
        }
        if hex.len() != algorithm.hex_len() {
            return Err(invalid(format!(
                "a {algorithm} value has {} hex characters, this one has {}",
                algorithm.hex_len(),
                hex.len()
            )));
        }
        Ok(Digest {
            algorithm,
            hex: hex.into(),
        })
    }

    /// Computes the digest of `data` with `algorithm`.
    pub fn compute(algorithm: Algorithm, data: &[u8]) -> Self {
        let mut digester = Digester::new(algorithm);
        digester.update(data);
        digester.finish()
    }

    /// The SHA-256 digest of `data`.
    pub fn sha256(data: &[u8]) -> Self {
        Self::compute(Algorithm::Sha256, data)
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The lowercase hex value.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

/// Cuts hostile inputs down to something an error message can carry.
pub(crate) fn shorten(input: &str) -> String {
    const MAX: usize = 160;
    if input.len() <= MAX {
        return input.to_owned();
    }
    let mut end = MAX;
    while !input.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &input[..end])
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Digest::parse(s)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Digest::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Incremental hasher producing a [`Digest`]; feed it bytes as they stream by.
#[derive(Clone)]
pub struct Digester {
    state: State,
}

#[derive(Clone)]
enum State {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Digester {
    /// A hasher for `algorithm`.
    pub fn new(algorithm: Algorithm) -> Self {
        let state = match algorithm {
            Algorithm::Sha256 => State::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => State::Sha512(sha2::Sha512::new()),
        };
        Digester { state }
    }

    /// Hashes the next bytes.
    pub fn update(&mut self, data: &[u8]) {
        match &mut self.state {
            State::Sha256(h) => h.update(data),
            State::Sha512(h) => h.update(data),
        }
    }

    /// Finishes hashing and returns the digest.
    pub fn finish(self) -> Digest {
        let (algorithm, raw) = match self.state {
            State::Sha256(h) => (Algorithm::Sha256, h.finalize().to_vec()),
            State::Sha512(h) => (Algorithm::Sha512, h.finalize().to_vec()),
        };
        Digest {
            algorithm,
            hex: to_hex(&raw).into(),
        }
    }
}

impl fmt::Debug for Digester {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let algorithm = match self.state {
            State::Sha256(_) => Algorithm::Sha256,
            State::Sha512(_) => Algorithm::Sha512,
        };
        f.debug_struct("Digester")
            .field("algorithm", &algorithm)
            .finish()
    }
}

fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0x0f)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn known_values() {
        assert_eq!(Digest::sha256(b"").to_string(), EMPTY_SHA256);
        let d = Digest::compute(Algorithm::Sha512, b"abc");
        assert!(d.hex().starts_with("ddaf35a193617aba"));
        assert_eq!(d.hex().len(), 128);
    }

    #[test]
    fn streaming_matches_one_shot() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut h = Digester::new(Algorithm::Sha256);
        for chunk in data.chunks(333) {
            h.update(chunk);
        }
        assert_eq!(h.finish(), Digest::sha256(&data));
    }

    #[test]
    fn malformed_digests_name_the_problem() {
        let cases = [
            ("sha256", "expected <algorithm>:<hex>"),
            (":abc", "algorithm is empty"),
            (
                "md5:d41d8cd98f00b204e9800998ecf8427e",
                "unsupported algorithm \"md5\"",
            ),
            (
                "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
                "only lowercase hex",
            ),
            ("sha256:abcd", "has 64 hex characters, this one has 4"),
            ("sha512:zz", "contains 'z'"),
        ];
        for (input, expected) in cases {
            let err = Digest::parse(input).expect_err(input).to_string();
            assert!(err.contains(expected), "{input}: {err}");
            assert!(err.contains("invalid digest"), "{input}: {err}");
        }
    }

    #[test]
    fn serde_round_trip() {
        let d = Digest::sha256(b"x");
        let json = serde_json::to_string(&d).expect("serialise");
        assert_eq!(json, format!("\"{d}\""));
        let back: Digest = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, d);
        assert!(serde_json::from_str::<Digest>("\"sha256:00\"").is_err());
    }
}
