//! [`Registry`]: a registry host — open repositories (probing what the
//! registry supports once per host when the answer holds for every
//! repository), and list repositories (`_catalog`).

use std::sync::Arc;

use orca_core::{Capabilities, Error, ListPage, ListQuery, Pages, Result};
use reqwest::header::ACCEPT;
use reqwest::{Method, StatusCode};

use crate::client::{Client, Request};
use crate::error::{convert, read_error};
use crate::repository::{Options, Read, RegistryBackend, get_capped, urlencode};

/// The digest of nothing, used to ask whether the Referrers API exists.
const ZERO_DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// A registry host.
#[derive(Debug, Clone)]
pub struct Registry {
    pub(crate) client: Arc<Client>,
    pub(crate) options: Arc<Options>,
    /// What the host said about the Referrers API.
    pub(crate) referrers_api: Arc<tokio::sync::Mutex<Probe>>,
}

/// What is known of a host's Referrers API.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) enum Probe {
    /// Nobody asked yet.
    #[default]
    Unasked,
    /// An answer that holds for every repository: it has the API or not.
    Host(bool),
    /// The answer depends on the repository (a 404 naming it unknown):
    /// each asks for itself.
    PerRepository,
}

impl Registry {
    /// The host (`registry.example:5000`).
    pub fn host(&self) -> &str {
        &self.client.host
    }

    /// Whether the registry, spoken to over HTTPS, answers only in plain
    /// HTTP (one `GET /v2/`, not tried again). What an insecure client
    /// falls back on, as crane's `--insecure` and skopeo's
    /// `--tls-verify=false` do.
    pub async fn answers_plain_http(&self) -> bool {
        self.client.answers_plain_http().await
    }

    /// Opens repository `name`, asking the registry whether it offers the
    /// Referrers API (`GET /v2/<name>/referrers/<zero digest>`). An answer
    /// that holds for the whole host (an index, or Go's router saying the
    /// route does not exist) is kept in this handle, and later
    /// repositories are opened without asking.
    pub async fn repository(&self, name: &str) -> Result<RegistryBackend> {
        orca_core::Reference::parse(&format!("{}/{name}", self.client.host))?;
        let mut capabilities = Capabilities::NONE;
        capabilities.delete = true;
        capabilities.untag = true;
        capabilities.mount = true;
        capabilities.fetch_range = true;
        capabilities.catalog = true;
        capabilities.resume = self.options.sessions.is_some();
        capabilities.max_manifest_size = self.options.max_metadata_size;
        let backend = RegistryBackend {
            client: self.client.clone(),
            repository: name.to_owned(),
            place: format!("{}/{name}", self.client.host),
            capabilities,
            referrers_api: Arc::default(),
            options: self.options.clone(),
        };
        let known = {
            let mut probe = self.referrers_api.lock().await;
            match *probe {
                Probe::Host(native) => Some(native),
                Probe::PerRepository => None,
                Probe::Unasked => {
                    // The first opener asks while the others wait: its
                    // answer may hold for them all.
                    let (native, host_wide) = self.probe_referrers(&backend).await?;
                    *probe = if host_wide {
                        Probe::Host(native)
                    } else {
                        Probe::PerRepository
                    };
                    Some(native)
                }
            }
        };
        let native = match known {
            Some(native) => native,
            None => self.probe_referrers(&backend).await?.0,
        };
        backend
            .referrers_api
            .store(native, std::sync::atomic::Ordering::Relaxed);
        Ok(backend)
    }

    /// Asks about the Referrers API in `backend`'s repository: whether it
    /// is there, and whether that answer holds for the whole host.
    async fn probe_referrers(&self, backend: &RegistryBackend) -> Result<(bool, bool)> {
        let request = Request::new(
            Method::GET,
            backend.path(&format!("referrers/{ZERO_DIGEST}")),
        )
        .header(ACCEPT, "application/vnd.oci.image.index.v1+json");
        let response = self
            .client
            .send(&request, &backend.scope(false), "open")
            .await?;
        let status = response.status();
        let is_index = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("application/vnd.oci.image.index.v1+json"));
        match status {
            StatusCode::OK => Ok((is_index, is_index)),
            StatusCode::BAD_REQUEST => {
                // Go's TLS listener answers plain HTTP with exactly this.
                let error = read_error(response).await;
                if error.body.contains("HTTP request to an HTTPS server") {
                    return Err(Error::InvalidInput {
                        what: format!("registry {}", self.client.host),
                        reason: "it speaks only HTTPS, but orca was told to use plain HTTP".into(),
                    });
                }
                Ok((false, false))
            }
            // Credentials that do not work are worth saying at once;
            // anything else unexpected only means no Referrers API, and
            // must not keep ordinary pulls and pushes from working.
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(backend
                .fail(response, "open", "referrers support".into())
                .await),
            StatusCode::NOT_FOUND => {
                // A distribution error (`NAME_UNKNOWN`: a repository not
                // pushed yet), or a page from a proxy in front, says
                // nothing about the host. Go's router answering for a
                // route it does not have (distribution before 3.0) is
                // true of every repository.
                let error = read_error(response).await;
                let no_route =
                    error.details.is_empty() && error.body.trim() == "404 page not found";
                Ok((false, no_route))
            }
            _ => Ok((false, false)),
        }
    }

    /// Lists repositories, one page (`_catalog?n=&last=`).
    pub async fn catalog(&self, query: &ListQuery) -> Result<ListPage> {
        catalog(&self.client, &self.client.host, &self.options, query).await
    }

    /// Lists every repository after `last` (all when `None`), page by
    /// page, under [`Pages`]: pages that loop or never end are an error.
    pub async fn catalog_all(&self, last: Option<String>) -> Result<Vec<String>> {
        Pages::new("repository list", self.client.host.clone())
            .collect(ListQuery::page(last, 1000), |query| async move {
                self.catalog(&query).await
            })
            .await
    }
}

/// `GET /v2/_catalog` with `n` and `last`; a `Link` header means more.
pub(crate) async fn catalog(
    client: &Client,
    place: &str,
    options: &Options,
    query: &ListQuery,
) -> Result<ListPage> {
    let mut params = Vec::new();
    if let Some(n) = query.limit {
        params.push(format!("n={n}"));
    }
    if let Some(last) = &query.last {
        params.push(format!("last={}", urlencode(last)));
    }
    let mut url = client.url("/v2/_catalog");
    if !params.is_empty() {
        url.push('?');
        url.push_str(&params.join("&"));
    }
    let read = Read {
        place,
        scope: "registry:catalog:*",
        operation: "catalog",
        what: "repository list",
        limit: options.max_metadata_size,
    };
    let (headers, bytes) = match get_capped(client, &Request::new(Method::GET, url), &read).await? {
        Ok(answer) => answer,
        Err(response) => {
            let error = read_error(response).await;
            return Err(convert(
                error,
                place,
                "catalog",
                "repository list".into(),
                None,
            ));
        }
    };
    let more = headers.contains_key(reqwest::header::LINK);
    #[derive(serde::Deserialize)]
    struct Catalog {
        #[serde(default)]
        repositories: Vec<String>,
    }
    let mut listing: Catalog = serde_json::from_slice(&bytes).map_err(|e| Error::Backend {
        backend: place.to_owned(),
        operation: "catalog",
        source: Box::new(e),
    })?;
    if let Some(n) = query.limit {
        listing.repositories.truncate(n);
    }
    let next = if more {
        listing.repositories.last().cloned()
    } else {
        None
    };
    Ok(ListPage::new(listing.repositories, next))
}
