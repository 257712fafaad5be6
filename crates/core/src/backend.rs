//! The [`Backend`] contract: the minimum a storage backend implements for
//! one repository (a registry repository, an image layout, a bucket prefix).
//!
//! Callers do not use a backend directly; they hold a [`Store`](crate::Store),
//! which verifies every byte, checks capabilities and adds context.

use std::fmt;
use std::ops::Range;

use async_trait::async_trait;

use crate::body::Body;
use crate::capabilities::Capabilities;
use crate::error::{Error, Result};
use crate::model::{Descriptor, Digest, MediaType, Selector};

/// Options for [`Backend::push`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PushOptions {
    /// Also point this tag at the pushed manifest, in the same operation
    /// where the backend can (a registry `PUT …/manifests/<tag>`).
    pub tag: Option<String>,
    /// The body starts at this byte of the content: the push continues an
    /// interrupted one whose first `offset` bytes the backend holds
    /// ([`Backend::partial`]). Zero for a whole push.
    pub offset: u64,
    /// With no tag: list the pushed manifest among the store's roots all
    /// the same (an untagged entry in a layout's `index.json`, as skopeo
    /// and oras record a copy by digest), so readers find it and garbage
    /// collection keeps it. Stores that list no roots but their tags (a
    /// registry) ignore it.
    pub list: bool,
    /// The manifest may name blobs the store does not hold, now or after a
    /// garbage collection (a pull-through cache fetches them on demand):
    /// tagging or listing it does not check them. Stores that check
    /// nothing ignore it.
    pub sparse: bool,
}

impl PushOptions {
    /// Options that tag the pushed manifest.
    pub fn tagged(tag: impl Into<String>) -> Self {
        PushOptions {
            tag: Some(tag.into()),
            offset: 0,
            list: false,
            sparse: false,
        }
    }

    /// Options that continue an interrupted blob push from `offset`.
    pub fn resumed(offset: u64) -> Self {
        PushOptions {
            tag: None,
            offset,
            list: false,
            sparse: false,
        }
    }

    /// Options that list the pushed manifest as an untagged root.
    pub fn listed() -> Self {
        PushOptions {
            tag: None,
            offset: 0,
            list: true,
            sparse: false,
        }
    }

    /// The same options, for a manifest that may name blobs the store
    /// does not hold.
    pub fn sparse(mut self) -> Self {
        self.sparse = true;
        self
    }
}

/// A page request for tag and repository listings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListQuery {
    /// Start after this entry (exclusive), in lexical order.
    pub last: Option<String>,
    /// At most this many entries; `None` for all.
    pub limit: Option<usize>,
}

impl ListQuery {
    /// Everything.
    pub fn all() -> Self {
        ListQuery::default()
    }

    /// At most `limit` entries after `last`.
    pub fn page(last: Option<String>, limit: usize) -> Self {
        ListQuery {
            last,
            limit: Some(limit),
        }
    }
}

/// One page of a listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListPage {
    /// The entries, in lexical order.
    pub entries: Vec<String>,
    /// Pass this as [`ListQuery::last`] for the next page; `None` at the end.
    pub next: Option<String>,
}

impl ListPage {
    /// A page of entries and the continuation marker.
    pub fn new(entries: Vec<String>, next: Option<String>) -> Self {
        ListPage { entries, next }
    }

    /// Pages a complete, sorted list the way a paginating server would.
    pub fn slice(sorted: &[String], query: &ListQuery) -> Self {
        let start = match &query.last {
            Some(last) => sorted.partition_point(|e| e <= last),
            None => 0,
        };
        let rest = &sorted[start..];
        let take = query.limit.unwrap_or(rest.len()).min(rest.len());
        let entries = rest[..take].to_vec();
        let next = if take < rest.len() {
            entries.last().cloned()
        } else {
            None
        };
        ListPage { entries, next }
    }
}

/// The guard every paged listing runs under (tags, catalog, referrers):
/// a continuation seen before, more than [`Pages::MAX_PAGES`] pages or
/// more than [`Pages::MAX_ENTRIES`] entries end it with an error, so a
/// server whose pages cycle or never end cannot keep a listing running,
/// or growing, forever.
#[derive(Debug)]
pub struct Pages {
    what: String,
    place: String,
    pages: u64,
    entries: u64,
    seen: std::collections::HashSet<String>,
}

impl Pages {
    /// The most pages one listing reads.
    pub const MAX_PAGES: u64 = 10_000;
    /// The most entries one listing collects.
    pub const MAX_ENTRIES: u64 = 1_000_000;

