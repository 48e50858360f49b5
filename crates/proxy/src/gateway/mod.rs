//! Gateway mode: a listener per gateway pod port. A connection's first bytes choose the
//! filter chain (Envoy's order: exact SNI, then the longest `*.suffix`, then a chain
//! without names; plaintext goes to the port's HTTP server), then TLS is terminated with
//! the server's certificate, passed through by SNI, or not used; HTTP is routed by the
//! server's VirtualService table and forwarded over the mesh (auto mTLS per endpoint).

mod http;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use ::http::header::HeaderValue;
use bytes::Bytes;
use tessera_contract::config::ServerKind;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use self::http::{request, GatewayConn, DRAW};
use crate::config::gateway::sni_matches;
use crate::config::route;
use crate::detect::{read_detect, Detected};
use crate::http as l7;
use crate::inbound::user_tls::{accept_user_tls, peer_leaf};
use crate::io::{reset_connection, Prefixed};
use crate::outbound::forward_tcp;
use crate::server;
use crate::shared::Shared;
use crate::telemetry::{ConnectionResult, TlsUsed};
use tessera_contract::inbound::Refusal;

/// A connection on gateway pod port `port`.
pub async fn serve(shared: Arc<Shared>, mut tcp: TcpStream, peer: SocketAddr, port: u16) {
    let result = ConnectionResult::gateway(shared.telemetry.clone(), peer, port);
    let Some(table) = shared.snapshot().gateway_table(port) else {
        result.refused(
            Refusal::NoTlsChain,
            TlsUsed::Plaintext,
            "no Gateway server on this port",
        );
        reset_connection(tcp);
        return;
    };
    let (prefix, detected, _) = read_detect(&mut tcp, shared.detection_wait()).await;
    let (chain, sni) = match &detected {
        Detected::Tls(hello) => (table.tls_chain(hello.sni.as_deref()), hello.sni.clone()),
        Detected::Http1 | Detected::H2c => (table.plain_chain(ServerKind::Http), None),
        _ => (table.plain_chain(ServerKind::Tcp), None),
    };
    let Some(chain) = chain.cloned() else {
        let (tls, detail) = match &sni {
            Some(sni) => (
                TlsUsed::Simple,
                format!("{} (SNI {sni})", Refusal::NoTlsChain.explain()),
            ),
            None => (
                TlsUsed::Plaintext,
                Refusal::NoTlsChain.explain().to_string(),
            ),
        };
        result.refused(Refusal::NoTlsChain, tls, &detail);
        reset_connection(tcp);
        return;
    };
    let server_port = table.server_port;
    let local = tcp.local_addr().map_or(peer.ip(), |a| a.ip());
    let conn = |scheme, xfcc, principal: Option<String>| GatewayConn {
        chain: chain.clone(),
        peer,
        server_port,
        scheme,
        xfcc,
        local,
        pod_port: port,
        principal,
        sni: sni.clone(),
    };
    match chain.kind {
        ServerKind::Http => {
            serve_http(shared, Prefixed::new(prefix, tcp), conn("http", None, None)).await
        }
        ServerKind::Tcp => {
            let conn = conn("tcp", None, None);
            Box::pin(forward_l4(&shared, tcp, prefix, &result, &conn, None)).await
        }
        ServerKind::Passthrough => {
            let conn = conn("tls", None, None);
            let sni = sni.as_deref();
            Box::pin(forward_l4(&shared, tcp, prefix, &result, &conn, sni)).await
        }
        ServerKind::TerminateHttp | ServerKind::TerminateTcp => {
            let Some(termination) = chain.termination.clone() else {
                reset_connection(tcp);
                return;
            };
            let within = shared.limits().tls_handshake;
            let accepting = accept_user_tls(&result, &termination, prefix, tcp, within);
            let Some(tls) = Box::pin(accepting).await else {
                return;
            };
            let leaf = peer_leaf(&tls);
            let principal = tessera_ca::tls::peer_identity(tls.get_ref().1.peer_certificates())
                .map(|id| id.to_string());
            if chain.kind == ServerKind::TerminateHttp {
                let own: Vec<String> = Vec::new();
                let xfcc = leaf
                    .as_deref()
                    .and_then(|der| HeaderValue::from_str(&l7::xfcc_element(&own, der)).ok());
                serve_http(shared, tls, conn("https", xfcc, principal)).await
            } else {
                let conn = conn("tls", None, principal);
                Box::pin(forward_l4(&shared, tls, Bytes::new(), &result, &conn, None)).await
            }
        }
    }
}

async fn serve_http<S>(shared: Arc<Shared>, io: S, conn: GatewayConn)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc_shared = shared.clone();
    let conn = Arc::new(conn);
    let handler = move |req, clock| request(svc_shared.clone(), conn.clone(), req, clock);
    server::serve_http(&shared, io, handler, std::future::pending()).await;
}

/// L4 at a gateway: the route (by SNI for passthrough), then the bytes to a destination
/// endpoint with the TLS the mesh decided for it.
async fn forward_l4<D>(
    shared: &Shared,
    down: D,
    prefix: Bytes,
    result: &ConnectionResult,
    conn: &GatewayConn,
    sni: Option<&str>,
) where
    D: AsyncRead + AsyncWrite + Unpin,
{
    if let Err(denied) = crate::authz::decide(shared, &conn.authz_peer(), None) {
        result.denied(tls_of(sni), &denied.reason);
        return;
    }
    let chain = &conn.chain;
    let route = chain.l4.iter().find(|r| match sni {
        Some(sni) => r.sni_hosts.iter().any(|h| sni_matches(h, sni)),
        None => true,
    });
    let Some(dest) = route.and_then(|r| {
        let i = route::pick(&r.destinations, DRAW.fetch_add(1, Ordering::Relaxed))?;
        r.destinations.get(i)
    }) else {
        let why = format!(
            "server {}: no route for SNI {}",
            chain.name,
            sni.unwrap_or("(none)")
        );
        result.refused(Refusal::NoRoute, tls_of(sni), &why);
        return;
    };
    let Some(upstream) = shared.snapshot().upstream_named(&dest.service).cloned() else {
        let why = format!(
            "the route's destination {} is not a service port of the mesh",
            dest.service
        );
        result.refused(Refusal::NoRoute, tls_of(sni), &why);
        return;
    };
    let upstream = shared.with_endpoints(upstream).await;
    forward_tcp(shared, down, result, &upstream, prefix).await;
}

/// What the client spoke, for a refusal: TLS when it sent a server name.
fn tls_of(sni: Option<&str>) -> TlsUsed {
    if sni.is_some() {
        TlsUsed::Simple
    } else {
        TlsUsed::Plaintext
    }
}
