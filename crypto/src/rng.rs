//! Randomness. Every function that needs randomness takes a
//! [`rand_core::CryptoRng`]; production code passes [`system_rng`], tests pass
//! a seeded generator. (The PQ C code draws its own randomness from the OS.)

pub use rand_core::CryptoRng;

/// The operating system's random number generator. It panics only if the OS
/// cannot provide randomness, in which case no key may be made at all.
pub fn system_rng() -> rand_core::UnwrapErr<getrandom::SysRng> {
    rand_core::UnwrapErr(getrandom::SysRng)
}
