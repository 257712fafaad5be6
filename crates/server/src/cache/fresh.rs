//! Freshness of the pull-through cache's manifests and referrers: a
//! cached tag is served while fresh, then checked with one upstream
//! `HEAD`; a manifest by digest is fetched into the repository that asked
//! for it; referrers are upstream's, fetched once `fresh_for` passed, with
//! those pushed here. Upstream down: what the cache holds, counted.

use axum::http::request::Parts;
use bytes::Bytes;
use orca::{Descriptor, Digest, MediaType, PushOptions, Selector, Store};

use super::{Cache, Upstream, now, upstream_store, write_over};
use crate::errors::{Answer, ApiError};
use crate::{Shared, blobs, manifests};

impl Cache {
    /// The referrers of a cached image: upstream's (its Referrers API or
    /// its fallback tag, asked once `fresh_for` passed) fetched into the
    /// cache, then listed with any pushed here. Upstream down: what the
    /// cache holds, logged and counted.
    pub(super) async fn referrers(
        &self,
        state: &Shared,
        upstream: &Upstream,
        remote: &str,
        name: &str,
        digest: &str,
        request: &Parts,
    ) -> Answer {
        let subject = blobs::parse_digest(digest)?;
        let repository = state.root.repository(name).await?;
        let key = format!(
            "cache/referrers/{}-{}.json",
            subject.algorithm(),
            subject.hex()
        );
        let record = match repository.storage.read(&key, 4096).await? {
            Some((bytes, _)) => serde_json::from_slice::<Checked>(&bytes).ok(),
            None => None,
        };
        let fresh = record
            .as_ref()
            .is_some_and(|r| now().saturating_sub(r.checked) < upstream.fresh_for.as_secs());
        if fresh {
            self.count("hit");
            return manifests::referrers(state, name, digest, request).await;
        }
        match self
            .fetch_referrers(upstream, remote, &repository, &subject)
            .await
        {
            Ok(fetched) => {
                self.count(if fetched == 0 { "revalidated" } else { "miss" });
                let record = Checked {
                    digest: subject,
                    checked: now(),
                };
                // Recorded only where the cache holds a layout: a record
                // alone would make a directory no layout opens.
                if state.root.exists(name).await.unwrap_or(false)
                    && let Ok(bytes) = serde_json::to_vec(&record)
                {
                    let _ = write_over(repository.storage.as_ref(), &key, Bytes::from(bytes)).await;
                }
            }
            Err(e) => {
                self.count("stale");
                tracing::warn!(repository = %name, %subject, error = %e, "upstream failed: serving the referrers the cache holds");
            }
        }
        manifests::referrers(state, name, digest, request).await
    }

    /// Fetches into `repository` the referrers upstream lists for
    /// `subject` that it does not hold; how many.
    async fn fetch_referrers(
        &self,
        upstream: &Upstream,
        remote: &str,
        repository: &orca::Repository,
        subject: &Digest,
    ) -> orca::Result<usize> {
        let origin = Store::new(upstream.registry.repository(remote).await?);
        let probe = Descriptor::new(MediaType::OCI_MANIFEST, subject.clone(), 0);
        let listed = origin.referrers(&probe, None).await?;
        let mut fetched = 0;
        for referrer in listed.manifests {
            if repository.store.exists(&referrer).await? {
                continue;
            }
            // One referrer upstream lists but cannot serve (gone, too
            // large) is left out; the others are cached.
            let (descriptor, raw) = match origin
                .fetch_manifest(&Selector::Digest(referrer.digest.clone()))
                .await
            {
                Ok(found) => found,
                Err(e) if !e.is_retryable() => {
                    tracing::warn!(referrer = %referrer.digest, error = %e, "an upstream referrer left out");
                    continue;
                }
                Err(e) => return Err(e),
            };
            // A referrer lives by its subject.
            repository
                .store
                .push_opts(
                    &descriptor,
                    orca::Body::from_bytes(raw.bytes().clone()),
                    PushOptions::default().sparse(),
                )
                .await?;
            fetched += 1;
        }
        Ok(fetched)
    }

