//! Shared status that the PQ layer writes and the API reads.
//!
//! - [`SharedCryptoStatus`]: the [`CryptoStatus`] snapshot served by
//!   `GET /api/crypto/status` and used by `GET /api/health`.
//! - [`PeerSecurityTable`]: per connected peer, whether its session is PQ or
//!   classical and with which suite; served by `GET /api/peers`.
//!
//! Both are cheap to clone (an `Arc` inside) and lock only for the time of a
//! copy, never across an `.await`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

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

impl CryptoStatus {
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

/// The security of a peer's session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SecurityLevel {
    /// A PQ session (PROTOCOL.md §5).
    Pq,
    /// Protected only by Noise (PROTOCOL.md §8.2).
    Classical,
}

/// What the PQ layer knows about one connected peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSecurity {
    /// PQ or classical.
    pub level: SecurityLevel,
    /// The negotiated suite, for PQ sessions.
    pub suite: Option<Suite>,
    /// When the session was established.
    pub since: SystemTime,
}

/// Per-peer session security, written by the PQ layer. Bounded: at most
/// `capacity` peers (the connection limit); inserts beyond it are refused.
#[derive(Clone, Debug)]
pub struct PeerSecurityTable {
    inner: Arc<RwLock<HashMap<PeerId, PeerSecurity>>>,
    capacity: usize,
}

impl PeerSecurityTable {
    /// An empty table holding at most `capacity` peers.
    pub fn new(capacity: usize) -> Self {
        PeerSecurityTable {
            inner: Arc::new(RwLock::new(HashMap::new())),
            capacity,
        }
    }

    /// Records `peer`'s session. Returns false (and records nothing) if the
    /// table is full and `peer` is not in it.
    pub fn set(&self, peer: PeerId, security: PeerSecurity) -> bool {
        let mut map = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= self.capacity && !map.contains_key(&peer) {
            return false;
        }
        map.insert(peer, security);
        true
    }

    /// Forgets `peer` (its session ended).
    pub fn remove(&self, peer: &PeerId) -> Option<PeerSecurity> {
        self.inner
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(peer)
    }

    /// `peer`'s session, if any.
    pub fn get(&self, peer: &PeerId) -> Option<PeerSecurity> {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(peer)
            .cloned()
    }

    /// How many peers have a PQ and a classical session.
    pub fn counts(&self) -> (usize, usize) {
        let map = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        let pq = map
            .values()
            .filter(|s| s.level == SecurityLevel::Pq)
            .count();
        (pq, map.len() - pq)
    }
}
