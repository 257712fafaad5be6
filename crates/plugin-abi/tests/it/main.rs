//! Integration tests of the plugin ABI against real plugin libraries
//! (`plugins/`, built by `scripts/test` before the tests run): the whole
//! conformance suite through the fs backend loaded as a plugin, broken
//! libraries refused, panics turned into errors, memory flat.

mod common;
mod conformance;
mod loading;
mod misbehaving;
