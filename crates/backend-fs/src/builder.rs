//! [`LayoutBuilder`]: opens a layout directory as a backend, with its
//! settings, and [`open`] for the common case.

use std::path::PathBuf;

use orca_core::Result;
use orca_core::layout::Layout;

use crate::backend::{Directory, LayoutBackend};

/// Settings for opening a layout directory.
#[derive(Clone, Debug)]
pub struct LayoutBuilder {
    root: PathBuf,
    durable: bool,
}

impl LayoutBuilder {
    /// A layout at `root`, which may not exist yet (it is created on first
    /// write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LayoutBuilder {
            root: root.into(),
            durable: true,
        }
    }

    /// Whether writes are fsynced before they become visible (the
    /// default); `false` is faster, for scratch layouts a crash may lose.
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// Opens the layout, refusing a directory that has content but is not
    /// a layout of a version orca reads.
    pub fn open(self) -> Result<LayoutBackend> {
        Ok(Layout::new(Directory::open(self.root, self.durable)?))
    }
}

/// Opens the layout directory at `root` with the default settings.
pub fn open(root: impl Into<PathBuf>) -> Result<LayoutBackend> {
    LayoutBuilder::new(root).open()
}
