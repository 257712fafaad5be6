//! Registry authentication: credentials, `WWW-Authenticate` challenges
//! (parsed with `http-auth`), and the bearer-token flow with tokens cached
//! per scope until they expire. Secrets never reach `Debug` or errors.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;

/// What orca presents to a registry.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum Credentials {
    /// Nothing: anonymous access (and anonymous tokens where offered).
    #[default]
    Anonymous,
    /// A user name and password (basic auth, or to obtain tokens).
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// A refresh ("identity") token from `docker login`, exchanged for
    /// access tokens with the OAuth2 grant.
    IdentityToken(String),
}

impl Credentials {
    /// Basic credentials.
    pub fn basic(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials::Basic {
            username: username.into(),
            password: password.into(),
        }
    }

    pub(crate) fn basic_header(&self) -> Option<String> {
        match self {
            Credentials::Basic { username, password } => {
                let raw = format!("{username}:{password}");
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(raw)
                ))
            }
            _ => None,
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => {
                write!(
                    f,
                    "Basic {{ username: {username:?}, password: <redacted> }}"
                )
            }
            Credentials::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

/// A challenge from a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Picks the challenge orca can answer from a `WWW-Authenticate` value.
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let challenges = http_auth::parse_challenges(header).ok()?;
    let param = |c: &http_auth::ChallengeRef<'_>, name: &str| {
        c.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_unescaped())
    };
    let bearer = challenges
        .iter()
        .find(|c| c.scheme.eq_ignore_ascii_case("bearer"))
        .and_then(|c| {
            Some(Challenge::Bearer {
                realm: param(c, "realm")?,
                service: param(c, "service"),
                scope: param(c, "scope"),
            })
        });
    bearer.or_else(|| {
        challenges
            .iter()
            .any(|c| c.scheme.eq_ignore_ascii_case("basic"))
            .then_some(Challenge::Basic)
    })
}

/// The token endpoint's answer.
#[derive(Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl TokenResponse {
    pub(crate) fn into_token(self) -> Option<(String, Duration)> {
        let token = self.token.or(self.access_token)?;
        // The spec's default lifetime is 60 s; renew a little early.
        // A token is kept a day at most, whatever a server claims (a huge
        // `expires_in` must not overflow the deadline).
        let lifetime = Duration::from_secs(self.expires_in.unwrap_or(60).clamp(10, 86_400) - 5);
        Some((token, lifetime))
    }
}

/// `Authorization` values by scope, valid until their deadline.
#[derive(Default)]
pub(crate) struct TokenCache {
    tokens: HashMap<String, (String, Instant)>,
}

impl TokenCache {
    pub(crate) fn get(&self, scope: &str) -> Option<String> {
        self.tokens
            .get(scope)
            .filter(|(_, deadline)| Instant::now() < *deadline)
            .map(|(header, _)| header.clone())
    }

    pub(crate) fn put(&mut self, scope: &str, header: String, lifetime: Duration) {
        self.tokens
            .insert(scope.to_owned(), (header, Instant::now() + lifetime));
    }

    pub(crate) fn forget(&mut self, scope: &str) {
        self.tokens.remove(scope);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="orca""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn huge_token_lifetimes_do_not_overflow() {
        let response: TokenResponse =
            serde_json::from_str(&format!(r#"{{"token":"t","expires_in":{}}}"#, u64::MAX))
                .expect("json");
        let (_, lifetime) = response.into_token().expect("token");
        assert!(lifetime <= Duration::from_secs(86_400));
        let mut cache = TokenCache::default();
        cache.put("scope", "Bearer t".into(), lifetime);
        assert_eq!(cache.get("scope").as_deref(), Some("Bearer t"));
    }

    #[test]
    fn secrets_are_not_printed() {
        let text = format!(
            "{:?} {:?}",
            Credentials::basic("u", "hunter2"),
            Credentials::IdentityToken("tok".into())
        );
        assert!(
            !text.contains("hunter2") && !text.contains("tok\""),
            "{text}"
        );
    }
}
