//! Pull-through namespaces: `/v2/<namespace>/<repo>/…` is served from the
//! repository `<namespace>/<repo>` of the root, filled on demand from the
//! upstream registry's `<repo>` (Docker Hub's `library/` for one-component
//! names). Each upstream repository is its own layout, so a digest is
//! served to a repository only once that repository was seen to hold it
//! upstream (the source-repository rule, for free).
//!
//! - A manifest by tag is served from the cache while the tag is fresh
//!   (checked less than `fresh_for` ago, or immutable), else after one
//!   upstream `HEAD`; a tag upstream moved is fetched again. When upstream
//!   cannot be asked, a cached tag is served all the same (logged and
//!   counted), an uncached one is the spec's error at once.
//! - A blob missing from the cache starts one upstream fetch whose bytes
//!   go to the client and into the store at once, verified by the store
//!   (a corrupt byte fails both and caches nothing); the fill goes on if
//!   the client leaves; other requests for the same blob wait for it and
//!   are served from the store.
//! - A blob another repository of the namespace holds is mounted, not
//!   fetched, once upstream said this repository holds it (one `HEAD`).
//! - Referrers of a cached image are upstream's (its API or fallback
//!   tag, asked once `fresh_for` passed), fetched into the cache, listed
//!   with those pushed here.
//! - A pull-through namespace is read-only but for referrers of its
//!   images pushed by digest (a site's signatures of mirrored images).
//! - A request may name its upstream with `?ns=` instead of the path
//!   prefix (containerd's mirrors), or, for the default upstream, read a
//!   bare name the server does not hold (Docker's `registry-mirrors`):
//!   either lands in the same namespace.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body as HttpBody;
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use orca::layout::{Condition, ObjectStorage};
use orca::{Descriptor, Digest, MediaType, PushOptions, Selector, Store};
use tokio::sync::watch;

use crate::errors::{Answer, ApiError};
use crate::routes::Route;
use crate::{Shared, blobs, manifests, value};

/// One pull-through namespace.
#[derive(Clone, Debug)]
pub struct Upstream {
    /// The path prefix clients reach it under (`docker.io`).
    pub namespace: String,
    /// A client of the upstream registry.
    pub registry: orca::http::Registry,
    /// Whether one-component names get Docker Hub's `library/`.
    pub library: bool,
    /// How long a cached tag is served without asking upstream.
    pub fresh_for: Duration,
    /// Tags (globs: `v*`) never asked about again once cached.
    pub immutable: Vec<String>,
    /// Whether reads of repositories this server does not hold, named
    /// without a namespace, come from this upstream (Docker's
    /// `registry-mirrors`).
    pub default: bool,
    /// The most the namespace's cached content may take, in bytes; past
    /// it the collection evicts the images pulled least recently.
    pub budget: Option<u64>,
    /// An image pulled this recently is never evicted.
    pub keep_for: Duration,
}

/// Blob fills running in this process, by repository and digest: a
/// receiver that turns `true` when the fill ended (stored or not).
type Fills = Arc<Mutex<HashMap<(String, Digest), Running>>>;

/// A blob fill running in this process, as the requests that wait for it
/// see it.
#[derive(Clone, Debug)]
struct Running {
    /// Turns `true` when the fill ended (stored or not).
    done: watch::Receiver<bool>,
    /// The blob's size, once upstream said it.
    size: watch::Receiver<Option<u64>>,
    /// Whether the store's staging of the blob is this fill's alone (none
    /// was there when it began), so followers may read it as it grows.
    tail: bool,
}

/// The pull-through state of a server: its upstreams, the blob fills
/// running in this process, and what it counts.
#[derive(Debug, Default)]
pub(crate) struct Cache {
    upstreams: Vec<Upstream>,
    fills: Fills,
    events: Mutex<BTreeMap<&'static str, u64>>,
    upstream_bytes: Arc<AtomicU64>,
    accesses: crate::evict::Accesses,
    /// By namespace: the bytes held after the last eviction pass, images
    /// and bytes evicted in all.
    evictions: Mutex<BTreeMap<String, (u64, u64, u64)>>,
}

