//! Integration tests of orca-backend-s3: the conformance suite against a
//! real S3 server (moto) and object_store's in-memory store, compare-and-swap
//! tagging under concurrency, signing, interoperability, bad input and TLS
//! verification.

mod bad_input;
mod common;
mod concurrency;
mod conditional;
mod conformance;
mod interop;
mod slow;
mod staging;
mod tls;
