//! # pqnode-keys
//!
//! The key material of a pqnode and what is signed with it
//! (ARCHITECTURE.md `keys/`, PROTOCOL.md §4 and §8.3):
//!
//! - [`store`]: the key directory — the libp2p Ed25519 identity and one PQ
//!   signing key pair per enabled suite, versioned files written atomically
//!   with mode 0600, optionally encrypted under a passphrase
//!   (Argon2id + XChaCha20-Poly1305), and the persisted record `seq`.
//! - [`record`]: the signed PQ peer record — build, encode, strict decode and
//!   verification in the order §4 fixes, one typed error per step.
//! - [`db`]: the node's state database (redb, one file, 0600,
//!   transactional): the pins of §8.3 (rev 3: per PeerId across suites).
//! - [`pins`]: pin types and the earlier `pins.json` store (imported once
//!   into the database).
//! - [`lock`]: one writer per data directory at a time.
//!
//! Nothing here ever replaces or "repairs" a key file that exists but cannot
//! be read: that is an error naming the file and the cause.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod db;
pub mod fingerprint;
pub mod fsutil;
pub mod keyfile;
pub mod lock;
pub mod peercache;
pub mod pins;
pub mod record;
pub mod store;
pub mod time;

pub use fingerprint::Fingerprint;
pub use pins::PinStore;
pub use record::{RecordError, VerifiedRecord, VerifyContext, verify};
pub use store::{KeyStore, StoreError, StoreOptions};
