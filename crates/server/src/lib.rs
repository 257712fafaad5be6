//! orca-server: the OCI distribution API served over any store orca has.
//!
//! Each request becomes a call on the repository's [`orca::Store`] (a
//! layout per repository under a [`orca::Root`]: a directory, a bucket
//! prefix, a plugin's storage, or memory), so every byte it accepts is
//! verified by the same code that verifies every copy, and what it serves
//! is a plain OCI image layout that skopeo, umoci and `orca cp oci:…` read
//! directly. Upload sessions live in the store beside the layout, so a
//! restarted server or another replica continues them.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! let server = orca_server::Server::new(orca::Root::open("memory", &orca::OpenOptions::new()).expect("root"));
//! let running = server.spawn("127.0.0.1:0").await?;
//! println!("a registry at {}", running.address());
//! # Ok(())
//! # }
//! ```

mod auth;
mod blobs;
mod cache;
mod config;
mod errors;
mod evict;
mod manifests;
mod metrics;
mod routes;
mod sessions;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body as HttpBody;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

pub use auth::{Access, Auth, Rule, TokenAuth};
pub use cache::Upstream;
pub use config::{
    AuthConfig, Config, GcConfig, LimitsConfig, TlsConfig, TokenConfig, UpstreamConfig,
};
pub use errors::ApiError;
pub use tls::{Reloader, TlsFiles, TlsListener};

use errors::Answer;
use routes::Route;

/// Limits on what a request may carry.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Limits {
    /// The largest manifest accepted (bytes); larger is `413`.
    pub manifest: u64,
    /// Refuse manifests that name content the repository does not hold
    /// (`MANIFEST_BLOB_UNKNOWN`). Off by default: the spec lets a registry
    /// hold sparse manifests (an index mirrored for some of its platforms),
    /// and the conformance suite pushes some.
    pub refuse_sparse: bool,
    /// How long a request body may send nothing before the request is
    /// given up (`408`): a stalled client holds no worker for long.
    pub idle: std::time::Duration,
    /// At most this many uploads (blob `POST`, `PATCH`, `PUT`) at once;
    /// more are answered `429` with `Retry-After`.
    pub uploads: usize,
    /// The largest blob accepted (bytes); larger is `413`. None: no limit.
    pub blob: Option<u64>,
    /// The most a page of the Referrers API holds (bytes of descriptors);
    /// a longer list is paged with `Link`.
    pub referrers_page: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            manifest: 4 << 20,
            refuse_sparse: false,
            idle: std::time::Duration::from_secs(60),
            uploads: 256,
            blob: None,
            referrers_page: 1 << 20,
        }
    }
}

/// A registry server over a [`orca::Root`].
#[derive(Clone, Debug)]
pub struct Server {
    state: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    root: orca::Root,
    limits: Limits,
    auth: Auth,
    metrics: metrics::Metrics,
    uploads: Arc<tokio::sync::Semaphore>,
    cache: Option<cache::Cache>,
}

impl Server {
    /// A server over `root`, with the default limits and no
    /// authentication.
    pub fn new(root: orca::Root) -> Self {
        Server::configured(root, Limits::default(), Auth::default())
    }

    /// A server over `root` with `limits` and `auth`.
    pub fn configured(root: orca::Root, limits: Limits, auth: Auth) -> Self {
        Server::caching(root, limits, auth, Vec::new())
    }

    /// A server over `root` with `limits` and `auth` whose `upstreams`
    /// are pull-through namespaces (`/v2/<namespace>/<repo>/…` served from
    /// the cache, filled from the upstream registry on demand).
    pub fn caching(root: orca::Root, limits: Limits, auth: Auth, upstreams: Vec<Upstream>) -> Self {
        Server {
            state: Arc::new(Shared {
                root,
                uploads: Arc::new(tokio::sync::Semaphore::new(limits.uploads.max(1))),
                limits,
                auth,
                metrics: metrics::Metrics::default(),
                cache: (!upstreams.is_empty()).then(|| cache::Cache::new(upstreams)),
            }),
        }
    }

