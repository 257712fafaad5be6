//! Integration tests of the plugin ABI against real plugin libraries
//! (`plugins/`, built by `scripts/test` before the tests run): the whole
//! conformance suite through the fs backend loaded as a plugin, the layout
//! engine's checks over a plugin's storage, broken
//! libraries refused, panics turned into errors, memory flat.

mod common;
mod conformance;
mod layout;
mod loading;
mod misbehaving;
