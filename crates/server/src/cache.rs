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

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use bytes::Bytes;
use futures::StreamExt;
use orca::layout::{Condition, ObjectStorage};
use orca::{Digest, Store};

use crate::Shared;
use crate::errors::{Answer, ApiError};
use crate::routes::Route;

mod fill;
mod fresh;

use fill::Fills;

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
        use crate::metrics::family;
        let mut out = String::new();
        let events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        family(
            &mut out,
            "orca_cache_requests_total",
            "counter",
            "Pull-through requests: hit, miss, revalidated (upstream said unchanged), stale (served while upstream failed), followed (served while another request's fill stored it), mounted (from another repository after upstream said this one holds it), upstream_failed.",
            events
                .iter()
                .map(|(event, count)| (format!("result=\"{event}\""), *count)),
        );
        family(
            &mut out,
            "orca_cache_upstream_bytes_total",
            "counter",
            "Blob bytes fetched from upstreams.",
            [(String::new(), self.upstream_bytes.load(Ordering::Relaxed))],
        );
        let evictions = self
            .evictions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !evictions.is_empty() {
            let per_namespace = |pick: fn(&(u64, u64, u64)) -> u64| {
                evictions.iter().map(move |(namespace, counts)| {
                    (format!("namespace=\"{namespace}\""), pick(counts))
                })
            };
            family(
                &mut out,
                "orca_cache_bytes",
                "gauge",
                "What a namespace's cached images hold, at the last eviction pass.",
                per_namespace(|c| c.0),
            );
            family(
                &mut out,
                "orca_cache_evictions_total",
                "counter",
                "Cached images evicted for the size budget.",
                per_namespace(|c| c.1),
            );
            family(
                &mut out,
                "orca_cache_evicted_bytes_total",
                "counter",
                "Bytes no cached image holds any more after evictions.",
                per_namespace(|c| c.2),
            );
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