    /// Collects every repository's layout every `every` (blobs younger
    /// than `grace` stay), in the background until the returned handle is
    /// dropped. Safe beside pushes through this server, other replicas and
    /// `orca gc`: the layout engine's collector fences what it deletes.
    pub fn collect_every(
        &self,
        every: std::time::Duration,
        grace: std::time::Duration,
    ) -> Collector {
        let state = self.state.clone();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                if let Some(cache) = &state.cache {
                    // Eviction deletes images; the collection their blobs.
                    evict::evict_all(&state, cache).await;
                }
                let (done, failed) = collect_all(&state.root, grace).await;
                for _ in 0..done {
                    state.metrics.gc_run(true);
                }
                for _ in 0..failed {
                    state.metrics.gc_run(false);
                }
            }
        });
        Collector { task }
    }

    /// The routes, for a caller that serves them itself (inside a larger
    /// axum application).
    pub fn router(&self) -> axum::Router {
        axum::Router::new()
            .fallback(dispatch)
            .with_state(self.state.clone())
    }

    /// Serves on `listener` until `shutdown` completes; requests in
    /// flight then finish.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// Serves HTTPS on `listener` until `shutdown` completes.
    pub async fn serve_tls(
        &self,
        listener: TlsListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// Binds `address` (`127.0.0.1:0` for a free port) and serves in the
    /// background until the returned handle is dropped.
    pub async fn spawn(&self, address: &str) -> std::io::Result<Running> {
        let listener = tokio::net::TcpListener::bind(address).await?;
        let address = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = self.clone();
        let task = tokio::spawn(async move {
            let _ = server
                .serve(listener, async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Running {
            address,
            stop: Some(stop),
            task,
        })
    }
}

/// A garbage collection loop; stopped when dropped.
#[derive(Debug)]
pub struct Collector {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One collection of every repository of `root` (upload sessions idle for
/// the grace, an hour at least, go too); what fails is logged and
/// the next repository goes on. Returns how many were collected and how
/// many failed.
pub async fn collect_all(root: &orca::Root, grace: std::time::Duration) -> (usize, usize) {
    let names = match root.repositories().await {
        Ok(names) => names,
        Err(e) => {
            tracing::warn!(error = %e, "garbage collection: listing the repositories failed");
            return (0, 1);
        }
    };
    let (mut done, mut failed) = (0, 0);
    let options = orca::layout::GcOptions::new().grace(grace);
    for name in names {
        let idle = grace.max(sessions::IDLE_AT_LEAST);
        let outcome = match root.repository(&name).await {
            Ok(repository) => match sessions::expire(repository.storage.as_ref(), idle).await {
                Ok(expired) => {
                    if expired > 0 {
                        tracing::info!(repository = %name, sessions = expired, "idle upload sessions removed");
                    }
                    repository.gc(&options).await
                }
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match outcome {
            Ok(report) => {
                done += 1;
                tracing::info!(
                    repository = %name,
                    blobs = report.blobs.len(),
                    bytes = report.bytes,
                    "garbage collected"
                );
            }
            Err(e) => {
                failed += 1;
                tracing::warn!(repository = %name, error = %e, "garbage collection failed");
            }
        }
    }
    match root.prune_shared().await {
        Ok(0) => {}
        Ok(pruned) => tracing::info!(blobs = pruned, "shared blobs no repository holds removed"),
        Err(e) => {
            failed += 1;
            tracing::warn!(error = %e, "pruning the shared blobs failed");
        }
    }
    (done, failed)
}

/// A server serving in the background; stopped when dropped.
#[derive(Debug)]
pub struct Running {
    address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `HOST:PORT`, as a registry host in references.
    pub fn host(&self) -> String {
        self.address.to_string()
    }

    /// Stops it, letting requests in flight finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Every request: routed by its path, answered, counted and logged with
/// its request id, with the API version header on every answer.
async fn dispatch(State(state): State<Arc<Shared>>, request: Request) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 128)
        .map_or_else(request_id, str::to_owned);
    let declared_in = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let (parts, body) = request.into_parts();
    let (label, answer) = match path.as_str() {
        "/metrics" => ("metrics", Ok(metrics_page(&state))),
        "/healthz" => ("health", Ok((StatusCode::OK, "ok\n").into_response())),
        "/readyz" => ("ready", ready(&state).await),
        _ => match routes::route(&path) {
            Ok(Some(route)) => (route.label(), handle(&state, route, &parts, body).await),
            Ok(None) => (
                "other",
                Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "NOT_FOUND",
                    format!("{path} is not part of the registry API"),
                )),
            ),
            Err(e) => ("invalid", Err(e)),
        },
    };
    let mut response = match answer {
        Ok(response) => response,
        Err(e) => {
            tracing::debug!(%id, %method, %path, status = %e.status, code = e.code, message = %e.message, "refused");
            let mut response = e.into_response();
            if method == Method::HEAD {
                *response.body_mut() = HttpBody::empty();
            }
            response
        }
    };
    let status = response.status();
    let declared_out = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|_| method != Method::HEAD)
        .unwrap_or(0);
    let took = started.elapsed();
    state
        .metrics
        .request(label, status.as_u16(), took, declared_in, declared_out);
    tracing::info!(%id, %method, %path, status = status.as_u16(), ms = took.as_millis() as u64, "request");
    let headers = response.headers_mut();
    headers.insert(
        "Docker-Distribution-API-Version",
        HeaderValue::from_static("registry/2.0"),
    );
    headers.insert("x-request-id", value(&id));
    response
}

/// A new request id: 64 random bits, as hex.
fn request_id() -> String {
    format!("{:016x}", sessions::random_word())
}

fn metrics_page(state: &Shared) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render()
            + &state
                .cache
                .as_ref()
                .map(cache::Cache::render)
                .unwrap_or_default(),
    )
        .into_response()
}

