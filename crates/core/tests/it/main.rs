//! Integration tests of orca-core: the conformance suite on the memory
//! backend in its configurations, and the parsers' property tests.

mod memory;
mod properties;
mod store;
