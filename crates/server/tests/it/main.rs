//! orca-server against real clients: orca's own registry client runs its
//! whole conformance suite against the server on every kind of root
//! (memory, a directory, a bucket on moto, a plugin's storage).
//! The Referrers API pages long lists; idle upload sessions are collected;
//! a blob rotted on disk is refused by the client that reads it; a blob
//! pushed to several repositories of a directory is stored once.

mod common;
mod conformance;
mod paging;
mod reads;
mod sessions;
mod shared;
