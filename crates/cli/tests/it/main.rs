//! Integration tests of the `orca` binary, run as a user runs it: real
//! processes against layouts, archives, moto and docker-registry.

mod blobs_and_gc;
mod bundles;
mod client_cache;
mod commands;
mod common;
mod directories;
mod http;
mod interrupted;
mod login;
mod matrix;
mod nothing_lost;
mod plugins;
mod progress;
mod readme;
mod serve;
mod serve_auth;
mod serve_bad_input;
mod serve_cache;
mod serve_cache_holding;
mod serve_replicas;
mod settings;
mod sync;
mod sync_faults;
mod sync_selection;
mod sync_shards;
mod sync_support;
mod tls;
mod usage;