    /// A manifest: fresh from the cache, or checked with upstream.
    pub(super) async fn manifest(
        &self,
        state: &Shared,
        upstream: &Upstream,
        remote: &str,
        name: &str,
        reference: &str,
        request: &Parts,
    ) -> Answer {
        let repository = state.root.repository(name).await?;
        if reference.contains(':') {
            let digest = blobs::parse_digest(reference)?;
            let probe = Descriptor::new(MediaType::OCI_MANIFEST, digest.clone(), 0);
            if !repository.store.exists(&probe).await? {
                let origin = upstream_store(upstream, remote).await?;
                let fetched = origin.fetch_manifest(&Selector::Digest(digest)).await;
                let (descriptor, raw) = fetched.map_err(|e| self.unreachable(name, e))?;
                let options = PushOptions::listed().sparse();
                repository
                    .store
                    .push_opts(
                        &descriptor,
                        orca::Body::from_bytes(raw.bytes().clone()),
                        options,
                    )
                    .await?;
                self.count("miss");
            } else {
                self.count("hit");
            }
            return manifests::get(state, name, reference, request).await;
        }
        let selector =
            Selector::tag(reference).map_err(|_| ApiError::manifest_unknown(reference))?;
        let key = format!("cache/tags/{reference}.json");
        let record = match repository.storage.read(&key, 4096).await? {
            Some((bytes, _)) => serde_json::from_slice::<Checked>(&bytes).ok(),
            None => None,
        };
        let cached = repository.store.resolve(&selector).await.ok();
        let fresh = record.as_ref().is_some_and(|record| {
            let immutable = upstream
                .immutable
                .iter()
                .any(|pattern| crate::auth::glob(pattern, reference));
            immutable || now().saturating_sub(record.checked) < upstream.fresh_for.as_secs()
        });
        if let (Some(cached), Some(record), true) = (&cached, &record, fresh)
            && cached.digest == record.digest
        {
            self.count("hit");
            return manifests::get(state, name, reference, request).await;
        }
        let origin = match upstream.registry.repository(remote).await {
            Ok(origin) => Store::new(origin),
            Err(e) => {
                return self
                    .stale(state, name, reference, request, cached.is_some(), e)
                    .await;
            }
        };
        let current = match origin.resolve(&selector).await {
            Ok(current) => current,
            Err(e) if e.is_not_found() => return Err(ApiError::manifest_unknown(reference)),
            Err(e) => {
                return self
                    .stale(state, name, reference, request, cached.is_some(), e)
                    .await;
            }
        };
        if cached.as_ref().is_some_and(|c| c.digest == current.digest) {
            self.count("revalidated");
        } else {
            let (descriptor, raw) = match origin
                .fetch_manifest(&Selector::Digest(current.digest.clone()))
                .await
            {
                Ok(found) => found,
                Err(e) => {
                    return self
                        .stale(state, name, reference, request, cached.is_some(), e)
                        .await;
                }
            };
            repository
                .store
                .push_opts(
                    &descriptor,
                    orca::Body::from_bytes(raw.bytes().clone()),
                    PushOptions::tagged(reference).sparse(),
                )
                .await?;
            self.count("miss");
        }
        let record = Checked {
            digest: current.digest,
            checked: now(),
        };
        if let Ok(bytes) = serde_json::to_vec(&record) {
            // Whichever replica checked last is as good as this one.
            let _ = write_over(repository.storage.as_ref(), &key, Bytes::from(bytes)).await;
        }
        manifests::get(state, name, reference, request).await
    }

    /// Upstream could not say what tag `reference` names: the cached one
    /// is served if there is one (logged and counted), else the failure.
    async fn stale(
        &self,
        state: &Shared,
        name: &str,
        reference: &str,
        request: &Parts,
        cached: bool,
        e: orca::Error,
    ) -> Answer {
        if !cached {
            return Err(self.unreachable(name, e));
        }
        self.count("stale");
        tracing::warn!(repository = %name, tag = %reference, error = %e, "upstream failed: serving the cached tag");
        manifests::get(state, name, reference, request).await
    }
}

/// What the cache records about a tag: the digest it named upstream and
/// when that was last checked (seconds since the epoch).
#[derive(serde::Serialize, serde::Deserialize)]
struct Checked {
    digest: Digest,
    checked: u64,
}
