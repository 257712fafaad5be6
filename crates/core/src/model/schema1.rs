//! Docker image manifest v2 schema 1, deprecated: refused unless the user
//! opts in ([`allow_schema1`]; the CLI's `--allow-schema1` or
//! `ORCA_ENABLE_DEPRECATED_SCHEMA1=1`), as moby does. Opted in, a schema-1
//! manifest is carried verbatim, its `fsLayers` blobs with it.
//!
//! A signed one (`…manifest.v1+prettyjws`) is named by the digest of its
//! payload — the document without its `signatures`, as the JWS header's
//! `formatLength` and `formatTail` rebuild it — not of its bytes, as
//! registries name it. Signatures are not checked: orca copies them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine;
use serde::Deserialize;

use super::{Descriptor, Digest, MediaType};
use crate::error::{Error, Result};

static ALLOWED: AtomicBool = AtomicBool::new(false);

tokio::task_local! {
    static SCOPED: bool;
}

/// Lets this process read and copy schema-1 manifests (off by default).
pub fn allow_schema1(allow: bool) {
    ALLOWED.store(allow, Ordering::Relaxed);
}

/// Runs `future` with schema 1 allowed or not, whatever the process says
/// (a library user's one operation, a test).
pub async fn with_schema1<F: std::future::Future>(allow: bool, future: F) -> F::Output {
    SCOPED.scope(allow, future).await
}

/// Whether schema-1 manifests are read and copied here: as the running
/// [`with_schema1`] says, else as the process does.
pub fn schema1_allowed() -> bool {
    SCOPED
        .try_with(|allowed| *allowed)
        .unwrap_or_else(|_| ALLOWED.load(Ordering::Relaxed))
}

/// A schema-1 manifest: what it names, for copying it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schema1Manifest {
    /// The repository it was pushed to.
    pub name: String,
    /// The tag it was pushed with.
    pub tag: String,
    /// The architecture it is for.
    pub architecture: String,
    /// Its layers, from `fsLayers` (each once, in order), sizes unknown
    /// (0) until asked of the store that holds them.
    pub layers: Vec<Descriptor>,
    /// No annotations: schema 1 has none.
    pub annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    schema_version: u32,
    #[serde(default)]
    name: String,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    architecture: String,
    fs_layers: Vec<FsLayer>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FsLayer {
    blob_sum: Digest,
}

/// Parses schema-1 bytes (`what` names them in errors).
pub(super) fn parse(bytes: &[u8], what: &str) -> Result<Schema1Manifest> {
    let invalid = |reason: String, source: Option<serde_json::Error>| Error::InvalidManifest {
        what: what.to_owned(),
        reason,
        source: source.map(|e| Box::new(e) as _),
    };
    let wire: Wire = serde_json::from_slice(bytes)
        .map_err(|e| invalid("it is not a valid schema-1 manifest".into(), Some(e)))?;
    if wire.schema_version != 1 {
        return Err(invalid(
            format!("its schemaVersion is {}, not 1", wire.schema_version),
            None,
        ));
    }
    let mut layers: Vec<Descriptor> = Vec::new();
    for layer in wire.fs_layers {
        if layers.iter().all(|d| d.digest != layer.blob_sum) {
            layers.push(Descriptor::new(
                MediaType::DOCKER_LAYER_GZIP,
                layer.blob_sum,
                0,
            ));
        }
    }
    Ok(Schema1Manifest {
        name: wire.name,
        tag: wire.tag,
        architecture: wire.architecture,
        layers,
        annotations: BTreeMap::new(),
    })
}

/// The payload a signed schema-1 manifest's digest is over: its first
/// `formatLength` bytes and the base64url `formatTail` of its first
/// signature's protected header. `None` when the bytes carry no such
/// signature.
pub fn signed_payload(bytes: &[u8]) -> Option<Vec<u8>> {
    #[derive(Deserialize)]
    struct Signed {
        signatures: Vec<Signature>,
    }
    #[derive(Deserialize)]
    struct Signature {
        protected: String,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Protected {
        format_length: usize,
        format_tail: String,
    }
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let signed: Signed = serde_json::from_slice(bytes).ok()?;
    let first = signed.signatures.first()?;
    let header = url.decode(first.protected.trim_end_matches('=')).ok()?;
    let protected: Protected = serde_json::from_slice(&header).ok()?;
    let tail = url
        .decode(protected.format_tail.trim_end_matches('='))
        .ok()?;
    let head = bytes.get(..protected.format_length)?;
    let mut payload = head.to_vec();
    payload.extend_from_slice(&tail);
    Some(payload)
}

/// The digest a schema-1 manifest is named by: of its payload when signed,
/// else of its bytes.
pub fn schema1_digest(media_type: &MediaType, bytes: &[u8]) -> Digest {
    if media_type.essence() == MediaType::DOCKER_SCHEMA1_SIGNED.as_str()
        && let Some(payload) = signed_payload(bytes)
    {
        return Digest::sha256(&payload);
    }
    Digest::sha256(bytes)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An unsigned schema-1 manifest naming `layers` (repeats kept).
    pub(crate) fn unsigned(layers: &[&Digest]) -> String {
        let fs_layers: Vec<String> = layers
            .iter()
            .map(|d| format!(r#"{{"blobSum":"{d}"}}"#))
            .collect();
        let history: Vec<&str> = layers
            .iter()
            .map(|_| r#"{"v1Compatibility":"{}"}"#)
            .collect();
        format!(
            "{{\n   \"schemaVersion\": 1,\n   \"name\": \"library/old\",\n   \"tag\": \"latest\",\n   \"architecture\": \"amd64\",\n   \"fsLayers\": [{}],\n   \"history\": [{}]\n}}",
            fs_layers.join(","),
            history.join(",")
        )
    }

    /// `unsigned` signed the way libtrust lays it out: the payload cut
    /// before its closing brace, a `signatures` member after, and the cut
    /// tail in the protected header. (The signature itself is not checked
    /// by anyone here.)
    pub(crate) fn signed(layers: &[&Digest]) -> (String, Digest) {
        let payload = unsigned(layers);
        let cut = payload.rfind("\n}").expect("closing brace");
        let (head, tail) = payload.split_at(cut);
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let protected = url.encode(format!(
            r#"{{"formatLength":{},"formatTail":"{}","time":"2016-01-01T00:00:00Z"}}"#,
            head.len(),
            url.encode(tail)
        ));
        let text = format!(
            "{head},\n   \"signatures\": [{{\"header\":{{\"alg\":\"ES256\"}},\"signature\":\"c2ln\",\"protected\":\"{protected}\"}}]{tail}"
        );
        (text, Digest::sha256(payload.as_bytes()))
    }

    #[test]
    fn layers_are_read_once_each_and_signed_ones_named_by_payload() {
        let (a, b) = (Digest::sha256(b"a"), Digest::sha256(b"b"));
        let text = unsigned(&[&a, &b, &a]);
        let parsed = parse(text.as_bytes(), "test").expect("parse");
        assert_eq!(
            parsed.layers.iter().map(|d| &d.digest).collect::<Vec<_>>(),
            [&a, &b]
        );
        let (signed, payload_digest) = signed(&[&a]);
        assert_eq!(
            schema1_digest(&MediaType::DOCKER_SCHEMA1_SIGNED, signed.as_bytes()),
            payload_digest
        );
        assert_ne!(Digest::sha256(signed.as_bytes()), payload_digest);
        assert_eq!(
            schema1_digest(&MediaType::DOCKER_SCHEMA1, text.as_bytes()),
            Digest::sha256(text.as_bytes())
        );
    }
}
