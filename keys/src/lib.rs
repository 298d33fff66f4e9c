//! pqnode-keys
