//! Turns the configuration, the key store and the self-test into what the
//! PQ layer starts with: handshake credentials (one signing key and one
//! freshly signed record per usable suite) and the pins (§8.3, §8.4).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use pqnode_crypto::Suite;
use pqnode_crypto::handshake::{Credential, HandshakeConfig};
use pqnode_keys::fingerprint::Fingerprint;
use pqnode_keys::pins::{PINS_FILE, PinError, PinStore};
use pqnode_keys::record::{DEFAULT_VALIDITY_SECS, MAX_ADDR_LEN, MAX_ADDRS};
use pqnode_keys::store::{KeyStore, StoreError};

use super::{PqLayer, PqLimits, PqMetrics, PqSetup};
use crate::config::{Config, PqPolicy};
use crate::metrics::Registry;
use crate::node::NodeHandle;
use crate::status::{CryptoMode, PeerSecurityTable, PqAvailability, SharedCryptoStatus};
use pqnode_keys::time::unix_now;

/// Why the PQ layer's inputs could not be prepared.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The pins file exists but cannot be used (it is left untouched).
    #[error("pins: {0}")]
    Pins(#[from] PinError),
}

/// Credentials built from the key store.
#[derive(Debug)]
pub struct Credentials {
    /// The handshake configuration (`None`: PQ unavailable, see `reason`).
    pub handshake: Option<Arc<HandshakeConfig>>,
    /// Why PQ is unavailable locally.
    pub reason: Option<String>,
    /// Suite name → fingerprint (display form) of the loaded signing keys.
    pub fingerprints: BTreeMap<String, String>,
}

/// The addresses a record may publish: not unspecified (0.0.0.0, ::), at
/// most 16, each at most 128 bytes, no duplicates (PROTOCOL.md §4).
pub fn publishable_addrs(addrs: &[Multiaddr]) -> Vec<Multiaddr> {
    let mut out: Vec<Multiaddr> = Vec::new();
    for addr in addrs {
        let unspecified = addr.iter().any(|p| match p {
            Protocol::Ip4(ip) => ip.is_unspecified(),
            Protocol::Ip6(ip) => ip.is_unspecified(),
            _ => false,
        });
        if unspecified || addr.to_vec().len() > MAX_ADDR_LEN || out.contains(addr) {
            continue;
        }
        out.push(addr.clone());
        if out.len() == MAX_ADDRS {
            break;
        }
    }
    out
}

/// Builds the handshake credentials for `suites` (those the self-test
/// passed, in preference order) from the key store, signing a fresh record
/// for each. A suite whose key or record cannot be made is left out with a
/// warning; with none left, PQ is unavailable and `reason` says why.
pub fn credentials(store: &mut KeyStore, suites: &[Suite], addrs: &[Multiaddr]) -> Credentials {
    let addrs = publishable_addrs(addrs);
    let local_peer_id = store.peer_id().to_bytes();
    let mut list = Vec::new();
    let mut fingerprints = BTreeMap::new();
    let mut problems = Vec::new();
    for &suite in suites {
        let Some(key) = store.shared_signing_key(suite) else {
            problems.push(format!("{suite}: no signing key loaded"));
            continue;
        };
        let fingerprint = Fingerprint::of(key.verifying_key());
        let record = match store.build_record(suite, &addrs, unix_now(), DEFAULT_VALIDITY_SECS) {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("{suite}: cannot sign a peer record: {e}"));
                continue;
            }
        };
        fingerprints.insert(suite.name().to_owned(), fingerprint.to_string());
        list.push(Credential {
            signing_key: key,
            record: record.envelope_bytes().to_vec(),
        });
    }
    for p in &problems {
        tracing::warn!(problem = %p, "PQ suite unusable");
    }
    if list.is_empty() {
        let reason = if problems.is_empty() {
            "no suite enabled".to_owned()
        } else {
            format!("PQ key material unusable: {}", problems.join("; "))
        };
        return Credentials {
            handshake: None,
            reason: Some(reason),
            fingerprints,
        };
    }
    let handshake = HandshakeConfig {
        local_peer_id,
        credentials: list,
        key_update: Default::default(),
    };
    Credentials {
        handshake: Some(Arc::new(handshake)),
        reason: None,
        fingerprints,
    }
}

/// Opens the pins in `data_dir` and preloads the configured trusted peers.
pub fn pins(config: &Config, data_dir: &Path) -> Result<PinStore, SetupError> {
    let mut pins = PinStore::open(&data_dir.join(PINS_FILE), false)?;
    let now = unix_now();
    for trusted in &config.trusted_peers {
        let fingerprint: Fingerprint = match hex::encode(trusted.fingerprint).parse() {
            Ok(f) => f,
            Err(_) => continue,
        };
        pins.preload(trusted.peer_id, trusted.suite, fingerprint, now)?;
    }
    Ok(pins)
}

