//! Integration tests of orca-backend-fs: the conformance suite on layouts in
//! temporary directories, crash and concurrency safety, bad input.

mod archive_input;
mod archives;
mod bad_input;
mod common;
mod conformance;
mod interop;
mod properties;
mod safety;
