//! Integration tests of orca-core: the conformance suite on the memory
//! backend in its configurations, the copy engine's edges, and the
//! parsers' property tests.

mod artifact;
mod copy;
mod memory;
mod properties;
mod store;
mod sync;
