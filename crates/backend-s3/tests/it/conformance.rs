//! The whole conformance suite, against moto and against object_store's
//! in-memory store.

use std::sync::Arc;

use orca_backend_s3::Bucket;
use orca_core::Store;
use orca_core::conformance::{LayoutSubject, Subject};
use orca_core::layout::Layout;

mod moto {
    use super::*;

    async fn make() -> Subject {
        let prefix = crate::common::fresh_prefix("conformance");
        // Another prefix of the same bucket, to mount (copy server-side) from.
        let sibling = crate::common::fresh_prefix("sibling");
        Subject::new(Store::new(crate::common::backend(&prefix)))
            .with_sibling(Store::new(crate::common::backend(&sibling)), sibling)
    }

    orca_core::conformance_tests!(make);

    async fn make_layout() -> LayoutSubject<Bucket> {
        let prefix = crate::common::fresh_prefix("layout");
        LayoutSubject::new(crate::common::backend(&prefix).storage().clone(), ())
    }

    orca_core::layout_conformance_tests!(make_layout);
}

mod in_memory {
    use super::*;

    async fn make() -> Subject {
        let store = Arc::new(object_store::memory::InMemory::new());
        let bucket = Bucket::new(store.clone(), "layout", "memory://layout");
        let sibling = Bucket::new(store, "sibling", "memory://sibling");
        Subject::new(Store::new(Layout::new(bucket)))
            .with_sibling(Store::new(Layout::new(sibling)), "sibling")
    }

    orca_core::conformance_tests!(make);

    async fn make_layout() -> LayoutSubject<Bucket> {
        let store = Arc::new(object_store::memory::InMemory::new());
        LayoutSubject::new(Bucket::new(store, "layout", "memory://layout"), ())
    }

    orca_core::layout_conformance_tests!(make_layout);
}
