//! The whole conformance suite: on the plain registry (monolithic uploads),
//! on the one that requires basic auth (chunked uploads of 1 MiB, upload
//! sessions remembered so interrupted pushes resume), and behind a front
//! with the Referrers API.

use orca_core::Store;
use orca_core::conformance::Subject;

use crate::common::{fresh_repository, plain, repository};

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
        let sessions = tempfile::tempdir().expect("temporary directory");
        let server = orca_testkit::RegistryServer::shared_htpasswd();
        let (user, password) = server.credentials().expect("credentials");
        let registry = orca_backend_http::RegistryBuilder::new(server.host())
            .credentials(orca_backend_http::Credentials::basic(user, password))
            .chunk_threshold(1024 * 1024)
            .chunk_size(1024 * 1024)
            .resume_uploads(sessions.path())
            .build()
            .expect("registry");
        subject(registry).await.with_guard(sessions)
    }

    orca_core::conformance_tests!(make);
}

/// The plain registry behind a front that adds the Referrers API (Debian's
/// registry has none), so the native path runs the suite too.
mod referrers_api_registry {
    use super::*;

    async fn make() -> Subject {
        let front =
            orca_testkit::ReferrersFront::start(orca_testkit::RegistryServer::shared().port())
                .expect("referrers front");
        let registry =
            orca_backend_http::RegistryBuilder::new(format!("127.0.0.1:{}", front.port()))
                .build()
                .expect("registry");
        let store = Store::new(repository(&registry, &fresh_repository("native")).await);
        assert!(
            store.capabilities().referrers_api,
            "the zero-digest probe did not find the Referrers API"
        );
        let sibling = fresh_repository("sibling");
        Subject::new(store)
            .with_sibling(Store::new(repository(&registry, &sibling).await), sibling)
            .with_guard(front)
    }

    orca_core::conformance_tests!(make);
}
