//! The challenge flow of a [`Client`]: answering a 401 with basic
//! credentials or a bearer token from the token service the registry names,
//! and where credentials may go on the way (HTTPS token services, or plain
//! HTTP ones nearby, followed by no redirect).

use std::sync::atomic::Ordering;
use std::time::Duration;

use orca_core::{Error, Result};
use reqwest::Response;
use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};

use super::{Client, TOKEN_LIMIT, redact_query, retry_after, transient};
use crate::auth::{Challenge, Credentials, TokenResponse, parse_challenge};
use crate::error::{convert, read_error};

impl Client {
    /// Whether a plain-HTTP token service may be sent credentials: only
    /// by a registry that speaks plain HTTP itself, and only on the
    /// registry's own host or on loopback.
    pub(super) fn plain_realm_allowed(&self, realm: &str) -> bool {
        let (Ok(base), Ok(url)) = (reqwest::Url::parse(&self.base), reqwest::Url::parse(realm))
        else {
            return false;
        };
        if base.scheme() != "http" || url.scheme() != "http" {
            return false;
        }
        let host = url.host_str().unwrap_or_default();
        let loopback = host == "localhost"
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        loopback || base.host_str() == url.host_str()
    }

    /// Answers a 401's challenge to a request that carried `refused`:
    /// remember to send basic auth, or obtain a bearer token for `scope`.
    /// Requests that meet a 401 together share one token fetch (backends
    /// m7): each waits its turn, and one that finds a token newer than the
    /// one refused takes it. Before, every one of them fetched, and each
    /// dropped the token the others had just put, so a request could be
    /// sent again without one and fail as unauthorized.
    pub(super) async fn authenticate(
        &self,
        response: &Response,
        scope: &str,
        refused: Option<&str>,
    ) -> Result<()> {
        let flight = self.flights.lock().ok().map(|mut flights| {
            flights
                .entry(scope.to_owned())
                .or_insert_with(Default::default)
                .clone()
        });
        let turn = match &flight {
            Some(flight) => Some(flight.lock().await),
            None => None,
        };
        let answered = self.answer_challenge(response, scope, refused).await;
        drop(turn);
        // The last one out takes the scope's entry away.
        if let (Some(flight), Ok(mut flights)) = (flight, self.flights.lock())
            && std::sync::Arc::strong_count(&flight) == 2
        {
            flights.remove(scope);
        }
        answered
    }

    async fn answer_challenge(
        &self,
        response: &Response,
        scope: &str,
        refused: Option<&str>,
    ) -> Result<()> {
        if let Ok(mut tokens) = self.tokens.lock() {
            match tokens.get(scope) {
                // Another request put a new token while this one waited.
                Some(current) if Some(current.as_str()) != refused => return Ok(()),
                _ => tokens.forget(scope),
            }
        }
        let header = response
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        match parse_challenge(header) {
            Some(Challenge::Basic) => {
                if self.credentials.basic_header().is_none() {
                    return Err(Error::Unauthorized {
                        place: self.host.clone(),
                        message: "the registry requires a user name and password".into(),
                    });
                }
                self.basic.store(true, Ordering::Relaxed);
                Ok(())
            }
            Some(Challenge::Bearer {
                realm,
                service,
                scope: offered,
            }) => {
                let token = self
                    .fetch_token(&realm, service.as_deref(), scope, offered.as_deref())
                    .await?;
                if let Ok(mut tokens) = self.tokens.lock() {
                    tokens.put(scope, format!("Bearer {}", token.0), token.1);
                }
                Ok(())
            }
            None => Ok(()),
        }
    }

    pub(super) async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        offered: Option<&str>,
    ) -> Result<(String, Duration)> {
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(service) = service {
            query.push(("service", service));
        }
        // Our scope may name several repositories (mounts): one `scope` each.
        for part in scope.split(' ').filter(|s| !s.is_empty()) {
            query.push(("scope", part));
        }
        if scope.is_empty()
            && let Some(offered) = offered
        {
            query.push(("scope", offered));
        }
        // Credentials go to the token service only over HTTPS, unless the
        // registry itself speaks plain HTTP (loopback, or the user's
        // explicit choice) and the service is on the registry's own host
        // or on loopback.
        if !realm.starts_with("https://") && !self.plain_realm_allowed(realm) {
            return Err(Error::Unauthorized {
                place: self.host.clone(),
                message: format!(
                    "the token service {} is not HTTPS: refused, so credentials never travel in the clear",
                    redact_query(realm)
                ),
            });
        }
        let builder = match &self.credentials {
            Credentials::IdentityToken(token) => {
                let mut form = vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", token.as_str()),
                    ("client_id", "orca"),
                ];
                form.extend(query.iter().copied());
                self.token_http.get()?.post(realm).form(&form)
            }
            other => {
                let mut builder = self.token_http.get()?.get(realm).query(&query);
                if let Some(basic) = other.basic_header() {
                    builder = builder.header(AUTHORIZATION, basic);
                }
                builder
            }
        };
        // Token services have bad moments too (backends m7): a refused
        // connection, a 5xx or a 429 is asked again, with the registry's
        // backoff (a form body is cloned for each attempt).
        let mut attempt = 0;
        let response = loop {
            attempt += 1;
            let again = attempt < self.retry.attempts;
            let Some(request) = builder.try_clone() else {
                break builder
                    .send()
                    .await
                    .map_err(|e| self.transport_error("authenticate", e))?;
            };
            match request.send().await {
                Err(e) if e.is_connect() && again => {
                    tokio::time::sleep(self.retry.delay(attempt, None)).await;
                }
                Err(e) => return Err(self.transport_error("authenticate", e)),
                Ok(response) if transient(response.status()) && again => {
                    let wait = self.retry.delay(attempt, retry_after(response.headers()));
                    tokio::time::sleep(wait).await;
                }
                Ok(response) => break response,
            }
        };
        if !response.status().is_success() {
            let retry = retry_after(response.headers());
            let error = read_error(response).await;
            return Err(convert(
                error,
                &self.host,
                "authenticate",
                format!("token from {realm}"),
                retry,
            ));
        }
        // Read at most TOKEN_LIMIT bytes: a token answer is small.
        let mut response = response;
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_error("authenticate", e))?
        {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > TOKEN_LIMIT {
                return Err(Error::LimitExceeded {
                    what: format!("token answer from {realm}"),
                    limit: TOKEN_LIMIT as u64,
                });
            }
        }
        serde_json::from_slice::<TokenResponse>(&bytes)
            .ok()
            .and_then(TokenResponse::into_token)
            .ok_or_else(|| Error::Unauthorized {
                place: self.host.clone(),
                message: format!("the token service {realm} answered without a token"),
            })
    }
}