/// Ready when the store answers (a repository's marker can be looked up).
async fn ready(state: &Shared) -> Answer {
    match state.root.exists("readiness/probe").await {
        Ok(_) => Ok((StatusCode::OK, "ready\n").into_response()),
        Err(e) => Ok((
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the store does not answer: {e}\n"),
        )
            .into_response()),
    }
}

async fn handle(state: &Arc<Shared>, mut route: Route, request: &Parts, body: HttpBody) -> Answer {
    if let Some(cache) = &state.cache {
        cache.namespaced(state, &mut route, request).await;
    }
    let method = request.method.clone();
    let needed = if matches!(method, Method::GET | Method::HEAD) {
        Access::Read
    } else {
        Access::Write
    };
    let scope = match &route {
        Route::Ping => auth::Scope::Root,
        Route::Catalog => auth::Scope::Catalog,
        Route::Tags { name }
        | Route::Manifest { name, .. }
        | Route::Blob { name, .. }
        | Route::Uploads { name }
        | Route::Upload { name, .. }
        | Route::Referrers { name, .. } => auth::Scope::Repository(name, needed),
    };
    state.auth.check(request, scope)?;
    // A mount reads the repository it mounts from.
    if let Route::Uploads { name } = &route
        && let Some(from) = routes::query_value(request.uri.query(), "from")
        && &from != name
        && orca::model::reference::validate_repository(&from).is_ok()
    {
        state
            .auth
            .check(request, auth::Scope::Repository(&from, Access::Read))?;
    }
    // Uploads take a permit for as long as they run.
    let _permit =
        if matches!(route, Route::Uploads { .. } | Route::Upload { .. }) && method != Method::GET {
            match state.uploads.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    return Err(ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "TOOMANYREQUESTS",
                        format!(
                            "{} uploads are running: try again shortly",
                            state.limits.uploads
                        ),
                    )
                    .with_header(header::RETRY_AFTER, HeaderValue::from_static("1")));
                }
            }
        } else {
            None
        };
    if let (Some(limit), Some(length)) = (
        state.limits.blob,
        header_text(request, header::CONTENT_LENGTH).and_then(|l| l.parse::<u64>().ok()),
    ) && matches!(route, Route::Uploads { .. } | Route::Upload { .. })
        && length > limit
    {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "SIZE_INVALID",
            format!("a blob may have at most {limit} bytes; the request says {length}"),
        ));
    }
    if let Some(cache) = &state.cache
        && let Some(answer) = cache.handle(state, &route, &method, request).await
    {
        return answer;
    }
    let body = idle_limited(body, state.limits.idle);
    match (route, method) {
        (Route::Ping, Method::GET | Method::HEAD) => Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "{}",
        )
            .into_response()),
        (Route::Catalog, Method::GET) => manifests::catalog(state, request).await,
        (Route::Tags { name }, Method::GET) => manifests::tags(state, &name, request).await,
        (Route::Manifest { name, reference }, Method::GET | Method::HEAD) => {
            manifests::get(state, &name, &reference, request).await
        }
        (Route::Manifest { name, reference }, Method::PUT) => {
            manifests::put(state, &name, &reference, request, body).await
        }
        (Route::Manifest { name, reference }, Method::DELETE) => {
            manifests::delete(state, &name, &reference).await
        }
        (Route::Referrers { name, digest }, Method::GET) => {
            manifests::referrers(state, &name, &digest, request).await
        }
        (Route::Blob { name, digest }, Method::GET | Method::HEAD) => {
            blobs::get(state, &name, &digest, request).await
        }
        (Route::Blob { name, digest }, Method::DELETE) => {
            blobs::delete(state, &name, &digest).await
        }
        (Route::Uploads { name }, Method::POST) => blobs::start(state, &name, request, body).await,
        (Route::Upload { name, id }, Method::GET) => blobs::status(state, &name, &id).await,
        (Route::Upload { name, id }, Method::PATCH) => {
            blobs::patch(state, &name, &id, request, body).await
        }
        (Route::Upload { name, id }, Method::PUT) => {
            blobs::finish(state, &name, &id, request, body).await
        }
        (Route::Upload { name, id }, Method::DELETE) => blobs::cancel(state, &name, &id).await,
        (_, method) => Err(ApiError::unsupported(format!(
            "{method} is not served here"
        ))),
    }
}

/// `body`, failing with `408` when it sends nothing for `idle`.
fn idle_limited(body: HttpBody, idle: std::time::Duration) -> HttpBody {
    use futures::StreamExt;
    let stream = body.into_data_stream();
    let limited = futures::stream::unfold(Some(stream), move |state| async move {
        let mut stream = state?;
        match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(item)) => Some((item, Some(stream))),
            Ok(None) => None,
            Err(_) => Some((
                Err(axum::Error::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the request body sent nothing for {}s", idle.as_secs()),
                ))),
                None,
            )),
        }
    });
    HttpBody::from_stream(limited)
}

/// The value of a request header, as text.
fn header_text(request: &Parts, name: header::HeaderName) -> Option<&str> {
    request.headers.get(name).and_then(|v| v.to_str().ok())
}

/// A header value from text the server made (digests, paths, numbers).
fn value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static(""))
}
