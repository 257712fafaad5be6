//! Removing one tag. Registries that implement `DELETE /manifests/<tag>`
//! get exactly that. Those that refuse it (Debian's distribution 2.8 says
//! `DIGEST_INVALID`) get the placeholder method `regctl` uses: point the tag
//! at a unique, empty manifest and delete that manifest by digest, which
//! takes only this tag with it. If the registry then refuses the delete,
//! the tag is put back where it was and the answer is `Unsupported`.

use bytes::Bytes;
use orca_core::{
    Backend, Body, Descriptor, Error, Manifest, MediaType, PushOptions, Result, Selector,
};
use reqwest::{Method, StatusCode};

use crate::client::Request;
use crate::error::{convert, read_error};
use crate::repository::RegistryBackend;
use crate::upload;

/// Annotation that marks (and makes unique) a placeholder manifest.
const PLACEHOLDER: &str = "dev.orca.untag-placeholder";

pub(crate) async fn untag(backend: &RegistryBackend, tag: &str) -> Result<()> {
    let what = format!("tag {tag}");
    let request = Request::new(Method::DELETE, backend.path(&format!("manifests/{tag}")));
    let response = backend
        .client
        .send(&request, &backend.scope(true), "untag")
        .await?;
    let status = response.status();
    // Sent again after an attempt whose answer was lost: a 404 then means
    // that attempt removed it.
    let gone_already = status == StatusCode::NOT_FOUND
        && response
            .extensions()
            .get::<crate::client::AfterUnknown>()
            .is_some();
    if status.is_success() || gone_already {
        return Ok(());
    }
    let error = read_error(response).await;
    let refused = status == StatusCode::METHOD_NOT_ALLOWED
        || (status == StatusCode::BAD_REQUEST
            && matches!(error.code(), Some("DIGEST_INVALID" | "UNSUPPORTED") | None));
    if !refused {
        return Err(convert(error, &backend.place, "untag", what, None));
    }
    let current = backend.resolve(&Selector::Tag(tag.to_owned())).await?;
    let placeholder = placeholder(backend).await?;
    upload::put_tagged(backend, &placeholder.0, placeholder.1.clone(), tag).await?;
    match backend.delete(&placeholder.0).await {
        Ok(()) => Ok(()),
        Err(e) => {
            // Put the tag back before reporting: no tag may be lost.
            if let Err(restore) = backend.tag(&current, tag).await {
                return Err(Error::Backend {
                    backend: backend.place.clone(),
                    operation: "untag",
                    source: format!(
                        "the registry refused to delete the placeholder ({}), and putting \
                         tag {tag} back on {} failed: {}",
                        orca_core::error::chain(&e),
                        current.digest,
                        orca_core::error::chain(&restore)
                    )
                    .into(),
                });
            }
            Err(match e {
                Error::Unsupported { .. } => Error::Unsupported {
                    operation: "untag",
                    place: backend.place.clone(),
                },
                other => other,
            })
        }
    }
}

/// A manifest no one else has: the empty config and layer, with a nonce.
async fn placeholder(backend: &RegistryBackend) -> Result<(Descriptor, Bytes)> {
    let empty = Descriptor::of(MediaType::OCI_EMPTY, b"{}");
    // A blob push asks the registry whether it has the blob first.
    backend
        .push(
            &empty,
            Body::from_bytes(Bytes::from_static(b"{}")),
            &PushOptions::default(),
        )
        .await?;
    let mut manifest = Manifest::new(empty.clone(), vec![empty]);
    // Image-spec 1.1: an empty config needs an artifact type.
    manifest.artifact_type = Some(MediaType::new("application/vnd.orca.untag-placeholder"));
    manifest.annotations.insert(PLACEHOLDER.into(), nonce());
    let raw = manifest.to_raw()?;
    Ok((raw.descriptor(), raw.bytes().clone()))
}

fn nonce() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{now}-{n}", std::process::id())
}
