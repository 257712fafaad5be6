//! [`Capabilities`]: what a backend offers beyond the required operations,
//! as plain data built once. Code branches on these values, never on a
//! backend's type or name.

/// Default cap on manifest and other metadata documents (4 MiB, as the
/// distribution spec suggests registries accept at least).
pub const DEFAULT_MAX_MANIFEST_SIZE: u64 = 4 * 1024 * 1024;

/// What a backend supports. Optional operations whose flag is `false` are
/// refused by [`Store`](crate::Store) with `Error::Unsupported` before they
/// reach the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Content (blobs and manifests) can be deleted.
    pub delete: bool,
    /// A tag can be removed without deleting what it points at.
    pub untag: bool,
    /// Tag listing pages natively (`n`/`last`); without it `Store` fetches
    /// the full list and pages it itself.
    pub tag_list_pagination: bool,
    /// The backend indexes referrers itself (the OCI Referrers API).
    pub referrers_api: bool,
    /// Blobs can be mounted from another repository of the same backend.
    pub mount: bool,
    /// Byte ranges of a blob can be fetched.
    pub fetch_range: bool,
    /// Tag updates are compare-and-swap across processes (lock, `If-Match`).
    pub tag_compare_and_swap: bool,
    /// Repositories can be listed.
    pub catalog: bool,
    /// A blob push that was interrupted (the process killed, the copy
    /// cancelled, the source cut off) leaves what arrived, and a later push
    /// can continue from there: see `Backend::partial`.
    pub resume: bool,
    /// Tags set at the same time are written together (one document
    /// holds them all, as a layout's `index.json`): a caller with many
    /// images to tag gains by tagging them at once, after their content.
    pub batched_tags: bool,
    /// Largest manifest the backend stores or orca reads from it.
    pub max_manifest_size: u64,
}

impl Capabilities {
    /// No optional capability, the default manifest size limit.
    pub const NONE: Capabilities = Capabilities {
        delete: false,
        untag: false,
        tag_list_pagination: false,
        referrers_api: false,
        mount: false,
        fetch_range: false,
        tag_compare_and_swap: false,
        catalog: false,
        resume: false,
        batched_tags: false,
        max_manifest_size: DEFAULT_MAX_MANIFEST_SIZE,
    };

    /// Every optional capability, the default manifest size limit.
    pub const ALL: Capabilities = Capabilities {
        delete: true,
        untag: true,
        tag_list_pagination: true,
        referrers_api: true,
        mount: true,
        fetch_range: true,
        tag_compare_and_swap: true,
        catalog: true,
        resume: true,
        batched_tags: true,
        max_manifest_size: DEFAULT_MAX_MANIFEST_SIZE,
    };
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities::NONE
    }
}
