//! Who may do what: anonymous read (or nothing), users from an htpasswd
//! file (bcrypt) with per-repository read/write rules, and bearer tokens
//! from an external token service (distribution's `auth: token` model: a
//! JWT signed by the service, verified against its configured certificate
//! or public key, whose `access` claims grant `pull`/`push` per
//! repository). A request without what it needs gets the challenge that
//! tells a client how to authenticate (`WWW-Authenticate`).

use std::collections::BTreeMap;
use std::path::Path;

use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use base64::Engine as _;

use crate::errors::ApiError;

/// What a request may do to a repository.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Nothing.
    None,
    /// Pull: `GET` and `HEAD`.
    Read,
    /// Pull and push (and delete).
    Write,
}

/// A rule: these users have this access to repositories matching these
/// globs (`team/*`, `*`; `*` matches within a path component, `**` across).
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Repository globs.
    pub repositories: Vec<String>,
    /// User names; `*` for every authenticated user.
    pub users: Vec<String>,
    /// What they may do.
    pub access: Access,
}

/// Bearer tokens from an external token service.
#[derive(Clone)]
pub struct TokenAuth {
    /// Where clients get tokens (the challenge's `realm`).
    pub realm: String,
    /// The service name tokens are issued for (`aud`, the challenge's
    /// `service`).
    pub service: String,
    /// The issuer tokens must name (`iss`).
    pub issuer: String,
    key: jsonwebtoken::DecodingKey,
    algorithms: Vec<jsonwebtoken::Algorithm>,
}

impl std::fmt::Debug for TokenAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAuth")
            .field("realm", &self.realm)
            .field("service", &self.service)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl TokenAuth {
    /// Tokens from `realm` for `service` by `issuer`, verified with the
    /// PEM at `key` (a certificate, or an EC or RSA public key).
    pub fn new(realm: &str, service: &str, issuer: &str, key: &Path) -> Result<Self, String> {
        let pem = std::fs::read(key).map_err(|e| format!("reading {}: {e}", key.display()))?;
        let (key, algorithms) = match jsonwebtoken::DecodingKey::from_ec_pem(&pem) {
            Ok(key) => (
                key,
                vec![
                    jsonwebtoken::Algorithm::ES256,
                    jsonwebtoken::Algorithm::ES384,
                ],
            ),
            Err(_) => (
                jsonwebtoken::DecodingKey::from_rsa_pem(&pem).map_err(|e| {
                    format!("{} is no EC or RSA key or certificate: {e}", key.display())
                })?,
                vec![
                    jsonwebtoken::Algorithm::RS256,
                    jsonwebtoken::Algorithm::RS384,
                    jsonwebtoken::Algorithm::RS512,
                ],
            ),
        };
        Ok(TokenAuth {
            realm: realm.to_owned(),
            service: service.to_owned(),
            issuer: issuer.to_owned(),
            key,
            algorithms,
        })
    }
}

/// Who may do what.
#[derive(Clone, Debug)]
pub struct Auth {
    users: BTreeMap<String, String>,
    /// Credentials bcrypt already accepted, by their sha256: bcrypt costs
    /// tens of milliseconds by design, and a client sends its credentials
    /// with every request.
    accepted: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>,
    token: Option<TokenAuth>,
    anonymous: Access,
    rules: Vec<Rule>,
}

impl Default for Auth {
    /// No authentication: everyone may do everything (a local or test
    /// registry).
    fn default() -> Self {
        Auth {
            users: BTreeMap::new(),
            accepted: Default::default(),
            token: None,
            anonymous: Access::Write,
            rules: Vec::new(),
        }
    }
}

/// What a request asks for.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Scope<'a> {
    /// The API root (`/v2/`).
    Root,
    /// The catalog.
    Catalog,
    /// A repository, for reading or writing.
    Repository(&'a str, Access),
}

/// Who a request comes from.
enum Caller {
    Anonymous,
    User(String),
    Token(Vec<TokenGrant>),
}

#[derive(Debug, serde::Deserialize)]
struct TokenGrant {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    #[serde(default)]
    actions: Vec<String>,
}

