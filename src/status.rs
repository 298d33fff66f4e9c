//! Shared status that the PQ layer writes and the API reads.
//!
//! - [`SharedCryptoStatus`]: the [`CryptoStatus`] snapshot served by
//!   `GET /api/crypto/status` and used by `GET /api/health`.
//!
//! Per-peer PQ state is owned by the PQ layer (`pq::state`); the API reads
//! its snapshots. The status is cheap to clone (an `Arc` inside) and locks
//! only for the time of a copy, never across an `.await`.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use libp2p::PeerId;
use pqnode_crypto::Suite;
use serde::Serialize;

use crate::config::{PqConfig, PqPolicy};

/// The mode the PQ layer runs in (PROTOCOL.md §8.1, §8.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CryptoMode {
    /// PQ is available locally and offered to peers.
    Pq,
    /// PQ is unavailable locally; the node runs classical (policy `preferred`).
    ClassicalFallback,
    /// The operator disabled PQ (policy `disabled`).
    Disabled,
}

impl CryptoMode {
    /// The name used in the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            CryptoMode::Pq => "pq",
            CryptoMode::ClassicalFallback => "classical-fallback",
            CryptoMode::Disabled => "disabled",
        }
    }
}

/// The outcome of the start-up self-test for one suite.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SuiteSelfTest {
    /// The suite's configuration name.
    pub suite: String,
    /// Whether every check of this suite passed.
    pub passed: bool,
    /// Why it failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The start-up self-test's outcome (`selfTest` in the API).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SelfTestStatus {
    /// Whether the self-test ran.
    pub ran: bool,
    /// Whether it ran and every suite passed.
    pub passed: bool,
    /// How long it took, in milliseconds (absent when it did not run).
    pub duration_ms: Option<u64>,
    /// Per-suite results.
    pub suites: Vec<SuiteSelfTest>,
}

/// Whether PQ is available locally, decided before the node starts
/// (PROTOCOL.md §8.4). An input of the node's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PqAvailability {
    /// The self-test passed and the PQ keys are loaded.
    Available {
        /// The self-test's outcome.
        self_test: SelfTestStatus,
    },
    /// PQ cannot be used locally.
    Unavailable {
        /// Why, e.g. `built without pqc`.
        reason: String,
        /// The self-test's outcome, if it ran.
        self_test: SelfTestStatus,
    },
}

/// Session counts (`sessions` in the API).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SessionCounts {
    /// Open PQ sessions.
    pub pq: u64,
    /// Open classical sessions (peers without PQ, under `preferred`).
    pub classical: u64,
    /// Peers refused since start (policy, downgrade, key mismatch).
    pub refused: u64,
}

/// The node's identity (`identity` in the API).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityStatus {
    /// The libp2p PeerId, base58.
    pub peer_id: String,
    /// Suite name → fingerprint of the PQ signing key, in display format.
    pub fingerprints: BTreeMap<String, String>,
}

/// The snapshot served by `GET /api/crypto/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CryptoStatus {
    /// Whether the PQ layer has started and registered itself.
    pub initialized: bool,
    /// Display name of the preferred suite, e.g. `Kyber1024-Dilithium5`.
    pub algorithm: String,
    /// PQ signing key pairs loaded (one per enabled suite).
    pub key_pairs: u32,
    /// KEM public key size in bytes (1568).
    pub kyber_key_size: usize,
    /// Signature public key size in bytes (2592).
    pub dilithium_key_size: usize,
    /// Real PQ primitives (built with `pqc`) whose self-test passed.
    pub production: bool,
    /// `pq | classical-fallback | disabled`.
    pub mode: CryptoMode,
    /// Why PQ is unavailable locally, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable_reason: Option<String>,
    /// The configured policy.
    pub policy: PqPolicy,
    /// Enabled suites, in preference order.
    pub supported_suites: Vec<String>,
    /// The start-up self-test.
    pub self_test: SelfTestStatus,
    /// Session counts, kept up to date by the PQ layer.
    pub sessions: SessionCounts,
    /// The node's identity and PQ key fingerprints.
    pub identity: IdentityStatus,
}

impl Serialize for PqPolicy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// What of a reason may be shown without the API token: its leading
/// clause (before the first `": "`), never a file path or an OS error text
/// (issue 23: the unauthenticated endpoints showed both).
pub fn public_reason(reason: &str) -> String {
    let head = reason.split(": ").next().unwrap_or(reason);
    if head.contains('/') || head.contains('\\') {
        return "PQ unavailable locally (the reason is shown with the API token)".to_owned();
    }
    if head.len() == reason.len() {
        head.to_owned()
    } else {
        format!("{head} (details with the API token)")
    }
}

impl CryptoStatus {
    /// This status as shown without the API token: reasons without paths.
    pub fn public(mut self) -> Self {
        self.unavailable_reason = self.unavailable_reason.map(|r| public_reason(&r));
        self
    }
    /// The status before the PQ layer starts, from the configuration and the
    /// locally determined availability. `initialized` is false and
    /// `key_pairs` 0 until the PQ layer fills them.
    pub fn initial(pq: &PqConfig, availability: &PqAvailability, peer_id: &PeerId) -> Self {
        let (mode, reason, self_test) = match (pq.policy, availability) {
            (PqPolicy::Disabled, a) => (CryptoMode::Disabled, None, a.self_test().clone()),
            (_, PqAvailability::Available { self_test }) => {
                (CryptoMode::Pq, None, self_test.clone())
            }
            (_, PqAvailability::Unavailable { reason, self_test }) => (
                CryptoMode::ClassicalFallback,
                Some(reason.clone()),
                self_test.clone(),
            ),
        };
        let preferred = pq
            .suites
            .first()
            .copied()
            .unwrap_or(Suite::Kyber1024Dilithium5);
        CryptoStatus {
            initialized: false,
            algorithm: preferred.display_name().to_owned(),
            key_pairs: 0,
            kyber_key_size: preferred.kem_public_key_len(),
            dilithium_key_size: preferred.sig_public_key_len(),
            production: pqnode_crypto::PQC_BUILT && self_test.ran && self_test.passed,
            mode,
            unavailable_reason: reason,
            policy: pq.policy,
            supported_suites: pq.suites.iter().map(|s| s.name().to_owned()).collect(),
            self_test,
            sessions: SessionCounts::default(),
            identity: IdentityStatus {
                peer_id: peer_id.to_base58(),
                fingerprints: BTreeMap::new(),
            },
        }
    }
}

impl PqAvailability {
    /// The self-test outcome carried by either variant.
    pub fn self_test(&self) -> &SelfTestStatus {
        match self {
            PqAvailability::Available { self_test }
            | PqAvailability::Unavailable { self_test, .. } => self_test,
        }
    }
}

/// The shared [`CryptoStatus`]; the PQ layer updates it, the API reads it.
#[derive(Clone, Debug)]
pub struct SharedCryptoStatus(Arc<RwLock<CryptoStatus>>);

impl SharedCryptoStatus {
    /// Wraps an initial status.
    pub fn new(status: CryptoStatus) -> Self {
        SharedCryptoStatus(Arc::new(RwLock::new(status)))
    }

    /// A copy of the current status.
    pub fn snapshot(&self) -> CryptoStatus {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Changes the status in place (keep `f` short: it runs under the lock).
    pub fn update(&self, f: impl FnOnce(&mut CryptoStatus)) {
        let mut guard = self.0.write().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard);
    }
}
