//! The backend conformance suite: behaviour checks written once and run by
//! every backend's integration tests through [`conformance_tests!`](crate::conformance_tests).
//!
//! Each check takes a fresh [`Subject`] and panics with a message naming the
//! broken behaviour. A check reads the store's capabilities: a present
//! capability has its behaviour asserted, an absent one has `Unsupported`
//! asserted. Nothing is skipped.

mod artifacts;
mod blobs;
mod content;
mod copy;
mod intercept;
pub mod layout;
mod optional;
mod referrers;
mod resume;
mod support;
mod tags;

pub use artifacts::{artifacts, index_creation};
pub use blobs::*;
pub use content::{GeneratedBlob, LiveChunks};
pub use copy::{copy_engine, copy_order, copy_repair, copy_sha512};
pub use intercept::{Hooks, Intercept};
pub use layout::{Hooked, LayoutSubject};
pub use optional::{catalog, fetch_range, mount};
pub use referrers::{referrers, referrers_concurrent_attaches, referrers_fallback_is_checked};
pub use resume::resume;
pub use tags::*;

use std::any::Any;

use crate::Store;

/// What a check runs against: a fresh, empty repository.
pub struct Subject {
    /// The store under test.
    pub store: Store,
    /// Another repository of the same backend, needed when the store
    /// claims `mount` or `catalog`.
    pub sibling: Option<Sibling>,
    /// Keeps servers and temporary directories alive for the check.
    pub guard: Option<Box<dyn Any + Send + Sync>>,
}

/// A second repository next to the one under test.
pub struct Sibling {
    /// Its store.
    pub store: Store,
    /// Its repository name, as `Store::mount` and `Store::catalog` see it.
    pub repository: String,
}

impl Subject {
    /// A subject with just a store.
    pub fn new(store: Store) -> Self {
        Subject {
            store,
            sibling: None,
            guard: None,
        }
    }

    /// Adds the sibling repository.
    pub fn with_sibling(mut self, store: Store, repository: impl Into<String>) -> Self {
        self.sibling = Some(Sibling {
            store,
            repository: repository.into(),
        });
        self
    }

    /// Keeps `guard` alive as long as the subject.
    pub fn with_guard(mut self, guard: impl Any + Send + Sync) -> Self {
        self.guard = Some(Box::new(guard));
        self
    }
}

/// Expands to one `#[tokio::test]` per conformance check, each building its
/// own [`Subject`] with `$make` (an `async fn() -> Subject`). The calling
/// crate needs `tokio` with the `macros` and `rt-multi-thread` features.
#[macro_export]
macro_rules! conformance_tests {
    ($make:path) => {
        $crate::conformance_tests!(@each $make;
            push_fetch_small,
            push_fetch_large_streamed,
            empty_blob,
            exists_and_not_found,
            stat_tells_sizes,
            wrong_digest_publishes_nothing,
            wrong_size_publishes_nothing,
            failing_body_publishes_nothing,
            push_is_idempotent,
            concurrent_pushes_of_one_blob,
            manifest_push_by_digest,
            manifest_push_by_tag,
            invalid_manifest_is_refused,
            resolve_tag_and_digest,
            tag_moves,
            tag_needs_the_manifest,
            invalid_tags_are_refused,
            untag,
            tags_pagination,
            delete,
            referrers,
            referrers_fallback_is_checked,
            referrers_concurrent_attaches,
            artifacts,
            index_creation,
            copy_engine,
            copy_order,
            copy_sha512,
            copy_repair,
            resume,
            mount,
            fetch_range,
            catalog,
        );
    };
    (@each $make:path; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let subject = $make().await;
                $crate::conformance::$check(subject).await;
            }
        )*
    };
}
