//! # pqnode-crypto
//!
//! The hybrid post-quantum layer of pqnode, sans-IO: suites (PROTOCOL.md §3),
//! KEM and signature dispatch, the hybrid key schedule and handshake (§5), the
//! record layer (§6) and the start-up self-test (§8.4). Bytes in, bytes out:
//! no sockets, no clocks it does not receive as arguments.
//!
//! Every secret lives in a type that zeroizes on drop and prints redacted.
//! The only `unsafe` code of the workspace is the private `ffi` module.
#![deny(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod aead;
pub mod channel;
pub mod codec;
pub mod error;
#[cfg(feature = "pqc")]
mod ffi;
pub mod handshake;
pub mod hybrid;
pub mod kem;
pub mod receipt;
pub mod rng;
pub mod secret;
pub mod selftest;
pub mod sign;
pub mod suite;

pub use error::CryptoError;
pub use secret::Secret;
pub use suite::Suite;

/// Whether this build carries the post-quantum primitives (the `pqc` feature).
pub const PQC_BUILT: bool = cfg!(feature = "pqc");