/// What the cache records about a tag: the digest it named upstream and
/// when that was last checked (seconds since the epoch).
#[derive(serde::Serialize, serde::Deserialize)]
struct Checked {
    digest: Digest,
    checked: u64,
}

/// Seconds since the epoch.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Cache {
    /// A cache over `upstreams`.
    pub(crate) fn new(upstreams: Vec<Upstream>) -> Self {
        Cache {
            upstreams,
            ..Cache::default()
        }
    }

    /// The upstreams.
    pub(crate) fn upstreams(&self) -> &[Upstream] {
        &self.upstreams
    }

    /// Counts what an eviction pass in `namespace` did.
    pub(crate) fn evicted(&self, namespace: &str, pass: &crate::evict::Evicted) {
        let mut evictions = self
            .evictions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let counts = evictions.entry(namespace.to_owned()).or_default();
        counts.0 = pass.bytes;
        counts.1 += pass.images;
        counts.2 += pass.freed;
    }

    fn count(&self, event: &'static str) {
        *self
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(event)
            .or_default() += 1;
    }

    /// The cache's lines of `/metrics`.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP orca_cache_requests_total Pull-through requests: hit, miss, revalidated (upstream said unchanged), stale (served while upstream failed), followed (served while another request's fill stored it), mounted (from another repository after upstream said this one holds it), upstream_failed."
        );
        let _ = writeln!(out, "# TYPE orca_cache_requests_total counter");
        for (event, count) in self
            .events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let _ = writeln!(
                out,
                "orca_cache_requests_total{{result=\"{event}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP orca_cache_upstream_bytes_total Blob bytes fetched from upstreams."
        );
        let _ = writeln!(out, "# TYPE orca_cache_upstream_bytes_total counter");
        let _ = writeln!(
            out,
            "orca_cache_upstream_bytes_total {}",
            self.upstream_bytes.load(Ordering::Relaxed)
        );
        let evictions = self
            .evictions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !evictions.is_empty() {
            let _ = writeln!(
                out,
                "# HELP orca_cache_bytes What a namespace's cached images hold, at the last eviction pass.\n# TYPE orca_cache_bytes gauge"
            );
            for (namespace, (bytes, _, _)) in evictions.iter() {
                let _ = writeln!(out, "orca_cache_bytes{{namespace=\"{namespace}\"}} {bytes}");
            }
            let _ = writeln!(
                out,
                "# HELP orca_cache_evictions_total Cached images evicted for the size budget.\n# TYPE orca_cache_evictions_total counter"
            );
            for (namespace, (_, images, _)) in evictions.iter() {
                let _ = writeln!(
                    out,
                    "orca_cache_evictions_total{{namespace=\"{namespace}\"}} {images}"
                );
            }
            let _ = writeln!(
                out,
                "# HELP orca_cache_evicted_bytes_total Bytes no cached image holds any more after evictions.\n# TYPE orca_cache_evicted_bytes_total counter"
            );
            for (namespace, (_, _, freed)) in evictions.iter() {
                let _ = writeln!(
                    out,
                    "orca_cache_evicted_bytes_total{{namespace=\"{namespace}\"}} {freed}"
                );
            }
        }
        out
    }

    /// The upstream serving `name`, and the repository's name there.
    fn upstream(&self, name: &str) -> Option<(&Upstream, String)> {
        self.upstreams.iter().find_map(|upstream| {
            let rest = name.strip_prefix(&upstream.namespace)?.strip_prefix('/')?;
            let remote = if upstream.library && !rest.contains('/') {
                format!("library/{rest}")
            } else {
                rest.to_owned()
            };
            Some((upstream, remote))
        })
    }

    /// Moves a request into an upstream's namespace when it names the
    /// upstream with `?ns=` (containerd's mirror requests, the
    /// distribution spec's registry proxying: the namespace itself or the
    /// upstream's host, `docker.io` for Docker Hub), or when it reads a
    /// repository this server does not hold and one upstream is the
    /// default (Docker's `registry-mirrors`, which send bare names).
    pub(crate) async fn namespaced(&self, state: &Shared, route: &mut Route, request: &Parts) {
        let target = match crate::routes::query_value(request.uri.query(), "ns") {
            Some(ns) => self.upstreams.iter().find(|upstream| {
                let host = upstream.registry.host();
                upstream.namespace == ns || host == ns || (docker_hub(host) && docker_hub(&ns))
            }),
            None => {
                let reading = matches!(request.method, Method::GET | Method::HEAD);
                let Some(default) = self.upstreams.iter().find(|u| u.default) else {
                    return;
                };
                let blob = matches!(route, Route::Blob { .. });
                let Some(name) = route.name_mut() else {
                    return;
                };
                let held =
                    self.upstream(name).is_some() || state.root.exists(name).await.unwrap_or(true);
                // A blob is looked for upstream only in a repository a
                // manifest was pulled through: a push to a new repository
                // asks whether its blobs are there, and an upstream's yes
                // would leave its image without them.
                let pulled = !blob || {
                    let cached = format!("{}/{name}", default.namespace);
                    state.root.exists(&cached).await.unwrap_or(false)
                };
                (reading && !held && pulled).then_some(default)
            }
        };
        if let (Some(upstream), Some(name)) = (target, route.name_mut()) {
            *name = format!("{}/{name}", upstream.namespace);
        }
    }

    /// Answers `route` when it is in a pull-through namespace; `None`
    /// otherwise (the server answers it as usual).
    pub(crate) async fn handle(
        &self,
        state: &Arc<Shared>,
        route: &Route,
        method: &Method,
        request: &Parts,
    ) -> Option<Answer> {
        let name = match route {
            Route::Tags { name }
            | Route::Manifest { name, .. }
            | Route::Blob { name, .. }
            | Route::Uploads { name }
            | Route::Upload { name, .. }
            | Route::Referrers { name, .. } => name,
            Route::Ping | Route::Catalog => return None,
        };
        let (upstream, remote) = self.upstream(name)?;
        let reading = matches!(*method, Method::GET | Method::HEAD);
        Some(match route {
            // Referrers of its images (signatures, SBOMs) may be pushed:
            // their blobs, and a manifest (by digest, with a subject: the
            // server's manifest PUT asks `referrer_only`).
            Route::Uploads { .. } | Route::Upload { .. } => return None,
            Route::Manifest { .. } if *method == Method::PUT => return None,
            _ if !reading => Err(read_only(name, upstream)),
            Route::Manifest { reference, .. } => {
                let answer = self
                    .manifest(state, upstream, &remote, name, reference, request)
                    .await;
                if let Ok(response) = &answer
                    && let Some(digest) = response
                        .headers()
                        .get("docker-content-digest")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<Digest>().ok())
                    && upstream.budget.is_some()
                    && let Ok(repository) = state.root.repository(name).await
                {
                    // Served: recorded for the size budget's eviction order.
                    self.accesses
                        .served(&repository, name, &digest, upstream.keep_for)
                        .await;
                }
                answer
            }
            Route::Blob { digest, .. } => {
                self.blob(state, upstream, &remote, name, digest, request)
                    .await
            }
            Route::Referrers { digest, .. } => {
                self.referrers(state, upstream, &remote, name, digest, request)
                    .await
            }
            // Tags: what the cache holds.
            _ => return None,
        })
    }

    /// Whether `name` is in a pull-through namespace.
    pub(crate) fn pulls_through(&self, name: &str) -> bool {
        self.upstream(name).is_some()
    }

    /// Keeps manifest `subject` of pull-through repository `name` from
    /// eviction: a referrer pushed here names it. Nothing elsewhere.
    pub(crate) async fn pin(
        &self,
        name: &str,
        repository: &orca::Repository,
        subject: &Digest,
    ) -> Result<(), ApiError> {
        if !self.pulls_through(name) {
            return Ok(());
        }
        let key = crate::evict::pin_key(subject);
        match repository
            .storage
            .write(&key, Bytes::new(), Condition::Absent)
            .await
        {
            Ok(()) | Err(orca::Error::Conflict { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether `name` is in a pull-through namespace, where a manifest
    /// may be pushed only as a referrer: by digest, with a subject. The
    /// refusal otherwise.
    pub(crate) fn referrer_only(
        &self,
        name: &str,
        tagged: bool,
        subject: bool,
    ) -> Result<(), ApiError> {
        match self.upstream(name) {
            Some((upstream, _)) if tagged || !subject => Err(read_only(name, upstream)),
            _ => Ok(()),
        }
    }

    /// The referrers of a cached image: upstream's (its Referrers API or
    /// its fallback tag, asked once `fresh_for` passed) fetched into the
    /// cache, then listed with any pushed here. Upstream down: what the
    /// cache holds, logged and counted.
    async fn referrers(
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
    async fn manifest(
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

    /// A blob: from the cache, or streamed from upstream while it is
    /// stored (one fill per blob in this process).
    async fn blob(
        &self,
        state: &Arc<Shared>,
        upstream: &Upstream,
        remote: &str,
        name: &str,
        digest: &str,
        request: &Parts,
    ) -> Answer {
        let digest = blobs::parse_digest(digest)?;
        match blobs::get(state, name, &digest.to_string(), request).await {
            Err(e) if e.code == "BLOB_UNKNOWN" || e.code == "NAME_UNKNOWN" => {}
            answer => {
                self.count("hit");
                return answer;
            }
        }
        let repository = state.root.repository(name).await?;
        let probe = blobs::blob(&digest, 0);
        let origin = upstream_store(upstream, remote).await?;
        if request.method == Method::HEAD {
            let size = origin
                .stat(&probe)
                .await
                .map_err(|e| self.unreachable(name, e))?
                .ok_or_else(|| ApiError::blob_unknown(&digest))?;
            return Ok(blob_head(&digest, size));
        }
        // One fill per blob in this process: the first request claims it
        // before it asks upstream anything; the others follow it (reading
        // the store's staging as it grows, where the store shows it) or
        // wait for it, and are served from the store.
        let key = (name.to_owned(), digest.clone());
        let staged = repository
            .storage
            .read_partial(&probe, 0, 0)
            .await
            .ok()
            .flatten()
            .is_some();
        let claim = {
            let mut fills = self.fills.lock().unwrap_or_else(PoisonError::into_inner);
            match fills.get(&key) {
                Some(running) => Err(running.clone()),
                None => {
                    let (finished, done) = watch::channel(false);
                    let (sized, size) = watch::channel(None);
                    let running = Running {
                        done,
                        size,
                        tail: !staged,
                    };
                    fills.insert(key.clone(), running);
                    Ok(Claim {
                        fills: self.fills.clone(),
                        key,
                        finished,
                        sized,
                    })
                }
            }
        };
        let claim = match claim {
            Ok(claim) => claim,
            Err(mut running) => {
                let whole =
                    request.method == Method::GET && !request.headers.contains_key(header::RANGE);
                if whole
                    && running.tail
                    && let Some(response) = follow(&repository, &digest, running.clone()).await
                {
                    self.count("followed");
                    return Ok(response);
                }
                let _ = running.done.wait_for(|finished| *finished).await;
                return blobs::get(state, name, &digest.to_string(), request).await;
            }
        };
        if repository.store.stat(&probe).await?.is_some() {
            // A fill ended between the first look and the claim.
            drop(claim);
            return blobs::get(state, name, &digest.to_string(), request).await;
        }
        let size = origin
            .stat(&probe)
            .await
            .map_err(|e| self.unreachable(name, e))?
            .ok_or_else(|| ApiError::blob_unknown(&digest))?;
        // Upstream says this repository holds it: where another
        // repository of the namespace holds it already, a mount.
        let mounted = self
            .mount_held(state, upstream, name, &repository, &digest)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(repository = %name, %digest, error = %e.message, "mounting from another cached repository failed: fetching");
                false
            });
        if mounted {
            drop(claim);
            return blobs::get(state, name, &digest.to_string(), request).await;
        }
        let _ = claim.sized.send(Some(size));
        let descriptor = blobs::blob(&digest, size);
        // Fetched as one range: the store verifies the digest as it
        // writes, once, instead of the fetch and the store both hashing.
        let body = origin
            .fetch_range(&descriptor, 0..size)
            .await
            .map_err(|e| self.unreachable(name, e))?;
        self.count("miss");
        let ranged = request.headers.contains_key(header::RANGE);
        let mut done = claim.finished.subscribe();
        let filled = Filled {
            state: state.clone(),
            namespace: upstream.namespace.clone(),
            store: repository.store.clone(),
        };
        let client = self.fill(claim, filled, descriptor, body, !ranged);
        match client {
            Some(stream) => {
                let mut response = Response::new(HttpBody::from_stream(stream));
                let headers = response.headers_mut();
                headers.insert(header::CONTENT_LENGTH, value(&size.to_string()));
                headers.insert(header::CONTENT_TYPE, value("application/octet-stream"));
                headers.insert("docker-content-digest", value(&digest.to_string()));
                Ok(response)
            }
            None => {
                // A range: the whole blob is cached first, then the range
                // is served from the store.
                let _ = done.wait_for(|finished| *finished).await;
                blobs::get(state, name, &digest.to_string(), request).await
            }
        }
    }

    /// Mounts `digest` into repository `name` (of `repository`) from
    /// another repository of `upstream`'s namespace recorded as holding
    /// it; whether it did. Records found stale (the blob collected or
    /// evicted there since) are dropped.
    async fn mount_held(
        &self,
        state: &Shared,
        upstream: &Upstream,
        name: &str,
        repository: &orca::Repository,
        digest: &Digest,
    ) -> Result<bool, ApiError> {
        let holders = state.root.records(&upstream.namespace).await?;
        let prefix = holders_prefix(digest);
        for listed in holders.list(&prefix).await? {
            let Some(other) = listed.key.strip_prefix(&prefix) else {
                continue;
            };
            let other = other.replace('+', "/");
            if other == name {
                continue;
            }
            let held = state.root.exists(&other).await?
                && state
                    .root
                    .repository(&other)
                    .await?
                    .store
                    .stat(&blobs::blob(digest, 0))
                    .await?
                    .is_some();
            if !held {
                let _ = holders.delete(&listed.key).await;
                continue;
            }
            if blobs::mounted(state, repository, digest, Some(other)).await? {
                self.count("mounted");
                blobs::share(state, name, digest).await;
                record_holder(holders.as_ref(), digest, name).await;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Runs the fill `claim` holds: `descriptor` from upstream's `body`
    /// into `store`, which verifies it; with `streamed`, the bytes also go
    /// to the returned stream for the client, which may leave without
    /// stopping the fill. The client's last bytes wait for the store's
    /// verdict: a body that breaks off or does not hash to the digest
    /// fails both and stores nothing.
    fn fill(
        &self,
        claim: Claim,
        filled: Filled,
        descriptor: Descriptor,
        body: orca::Body,
        streamed: bool,
    ) -> Option<futures::stream::BoxStream<'static, Result<Bytes, std::io::Error>>> {
        // Chunks travel in batches of what upstream had ready, so the tee
        // costs little per byte; a few batches each way, so a slow client
        // slows the fill as a slow disk would.
        let (to_client, for_client) = tokio::sync::mpsc::channel::<Batch>(FILL_DEPTH);
        let (to_store, for_store) = tokio::sync::mpsc::channel::<Batch>(FILL_DEPTH);
        let size = descriptor.size;
        let store = filled.store.clone();
        // What the store read: a push that finds the blob already stored
        // (another replica published it meanwhile) reads none, and then
        // its `Ok` says nothing about the bytes the client got.
        let consumed = Arc::new(AtomicU64::new(0));
        let read = consumed.clone();
        let push = tokio::spawn(async move {
            let stream = received(for_store)
                .flat_map(futures::stream::iter)
                .map(move |chunk| {
                    if let Ok(bytes) = &chunk {
                        read.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    }
                    chunk.map_err(|e| orca::Error::Failed {
                        doing: "fetching from the upstream".into(),
                        source: Box::new(e),
                    })
                });
            store.push(&descriptor, orca::Body::new(size, stream)).await
        });
        let counted = self.upstream_bytes.clone();
        tokio::spawn(async move {
            let mut upstream = body.into_stream().ready_chunks(FILL_BATCH);
            let mut client = streamed.then_some(to_client);
            let (mut sent, mut held) = (0u64, None);
            let mut broken = false;
            while let Some(ready) = upstream.next().await {
                let mut batch: Batch = Vec::with_capacity(ready.len());
                for chunk in ready {
                    match chunk {
                        Ok(bytes) => batch.push(Ok(bytes)),
                        Err(e) => {
                            batch.push(Err(std::io::Error::other(e.to_string())));
                            broken = true;
                            break;
                        }
                    }
                }
                let len: u64 = batch
                    .iter()
                    .map(|chunk| chunk.as_ref().map_or(0, |b| b.len() as u64))
                    .sum();
                counted.fetch_add(len, Ordering::Relaxed);
                sent += len;
                let stored = to_store.send(copy(&batch)).await.is_ok();
                if sent >= size && !broken {
                    // The last bytes: the client gets them once the store
                    // has checked the digest.
                    held = Some(batch);
                } else if let Some(sender) = &client {
                    // A client that stops reading is let go, so it never
                    // holds the fill (and those who follow it) for long.
                    let sending = tokio::time::timeout(CLIENT_LAG, sender.send(batch));
                    if !matches!(sending.await, Ok(Ok(()))) {
                        client = None;
                    }
                }
                if broken || !stored {
                    break;
                }
            }
            drop(to_store);
            let (repository, digest) = (&claim.key.0, &claim.key.1);
            let verdict = match push.await {
                Ok(Ok(())) if consumed.load(Ordering::Relaxed) < size => {
                    // Stored by someone else: these bytes were not checked.
                    filled.held(repository, digest).await;
                    Err("the blob was stored meanwhile by another writer; ask again".to_owned())
                }
                Ok(Ok(())) => {
                    filled.held(repository, digest).await;
                    Ok(())
                }
                Ok(Err(e)) => {
                    tracing::warn!(%repository, %digest, error = %e, "a pull-through fill failed: nothing cached");
                    Err(e.to_string())
                }
                Err(e) => {
                    tracing::warn!(%repository, %digest, error = %e, "a pull-through fill stopped");
                    Err(e.to_string())
                }
            };
            // Those waiting for the fill go on at once.
            drop(claim);
            if let Some(sender) = client {
                let last = match (verdict, held) {
                    (Ok(()), Some(batch)) => batch,
                    (Ok(()), None) => Vec::new(),
                    (Err(e), _) => vec![Err(std::io::Error::other(e))],
                };
                let _ = tokio::time::timeout(CLIENT_LAG, sender.send(last)).await;
            }
        });
        streamed.then(|| received(for_client).flat_map(futures::stream::iter).boxed())
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

    /// An upstream failure as the client sees it, counted.
    fn unreachable(&self, name: &str, e: orca::Error) -> ApiError {
        if e.is_not_found() {
            return ApiError::from(e);
        }
        self.count("upstream_failed");
        tracing::warn!(repository = %name, error = %e, "a pull-through upstream failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            format!("the upstream of {name} could not be asked: {e}"),
        )
    }
}

/// The refusal of a write to pull-through namespace `name`.
fn read_only(name: &str, upstream: &Upstream) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "UNSUPPORTED",
        format!(
            "{name} is a pull-through namespace of {}: it is read-only but for referrers of its images, pushed by digest",
            upstream.registry.host()
        ),
    )
}

/// Whether `host` names Docker Hub (by any of its names).
pub(crate) fn docker_hub(host: &str) -> bool {
    matches!(
        host,
        "docker.io" | "registry-1.docker.io" | "index.docker.io"
    )
}

/// Where a namespace records which of its repositories hold blobs: one
/// empty object per blob and repository, `holders/ALG/HEX/REPO` (`/` in
/// the name as `+`), in the root's records for the namespace.
const HOLDERS: &str = "holders";

/// The prefix of the records of who holds `digest`.
fn holders_prefix(digest: &Digest) -> String {
    format!("{HOLDERS}/{}/{}/", digest.algorithm(), digest.hex())
}

/// Records that repository `name` holds `digest`; a failure costs only a
/// later mount.
async fn record_holder(holders: &dyn ObjectStorage, digest: &Digest, name: &str) {
    let key = format!("{}{}", holders_prefix(digest), name.replace('/', "+"));
    match holders.write(&key, Bytes::new(), Condition::Absent).await {
        Ok(()) | Err(orca::Error::Conflict { .. }) => {}
        Err(e) => {
            tracing::warn!(repository = %name, %digest, error = %e, "recording a cached blob's holder failed")
        }
    }
}

/// Where a blob fill stores, and what it tells when it is stored.
struct Filled {
    state: Arc<Shared>,
    namespace: String,
    store: Store,
}

impl Filled {
    /// The blob is stored in `repository`: shared across the root and
    /// recorded as held there.
    async fn held(&self, repository: &str, digest: &Digest) {
        blobs::share(&self.state, repository, digest).await;
        match self.state.root.records(&self.namespace).await {
            Ok(holders) => record_holder(holders.as_ref(), digest, repository).await,
            Err(e) => {
                tracing::warn!(namespace = %self.namespace, error = %e, "opening the namespace's records failed")
            }
        }
    }
}

/// Chunks of a blob fill that travel together.
type Batch = Vec<Result<Bytes, std::io::Error>>;

/// How many chunks upstream had ready travel as one batch, at most.
const FILL_BATCH: usize = 64;

/// How many batches wait for the store, and for the client, at most.
const FILL_DEPTH: usize = 16;

/// How long a fill waits for its client to take the next batch before it
/// lets the client go and fills on without it.
const CLIENT_LAG: Duration = Duration::from_secs(10);

/// A batch again (an error is repeated by its text).
fn copy(batch: &Batch) -> Batch {
    batch
        .iter()
        .map(|chunk| match chunk {
            Ok(bytes) => Ok(bytes.clone()),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        })
        .collect()
}

/// A blob fill this request runs: registered under `key` until dropped,
/// when it is forgotten and its waiters are told it ended.
struct Claim {
    fills: Fills,
    key: (String, Digest),
    finished: watch::Sender<bool>,
    sized: watch::Sender<Option<u64>>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.fills
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
        let _ = self.finished.send(true);
    }
}

/// How often a follower looks at how far a fill got, at most.
const FOLLOW_EVERY: Duration = Duration::from_millis(20);

/// Serves blob `digest` of `repository` while another request's fill
/// stores it: the bytes the store's staging holds as they arrive, the
/// last ones from the published blob once the fill verified it (a fill
/// that fails fails this answer too). `None` when the fill ended before
/// it said the size: the caller serves what the store holds.
async fn follow(
    repository: &orca::Repository,
    digest: &Digest,
    mut running: Running,
) -> Option<Response> {
    let size = tokio::select! {
        sized = running.size.wait_for(Option::is_some) => (*sized.ok()?)?,
        _ = running.done.wait_for(|finished| *finished) => return None,
    };
    let descriptor = blobs::blob(digest, size);
    // Everything but the last byte may come from the staging (where the
    // store shows none, everything comes from the blob once published).
    let staged_until = size.saturating_sub(1);
    let (to_client, for_client) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let (storage, store) = (repository.storage.clone(), repository.store.clone());
    let named = digest.to_string();
    let digest = digest.clone();
    tokio::spawn(async move {
        // What this answer sent is hashed as it goes: the staging it read
        // may be another writer's, so its last byte goes only if the
        // whole hashes to the digest.
        let mut hashed = orca::Digester::new(digest.algorithm());
        let mut at = 0u64;
        loop {
            let ended = *running.done.borrow();
            if at < staged_until
                && let Ok(Some(body)) = storage.read_partial(&descriptor, at, staged_until).await
                && !body.is_empty()
            {
                let mut chunks = body.into_stream();
                while let Some(chunk) = chunks.next().await {
                    let Ok(bytes) = chunk else { break };
                    at += bytes.len() as u64;
                    hashed.update(&bytes);
                    if to_client.send(Ok(bytes)).await.is_err() {
                        return;
                    }
                }
                continue;
            }
            if ended {
                break;
            }
            let _ = tokio::time::timeout(FOLLOW_EVERY, running.done.changed()).await;
        }
        // The fill ended: the rest from the blob it published, if it did,
        // the last chunk once the whole answer hashed right.
        let rest = match store.fetch_range(&descriptor, at..size).await {
            Ok(body) => body,
            Err(e) => {
                let failed = format!("the fill this answer followed failed: {e}");
                let _ = to_client.send(Err(std::io::Error::other(failed))).await;
                return;
            }
        };
        let mut chunks = rest.into_stream();
        let mut last: Option<Bytes> = None;
        while let Some(chunk) = chunks.next().await {
            match chunk {
                Ok(bytes) => {
                    hashed.update(&bytes);
                    if let Some(previous) = last.replace(bytes)
                        && to_client.send(Ok(previous)).await.is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    let _ = to_client
                        .send(Err(std::io::Error::other(e.to_string())))
                        .await;
                    return;
                }
            }
        }
        let end = if hashed.finish() == digest {
            last.map(Ok)
        } else {
            tracing::warn!(%digest, "a followed fill's staging did not hash right: the answer is cut");
            Some(Err(std::io::Error::other(
                "the bytes read while the blob was filled were not the blob's",
            )))
        };
        if let Some(end) = end {
            let _ = to_client.send(end).await;
        }
    });
    let mut response = Response::new(HttpBody::from_stream(received(for_client)));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, value(&size.to_string()));
    headers.insert(header::CONTENT_TYPE, value("application/octet-stream"));
    headers.insert("docker-content-digest", value(&named));
    Some(response)
}

/// What `receiver` is sent, as a stream.
fn received<T: Send + 'static>(
    receiver: tokio::sync::mpsc::Receiver<T>,
) -> futures::stream::BoxStream<'static, T> {
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    })
    .boxed()
}

/// The upstream repository `remote` as a store.
async fn upstream_store(upstream: &Upstream, remote: &str) -> Result<Store, ApiError> {
    Ok(Store::new(upstream.registry.repository(remote).await?))
}

/// Writes `bytes` at `key`, over what is there.
pub(crate) async fn write_over(
    storage: &dyn ObjectStorage,
    key: &str,
    bytes: Bytes,
) -> orca::Result<()> {
    let condition = match storage.read(key, 1 << 16).await? {
        Some((_, version)) => Condition::Matches(version),
        None => Condition::Absent,
    };
    storage.write(key, bytes, condition).await
}

/// The answer to a `HEAD` of a blob of `size` bytes.
fn blob_head(digest: &Digest, size: u64) -> Response {
    let mut response = Response::new(HttpBody::empty());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, value(&size.to_string()));
    headers.insert(header::CONTENT_TYPE, value("application/octet-stream"));
    headers.insert("docker-content-digest", value(&digest.to_string()));
    response
}
