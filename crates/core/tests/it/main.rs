//! Integration tests of orca-core: the conformance suite on the memory
//! backend in its configurations, the copy engine's edges, and the
//! parsers' property tests.

mod artifact;
mod copy;
mod memory;
mod properties;
mod referrer_repair;
mod referrers;
mod schema1;
mod store;
mod sync;
