//! The transport: one HTTP client per registry host that authenticates
//! (basic, or bearer tokens per scope from the challenge flow), retries
//! connection errors, 429 and 5xx with jittered exponential backoff and
//! `Retry-After`, and re-authenticates once on a 401.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use orca_core::{Error, Result};
use reqwest::header::{AUTHORIZATION, HeaderName};
use reqwest::{Method, Response, StatusCode};

use crate::auth::{Credentials, TokenCache};
use crate::watch::{self, Gave, Limits};

mod exchange;
mod retry;
mod token;

use exchange::exchange;
pub(crate) use exchange::redact_query;
pub(crate) use retry::Retry;
use retry::{retry_after, transient};

/// Told when a request is tried again after a timeout or a failed
/// connection, with a line for people ("no answer from HOST in 30 s;
/// trying again, 2 of 4").
pub type Notice = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

/// Marks a response to a request sent again after an attempt whose outcome
/// is unknown (its answer was lost or late): the server may have done it
/// already, so a DELETE answered 404 then means it is gone (backends m3).
#[derive(Clone, Copy, Debug)]
pub(crate) struct AfterUnknown;

/// Bodies up to this size go as requests without one do; larger ones are
/// watched for progress (see `watch`).
const SMALL_BODY: usize = 256 * 1024;

/// Largest token-service answer read.
const TOKEN_LIMIT: usize = 1024 * 1024;

/// A request that can be sent again (its body, if any, is in memory).
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) method: Method,
    pub(crate) url: String,
    pub(crate) headers: Vec<(HeaderName, String)>,
    pub(crate) body: Option<Bytes>,
    /// Whether a transient failure may be answered by sending it again.
    pub(crate) replay: bool,
}

impl Request {
    pub(crate) fn new(method: Method, url: impl Into<String>) -> Self {
        Request {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: None,
            replay: true,
        }
    }

    /// Never sent again after a transient failure: the caller finds out
    /// what the first attempt did (a chunk `PATCH` may have been taken
    /// even though its answer was lost).
    pub(crate) fn once(mut self) -> Self {
        self.replay = false;
        self
    }

    pub(crate) fn header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub(crate) fn body(mut self, body: Bytes) -> Self {
        self.body = Some(body);
        self
    }
}

/// A client made the first time it is needed (making one loads the trusted
/// roots: a command that never pushes or authenticates makes one client,
/// not three).
pub(crate) struct LazyClient {
    made: std::sync::OnceLock<reqwest::Client>,
    make: Box<dyn Fn() -> Result<reqwest::Client> + Send + Sync>,
}

impl LazyClient {
    /// A client `make` makes when first asked for.
    pub(crate) fn new(make: impl Fn() -> Result<reqwest::Client> + Send + Sync + 'static) -> Self {
        LazyClient {
            made: std::sync::OnceLock::new(),
            make: Box::new(make),
        }
    }

    fn get(&self) -> Result<&reqwest::Client> {
        if let Some(client) = self.made.get() {
            return Ok(client);
        }
        let client = (self.make)()?;
        Ok(self.made.get_or_init(|| client))
    }
}

/// The HTTP clients a [`Client`] is made of, and its limits.
pub(crate) struct Clients {
    /// For requests without a body (reqwest's read timeout on).
    pub(crate) http: reqwest::Client,
    /// For the token service (no redirects).
    pub(crate) token: LazyClient,
    /// For requests with a body (no read timeout: [`watch`] limits them).
    pub(crate) upload: LazyClient,
    pub(crate) limits: Limits,
    pub(crate) notice: Option<Notice>,
}

