//! orca-server against real clients: orca's own registry client runs its
//! whole conformance suite against the server on every kind of root
//! (memory, a directory, a bucket on moto, a plugin's storage).
//! The Referrers API pages long lists; idle upload sessions are collected;
//! a blob rotted on disk is refused by the client that reads it.

mod common;
mod conformance;
mod paging;
mod reads;
mod sessions;