    /// A guard for the listing of `what` (`"tag list"`) at `place`.
    pub fn new(what: impl Into<String>, place: impl Into<String>) -> Self {
        Pages {
            what: what.into(),
            place: place.into(),
            pages: 0,
            entries: 0,
            seen: std::collections::HashSet::new(),
        }
    }

    /// Counts a page of `entries` read; an error past the caps.
    pub fn read(&mut self, entries: usize) -> Result<()> {
        self.pages += 1;
        self.entries = self.entries.saturating_add(entries as u64);
        if self.pages > Self::MAX_PAGES {
            return Err(Error::LimitExceeded {
                what: format!("pages of the {} of {}", self.what, self.place),
                limit: Self::MAX_PAGES,
            });
        }
        if self.entries > Self::MAX_ENTRIES {
            return Err(Error::LimitExceeded {
                what: format!("entries of the {} of {}", self.what, self.place),
                limit: Self::MAX_ENTRIES,
            });
        }
        Ok(())
    }

    /// Every entry of the pages `fetch` gives from `first` on, following
    /// each page's `next` under this guard.
    pub async fn collect<F, Fut>(mut self, first: ListQuery, mut fetch: F) -> Result<Vec<String>>
    where
        F: FnMut(ListQuery) -> Fut,
        Fut: std::future::Future<Output = Result<ListPage>>,
    {
        let mut all = Vec::new();
        let mut query = first;
        loop {
            let page = fetch(query.clone()).await?;
            self.read(page.entries.len())?;
            all.extend(page.entries);
            match page.next {
                Some(next) => {
                    self.next(&next)?;
                    query.last = Some(next);
                }
                None => return Ok(all),
            }
        }
    }

    /// Checks the continuation (a marker, a URL) that asks for the next
    /// page: one seen before means the pages loop.
    pub fn next(&mut self, continuation: &str) -> Result<()> {
        if self.seen.insert(continuation.to_owned()) {
            return Ok(());
        }
        Err(Error::Backend {
            backend: self.place.clone(),
            operation: "list",
            source: format!(
                "the {} leads back to {continuation}, a page already read",
                self.what
            )
            .into(),
        })
    }
}

/// The manifests that name a subject, as the Referrers API lists them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Referrers {
    /// One descriptor per referrer, with `artifactType` and annotations.
    pub manifests: Vec<Descriptor>,
    /// Whether the `artifactType` filter was applied by the backend
    /// (`OCI-Filters-Applied`); when not, `Store` filters.
    pub filtered: bool,
}

impl Referrers {
    /// A listing and whether it is already filtered.
    pub fn new(manifests: Vec<Descriptor>, filtered: bool) -> Self {
        Referrers {
            manifests,
            filtered,
        }
    }
}

