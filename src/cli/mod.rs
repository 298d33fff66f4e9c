//! The subcommands of the `pqnode` binary, one module each.

pub mod config;
pub mod keys;
pub mod pins;
pub mod run;
pub mod selftest;
