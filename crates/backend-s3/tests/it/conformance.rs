//! The whole conformance suite, against moto and against object_store's
//! in-memory store.

use std::sync::Arc;

use orca_backend_s3::S3Backend;
use orca_core::Store;
use orca_core::conformance::Subject;

mod moto {
    use super::*;

    async fn make() -> Subject {
        let prefix = crate::common::fresh_prefix("conformance");
        Subject::new(Store::new(crate::common::backend(&prefix)))
    }

    orca_core::conformance_tests!(make);
}

mod in_memory {
    use super::*;

    async fn make() -> Subject {
        let store = Arc::new(object_store::memory::InMemory::new());
        Subject::new(Store::new(S3Backend::new(
            store,
            "layout",
            "memory://layout",
        )))
    }

    orca_core::conformance_tests!(make);
}
