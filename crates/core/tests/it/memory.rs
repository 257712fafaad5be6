//! The whole conformance suite against the memory backend: with every
//! capability, without the Referrers API (with and without tag
//! compare-and-swap), and with no optional capability.

use orca_core::conformance::Subject;
use orca_core::{Capabilities, MemoryRegistry, Store};

mod full {
    use super::*;

    async fn make() -> Subject {
        let registry = MemoryRegistry::new();
        Subject::new(Store::new(registry.repository("under/test")))
            .with_sibling(Store::new(registry.repository("sibling")), "sibling")
    }

    orca_core::conformance_tests!(make);
}

mod without_referrers_api {
    use super::*;

    async fn make() -> Subject {
        let registry = MemoryRegistry::new();
        let mut caps = Capabilities::ALL;
        caps.referrers_api = false;
        Subject::new(Store::new(
            registry.repository("under/test").with_capabilities(caps),
        ))
        .with_sibling(Store::new(registry.repository("sibling")), "sibling")
    }

    orca_core::conformance_tests!(make);
}

mod without_referrers_api_or_compare_and_swap {
    use super::*;

    async fn make() -> Subject {
        let registry = MemoryRegistry::new();
        let mut caps = Capabilities::ALL;
        caps.referrers_api = false;
        caps.tag_compare_and_swap = false;
        Subject::new(Store::new(
            registry.repository("under/test").with_capabilities(caps),
        ))
        .with_sibling(Store::new(registry.repository("sibling")), "sibling")
    }

    orca_core::conformance_tests!(make);
}

mod minimal {
    use super::*;

    async fn make() -> Subject {
        let backend = MemoryRegistry::new()
            .repository("minimal")
            .with_capabilities(Capabilities::NONE);
        Subject::new(Store::new(backend))
    }

    orca_core::conformance_tests!(make);
}

/// A layout in memory: the whole suite, and the layout engine's own
/// checks.
mod layout {
    use orca_core::conformance::{LayoutSubject, Subject};
    use orca_core::layout::{Layout, MemoryStorage};

    async fn make() -> Subject {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let storage = MemoryStorage::new(&format!("suite-{n}"));
        Subject::new(orca_core::Store::new(Layout::new(storage)))
    }

    orca_core::conformance_tests!(make);

    async fn make_layout() -> LayoutSubject<MemoryStorage> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        LayoutSubject::new(MemoryStorage::new(&format!("layout-{n}")), ())
    }

    orca_core::layout_conformance_tests!(make_layout);
}
