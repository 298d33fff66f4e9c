//! The node's libp2p identity.
//!
//! **Interim**: pqnode-keys (the key store) does not exist yet, so the node
//! uses a fresh Ed25519 identity per process, produced by the one function
//! below. Replace [`ephemeral_identity_until_key_store`] with loading the
//! identity from `pqnode_keys::store` in the data directory.

use libp2p::identity::Keypair;

/// A new, unsaved Ed25519 identity: the PeerId changes at every start.
/// Placeholder until the key store exists (see the module documentation).
pub fn ephemeral_identity_until_key_store() -> Keypair {
    Keypair::generate_ed25519()
}
