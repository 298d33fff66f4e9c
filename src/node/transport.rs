//! [`FreshPorts`]: a transport wrapper that, when enabled, dials every
//! connection from a new local port instead of the listening one.
//!
//! libp2p dials from the listening port by default (TCP port reuse, the
//! QUIC listener's socket) so that NATs map one port; the remote then
//! sees our listen address as the connection's source. A private node
//! (`private = true`) must not hand out its listen address that way, so
//! its transports are wrapped with `enabled = true`. Everything else is
//! passed through unchanged.

use std::pin::Pin;
use std::task::{Context, Poll};

use libp2p::Multiaddr;
use libp2p::core::transport::{
    DialOpts, ListenerId, PortUse, Transport, TransportError, TransportEvent,
};

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
