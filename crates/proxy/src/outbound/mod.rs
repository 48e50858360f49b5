//! The outbound stage: a connection the app opened toward a service. HTTP goes to
//! `http` (per request: endpoint, TLS, 503s); everything else is forwarded as opaque bytes
//! to the first endpoint that accepts, with the TLS the snapshot decided for it.

pub mod http;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tessera_contract::config::PortProtocol;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::config::{Flavor, Origination, Upstream};
use crate::connect::{connect, connect_tcp, Phase};
use crate::detect::{read_detect, Detected};
use crate::io::{copy, reset, Prefixed};
use crate::server::serve_http;
use crate::shared::Shared;
use crate::telemetry::access_log::AccessLine;
use crate::telemetry::{ConnectionResult, Direction, TlsUsed};

/// Where an outbound connection is going.
pub enum OutboundTarget {
    /// An explicit listener's service, `host:port`.
    Named(String),
    /// The original destination of a captured connection.
    Original(SocketAddr),
}

/// A connection the app opened, toward a service of the mesh or (captured, not a mesh
/// service) wherever it was going.
pub async fn outbound(
    shared: Arc<Shared>,
    mut tcp: TcpStream,
    peer: SocketAddr,
    target: OutboundTarget,
) {
    let port = match &target {
        OutboundTarget::Named(_) => 0,
        OutboundTarget::Original(addr) => addr.port(),
    };
    let result = ConnectionResult::new(shared.telemetry.clone(), Direction::Outbound, peer, port);
    let snap = shared.snapshot();
    let found = match &target {
        OutboundTarget::Named(name) => snap.upstream_named(name).cloned(),
        OutboundTarget::Original(addr) => snap.upstream_for_address(addr).cloned(),
    };
    drop(snap);
    let Some(upstream) = found else {
        if let OutboundTarget::Original(addr) = target {
            Box::pin(passthrough(&shared, tcp, addr, &result)).await;
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
        let handler =
            move |req, clock| http::request(svc_shared.clone(), upstream.clone(), peer, req, clock);
        let io = Prefixed::new(prefix, tcp);
        serve_http(&shared, io, handler, std::future::pending()).await;
        return;
    }
    let upstream = shared.with_endpoints(upstream).await;
    if !Box::pin(forward_tcp(&shared, &mut tcp, &result, &upstream, prefix)).await {
        reset(tcp);
    }
}

/// Not a mesh service: the bytes go where the app was going (Istio's ALLOW_ANY).
async fn passthrough(shared: &Shared, tcp: TcpStream, addr: SocketAddr, result: &ConnectionResult) {
    match connect_tcp(addr).await {
        Ok(up) => {
            let (sent, received, ended) = copy(tcp, &[], up, shared.tcp_idle()).await;
            let line = AccessLine {
                dst: Some(format!("{addr} (passthrough)")),
                tls: Some(TlsUsed::Plaintext),
                ..Default::default()
            };
            result.forwarded(line, ended, sent, received);
        }
        Err(e) => {
            tracing::warn!(direction = "outbound", src = %result.peer(), dst = %addr, error = %e, "passthrough failed");
            reset(tcp);
        }
    }
}

/// Opaque bytes to the upstream's endpoints (the first that accepts, with the TLS the
/// mesh decided for it). False when none did.
pub(crate) async fn forward_tcp<D>(
    shared: &Shared,
    down: D,
    result: &ConnectionResult,
    upstream: &Upstream,
    prefix: Bytes,
) -> bool
where
    D: AsyncRead + AsyncWrite + Unpin,
{
    let mut tried = false;
    for ep in upstream.pick_order() {
        tried = true;
        let tls = ep.origination.used();
        let connecting = connect(ep, Flavor::Tcp, &shared.telemetry);
        match shared
            .connect_unless_removed(&upstream.name, ep.address, connecting)
            .await
        {
            Ok((up, _)) => {
                if matches!(ep.origination, Origination::Tls { .. }) {
                    result.handshake(Direction::Outbound, tls, true);
                }
                let (sent, received, ended) = copy(down, &prefix, up, shared.tcp_idle()).await;
                let line = AccessLine {
                    src_identity: Some(shared.identity()),
                    dst: Some(format!("{} endpoint {}", upstream.name, ep.address)),
                    tls: Some(tls),
                    ..Default::default()
                };
                result.forwarded(line, ended, sent, received);
                return true;
            }
            Err(e) => {
                shared
                    .telemetry
                    .metrics
                    .upstream_failed(tls, e.phase == Phase::TlsHandshake);
                tracing::warn!(direction = "outbound", src = %result.peer(), dst = %upstream.name, endpoint = %ep.address, tls = tls.label(), phase = e.phase.label(), reason = %e.reason, "upstream failed");
            }
        }
    }
    if !tried {
        tracing::warn!(direction = "outbound", src = %result.peer(), dst = %upstream.name, "no endpoints: connection closed");
    }
    false
}
