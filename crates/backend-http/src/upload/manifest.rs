//! Manifests by `PUT`: by tag, or by digest with `?tag=` for digests of
//! another algorithm than the registry's canonical sha256; sent again while
//! a registry briefly refuses a blob it holds, and checked against the
//! digest the registry says it stored.

use std::time::Duration;

use bytes::Bytes;
use orca_core::{Descriptor, Error, Result};
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};

use crate::client::Request;
use crate::error::{convert, read_error};
use crate::repository::RegistryBackend;

/// Times a manifest refused for naming an unknown blob is sent again.
const BLOB_UNKNOWN_RETRIES: u32 = 3;

/// Puts a manifest under `tag`. One addressed by sha256 goes by tag. One
/// addressed by another algorithm goes by its digest with `?tag=`
/// (distribution-spec 1.1.1: a push by tag is addressed by the registry's
/// canonical algorithm), which the registry confirms with `OCI-Tag`; a
/// registry that does not is sent the push by tag as well.
pub(crate) async fn put_tagged(
    backend: &RegistryBackend,
    descriptor: &Descriptor,
    bytes: Bytes,
    tag: &str,
) -> Result<()> {
    if descriptor.digest.algorithm() == orca_core::Algorithm::Sha256 {
        return put_manifest(backend, descriptor, bytes, tag)
            .await
            .map(drop);
    }
    let by_digest = format!("{}?tag={tag}", descriptor.digest);
    let headers = put_manifest(backend, descriptor, bytes.clone(), &by_digest).await?;
    let confirmed = headers
        .get_all("oci-tag")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == tag);
    if confirmed {
        return Ok(());
    }
    put_manifest(backend, descriptor, bytes, tag)
        .await
        .map(drop)
}

/// Puts a manifest's exact bytes under `reference` (a tag or its digest);
/// returns the answer's headers.
pub(crate) async fn put_manifest(
    backend: &RegistryBackend,
    descriptor: &Descriptor,
    bytes: Bytes,
    reference: &str,
) -> Result<reqwest::header::HeaderMap> {
    let bytes_for_probe = bytes.clone();
    let request = Request::new(Method::PUT, backend.path(&format!("manifests/{reference}")))
        .header(CONTENT_TYPE, descriptor.media_type.as_str())
        .body(bytes);
    let mut attempt = 0;
    let response = loop {
        let response = backend
            .client
            .send(&request, &backend.scope(true), "push")
            .await?;
        if response.status().is_success() {
            break response;
        }
        let status = response.status();
        let error = read_error(response).await;
        // Distribution 2.8 rewrites a repository's blob link in place when
        // the same blob is pushed again, so while another client pushes it
        // a manifest naming it can be refused as naming an unknown blob.
        // The children were pushed first: ask again, a bounded few times.
        let blob_unknown = error
            .details_codes()
            .any(|c| c == "MANIFEST_BLOB_UNKNOWN" || c == "BLOB_UNKNOWN");
        if status == StatusCode::BAD_REQUEST && blob_unknown && attempt < BLOB_UNKNOWN_RETRIES {
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(150 * u64::from(attempt))).await;
            continue;
        }
        // A registry that addresses manifests only by sha256 (distribution
        // 2.8 does) refuses any other digest as not matching the content.
        if status == StatusCode::BAD_REQUEST
            && descriptor.digest.algorithm() != orca_core::Algorithm::Sha256
            && error.code() == Some("DIGEST_INVALID")
        {
            return Err(Error::Unsupported {
                operation: "manifests addressed by a digest other than sha256",
                place: backend.place.clone(),
            });
        }
        return Err(convert(
            error,
            &backend.place,
            "push",
            format!("manifest {}", descriptor.digest),
            None,
        ));
    };
    let headers = response.headers().clone();
    // A registry that indexed the subject says so (distribution-spec 1.1);
    // one that did not leaves the referrers index to the client.
    #[derive(serde::Deserialize)]
    struct Probe {
        subject: Option<serde_json::Value>,
    }
    let has_subject = serde_json::from_slice::<Probe>(&bytes_for_probe)
        .ok()
        .and_then(|p| p.subject)
        .is_some();
    if has_subject {
        let indexed = response.headers().contains_key("oci-subject");
        backend
            .referrers_api
            .store(indexed, std::sync::atomic::Ordering::Relaxed);
    }
    if let Some(sent) = response
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
    {
        // The registry stored it: a digest it names in a form orca cannot
        // read is no reason to fail a push that succeeded (backends m11).
        let Ok(sent) = orca_core::Digest::parse(sent.trim()) else {
            return Ok(headers);
        };
        // A registry names content by its own algorithm: compare like
        // with like.
        let expected = if sent.algorithm() == descriptor.digest.algorithm() {
            descriptor.digest.clone()
        } else {
            orca_core::Digest::compute(sent.algorithm(), &bytes_for_probe)
        };
        if sent != expected {
            return Err(Error::DigestMismatch {
                what: format!("manifest stored as {reference}"),
                place: backend.place.clone(),
                expected,
                actual: sent,
            });
        }
    }
    Ok(headers)
}
