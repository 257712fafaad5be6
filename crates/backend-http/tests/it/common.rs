//! Registries shared by the tests, and fresh repository names.

use std::sync::atomic::{AtomicU64, Ordering};

use orca_backend_http::{Registry, RegistryBackend, RegistryBuilder};
use orca_testkit::{Faults, RecordingProxy, RegistryServer};

/// A repository name no other test uses.
pub(crate) fn fresh_repository(label: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "orca/{label}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// The plain registry.
pub(crate) fn plain() -> Registry {
    RegistryBuilder::new(RegistryServer::shared().host())
        .build()
        .expect("registry")
}

/// A repository of `registry`.
pub(crate) async fn repository(registry: &Registry, name: &str) -> RegistryBackend {
    registry.repository(name).await.expect("open repository")
}

/// A proxy (injecting `faults`) in front of the plain registry, and a
/// registry handle that goes through it.
pub(crate) fn through_proxy(faults: Faults) -> (RecordingProxy, Registry) {
    let proxy =
        RecordingProxy::with_faults(RegistryServer::shared().port(), faults).expect("proxy");
    let registry = RegistryBuilder::new(format!("127.0.0.1:{}", proxy.port()))
        .build()
        .expect("registry");
    (proxy, registry)
}
