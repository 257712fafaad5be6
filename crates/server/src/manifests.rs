//! Manifests (by tag and by digest, with `?tag=` on a push by digest),
//! tag listing and the catalog with `n`/`last` paging and `Link`, and the
//! Referrers API, answered from the tag-schema index the layout keeps (so
//! the API and the files on disk agree).

use axum::body::Body as HttpBody;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use orca::{Descriptor, Document, MediaType, PushOptions, RawManifest, Selector};

use crate::blobs::{blob, existing, parse_digest};
use crate::errors::{Answer, ApiError};
use crate::routes::{query_value, query_values};
use crate::{Shared, header_text, value};

/// A manifest reference: a digest, or a tag.
fn selector(reference: &str) -> Result<Selector, ApiError> {
    if reference.contains(':') {
        return Ok(Selector::Digest(parse_digest(reference)?));
    }
    Selector::tag(reference)
        .map_err(|e| ApiError::manifest_invalid(format!("tag {reference:?}: {e}")))
}

/// `GET`/`HEAD /v2/<name>/manifests/<reference>`.
pub(crate) async fn get(state: &Shared, name: &str, reference: &str, request: &Parts) -> Answer {
    let selector = match selector(reference) {
        Ok(selector) => selector,
        Err(e) if e.code == "MANIFEST_INVALID" => {
            return Err(ApiError::manifest_unknown(reference));
        }
        Err(e) => return Err(e),
    };
    let repository = existing(state, name).await?;
    let (descriptor, raw) = match repository.store.fetch_manifest(&selector).await {
        Ok(found) => found,
        Err(e) if e.is_not_found() => return Err(ApiError::manifest_unknown(reference)),
        Err(e) => return Err(e.into()),
    };
    let head = request.method == axum::http::Method::HEAD;
    let bytes = raw.bytes().clone();
    let mut response = Response::new(if head {
        HttpBody::empty()
    } else {
        HttpBody::from(bytes.clone())
    });
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, value(descriptor.media_type.as_str()));
    headers.insert(header::CONTENT_LENGTH, value(&bytes.len().to_string()));
    headers.insert(
        "docker-content-digest",
        value(&descriptor.digest.to_string()),
    );
    Ok(response)
}

/// `PUT /v2/<name>/manifests/<reference>`: checked (it parses as its media
/// type says, what it names is here), stored, tagged.
pub(crate) async fn put(
    state: &Shared,
    name: &str,
    reference: &str,
    request: &Parts,
    body: HttpBody,
) -> Answer {
    let target = selector(reference)?;
    let mut tags: Vec<String> = query_values(request.uri.query(), "tag");
    if let Selector::Tag(tag) = &target {
        tags.insert(0, tag.clone());
    }
    for tag in &tags {
        Selector::tag(tag).map_err(|e| ApiError::manifest_invalid(format!("tag {tag:?}: {e}")))?;
    }
    let content_type = header_text(request, header::CONTENT_TYPE)
        .map(|t| t.split(';').next().unwrap_or(t).trim().to_owned());
    let limit = state.limits.manifest;
    let bytes = axum::body::to_bytes(body, usize::try_from(limit).unwrap_or(usize::MAX))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "SIZE_INVALID",
                format!("the manifest is larger than {limit} bytes, or broke off: {e}"),
            )
        })?;
    let media_type = match content_type {
        Some(t) if !t.is_empty() && t != "application/octet-stream" => MediaType::new(&t),
        _ => orca::model::detect::detect_media_type(&bytes, orca::model::detect::Schema1::here())
            .map_err(|e| ApiError::manifest_invalid(e.to_string()))?,
    };
    if !media_type.is_manifest() {
        return Err(ApiError::manifest_invalid(format!(
            "{media_type} is not a manifest media type"
        )));
    }
    let raw = RawManifest::new(media_type.clone(), bytes.clone());
    // A push by digest is hashed with that digest's algorithm (sha512
    // too); a push by tag with the canonical one.
    let algorithm = match &target {
        Selector::Digest(digest) => digest.algorithm(),
        Selector::Tag(_) => orca::Algorithm::Sha256,
    };
    let descriptor = Descriptor::new(
        media_type,
        orca::Digest::compute(algorithm, &bytes),
        bytes.len() as u64,
    );
    if let Selector::Digest(digest) = &target
        && digest != &descriptor.digest
    {
        return Err(ApiError::digest_invalid(format!(
            "the manifest's digest is {}, not {digest}",
            descriptor.digest
        )));
    }
    let document = raw
        .parse()
        .map_err(|e| ApiError::manifest_invalid(e.to_string()))?;
    if let Some(cache) = &state.cache {
        cache.referrer_only(name, !tags.is_empty(), document.subject().is_some())?;
    }
    let repository = state.root.create(name).await?;
    if state.limits.refuse_sparse {
        check_references(&repository.store, &document).await?;
    }
    let subject = document.subject().map(|s| s.digest.clone());
    let mut options = match tags.first() {
        Some(tag) => PushOptions::tagged(tag.clone()),
        // A manifest pushed by digest stays listed, as a registry keeps it;
        // a referrer lives by its subject.
        None if subject.is_none() => PushOptions::listed(),
        None => PushOptions::default(),
    };
    options.offset = 0;
    if let (Some(cache), Some(subject)) = (&state.cache, &subject) {
        // A referrer pushed into a pull-through namespace exists nowhere
        // else: its subject is never evicted.
        cache.pin(name, &repository, subject).await?;
    }
    repository
        .store
        .push_opts(&descriptor, orca::Body::from_bytes(bytes), options)
        .await?;
    for tag in tags.iter().skip(1) {
        repository.store.tag(&descriptor, tag).await?;
    }
    let mut response = (
        StatusCode::CREATED,
        [
            (
                header::LOCATION,
                value(&format!("/v2/{name}/manifests/{}", descriptor.digest)),
            ),
            (
                header::HeaderName::from_static("docker-content-digest"),
                value(&descriptor.digest.to_string()),
            ),
            (header::CONTENT_LENGTH, value("0")),
        ],
    )
        .into_response();
    if let Some(subject) = subject {
        response
            .headers_mut()
            .insert("oci-subject", value(&subject.to_string()));
    }
    if !tags.is_empty() && matches!(target, Selector::Digest(_)) {
        // The tags of `?tag=` that now point at the manifest.
        response
            .headers_mut()
            .insert("oci-tag", value(&tags.join(", ")));
    }
    Ok(response)
}