/// The HTTP client of one registry host.
pub(crate) struct Client {
    http: reqwest::Client,
    /// The same client that follows no redirect: for the token service,
    /// whose requests carry credentials (a form body is sent again on a
    /// 307, to wherever it points).
    token_http: LazyClient,
    /// The same client without reqwest's read timeout: for requests with
    /// a body, which run under [`watch`]'s limits instead.
    upload_http: LazyClient,
    /// The idle and response limits of every request.
    limits: Limits,
    /// Told when a request is tried again.
    notice: Option<Notice>,
    /// `https://host` or `http://host`.
    pub(crate) base: String,
    /// The host as users write it, for messages.
    pub(crate) host: String,
    credentials: Credentials,
    tokens: Mutex<TokenCache>,
    /// One token fetch at a time per scope (backends m7): requests that
    /// meet a 401 together wait for the first one's token.
    flights: Mutex<std::collections::HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
    /// The registry asked for basic auth: send it up front from now on.
    basic: AtomicBool,
    retry: Retry,
    /// When the next request may go, with `retry.pace` set.
    next_turn: Mutex<tokio::time::Instant>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

impl Client {
    pub(crate) fn new(
        clients: Clients,
        base: String,
        host: String,
        credentials: Credentials,
        retry: Retry,
    ) -> Self {
        Client {
            http: clients.http,
            token_http: clients.token,
            upload_http: clients.upload,
            limits: clients.limits,
            notice: clients.notice,
            base,
            host,
            credentials,
            tokens: Mutex::default(),
            flights: Mutex::default(),
            basic: AtomicBool::new(false),
            retry,
            next_turn: Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// Waits for this request's turn when requests are paced: every
    /// request of the client, from any task, takes the next free slot.
    async fn turn(&self) {
        let Some(pace) = self.retry.pace else {
            return;
        };
        let at = {
            let mut next = self.next_turn.lock().unwrap_or_else(|p| p.into_inner());
            let at = (*next).max(tokio::time::Instant::now());
            *next = at + pace;
            at
        };
        tokio::time::sleep_until(at).await;
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Whether the host, asked once over HTTPS (`GET /v2/`, no retry),
    /// answered in plain HTTP: the TLS handshake met an HTTP response.
    /// `false` for a client that speaks plain HTTP already.
    pub(crate) async fn answers_plain_http(&self) -> bool {
        if !self.base.starts_with("https://") {
            return false;
        }
        let Err(e) = self.http.get(self.url("/v2/")).send().await else {
            return false;
        };
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(error) = source {
            let text = error.to_string();
            // rustls, meeting `HTTP/1.1 400` where a TLS record should be.
            if text.contains("InvalidContentType") || text.contains("corrupt message") {
                return true;
            }
            source = error.source();
        }
        false
    }

    /// Resolves a `Location` (absolute, or relative to the host).
    pub(crate) fn resolve_location(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_owned()
        } else if location.starts_with('/') {
            self.url(location)
        } else {
            self.url(&format!("/{location}"))
        }
    }

    /// Whether `url` has the registry's scheme, host and port: only then
    /// does it get the registry's credentials (a `Location` or `Link` to
    /// another origin — a CDN, a storage bucket — gets none).
    pub(crate) fn same_origin(&self, url: &str) -> bool {
        match (reqwest::Url::parse(&self.base), reqwest::Url::parse(url)) {
            (Ok(base), Ok(url)) => {
                base.scheme() == url.scheme()
                    && base.host_str() == url.host_str()
                    && base.port_or_known_default() == url.port_or_known_default()
            }
            _ => false,
        }
    }

    /// Refuses a plain-HTTP URL from a registry that speaks HTTPS: a
    /// `Location` or `Link` must not downgrade the connection.
    fn check_scheme(&self, url: &str, operation: &'static str) -> Result<()> {
        if self.base.starts_with("https://") && !url.starts_with("https://") {
            return Err(Error::Backend {
                backend: self.host.clone(),
                operation,
                source: format!(
                    "the registry speaks HTTPS but sent orca to {}, which is not: refused",
                    crate::client::redact_query(url)
                )
                .into(),
            });
        }
        Ok(())
    }

    fn authorization(&self, scope: &str) -> Option<String> {
        let cached = self.tokens.lock().ok().and_then(|t| t.get(scope));
        cached.or_else(|| {
            if self.basic.load(Ordering::Relaxed) {
                self.credentials.basic_header()
            } else {
                None
            }
        })
    }

    fn transport_error(&self, operation: &'static str, e: reqwest::Error) -> Error {
        Error::Backend {
            backend: self.host.clone(),
            operation,
            source: Box::new(e.without_url()),
        }
    }

    /// Sends a replayable request: authenticates as the registry asks
    /// (once per call), and retries transient failures with backoff.
    /// Returns the final response, successful or not.
    pub(crate) async fn send(
        &self,
        request: &Request,
        scope: &str,
        operation: &'static str,
    ) -> Result<Response> {
        self.check_scheme(&request.url, operation)?;
        let mut authenticated = false;
        let mut attempt = 0;
        // Whether an attempt may have reached the server without its
        // answer reaching us.
        let mut unknown = false;
        loop {
            self.turn().await;
            // The credential this attempt carries, so a 401 tells which
            // one the registry refused.
            let auth = self
                .authorization(scope)
                .filter(|_| self.same_origin(&request.url));
            // A small body (a manifest, a token form) is sent in well under
            // the idle timeout on any link: it goes as a request without
            // one does. A larger one is watched (see `watch`).
            let watched = request.body.as_ref().filter(|b| b.len() > SMALL_BODY);
            let began = std::time::Instant::now();
            let http = match watched {
                Some(_) => self.upload_http.get()?,
                None => &self.http,
            };
            let mut builder = http.request(request.method.clone(), &request.url);
            for (name, value) in &request.headers {
                builder = builder.header(name, value);
            }
            if let Some(auth) = &auth {
                builder = builder.header(AUTHORIZATION, auth);
            }
            let outcome = match (watched, &request.body) {
                (Some(body), _) => {
                    let len = body.len() as u64;
                    let builder = builder.header(reqwest::header::CONTENT_LENGTH, len);
                    watch::send(builder, watch::slices(body.clone()), Some(len), self.limits).await
                }
                (None, body) => {
                    let builder = match body {
                        Some(body) => builder.body(body.clone()),
                        None => builder,
                    };
                    match tokio::time::timeout(self.limits.response, builder.send()).await {
                        Ok(sent) => sent.map_err(Gave::Failed),
                        Err(_) => Err(Gave::NoAnswer(self.limits.response)),
                    }
                }
            };
            attempt += 1;
            exchange(
                &request.method,
                &request.url,
                &outcome,
                began,
                auth.is_some(),
            );
            let again = request.replay && attempt < self.retry.attempts;
            if let Err(gave) = &outcome {
                unknown |= !matches!(gave, Gave::Failed(e) if e.is_connect());
            }
            match outcome {
                // A connection refused, one that timed out, or one closed
                // before its answer came (a lost answer): sent again, as
                // a replayable request may be.
                Err(Gave::Failed(e))
                    if (e.is_connect() || e.is_timeout() || e.is_request()) && again =>
                {
                    let what = if e.is_connect() {
                        format!("could not connect to {}", self.host)
                    } else if e.is_timeout() {
                        format!("no answer from {} in time", self.host)
                    } else {
                        format!("the connection to {} closed without an answer", self.host)
                    };
                    self.notify(&what, attempt);
                    tokio::time::sleep(self.retry.delay(attempt, None)).await;
                }
                // The wait was the pause: try again at once.
                Err(Gave::NoAnswer(wait)) if again => {
                    let what = format!("no answer from {} in {} s", self.host, wait.as_secs());
                    self.notify(&what, attempt);
                }
                Err(Gave::Stalled(idle)) if again => {
                    let what = format!(
                        "the request to {} made no progress for {} s",
                        self.host,
                        idle.as_secs()
                    );
                    self.notify(&what, attempt);
                }
                Err(Gave::Failed(e)) => return Err(self.transport_error(operation, e)),
                Err(gave) => return Err(self.gave_up(operation, gave, attempt)),
                // A challenge is answered only when the registry itself
                // made it: a 401 from another origin (a Link, a Location,
                // a redirect's target) is returned as it is, so no
                // credential goes to a token service it names.
                Ok(response)
                    if response.status() == StatusCode::UNAUTHORIZED
                        && !authenticated
                        && self.same_origin(response.url().as_str()) =>
                {
                    authenticated = true;
                    self.authenticate(&response, scope, auth.as_deref()).await?;
                    // An answered challenge is not a failed attempt.
                    attempt -= 1;
                }
                Ok(response) if transient(response.status()) && again => {
                    let wait = self.retry.delay(attempt, retry_after(response.headers()));
                    tokio::time::sleep(wait).await;
                }
                Ok(mut response) => {
                    if unknown {
                        response.extensions_mut().insert(AfterUnknown);
                    }
                    return Ok(response);
                }
            }
        }
    }

    /// Says that attempt `attempt` failed with `what` and another follows.
    fn notify(&self, what: &str, attempt: u32) {
        if let Some(notice) = &self.notice {
            notice(&format!(
                "{what}; trying again, {} of {}",
                attempt + 1,
                self.retry.attempts
            ));
        }
    }

    /// The error for a request given up after `attempts` attempts.
    fn gave_up(&self, operation: &'static str, gave: Gave, attempts: u32) -> Error {
        let tries = if attempts > 1 {
            format!(" ({attempts} attempts)")
        } else {
            String::new()
        };
        Error::Backend {
            backend: self.host.clone(),
            operation,
            source: format!("{gave}{tries}").into(),
        }
    }

    /// Sends a request with a streamed body (of `len` bytes, when known),
    /// once: streams cannot be replayed. Auth is whatever earlier requests
    /// in `scope` established. Limited by progress: see [`watch`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn send_stream<S, E>(
        &self,
        method: Method,
        url: &str,
        headers: Vec<(HeaderName, String)>,
        body: S,
        len: Option<u64>,
        scope: &str,
        operation: &'static str,
    ) -> Result<Response>
    where
        S: futures::Stream<Item = std::result::Result<Bytes, E>> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        self.check_scheme(url, operation)?;
        self.turn().await;
        let began = std::time::Instant::now();
        let mut builder = self.upload_http.get()?.request(method.clone(), url);
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        let auth = self.authorization(scope).filter(|_| self.same_origin(url));
        if let Some(auth) = &auth {
            builder = builder.header(AUTHORIZATION, auth);
        }
        let sent = watch::send(builder, body, len, self.limits).await;
        exchange(&method, url, &sent, began, auth.is_some());
        match sent {
            Ok(response) => Ok(response),
            Err(Gave::Failed(e)) => Err(self.transport_error(operation, e)),
            Err(gave) => Err(self.gave_up(operation, gave, 1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn client(base: &str) -> Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Client::new(
            Clients {
                http: reqwest::Client::new(),
                token: LazyClient::new(|| Ok(reqwest::Client::new())),
                upload: LazyClient::new(|| Ok(reqwest::Client::new())),
                limits: Limits {
                    idle: Duration::from_secs(60),
                    response: Duration::from_secs(30),
                },
                notice: None,
            },
            base.to_owned(),
            "registry.example".into(),
            Credentials::basic("user", "secret"),
            Retry::default(),
        )
    }

    /// Backends review m1: a plain-HTTP registry sends credentials to a
    /// plain-HTTP token service only on its own host or on loopback.
    #[test]
    fn backends_m1_plain_http_realms_only_nearby() {
        let plain = client("http://127.0.0.1:5000");
        for (realm, allowed) in [
            ("http://127.0.0.1:9000/token", true),
            ("http://localhost/token", true),
            ("http://[::1]:9/token", true),
            ("http://10.1.2.3/token", false),
            ("http://auth.example/token", false),
        ] {
            assert_eq!(plain.plain_realm_allowed(realm), allowed, "{realm}");
        }
        let named = client("http://registry.internal:5000");
        assert!(named.plain_realm_allowed("http://registry.internal:8080/token"));
        assert!(!named.plain_realm_allowed("http://auth.internal/token"));
        let tls = client("https://registry.example");
        assert!(!tls.plain_realm_allowed("http://127.0.0.1/token"));
    }

    #[tokio::test]
    async fn paced_requests_take_turns_whatever_task_sends_them() {
        let mut c = client("https://registry.example");
        c.retry.pace = Some(Duration::from_millis(20));
        let c = std::sync::Arc::new(c);
        let started = tokio::time::Instant::now();
        let turns: Vec<_> = (0..6)
            .map(|_| {
                let c = c.clone();
                tokio::spawn(async move { c.turn().await })
            })
            .collect();
        for turn in turns {
            turn.await.expect("turn");
        }
        // Six turns 20 ms apart: the last starts 100 ms after the first.
        assert!(started.elapsed() >= Duration::from_millis(100));
        // Unpaced, a turn is no wait at all.
        let free = client("https://registry.example");
        tokio::time::timeout(Duration::from_millis(1), free.turn())
            .await
            .expect("no pace, no wait");
    }

    #[test]
    fn only_the_registry_origin_is_the_same_origin() {
        let c = client("https://registry.example");
        assert!(c.same_origin("https://registry.example/v2/a/blobs/uploads/1"));
        assert!(c.same_origin("https://registry.example:443/v2/"));
        assert!(!c.same_origin("https://cdn.example/blob"));
        assert!(!c.same_origin("https://registry.example:8443/v2/"));
        assert!(!c.same_origin("http://registry.example/v2/"));
        assert!(!c.same_origin("https://registry.example.evil.example/v2/"));
        assert!(!c.same_origin("not a url"));
    }

    #[tokio::test]
    async fn an_https_registry_is_never_left_for_plain_http() {
        let c = client("https://registry.example");
        let request = Request::new(Method::GET, "http://registry.example/v2/a/tags/list?n=1");
        let err = c.send(&request, "", "tags").await.expect_err("downgrade");
        let text = orca_core::error::chain(&err);
        assert!(
            text.contains("not: refused") && !text.contains("n=1"),
            "{text}"
        );
        let err = c
            .fetch_token("http://auth.example/token", None, "repository:a:pull", None)
            .await
            .expect_err("a plain-HTTP realm");
        assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
        assert!(!err.to_string().contains("secret"), "{err}");
    }
}
