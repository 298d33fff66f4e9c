//! # pqnode
//!
//! A libp2p node whose application traffic is protected by a hybrid
//! post-quantum layer (see `shared/design/ARCHITECTURE.md`).
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod api;
pub mod app;
pub mod cli;
pub mod client;
pub mod config;
pub mod discovery;
pub mod metrics;
pub mod node;
pub mod pq;
pub mod status;