/// What a manifest names must be here, when sparse manifests are refused:
/// an image's config and layers (but layers hosted elsewhere, with
/// `urls`), an index's manifests.
async fn check_references(store: &orca::Store, document: &Document) -> Result<(), ApiError> {
    let missing = |d: &Descriptor| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "MANIFEST_BLOB_UNKNOWN",
            format!(
                "the manifest names {} {}, which is not in the repository",
                d.media_type, d.digest
            ),
        )
    };
    match document {
        Document::Manifest(manifest) => {
            let named = std::iter::once(&manifest.config)
                .chain(manifest.layers.iter().filter(|l| l.urls.is_empty()));
            for descriptor in named {
                if store.stat(&blob(&descriptor.digest, 0)).await?.is_none() {
                    return Err(missing(descriptor));
                }
            }
        }
        Document::Index(index) => {
            for descriptor in &index.manifests {
                if store.stat(&blob(&descriptor.digest, 0)).await?.is_none() {
                    return Err(missing(descriptor));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// `DELETE /v2/<name>/manifests/<reference>`: a digest deletes the
/// manifest (and its tags), a tag only the tag.
pub(crate) async fn delete(state: &Shared, name: &str, reference: &str) -> Answer {
    let target = selector(reference)?;
    let repository = existing(state, name).await?;
    let outcome = match &target {
        Selector::Digest(_) => match repository.store.resolve(&target).await {
            Ok(descriptor) => repository.store.delete(&descriptor).await,
            Err(e) => Err(e),
        },
        Selector::Tag(tag) => repository.store.untag(tag).await,
    };
    match outcome {
        Ok(()) => Ok((StatusCode::ACCEPTED, [(header::CONTENT_LENGTH, "0")]).into_response()),
        Err(e) if e.is_not_found() => Err(ApiError::manifest_unknown(reference)),
        Err(e) => Err(e.into()),
    }
}

/// `n` and `last` of a listing request.
fn paging(request: &Parts) -> Result<(Option<usize>, Option<String>), ApiError> {
    let query = request.uri.query();
    let n = match query_value(query, "n") {
        Some(n) => Some(n.parse::<usize>().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "PAGINATION_NUMBER_INVALID",
                format!("n={n:?} is no number"),
            )
        })?),
        None => None,
    };
    Ok((n, query_value(query, "last").filter(|l| !l.is_empty())))
}

/// The `Link` to the page after `entries` (a page of at most `n`) when
/// there is more.
fn next_link(path: &str, n: Option<usize>, entries: &[String], more: bool) -> Option<String> {
    match (n, entries.last()) {
        (Some(n), Some(last)) if more => Some(format!("<{path}?n={n}&last={last}>; rel=\"next\"")),
        _ => None,
    }
}

fn listing(json: serde_json::Value, link: Option<String>) -> Response {
    let mut response = axum::Json(json).into_response();
    if let Some(link) = link {
        response.headers_mut().insert(header::LINK, value(&link));
    }
    response
}

/// `GET /v2/<name>/tags/list`.
pub(crate) async fn tags(state: &Shared, name: &str, request: &Parts) -> Answer {
    let (n, last) = paging(request)?;
    let repository = existing(state, name).await?;
    // A layout pages from its parsed index: a page of a repository of
    // 100,000 tags reads only that page.
    let mut query = orca::ListQuery::all();
    query.last = last;
    query.limit = n;
    let found = repository.store.tags(&query).await?;
    let link = next_link(
        &format!("/v2/{name}/tags/list"),
        n,
        &found.entries,
        found.next.is_some(),
    );
    let tags = found.entries;
    Ok(listing(
        serde_json::json!({ "name": name, "tags": tags }),
        link,
    ))
}

/// `GET /v2/_catalog`.
pub(crate) async fn catalog(state: &Shared, request: &Parts) -> Answer {
    let (n, last) = paging(request)?;
    let (repositories, more) = state.root.repositories_page(last.as_deref(), n).await?;
    let link = next_link("/v2/_catalog", n, &repositories, more);
    Ok(listing(
        serde_json::json!({ "repositories": repositories }),
        link,
    ))
}

/// `GET /v2/<name>/referrers/<digest>?artifactType=`: the referrers in
/// digest order, paged by `Link` when they pass the page's byte budget
/// (or the client's `n`); `last` is the digest a page starts after, so a
/// referrer added or removed while a client pages is neither repeated nor
/// skipped beside the others.
pub(crate) async fn referrers(state: &Shared, name: &str, digest: &str, request: &Parts) -> Answer {
    let digest = parse_digest(digest)?;
    let artifact_type =
        query_value(request.uri.query(), "artifactType").map(|t| MediaType::new(&t));
    let (n, last) = paging(request)?;
    let mut all = if state.root.exists(name).await? {
        let repository = state.root.repository(name).await?;
        let subject = Descriptor::new(MediaType::OCI_MANIFEST, digest.clone(), 0);
        match repository
            .store
            .referrers(&subject, artifact_type.as_ref())
            .await
        {
            Ok(listing) => listing.manifests,
            // A client put something else than a referrers index at the
            // subject's fallback tag: it lists no referrers the server
            // knows of (the tag is the client's to use).
            Err(orca::Error::InvalidManifest { .. }) => Vec::new(),
            Err(e) => return Err(e.into()),
        }
    } else {
        Vec::new()
    };
    all.sort_by_cached_key(|d| d.digest.to_string());
    all.dedup_by(|a, b| a.digest == b.digest);
    let (manifests, more) = referrers_page(all, n, last.as_deref(), state.limits.referrers_page);
    let link = match manifests.last() {
        Some(last) if more => {
            let mut next = format!("/v2/{name}/referrers/{digest}?last={}", last.digest);
            if let Some(t) = &artifact_type {
                next.push_str(&format!("&artifactType={}", encode(t.as_str())));
            }
            if let Some(n) = n {
                next.push_str(&format!("&n={n}"));
            }
            Some(format!("<{next}>; rel=\"next\""))
        }
        _ => None,
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MediaType::OCI_INDEX,
        "manifests": manifests,
    });
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, MediaType::OCI_INDEX.as_str())],
        serde_json::to_vec(&index).map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", e.to_string())
        })?,
    )
        .into_response();
    if artifact_type.is_some() {
        response
            .headers_mut()
            .insert("oci-filters-applied", value("artifactType"));
    }
    if let Some(link) = link {
        response.headers_mut().insert(header::LINK, value(&link));
    }
    Ok(response)
}

/// The referrers after `last`, at most `n` and at most `budget` bytes of
/// descriptors (one at least, whatever its size); and whether more follow.
fn referrers_page(
    all: Vec<Descriptor>,
    n: Option<usize>,
    last: Option<&str>,
    budget: usize,
) -> (Vec<Descriptor>, bool) {
    let mut page = Vec::new();
    let mut used = 0;
    let mut rest = all
        .into_iter()
        .filter(|d| last.is_none_or(|last| d.digest.to_string().as_str() > last))
        .peekable();
    while let Some(next) = rest.peek() {
        let size = serde_json::to_vec(next).map(|v| v.len() + 1).unwrap_or(0);
        let full = n.is_some_and(|n| page.len() >= n.max(1));
        if full || (!page.is_empty() && used + size > budget) {
            break;
        }
        used += size;
        page.extend(rest.next());
    }
    let more = rest.peek().is_some();
    (page, more)
}

/// Percent-encoding of a query value.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
