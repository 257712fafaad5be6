//! Integration tests of orca-backend-http against Debian's docker-registry
//! (CNCF distribution 2.8): the conformance suite, plain and with htpasswd
//! auth, uploads, listing, auth failures, TLS, referrers, artifacts,
//! misbehaving servers, and interoperability with skopeo and the oras
//! Python client.

mod common;
mod conformance;
mod faults;
mod hostile;
mod operations;
mod oras;
mod origins;
mod registry;
mod tls;
mod uploads;
