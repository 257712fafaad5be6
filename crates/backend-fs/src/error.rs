//! The layout backend's own failures, converted once into `orca_core::Error`
//! at the edge: the file and the action are named, the OS error is the source.

use std::io;
use std::path::{Path, PathBuf};

/// A failed file-system action on a path of the layout.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}", path.display())]
pub(crate) struct FileError {
    pub(crate) action: &'static str,
    pub(crate) path: PathBuf,
    #[source]
    pub(crate) source: io::Error,
}

impl FileError {
    pub(crate) fn new(action: &'static str, path: &Path, source: io::Error) -> Self {
        FileError {
            action,
            path: path.to_owned(),
            source,
        }
    }

    /// Converts into the core error of `operation` on `backend`.
    pub(crate) fn into_core(self, backend: &str, operation: &'static str) -> orca_core::Error {
        orca_core::Error::Backend {
            backend: backend.to_owned(),
            operation,
            source: Box::new(self),
        }
    }
}

/// Shorthand for wrapping `io::Result`s with the action and path.
pub(crate) trait IoContext<T> {
    fn at(self, action: &'static str, path: &Path) -> Result<T, FileError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, action: &'static str, path: &Path) -> Result<T, FileError> {
        self.map_err(|e| FileError::new(action, path, e))
    }
}
