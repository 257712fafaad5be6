//! Integration tests of orca-backend-http against Debian's docker-registry
//! (CNCF distribution 2.8): the conformance suite, plain and with htpasswd
//! auth, uploads, listing, auth failures, and interoperability with skopeo.

mod common;
mod conformance;
mod faults;
mod registry;
mod tls;
