//! Transport wrappers: [`FreshPorts`] dials every connection from a new
//! local port when enabled; [`DialGuard`] refuses dials the address policy
//! does not allow.
//!
//! libp2p dials from the listening port by default (TCP port reuse, the
//! QUIC listener's socket) so that NATs map one port; the remote then
//! sees our listen address as the connection's source. A private node
//! (`private = true`) must not hand out its listen address that way, so
//! its transports are wrapped with `enabled = true`. Everything else is
//! passed through unchanged.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use libp2p::Multiaddr;
use libp2p::core::transport::{
    DialOpts, ListenerId, PortUse, Transport, TransportError, TransportEvent,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::addr_policy::{self, AddrPolicy};
use crate::metrics::ScopeLabels;

/// See the module documentation.
#[derive(Debug)]
pub struct FreshPorts<T> {
    inner: T,
    enabled: bool,
}

impl<T> FreshPorts<T> {
    /// Wraps `inner`; with `enabled`, every dial asks for a new port.
    pub fn new(inner: T, enabled: bool) -> Self {
        FreshPorts { inner, enabled }
    }
}

impl<T: Transport + Unpin> Transport for FreshPorts<T> {
    type Output = T::Output;
    type Error = T::Error;
    type ListenerUpgrade = T::ListenerUpgrade;
    type Dial = T::Dial;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        self.inner.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.inner.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        mut opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        if self.enabled {
            opts.port_use = PortUse::New;
        }
        self.inner.dial(addr, opts)
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        Pin::new(&mut self.inner).poll(cx)
    }
}

/// Refuses to dial an address that [`AddrPolicy::permits_dial`] does not
/// allow (issue 29, item 1). It sits below DNS resolution, so it sees the
/// address actually dialled, whatever name it came as, and every dial goes
/// through it: Kademlia's query dials to addresses a remote peer named
/// included. A refused dial is counted in `pqnode_node_dials_denied{scope}`
/// and logged at most once per 10 s, with how many were left out.
pub struct DialGuard<T> {
    inner: T,
    policy: Arc<AddrPolicy>,
    denied: Family<ScopeLabels, Counter>,
    log: Arc<LogEvery>,
}

impl<T> DialGuard<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, policy: Arc<AddrPolicy>, denied: Family<ScopeLabels, Counter>) -> Self {
        DialGuard {
            inner,
            policy,
            denied,
            log: Arc::new(LogEvery::default()),
        }
    }
}

impl<T> std::fmt::Debug for DialGuard<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DialGuard").finish_non_exhaustive()
    }
}

/// One log line per period, counting the ones left out.
#[derive(Debug)]
struct LogEvery {
    started: Instant,
    /// Milliseconds after `started` of the last line, plus one (0: none).
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl Default for LogEvery {
    fn default() -> Self {
        LogEvery {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }
}

impl LogEvery {
    const PERIOD: Duration = Duration::from_secs(10);

    /// `Some(left out since the last line)` when a line may be written now.
    fn allow(&self) -> Option<u64> {
        let now = self.started.elapsed().as_millis() as u64 + 1;
        let last = self.last_ms.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < Self::PERIOD.as_millis() as u64 {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if self
            .last_ms
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

impl<T: Transport + Unpin> Transport for DialGuard<T> {
    type Output = T::Output;
    type Error = T::Error;
    type ListenerUpgrade = T::ListenerUpgrade;
    type Dial = T::Dial;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        self.inner.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.inner.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        if !self.policy.permits_dial(&addr) {
            let scope = addr_policy::scope(&addr);
            self.denied
                .get_or_create(&ScopeLabels {
                    scope: scope.as_str(),
                })
                .inc();
            if let Some(suppressed) = self.log.allow() {
                tracing::info!(%addr, scope = scope.as_str(), suppressed, "not dialling a {} address a remote peer gave (publish_private_addrs allows private ranges; addresses in `peers`, `bootstrap` and the API are dialled as given)", scope.as_str());
            }
            return Err(TransportError::MultiaddrNotSupported(addr));
        }
        self.inner.dial(addr, opts)
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        Pin::new(&mut self.inner).poll(cx)
    }
}
