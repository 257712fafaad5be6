//! orca's registry-client conformance suite (the one `backend-http` runs
//! against docker-registry) against `orca serve` on every kind of root.

use orca::Store;
use orca_core::conformance::Subject;

use crate::common::{Kind, served, unique};

async fn subject(kind: Kind) -> Subject {
    let served = served(kind).await;
    let registry = orca::http::RegistryBuilder::new(served.running.host())
        .build()
        .expect("registry client");
    let name = unique("conformance");
    let sibling = unique("sibling");
    let store = Store::new(registry.repository(&name).await.expect("repository"));
    Subject::new(store)
        .with_sibling(
            Store::new(registry.repository(&sibling).await.expect("sibling")),
            sibling,
        )
        .with_guard(served)
}

mod memory {
    async fn make() -> orca_core::conformance::Subject {
        super::subject(super::Kind::Memory).await
    }
    orca_core::conformance_tests!(make);
}

mod directory {
    async fn make() -> orca_core::conformance::Subject {
        super::subject(super::Kind::Directory).await
    }
    orca_core::conformance_tests!(make);
}

mod bucket {
    async fn make() -> orca_core::conformance::Subject {
        super::subject(super::Kind::Bucket).await
    }
    orca_core::conformance_tests!(make);
}

mod plugin {
    async fn make() -> orca_core::conformance::Subject {
        super::subject(super::Kind::Plugin).await
    }
    orca_core::conformance_tests!(make);
}
