//! orca-backend-fs: an OCI image layout directory (and oci-archive /
//! docker-archive tars) as an orca backend. The implementation lands with
//! its issue; the crate exists so the workspace has its final shape.