#[derive(Debug, serde::Deserialize)]
struct Claims {
    #[serde(default)]
    access: Vec<TokenGrant>,
}

impl Auth {
    /// Users from the htpasswd file at `path` (bcrypt hashes only), with
    /// `anonymous` access for requests without credentials and `rules`
    /// for users (with no rules, every user may write everywhere).
    pub fn htpasswd(path: &Path, anonymous: Access, rules: Vec<Rule>) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let mut users = BTreeMap::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err(format!(
                    "{} line {}: not USER:HASH",
                    path.display(),
                    number + 1
                ));
            };
            if !(hash.starts_with("$2y$") || hash.starts_with("$2b$") || hash.starts_with("$2a$")) {
                return Err(format!(
                    "{} line {}: the password of {user} is not a bcrypt hash (htpasswd -B)",
                    path.display(),
                    number + 1
                ));
            }
            users.insert(user.to_owned(), hash.to_owned());
        }
        Ok(Auth {
            users,
            accepted: Default::default(),
            token: None,
            anonymous,
            rules,
        })
    }

    /// Bearer tokens from `token`, and `anonymous` access without one.
    pub fn token(token: TokenAuth, anonymous: Access) -> Self {
        Auth {
            users: BTreeMap::new(),
            accepted: Default::default(),
            token: Some(token),
            anonymous,
            rules: Vec::new(),
        }
    }

    /// Whether anyone may do anything (no users, no tokens).
    pub(crate) fn is_open(&self) -> bool {
        self.open()
    }

    fn open(&self) -> bool {
        self.users.is_empty() && self.token.is_none()
    }

    /// Checks that the request may do what `scope` says.
    pub(crate) fn check(&self, request: &Parts, scope: Scope<'_>) -> Result<(), ApiError> {
        if self.open() {
            return Ok(());
        }
        let caller = self.caller(request)?;
        let (repository, needed, granted) = match (scope, &caller) {
            // The API root challenges an anonymous caller, so clients log
            // in (`docker login` sends credentials only when asked).
            (Scope::Root, Caller::Anonymous) => (None, Access::Read, Access::None),
            (Scope::Root | Scope::Catalog, _) if !matches!(caller, Caller::Anonymous) => {
                return Ok(());
            }
            (Scope::Root | Scope::Catalog, _) => (None, Access::Read, self.anonymous),
            (Scope::Repository(repository, needed), Caller::Anonymous) => {
                (Some(repository), needed, self.anonymous)
            }
            (Scope::Repository(repository, needed), Caller::User(user)) => {
                (Some(repository), needed, self.user_access(user, repository))
            }
            (Scope::Repository(repository, needed), Caller::Token(grants)) => {
                (Some(repository), needed, token_access(grants, repository))
            }
        };
        if granted >= needed {
            return Ok(());
        }
        Err(self.refusal(&caller, repository, needed))
    }

    /// The user `USER:PASSWORD` names, when the password is theirs.
    fn verified(&self, credentials: &str) -> Option<String> {
        let key = orca::Digest::sha256(credentials.as_bytes()).to_string();
        let accepted = || {
            self.accepted
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some(user) = accepted().get(&key) {
            return Some(user.clone());
        }
        let (user, password) = credentials.split_once(':')?;
        let hash = self.users.get(user)?;
        if !bcrypt::verify(password, hash).unwrap_or(false) {
            return None;
        }
        let mut accepted = accepted();
        if accepted.len() >= 1024 {
            accepted.clear();
        }
        accepted.insert(key, user.to_owned());
        Some(user.to_owned())
    }

    fn user_access(&self, user: &str, repository: &str) -> Access {
        if self.rules.is_empty() {
            return Access::Write;
        }
        self.rules
            .iter()
            .filter(|rule| rule.users.iter().any(|u| u == "*" || u == user))
            .filter(|rule| rule.repositories.iter().any(|g| glob(g, repository)))
            .map(|rule| rule.access)
            .max()
            .unwrap_or(self.anonymous)
    }

    fn caller(&self, request: &Parts) -> Result<Caller, ApiError> {
        let Some(authorization) = request
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return Ok(Caller::Anonymous);
        };
        let (scheme, value) = authorization.split_once(' ').unwrap_or((authorization, ""));
        if scheme.eq_ignore_ascii_case("basic") && !self.users.is_empty() {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(value.trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok());
            if let Some(decoded) = decoded.as_deref()
                && let Some(user) = self.verified(decoded)
            {
                return Ok(Caller::User(user));
            }
            return Err(self.refusal(&Caller::Anonymous, None, Access::Read));
        }
        if scheme.eq_ignore_ascii_case("bearer")
            && let Some(token) = &self.token
        {
            let mut validation = jsonwebtoken::Validation::new(token.algorithms[0]);
            validation.algorithms = token.algorithms.clone();
            validation.set_audience(&[&token.service]);
            validation.set_issuer(&[&token.issuer]);
            return match jsonwebtoken::decode::<Claims>(value.trim(), &token.key, &validation) {
                Ok(data) => Ok(Caller::Token(data.claims.access)),
                Err(e) => Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "UNAUTHORIZED",
                    format!("the bearer token was refused: {e}"),
                )
                .with_header(header::WWW_AUTHENTICATE, self.challenge(None, Access::Read))),
            };
        }
        Err(self.refusal(&Caller::Anonymous, None, Access::Read))
    }

    /// The answer for a caller without `needed` access: a challenge to an
    /// unknown or under-scoped caller, `DENIED` to a known user.
    fn refusal(&self, caller: &Caller, repository: Option<&str>, needed: Access) -> ApiError {
        if let Caller::User(user) = caller {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "DENIED",
                format!(
                    "{user} may not {} {}",
                    if needed == Access::Write {
                        "push to"
                    } else {
                        "pull from"
                    },
                    repository.unwrap_or("this registry")
                ),
            );
        }
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "authentication required",
        )
        .with_header(header::WWW_AUTHENTICATE, self.challenge(repository, needed))
    }

    fn challenge(&self, repository: Option<&str>, needed: Access) -> HeaderValue {
        let text = match &self.token {
            Some(token) => {
                let mut text = format!(
                    "Bearer realm=\"{}\",service=\"{}\"",
                    token.realm, token.service
                );
                if let Some(repository) = repository {
                    let actions = if needed == Access::Write {
                        "pull,push"
                    } else {
                        "pull"
                    };
                    text.push_str(&format!(",scope=\"repository:{repository}:{actions}\""));
                }
                text
            }
            None => "Basic realm=\"orca\"".to_owned(),
        };
        HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("Basic realm=\"orca\""))
    }
}

