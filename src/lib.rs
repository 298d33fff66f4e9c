//! pqnode
