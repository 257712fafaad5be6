//! The whole conformance suite, on the plain registry and on the one that
//! requires basic auth.

use orca_core::Store;
use orca_core::conformance::Subject;

use crate::common::{authenticated, fresh_repository, plain, repository};

async fn subject(registry: orca_backend_http::Registry) -> Subject {
    let name = fresh_repository("conformance");
    let sibling = fresh_repository("sibling");
    Subject::new(Store::new(repository(&registry, &name).await))
        .with_sibling(Store::new(repository(&registry, &sibling).await), sibling)
}

mod plain_registry {
    use super::*;

    async fn make() -> Subject {
        subject(plain()).await
    }

    orca_core::conformance_tests!(make);
}

mod htpasswd_registry {
    use super::*;

    async fn make() -> Subject {
        subject(authenticated()).await
    }

    orca_core::conformance_tests!(make);
}