/// A storage backend for one repository.
///
/// Content is addressed by descriptor; whether it is a manifest or a blob is
/// told by [`MediaType::is_manifest`] on the descriptor's media type. The
/// `Display` form names the backend and repository for error messages
/// (`oci:./layout`, `localhost:5000/app`).
///
/// Every method but [`Backend::fetch_tagged`] (a shortcut) is required.
/// An optional operation whose capability is off returns
/// `Error::Unsupported`, though `Store` refuses it first.
#[async_trait]
pub trait Backend: fmt::Debug + fmt::Display + Send + Sync + 'static {
    /// What the backend supports. Must return the same value every time,
    /// except `referrers_api`, which a backend may learn while it runs (a
    /// registry answering `OCI-Subject`); `Store` reads that flag live.
    fn capabilities(&self) -> Capabilities;

    /// Whether the content is present. Absence is `Ok(false)`, not an error.
    async fn exists(&self, descriptor: &Descriptor) -> Result<bool>;

    /// The size of the content stored under the descriptor's digest (its
    /// media type says whether to look among manifests or blobs, where a
    /// backend keeps them apart); `None` when absent. For content whose
    /// size is not known yet (`orca blob get REPO@DIGEST`).
    async fn stat(&self, descriptor: &Descriptor) -> Result<Option<u64>>;

    /// Streams the content. `Error::NotFound` when absent. The body must
    /// promise `descriptor.size` bytes; `Store` verifies them.
    async fn fetch(&self, descriptor: &Descriptor) -> Result<Body>;

    /// Stores content read from `body`, tagging it when `options.tag` is set.
    ///
    /// The backend must read `body` until it ends and must publish nothing
    /// if any item is an error — `Store` reports a digest or size mismatch
    /// as the last item. Write to a temporary place, then publish (rename,
    /// final `PUT`, multipart complete) only after the body ended cleanly.
    /// Pushing content that already exists succeeds without change.
    ///
    /// With `options.offset` above zero (capability `resume`) the body
    /// holds the content from that byte on, and the backend continues the
    /// interrupted push whose first `offset` bytes it holds. `Store` can
    /// only check the body's length then, so the backend must check the
    /// whole content's digest itself before publishing (re-hashing what it
    /// held, or letting the registry check it when the upload completes),
    /// and answer `DigestMismatch` — dropping what it held — when it does
    /// not match. When it no longer holds exactly `offset` bytes it answers
    /// `Conflict` and the caller pushes the whole content instead.
    async fn push(&self, descriptor: &Descriptor, body: Body, options: &PushOptions) -> Result<()>;

    /// How many leading bytes of the blob an interrupted push left here,
    /// ready to be continued with `PushOptions::offset`; zero when none.
    /// Capability: `resume` (without it, always zero).
    async fn partial(&self, descriptor: &Descriptor) -> Result<u64>;

    /// Removes content (and, for a manifest, the tags pointing at it).
    /// `Error::NotFound` when absent. Capability: `delete`.
    async fn delete(&self, descriptor: &Descriptor) -> Result<()>;

    /// The descriptor of the manifest a tag or digest names, with its media
    /// type and size. `Error::NotFound` when absent.
    async fn resolve(&self, selector: &Selector) -> Result<Descriptor>;

    /// Resolves `tag` and streams its manifest, in one request where the
    /// backend can (a registry answers a `GET` by tag with both). The
    /// default resolves, then fetches. `Store` verifies the body against
    /// the descriptor.
    async fn fetch_tagged(&self, tag: &str) -> Result<(Descriptor, Body)> {
        let descriptor = self.resolve(&Selector::Tag(tag.to_owned())).await?;
        let body = self.fetch(&descriptor).await?;
        Ok((descriptor, body))
    }

    /// Points `tag` at a manifest that is present, moving it if it pointed
    /// elsewhere. `Error::NotFound` when the manifest is absent.
    async fn tag(&self, descriptor: &Descriptor, tag: &str) -> Result<()>;

    /// Removes a tag, keeping what it pointed at. `Error::NotFound` when the
    /// tag does not exist. Capability: `untag`.
    async fn untag(&self, tag: &str) -> Result<()>;

    /// Compare-and-swap of a tag: points `tag` at `new` (or removes it when
    /// `new` is `None`) only if it points at `expected` now (or is absent
    /// when `expected` is `None`); otherwise `Error::Conflict` and no
    /// change. `new` must be present. Capability: `tag_compare_and_swap`.
    async fn swap_tag(
        &self,
        tag: &str,
        expected: Option<&Digest>,
        new: Option<&Descriptor>,
    ) -> Result<()>;

    /// Lists tags in lexical order. With `tag_list_pagination` the backend
    /// honours `query`; without it, it returns every tag and `Store` pages.
    async fn tags(&self, query: &ListQuery) -> Result<ListPage>;

    /// Lists the manifests whose `subject` is `subject`, filtered by
    /// `artifact_type` where the backend can. Capability: `referrers_api`.
    async fn referrers(
        &self,
        subject: &Descriptor,
        artifact_type: Option<&MediaType>,
    ) -> Result<Referrers>;

    /// Makes a blob of repository `from` (same backend) present here without
    /// transferring it. `Ok(false)` when the backend declined and the caller
    /// must push. Capability: `mount`.
    async fn mount(&self, descriptor: &Descriptor, from: &str) -> Result<bool>;

    /// Streams bytes `range` of a blob; the body promises exactly the range's
    /// length. Capability: `fetch_range`.
    async fn fetch_range(&self, descriptor: &Descriptor, range: Range<u64>) -> Result<Body>;

    /// Lists the repositories of the backend's registry, in lexical order.
    /// Capability: `catalog`.
    async fn catalog(&self, query: &ListQuery) -> Result<ListPage>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slicing_pages_like_a_server() {
        let all: Vec<String> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let p1 = ListPage::slice(&all, &ListQuery::page(None, 2));
        assert_eq!(p1.entries, ["a", "b"]);
        assert_eq!(p1.next.as_deref(), Some("b"));
        let p3 = ListPage::slice(&all, &ListQuery::page(Some("d".into()), 2));
        assert_eq!(p3.entries, ["e"]);
        assert_eq!(p3.next, None);
        let between = ListPage::slice(&all, &ListQuery::page(Some("bb".into()), 10));
        assert_eq!(between.entries, ["c", "d", "e"]);
        assert_eq!(ListPage::slice(&all, &ListQuery::all()).entries.len(), 5);
    }
}
