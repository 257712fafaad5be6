//! Integration tests across backends: every ordered pair of memory, layout,
//! S3 (moto), registry (docker-registry), oci-archive and docker-archive
//! copies a two-platform index with a referrer; images built by umoci make
//! a round trip through every backend and come back byte for byte; copies
//! cut, cancelled or killed mid-blob resume when run again; a 256 MiB
//! layer crosses a 1 MiB/s link with default settings; no public type
//! prints a secret.

mod common;
mod interrupted;
mod matrix;
mod round_trip;
mod secrets;
mod slow_link;
