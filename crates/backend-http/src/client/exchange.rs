//! What `--debug` shows of each HTTP exchange, and URLs as messages name
//! them (without their query, which may carry signed state).

use reqwest::Response;

use crate::watch::Gave;

/// Logs one exchange for `--debug` (target `orca::http`, level debug):
/// method, URL without its query, status, the headers that explain what
/// happened, and how long it took. Credentials never appear.
pub(super) fn exchange(
    method: &reqwest::Method,
    url: &str,
    outcome: &std::result::Result<Response, Gave>,
    began: std::time::Instant,
    authorized: bool,
) {
    if !tracing::enabled!(target: "orca::http", tracing::Level::DEBUG) {
        return;
    }
    let took = began.elapsed().as_millis();
    let url = redact_query(url);
    match outcome {
        Ok(response) => {
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned()
            };
            tracing::debug!(
                target: "orca::http",
                "{method} {url} -> {} in {took} ms{}{}{}",
                response.status(),
                if authorized { " (with credentials)" } else { "" },
                match header("www-authenticate") {
                    h if h.is_empty() => String::new(),
                    h => format!(" www-authenticate: {h}"),
                },
                match header("docker-content-digest") {
                    h if h.is_empty() => String::new(),
                    h => format!(" docker-content-digest: {h}"),
                },
            );
        }
        // A transport error names the URL with its query: said by kind.
        Err(Gave::Failed(e)) => {
            let what = if e.is_connect() {
                "could not connect"
            } else if e.is_timeout() {
                "timed out"
            } else {
                "the connection broke"
            };
            tracing::debug!(target: "orca::http", "{method} {url} -> {what} after {took} ms");
        }
        Err(gave) => {
            tracing::debug!(target: "orca::http", "{method} {url} -> {gave} after {took} ms");
        }
    }
}

/// A URL without its query (which may carry signed state), for messages.
pub(crate) fn redact_query(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}
