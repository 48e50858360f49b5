//! The outbound stage: a connection the app opened toward a service. HTTP goes to
//! `http` (per request: endpoint, TLS, 503s); everything else is forwarded as opaque bytes
//! to the first endpoint that accepts, with the TLS the snapshot decided for it.

pub mod http;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tessera_contract::config::PortProtocol;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::config::{Flavor, Origination, Upstream};
use crate::connect::{connect, connect_tcp, Phase};
use crate::detect::{read_detect, Detected};
use crate::io::{copy, reset, Prefixed};
use crate::shared::Shared;
use crate::telemetry::access_log::tcp_log;
use crate::telemetry::{Direction, TlsUsed};

/// Where an outbound connection is going.
pub enum OutboundTarget {
    /// An explicit listener's service, `host:port`.
    Named(String),
    /// The original destination of a captured connection.
    Original(SocketAddr),
}

pub async fn outbound(
    shared: Arc<Shared>,
    mut tcp: TcpStream,
    peer: SocketAddr,
    target: OutboundTarget,
) {
    let started = Instant::now();
    let guard_owner = shared.clone();
    let _active = guard_owner.stats.connection(Direction::Outbound);
    let snap = shared.snapshot();
    let found = match &target {
        OutboundTarget::Named(name) => snap.upstream_named(name).cloned(),
        OutboundTarget::Original(addr) => snap.upstream_for_address(addr).cloned(),
    };
    drop(snap);
    let Some(upstream) = found else {
        // Not a mesh service: pass through to where the app was going (Istio's ALLOW_ANY).
        if let OutboundTarget::Original(addr) = target {
            match connect_tcp(addr).await {
                Ok(up) => {
                    let (sent, received) = copy(tcp, &[], up).await;
                    tcp_log(
                        shared.access_log(),
                        Direction::Outbound,
                        peer,
                        None,
                        &format!("{addr} (passthrough)"),
                        TlsUsed::Plaintext,
                        "ok",
                        sent,
                        received,
                        started,
                    );
                }
                Err(e) => {
                    tracing::warn!(direction = "outbound", src = %peer, dst = %addr, error = %e, "passthrough failed");
                    reset(tcp);
                }
            }
        }
        return;
    };
    let (prefix, is_http) = match upstream.protocol {
        PortProtocol::Http | PortProtocol::Http2 => (Bytes::new(), true),
        PortProtocol::Tcp => (Bytes::new(), false),
        PortProtocol::Auto => {
            let (prefix, detected, _) = read_detect(&mut tcp, shared.detection_wait()).await;
            (prefix, matches!(detected, Detected::Http1 | Detected::H2c))
        }
    };
    if is_http {
        let svc_shared = shared.clone();
        let svc =
            service_fn(move |req| http::request(svc_shared.clone(), upstream.clone(), peer, req));
        let builder = auto::Builder::new(TokioExecutor::new());
        let served = builder.serve_connection(TokioIo::new(Prefixed::new(prefix, tcp)), svc);
        let _ = shared
            .serve_graceful(served, std::future::pending::<()>())
            .await;
        return;
    }
    outbound_tcp(shared, tcp, peer, &upstream, prefix, started).await;
}

async fn outbound_tcp(
    shared: Arc<Shared>,
    mut tcp: TcpStream,
    peer: SocketAddr,
    upstream: &Upstream,
    prefix: Bytes,
    started: Instant,
) {
    if !forward_tcp(shared, &mut tcp, peer, upstream, prefix, started).await {
        reset(tcp);
    }
}

/// Opaque bytes to the upstream's endpoints (the first that accepts, with the TLS the
/// mesh decided for it). False when none did.
pub(crate) async fn forward_tcp<D>(
    shared: Arc<Shared>,
    down: D,
    peer: SocketAddr,
    upstream: &Upstream,
    prefix: Bytes,
    started: Instant,
) -> bool
where
    D: AsyncRead + AsyncWrite + Unpin,
{
    let mut reasons = Vec::new();
    for ep in upstream.pick_order() {
        match connect(ep, Flavor::Tcp, &shared.edges).await {
            Ok((up, _)) => {
                let tls = ep.origination.used();
                if matches!(ep.origination, Origination::Tls { .. }) {
                    shared.stats.handshake(Direction::Outbound, tls, true);
                }
                let (sent, received) = copy(down, &prefix, up).await;
                tcp_log(
                    shared.access_log(),
                    Direction::Outbound,
                    peer,
                    Some(&shared.identity()),
                    &format!("{} endpoint {}", upstream.name, ep.address),
                    tls,
                    "ok",
                    sent,
                    received,
                    started,
                );
                return true;
            }
            Err(e) => {
                shared.stats.upstream_failure();
                if e.phase == Phase::TlsHandshake {
                    shared
                        .stats
                        .handshake(Direction::Outbound, ep.origination.used(), false);
                }
                tracing::warn!(direction = "outbound", src = %peer, dst = %upstream.name, endpoint = %ep.address, tls = ep.origination.used().label(), phase = e.phase.label(), reason = %e.reason, "upstream failed");
                reasons.push(e);
            }
        }
    }
    if reasons.is_empty() {
        tracing::warn!(direction = "outbound", src = %peer, dst = %upstream.name, "no endpoints: connection closed");
    }
    false
}
