//! The whole conformance suite against a layout in a fresh temporary directory.

use orca_backend_fs::LayoutBackend;
use orca_core::Store;
use orca_core::conformance::Subject;

async fn make() -> Subject {
    let dir = tempfile::tempdir().expect("temporary directory");
    let backend = LayoutBackend::open(dir.path().join("layout")).expect("open layout");
    Subject::new(Store::new(backend)).with_guard(dir)
}

orca_core::conformance_tests!(make);
