//! Turns the configuration, the key store and the self-test into what the
//! PQ layer starts with: handshake credentials (one signing key and one
//! freshly signed record per usable suite) and the pins (§8.3, §8.4).

use std::collections::BTreeMap;
use std::sync::Arc;

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use pqnode_crypto::Suite;
use pqnode_crypto::handshake::{Credential, HandshakeConfig};
use pqnode_keys::db::PinDb;
use pqnode_keys::fingerprint::Fingerprint;
use pqnode_keys::pins::PinError;
use pqnode_keys::record::{DEFAULT_VALIDITY_SECS, MAX_ADDR_LEN, MAX_ADDRS};
use pqnode_keys::store::{KeyStore, StoreError};

use super::{PqLayer, PqLimits, PqMetrics, PqSetup};
use crate::config::{Config, PqPolicy};
use crate::metrics::Registry;
use crate::node::NodeHandle;
use crate::status::{CryptoMode, PqAvailability, SharedCryptoStatus};
use pqnode_keys::time::unix_now;

/// Why the PQ layer's inputs could not be prepared.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The configured trusted pins could not be stored.
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

/// Whether `addr` names a host only this machine or its local network can
/// reach: loopback, RFC 1918 private, CGNAT (100.64/10), link-local, IPv6
/// unique-local (fc00::/7) or link-local (fe80::/10), or `localhost`.
pub fn is_private_addr(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => {
            let o = ip.octets();
            ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        Protocol::Ip6(ip) => {
            let first = ip.segments()[0];
            ip.is_loopback()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || ip
                    .to_ipv4_mapped()
                    .is_some_and(|v4| v4.is_loopback() || v4.is_private() || v4.is_link_local())
        }
        Protocol::Dns(h) | Protocol::Dns4(h) | Protocol::Dns6(h) => {
            h.eq_ignore_ascii_case("localhost") || h.to_ascii_lowercase().ends_with(".localhost")
        }
        _ => false,
    })
}

