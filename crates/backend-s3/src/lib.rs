//! orca-backend-s3: an OCI image layout under a bucket prefix as an orca
//! backend, through object_store. The implementation lands with its issue;
//! the crate exists so the workspace has its final shape.
