//! orca-backend-http: a registry repository as an orca backend, over the OCI
//! distribution API. The implementation lands with its issue; the crate
//! exists so the workspace has its final shape and dependency direction.