/// Everything [`super::PqLayer::start`] takes, from the pieces above.
pub fn setup(
    config: &Config,
    credentials: &Credentials,
    unavailable: Option<String>,
    pins: PinStore,
) -> PqSetup {
    let handshake = match config.pq.policy {
        PqPolicy::Disabled => None,
        _ => credentials.handshake.clone(),
    };
    PqSetup {
        policy: config.pq.policy,
        unavailable_reason: unavailable.or_else(|| credentials.reason.clone()),
        handshake,
        allow_unpinned: config.pq.allow_unpinned,
        pins,
        limits: PqLimits {
            max_concurrent_handshakes: config.limits.max_concurrent_handshakes as usize,
            handshake_timeout: config.limits.handshake_timeout,
            max_message_size: config.limits.max_message_size,
            inbox_per_peer: config.limits.inbox_per_peer,
            max_peers: config.limits.max_established as usize,
            ..PqLimits::default()
        },
    }
}

/// Starts the PQ layer for a started node: credentials from `store` for the
/// suites the self-test passed, pins from the data directory, metrics in
/// `registry`, status into `crypto`. Under `required`, unusable PQ key
/// material is an error; under `preferred` the node runs in
/// `classical-fallback` mode and says why.
#[allow(clippy::too_many_arguments)]
pub fn start_for_node(
    config: &Config,
    store: &mut KeyStore,
    availability: &PqAvailability,
    node: &NodeHandle,
    listen_addrs: &[Multiaddr],
    crypto: &SharedCryptoStatus,
    security: &PeerSecurityTable,
    registry: &mut Registry,
) -> Result<PqLayer, StartError> {
    let (suites, mut unavailable) = match availability {
        PqAvailability::Available { self_test } => {
            let passed: Vec<Suite> = config
                .pq
                .suites
                .iter()
                .copied()
                .filter(|s| {
                    self_test
                        .suites
                        .iter()
                        .any(|t| t.passed && t.suite == s.name())
                })
                .collect();
            (passed, None)
        }
        PqAvailability::Unavailable { reason, .. } => (Vec::new(), Some(reason.clone())),
    };
    let creds = if unavailable.is_none() && config.pq.policy != PqPolicy::Disabled {
        credentials(store, &suites, listen_addrs)
    } else {
        Credentials {
            handshake: None,
            reason: None,
            fingerprints: BTreeMap::new(),
        }
    };
    if unavailable.is_none() && config.pq.policy != PqPolicy::Disabled {
        unavailable = creds.reason.clone();
    }
    let fingerprints: BTreeMap<String, String> = store
        .key_info()
        .into_iter()
        .map(|k| (k.suite.name().to_owned(), k.fingerprint.to_string()))
        .collect();
    crypto.update(|s| {
        s.identity.fingerprints = fingerprints;
        if let (Some(reason), true) = (&unavailable, config.pq.policy != PqPolicy::Disabled) {
            s.mode = CryptoMode::ClassicalFallback;
            s.unavailable_reason = Some(reason.clone());
            s.production = false;
        }
    });
    let pins = pins(config, &config.data_dir)?;
    let metrics = PqMetrics::register(registry);
    let setup = setup(config, &creds, unavailable, pins);
    Ok(PqLayer::start(
        node.clone(),
        setup,
        crypto.clone(),
        security.clone(),
        metrics,
    )?)
}

/// How often the node signs fresh records (they are valid for
/// [`DEFAULT_VALIDITY_SECS`], 24 h, so a node that runs for days never
/// presents an expired one).
pub const RECORD_REFRESH: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

/// Signs fresh records every `period` and hands them to the layer. Runs
/// until aborted; a failure keeps the previous credentials and is logged.
pub async fn refresh_records(
    layer: PqLayer,
    mut store: KeyStore,
    addrs: Vec<Multiaddr>,
    period: std::time::Duration,
) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let suites = layer.suites();
        if suites.is_empty() {
            return;
        }
        let creds = credentials(&mut store, &suites, &addrs);
        match creds.handshake {
            Some(h) if h.credentials.len() == suites.len() => {
                layer.replace_credentials(h);
                tracing::info!(suites = suites.len(), "signed fresh PQ peer records");
            }
            _ => tracing::error!(
                reason = creds.reason.as_deref().unwrap_or("a suite failed"),
                "could not sign fresh PQ peer records; keeping the current ones"
            ),
        }
    }
}

/// Why [`start_for_node`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Preparing the inputs failed.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The layer refused to start.
    #[error(transparent)]
    Pq(#[from] super::PqError),
    /// The key store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