/// The addresses our records may publish: not unspecified (0.0.0.0, ::),
/// not loopback or private unless `include_private`
/// (`publish_private_addrs`), at most 16, each at most 128 bytes, no
/// duplicates (PROTOCOL.md §4).
pub fn publishable_addrs(addrs: &[Multiaddr], include_private: bool) -> Vec<Multiaddr> {
    let mut out: Vec<Multiaddr> = Vec::new();
    for addr in addrs {
        let unspecified = addr.iter().any(|p| match p {
            Protocol::Ip4(ip) => ip.is_unspecified(),
            Protocol::Ip6(ip) => ip.is_unspecified(),
            _ => false,
        });
        if unspecified
            || (!include_private && is_private_addr(addr))
            || addr.to_vec().len() > MAX_ADDR_LEN
            || out.contains(addr)
        {
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
/// for each. `addrs` are the addresses to publish, already chosen by the
/// caller ([`publishable_addrs`]). A suite whose key or record cannot be
/// made is left out with a warning; with none left, PQ is unavailable and
/// `reason` says why.
pub fn credentials(store: &mut KeyStore, suites: &[Suite], addrs: &[Multiaddr]) -> Credentials {
    // Structural limits only: which addresses is the caller's choice.
    let addrs = publishable_addrs(addrs, true);
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

/// Stores the configured trusted peers (`trusted_peers`) as operator pins,
/// those that changed in one transaction.
pub fn preload_trusted(config: &Config, pins: &PinDb) -> Result<(), SetupError> {
    let mut changed = Vec::new();
    for trusted in &config.trusted_peers {
        let fingerprint = Fingerprint::from_array(trusted.fingerprint);
        let current = pins
            .pins_of(&trusted.peer_id)
            .map_err(PinError::from)?
            .into_iter()
            .find(|(suite, _)| *suite == trusted.suite);
        if current.is_some_and(|(_, p)| p.fingerprint == fingerprint) {
            continue;
        }
        changed.push((trusted.peer_id, trusted.suite, fingerprint));
    }
    if !changed.is_empty() {
        pins.add_operator_batch(changed, unix_now())?;
    }
    Ok(())
}

/// Everything [`super::PqLayer::start`] takes, from the pieces above.
pub fn setup(
    config: &Config,
    credentials: &Credentials,
    unavailable: Option<String>,
    pins: PinDb,
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
            partial_message_timeout: config.limits.partial_message_timeout,
            delivery_timeout: config.limits.delivery_timeout,
            max_message_size: config.limits.max_message_size,
            inbox_per_peer: config.limits.inbox_per_peer,
            max_peers: config.limits.max_established as usize,
            // A peer's share holds at least one message of the largest size.
            inbox_peer_max_bytes: PqLimits::default()
                .inbox_peer_max_bytes
                .max(config.limits.max_message_size + super::inbox::MESSAGE_OVERHEAD),
            rehandshake_after: config.pq.rehandshake_after,
            rehandshake_bytes: config.pq.rehandshake_bytes,
            ..PqLimits::default()
        },
    }
}

/// Starts the PQ layer for a node that does not listen yet: credentials
/// from `store` for the suites the self-test passed, `pins`, metrics in
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
    pins: PinDb,
    registry: &mut Registry,
    listener_open_delay: std::time::Duration,
    first_use_per_network_per_hour: u32,
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
    preload_trusted(config, &pins)?;
    let metrics = PqMetrics::register(registry);
    let mut setup = setup(config, &creds, unavailable, pins);
    setup.limits.listener_open_delay = listener_open_delay;
    setup.limits.first_use_per_network_per_hour = first_use_per_network_per_hour;
    let layer = PqLayer::start(node.clone(), setup, crypto.clone(), metrics)?;
    if config.role == crate::config::Role::Bootstrap {
        // A bootstrap node serves the network; it keeps no messages.
        layer.inbox().stop_accepting();
    }
    Ok(layer)
}

/// How often the node signs fresh records (they are valid for
/// [`DEFAULT_VALIDITY_SECS`], 24 h, so a node that runs for days never
/// presents an expired one).
pub const RECORD_REFRESH: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

/// Signs fresh records for `addrs` now and hands them to the layer; a
/// failure keeps the current credentials and is logged.
pub fn refresh_once(layer: &PqLayer, store: &mut KeyStore, addrs: &[Multiaddr]) {
    let suites = layer.suites();
    if suites.is_empty() {
        return;
    }
    let creds = credentials(store, &suites, addrs);
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
        if layer.suites().is_empty() {
            return;
        }
        refresh_once(&layer, &mut store, &addrs);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_not_published_unless_allowed() {
        let addrs: Vec<Multiaddr> = [
            "/ip4/127.0.0.1/tcp/4001",
            "/ip4/10.1.2.3/tcp/4001",
            "/ip4/172.20.0.1/tcp/4001",
            "/ip4/192.168.1.5/udp/4001/quic-v1",
            "/ip4/169.254.3.4/tcp/1",
            "/ip4/100.64.0.1/tcp/1",
            "/ip6/::1/tcp/4001",
            "/ip6/fd00::1/tcp/4001",
            "/ip6/fe80::1/tcp/4001",
            "/dns4/localhost/tcp/4001",
            "/ip4/0.0.0.0/tcp/4001",
            "/ip4/198.51.100.7/tcp/4001",
            "/ip6/2001:db8::7/tcp/4001",
            "/dns4/node.example.org/tcp/4001",
            "/ip4/198.51.100.7/tcp/4001",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let public: Vec<String> = publishable_addrs(&addrs, false)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            public,
            [
                "/ip4/198.51.100.7/tcp/4001",
                "/ip6/2001:db8::7/tcp/4001",
                "/dns4/node.example.org/tcp/4001"
            ]
        );
        // Allowed: everything but the unspecified address and the duplicate.
        assert_eq!(publishable_addrs(&addrs, true).len(), addrs.len() - 2);
    }
}
