//! The listeners a configuration asks for, and their accept loops: captured outbound
//! (15001) and inbound (15006) connections recover their original destination with
//! SO_ORIGINAL_DST; explicit listeners are bound to one target; gateway listeners serve
//! Gateway servers. Each accepted connection goes to its stage of the traffic path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tessera_contract::config::ProxyConfig;
use tokio::net::TcpListener;

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

pub(crate) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, kind: ListenerKind) {
    let own = listener.local_addr().ok();
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        match &kind {
            ListenerKind::Outbound(name) => {
                let target = OutboundTarget::Named(name.clone());
                tokio::spawn(outbound::outbound(shared, tcp, peer, target));
            }
            ListenerKind::Inbound(port) => {
                tokio::spawn(inbound::inbound(shared, tcp, peer, *port));
            }
            ListenerKind::Gateway(port) => {
                tokio::spawn(gateway::serve(shared, tcp, peer, *port));
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
                    tokio::spawn(outbound::outbound(
                        shared,
                        tcp,
                        peer,
                        OutboundTarget::Original(dst),
                    ));
                } else {
                    tokio::spawn(inbound::inbound(shared, tcp, peer, dst.port()));
                }
            }
        }
    }
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
