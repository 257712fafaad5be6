//! orca-backend-http: registries as orca backends, over the OCI
//! distribution API — auth (basic, bearer tokens), streamed and chunked
//! uploads, streamed downloads, retries, the Referrers API where offered.

mod auth;
mod backend;
mod builder;
mod client;
mod docker_config;
mod download;
mod error;
mod login;
mod registry;
mod repository;
mod sessions;
mod untag;
mod upload;
mod watch;

pub use auth::Credentials;
pub use builder::RegistryBuilder;
pub use client::Notice;
pub use docker_config::DockerConfig;
pub use login::Kept;
pub use registry::Registry;
pub use repository::RegistryBackend;
