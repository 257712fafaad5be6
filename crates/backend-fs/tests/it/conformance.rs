//! The whole conformance suite, and the layout engine's own checks,
//! against a layout in a fresh temporary directory.

use orca_backend_fs::Directory;
use orca_core::Store;
use orca_core::conformance::{LayoutSubject, Subject};

async fn make() -> Subject {
    let dir = tempfile::tempdir().expect("temporary directory");
    let backend = orca_backend_fs::open(dir.path().join("layout")).expect("open layout");
    // Another layout on the same filesystem, to mount (hard-link) from.
    let sibling = dir.path().join("sibling");
    let sibling_store = Store::new(orca_backend_fs::open(&sibling).expect("open sibling"));
    Subject::new(Store::new(backend))
        .with_sibling(sibling_store, sibling.to_str().expect("utf-8 path"))
        .with_guard(dir)
}

orca_core::conformance_tests!(make);

async fn make_layout() -> LayoutSubject<Directory> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let storage = Directory::open(dir.path().join("layout"), true).expect("open layout");
    LayoutSubject::new(storage, dir)
}

orca_core::layout_conformance_tests!(make_layout);
