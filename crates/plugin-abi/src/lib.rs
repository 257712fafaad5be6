//! orca-plugin-abi: the versioned C ABI through which the CLI loads backends
//! built as shared libraries. The implementation lands with its issue; the
//! crate exists so the workspace has its final shape.
