//! The listeners a configuration asks for, and their accept loops: captured outbound
//! (15001) and inbound (15006) connections recover their original destination with
//! SO_ORIGINAL_DST; explicit listeners are bound to one target; gateway listeners serve
//! Gateway servers. Each accepted connection goes to its stage of the traffic path.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tessera_contract::config::ProxyConfig;
use tokio::net::TcpListener;

use crate::io::reset;
use crate::limits::LimitEvent;
use crate::outbound::OutboundTarget;
use crate::shared::Shared;
use crate::{gateway, inbound, outbound};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ListenerKind {
    OutboundCapture,
    InboundCapture,
    Outbound(String),
    Inbound(u16),
    /// A gateway pod port (Gateway servers).
    Gateway(u16),
}

pub(crate) struct RunningListener {
    pub requested: SocketAddr,
    pub kind: ListenerKind,
    pub bound: SocketAddr,
    pub task: tokio::task::JoinHandle<()>,
}

pub(crate) fn desired_listeners(config: &ProxyConfig) -> Vec<(String, SocketAddr, ListenerKind)> {
    let mut out = Vec::new();
    if let Some(a) = config.listeners.outbound_capture {
        out.push(("outbound-capture".into(), a, ListenerKind::OutboundCapture));
    }
    if let Some(a) = config.listeners.inbound_capture {
        out.push(("inbound-capture".into(), a, ListenerKind::InboundCapture));
    }
    for l in &config.listeners.explicit {
        let kind = match (&l.outbound, l.inbound) {
            (Some(t), _) => ListenerKind::Outbound(t.clone()),
            (None, Some(p)) => ListenerKind::Inbound(p),
            (None, None) => continue,
        };
        out.push((l.name.clone(), l.bind, kind));
    }
    for g in &config.gateway {
        out.push((
            format!("gateway-{}", g.port),
            SocketAddr::from(([0, 0, 0, 0], g.port)),
            ListenerKind::Gateway(g.port),
        ));
    }
    out
}

/// A place among a listener's open connections, given back when the connection ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Runs a connection's handler holding its slot.
fn spawn_holding(slot: Slot, handler: impl Future<Output = ()> + Send + 'static) {
    tokio::spawn(async move {
        let _slot = slot;
        handler.await
    });
}

pub(crate) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, kind: ListenerKind) {
    let own = listener.local_addr().ok();
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Past the cap a connection is reset at once: memory stays bounded and the
        // client learns immediately, instead of waiting in the kernel's backlog.
        if open.load(Ordering::Relaxed) >= shared.limits().max_connections_per_listener {
            shared.telemetry.limit_hit(LimitEvent::ConnectionLimit);
            reset(tcp);
            continue;
        }
        open.fetch_add(1, Ordering::Relaxed);
        let slot = Slot(open.clone());
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        match &kind {
            ListenerKind::Outbound(name) => {
                let target = OutboundTarget::Named(name.clone());
                spawn_holding(slot, outbound::outbound(shared, tcp, peer, target));
            }
            ListenerKind::Inbound(port) => {
                spawn_holding(slot, inbound::inbound(shared, tcp, peer, *port));
            }
            ListenerKind::Gateway(port) => {
                spawn_holding(slot, gateway::serve(shared, tcp, peer, *port));
            }
            ListenerKind::OutboundCapture | ListenerKind::InboundCapture => {
                let Some(dst) = original_dst(&tcp) else {
                    tracing::warn!(src = %peer, "no original destination (the connection was not redirected by iptables); closed");
                    continue;
                };
                if Some(dst) == own {
                    tracing::warn!(src = %peer, "connection addressed to the capture port itself; closed");
                    continue;
                }
                if kind == ListenerKind::OutboundCapture {
                    let target = OutboundTarget::Original(dst);
                    spawn_holding(slot, outbound::outbound(shared, tcp, peer, target));
                } else {
                    spawn_holding(slot, inbound::inbound(shared, tcp, peer, dst.port()));
                }
            }
        }
    }
}

/// Connections the kernel may hold for a listener before it accepts them (Linux clamps
/// it to `net.core.somaxconn`). A burst larger than the queue costs its clients a SYN
/// retransmission (a second); Envoy sizes it from somaxconn too.
const ACCEPT_BACKLOG: u32 = 4096;

/// A listening socket with a deep accept queue.
pub(crate) fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(ACCEPT_BACKLOG)
}

/// The destination a connection had before iptables redirected it.
pub fn original_dst(tcp: &tokio::net::TcpStream) -> Option<SocketAddr> {
    let sock = socket2::SockRef::from(tcp);
    let addr = match tcp.local_addr().ok()? {
        SocketAddr::V4(_) => sock.original_dst_v4().ok()?,
        SocketAddr::V6(_) => sock.original_dst_v6().ok()?,
    };
    addr.as_socket()
}