/// What a token's grants allow on `repository`.
fn token_access(grants: &[TokenGrant], repository: &str) -> Access {
    grants
        .iter()
        .filter(|g| g.kind == "repository" && (g.name == repository || g.name == "*"))
        .flat_map(|g| g.actions.iter())
        .map(|action| match action.as_str() {
            "push" | "*" | "delete" => Access::Write,
            "pull" => Access::Read,
            _ => Access::None,
        })
        .max()
        .unwrap_or(Access::None)
}

/// Whether `name` matches `pattern`: `*` within a path component, `**`
/// across components.
pub(crate) fn glob(pattern: &str, name: &str) -> bool {
    fn matches(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) if p.get(1) == Some(&b'*') => {
                (0..=n.len()).any(|i| matches(&p[2..], &n[i..]))
            }
            (Some(b'*'), _) => {
                let stop = n.iter().position(|&c| c == b'/').unwrap_or(n.len());
                (0..=stop).any(|i| matches(&p[1..], &n[i..]))
            }
            (Some(a), Some(b)) if a == b => matches(&p[1..], &n[1..]),
            _ => false,
        }
    }
    matches(pattern.as_bytes(), name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_within_and_across_components() {
        assert!(glob("team/*", "team/app"));
        assert!(!glob("team/*", "team/app/sub"));
        assert!(glob("team/**", "team/app/sub"));
        assert!(glob("*", "app"));
        assert!(!glob("*", "a/b"));
        assert!(!glob("team/*", "other/app"));
    }
}
