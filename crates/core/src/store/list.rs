//! Listings through a [`Store`]: tags (paged here when the backend cannot
//! page), every tag, a registry's catalog, and the repositories of a
//! bundle.

use super::Store;
use crate::backend::{ListPage, ListQuery};
use crate::error::{Error, Result};

impl Store {
    /// One page of tags in lexical order; paged here when the backend
    /// cannot page itself.
    pub async fn tags(&self, query: &ListQuery) -> Result<ListPage> {
        let listing = |e: Error| e.during(|| format!("listing the tags of {self}"));
        if self.capabilities.tag_list_pagination {
            return self.backend.tags(query).await.map_err(listing);
        }
        let mut all = self
            .backend
            .tags(&ListQuery::all())
            .await
            .map_err(listing)?
            .entries;
        all.sort();
        all.dedup();
        Ok(ListPage::slice(&all, query))
    }

    /// Every tag, in lexical order.
    pub async fn tags_all(&self) -> Result<Vec<String>> {
        crate::backend::Pages::new("tag list", self.to_string())
            .collect(
                ListQuery::all(),
                |query| async move { self.tags(&query).await },
            )
            .await
    }

    /// Lists repositories. Needs the `catalog` capability.
    pub async fn catalog(&self, query: &ListQuery) -> Result<ListPage> {
        self.require(self.capabilities.catalog, "catalog")?;
        let listed = self.backend.catalog(query).await;
        listed.map_err(|e| e.during(|| format!("listing the repositories of {self}")))
    }

    /// The repositories of the bundle this store holds: the distinct
    /// `REPO` parts of its `REPO:TAG` names (see
    /// [`crate::bundle::repositories`]).
    pub async fn repositories(&self) -> Result<Vec<String>> {
        crate::bundle::repositories(self.backend.as_ref()).await
    }
}
