//! One downstream connection, inbound or outbound: detect, decide, act.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::chain::{self, InboundAction, Payload, Refusal};
use crate::detect::{self, Detected, MAX_PEEK};
use crate::edges::Connection;
use crate::http::{self as l7, InboundConn};
use crate::io::Prefixed;
use crate::snapshot::{EndpointRoute, Flavor, InboundRule, Origination, Upstream};
use crate::stats::{Direction, TlsUsed};
use crate::terminate::Termination;
use crate::upstream;
use crate::Shared;
use tessera_contract::config::PortProtocol;

/// Reads until the first bytes tell what the connection is, the client is silent for
/// `wait`, or it closes. Returns the bytes read, the answer, and whether it was silence.
pub async fn read_detect<S: AsyncRead + Unpin>(
    stream: &mut S,
    wait: Duration,
) -> (Bytes, Detected, bool) {
    let mut buf = BytesMut::with_capacity(2048);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let found = detect::detect(&buf);
        if found != Detected::NeedMore {
            return (buf.freeze(), found, false);
        }
        if buf.len() >= MAX_PEEK {
            return (buf.freeze(), Detected::Opaque, false);
        }
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (buf.freeze(), Detected::Opaque, false),
            Ok(Ok(_)) => {}
            Err(_) => {
                let silent = buf.is_empty();
                return (buf.freeze(), Detected::Opaque, silent);
            }
        }
    }
}

/// After a refused handshake the alert (e.g. `certificate required`) has been written;
/// closing at once with the client's next bytes unread would turn it into a reset that
/// hides the alert. Half-close, then read what is in flight for a moment.
async fn close_after_alert<S: AsyncRead + AsyncWrite + Unpin>(mut io: S) {
    let _ = io.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Ok(n) = io.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// Closes with a TCP reset, as Envoy does when no filter chain matches.
pub(crate) fn reset_connection(tcp: TcpStream) {
    reset(tcp)
}

fn reset(tcp: TcpStream) {
    let _ = socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO));
    drop(tcp);
}

async fn copy<D, U>(mut down: D, prefix: &[u8], mut up: U) -> (u64, u64)
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    if !prefix.is_empty() && up.write_all(prefix).await.is_err() {
        return (0, 0);
    }
    match tokio::io::copy_bidirectional_with_sizes(&mut down, &mut up, 16 * 1024, 16 * 1024).await {
        Ok((a, b)) => (a + prefix.len() as u64, b),
        Err(_) => (prefix.len() as u64, 0),
    }
}

/// An inbound connection for workload port `port`.
pub async fn inbound(shared: Arc<Shared>, mut tcp: TcpStream, peer: SocketAddr, port: u16) {
    let started = Instant::now();
    let guard_owner = shared.clone();
    let _active = guard_owner.stats.connection(Direction::Inbound);
    // Subscribed before the rule is read, so no change between the two is missed.
    let updates = shared.config_updates();
    let snap = shared.snapshot();
    let rule = snap.inbound_rule(port).clone();
    let replaced = rule_replaced(shared.clone(), updates, port, rule.clone());
    let app_host = snap.app_host;
    drop(snap);
    let app = shared.app_route(rule.forward_to.unwrap_or(SocketAddr::new(app_host, port)));
    if let Some(termination) = &rule.termination {
        let termination = termination.clone();
        return inbound_user_tls(shared, tcp, peer, port, rule, termination, app, replaced).await;
    }
    let inspect = !(rule.mode == tessera_contract::config::InboundMode::Disable
        && rule.protocol != tessera_contract::config::PortProtocol::Auto);
    let (prefix, detected, silent) = if inspect {
        read_detect(&mut tcp, shared.detection_wait()).await
    } else {
        (Bytes::new(), Detected::Opaque, false)
    };
    let action = chain::select(rule.protocol, rule.mode, &detected, silent);
    let flavor = if rule.protocol == tessera_contract::config::PortProtocol::Http2 {
        Flavor::Http2
    } else {
        Flavor::Http1
    };
    let edge = |tls| Connection::inbound(peer, port, tls);
    let accepted_by = || format!("accepted by port {port} ({})", mode_name(rule.mode));
    match action {
        InboundAction::Reset(refusal) => {
            let tls = if refusal == Refusal::NonMeshTlsOnHttpPort {
                TlsUsed::AppTls
            } else {
                TlsUsed::Plaintext
            };
            shared.edges.record(edge(tls).failed(refusal.label()), || {
                refusal.explain().to_string()
            });
            shared.stats.refusal(refusal);
            tracing::warn!(direction = "inbound", src = %peer, port, mode = ?rule.mode, reason = refusal.explain(), "connection refused (reset)");
            reset(tcp);
        }
        InboundAction::Plain(Payload::Http) => {
            let conn = Arc::new(InboundConn {
                peer,
                port,
                xfcc: None,
                peer_identity: None,
                tls: TlsUsed::Plaintext,
                app,
                flavor,
                operation: rule.operation.clone(),
                // Counted at its first request: bytes that are not HTTP count as refused.
                edge_pending: AtomicBool::new(true),
                accepted_by: accepted_by(),
            });
            serve_inbound_http(shared, Prefixed::new(prefix, tcp), conn, replaced).await;
        }
        InboundAction::Plain(Payload::Tcp) | InboundAction::Passthrough => {
            let tls = if action == InboundAction::Passthrough {
                TlsUsed::AppTls
            } else {
                TlsUsed::Plaintext
            };
            shared.edges.record(edge(tls), accepted_by);
            match upstream::connect_tcp(app.address).await {
                Ok(up) => {
                    let (sent, received, result) = copy_until(tcp, &prefix, up, replaced).await;
                    tcp_log(
                        &shared,
                        Direction::Inbound,
                        peer,
                        None,
                        &app.address.to_string(),
                        tls,
                        result,
                        sent,
                        received,
                        started,
                    );
                }
                Err(e) => {
                    tracing::warn!(direction = "inbound", src = %peer, app = %app.address, error = %e, "the app could not be reached");
                    reset(tcp);
                }
            }
        }
        InboundAction::TerminateMesh(payload) => {
            let acceptor = shared.inbound_tls();
            let accepted = tokio::time::timeout(
                upstream::HANDSHAKE_TIMEOUT,
                acceptor.accept(Prefixed::new(prefix, tcp)).into_fallible(),
            )
            .await;
            let refused = match accepted {
                Ok(Ok(tls)) => Ok(tls),
                Ok(Err((e, io))) => Err((tessera_ca::tls::handshake_reason(&e), Some(io))),
                Err(_) => Err((
                    "the client did not finish the TLS handshake in time".to_string(),
                    None,
                )),
            };
            let tls = match refused {
                Ok(tls) => tls,
                Err((reason, io)) => {
                    shared
                        .stats
                        .handshake(Direction::Inbound, TlsUsed::Mesh, false);
                    shared.stats.refusal(Refusal::Handshake);
                    shared.edges.record(
                        edge(TlsUsed::Mesh).failed(Refusal::Handshake.label()),
                        || reason.clone(),
                    );
                    tracing::warn!(direction = "inbound", src = %peer, port, mode = ?rule.mode, reason = %reason, "mesh mTLS handshake refused");
                    if let Some(io) = io {
                        close_after_alert(io).await;
                    }
                    return;
                }
            };
            shared
                .stats
                .handshake(Direction::Inbound, TlsUsed::Mesh, true);
            let (_, session) = tls.get_ref();
            let leaf = session
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.to_vec());
            let peer_identity =
                tessera_ca::tls::peer_identity(session.peer_certificates()).map(|i| i.to_string());
            shared.edges.record(
                edge(TlsUsed::Mesh).identified(peer_identity.as_deref()),
                accepted_by,
            );
            match payload {
                Payload::Http => {
                    let own = vec![shared.identity()];
                    let xfcc = leaf
                        .as_deref()
                        .and_then(|der| HeaderValue::from_str(&l7::xfcc_element(&own, der)).ok());
                    let conn = Arc::new(InboundConn {
                        peer,
                        port,
                        xfcc,
                        peer_identity,
                        tls: TlsUsed::Mesh,
                        app,
                        flavor,
                        operation: rule.operation.clone(),
                        edge_pending: AtomicBool::new(false),
                        accepted_by: String::new(),
                    });
                    serve_inbound_http(shared, tls, conn, replaced).await;
                }
                Payload::Tcp => match upstream::connect_tcp(app.address).await {
                    Ok(up) => {
                        let (sent, received, result) = copy_until(tls, &[], up, replaced).await;
                        tcp_log(
                            &shared,
                            Direction::Inbound,
                            peer,
                            peer_identity.as_deref(),
                            &app.address.to_string(),
                            TlsUsed::Mesh,
                            result,
                            sent,
                            received,
                            started,
                        );
                    }
                    Err(e) => {
                        tracing::warn!(direction = "inbound", src = %peer, app = %app.address, error = %e, "the app could not be reached");
                    }
                },
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn tcp_log(
    shared: &Shared,
    direction: Direction,
    src: SocketAddr,
    src_identity: Option<&str>,
    dst: &str,
    tls: TlsUsed,
    result: &str,
    sent: u64,
    received: u64,
    started: Instant,
) {
    if shared.access_log() {
        tracing::info!(
            target: "tessera::access",
            direction = direction.label(),
            src = %src,
            src_identity = src_identity.unwrap_or("-"),
            dst,
            tls = tls.label(),
            protocol = "tcp",
            result,
            bytes_sent = sent,
            bytes_received = received,
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        );
    }
}

async fn serve_inbound_http<S>(
    shared: Arc<Shared>,
    io: S,
    conn: Arc<InboundConn>,
    replaced: impl std::future::Future<Output = ()>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc_shared = shared.clone();
    let (peer, port, tls) = (conn.peer, conn.port, conn.tls);
    let pending = conn.clone();
    let svc = service_fn(move |req| l7::inbound(svc_shared.clone(), conn.clone(), req));
    let builder = auto::Builder::new(TokioExecutor::new());
    let served = builder.serve_connection(TokioIo::new(io), svc);
    let result = shared.serve_graceful(served, replaced).await;
    let unparsable = result.as_ref().err().is_some_and(|e| {
        e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_parse)
    });
    if unparsable {
        // Envoy logs these as `400 DPE`. The usual cause in a mesh: a client forcing mesh
        // mTLS (DestinationRule ISTIO_MUTUAL) toward a port whose policy is DISABLE.
        pending.record_pending_edge(&shared.edges, Some(Refusal::NotHttp));
        shared.stats.refusal(Refusal::NotHttp);
        tracing::warn!(direction = "inbound", src = %peer, port, tls = tls.label(), reason = Refusal::NotHttp.explain(), "request refused (400)");
    }
}

/// Resolves when the configuration no longer serves `port` with the protocol and mode an
/// inbound connection was accepted under. Istio's listeners drain the connections of a
/// replaced filter chain; here the connection itself notices: a keep-alive connection
/// let in under PERMISSIVE must not keep working once the port is STRICT (and one
/// terminated as mesh mTLS must not outlive a switch to DISABLE).
async fn rule_replaced(
    shared: Arc<Shared>,
    mut updates: tokio::sync::watch::Receiver<u64>,
    port: u16,
    accepted: InboundRule,
) {
    loop {
        if updates.changed().await.is_err() {
            return std::future::pending().await;
        }
        let snap = shared.snapshot();
        let now = snap.inbound_rule(port);
        if !accepted.same_chain(now) {
            tracing::info!(direction = "inbound", port, was = ?accepted.mode, now = ?now.mode, reason = %now.reason, "the port's policy changed; closing a connection accepted under the old one");
            return;
        }
    }
}

/// A port with Sidecar ingress TLS: only TLS, terminated with the user's certificate
/// (client certificate verified against the user's CA under MUTUAL), then HTTP or TCP
/// to the app. XFCC carries the external client's certificate.
#[allow(clippy::too_many_arguments)]
async fn inbound_user_tls(
    shared: Arc<Shared>,
    mut tcp: TcpStream,
    peer: SocketAddr,
    port: u16,
    rule: InboundRule,
    termination: Termination,
    app: Arc<EndpointRoute>,
    replaced: impl std::future::Future<Output = ()>,
) {
    let started = Instant::now();
    let (prefix, detected, _) = read_detect(&mut tcp, shared.detection_wait()).await;
    let edge = |tls| Connection::inbound(peer, port, tls);
    if !matches!(detected, Detected::Tls(_)) {
        shared.edges.record(
            edge(TlsUsed::Plaintext).failed(Refusal::NoTlsChain.label()),
            || Refusal::NoTlsChain.explain().to_string(),
        );
        shared.stats.refusal(Refusal::NoTlsChain);
        tracing::warn!(direction = "inbound", src = %peer, port, reason = Refusal::NoTlsChain.explain(), "connection refused (reset)");
        reset(tcp);
        return;
    }
    let Some(tls) = accept_user_tls(&shared, &termination, prefix, tcp, peer, port).await else {
        return;
    };
    let leaf = peer_leaf(&tls);
    let used = if leaf.is_some() {
        TlsUsed::Mutual
    } else {
        TlsUsed::Simple
    };
    shared.edges.record(edge(used), || {
        format!("TLS with the user's certificate on port {port} (Sidecar ingress)")
    });
    let subject = leaf
        .as_deref()
        .and_then(|der| {
            tessera_ca::inspect::describe_der(der, time::OffsetDateTime::now_utc()).ok()
        })
        .map(|row| row.subject);
    match rule.protocol {
        PortProtocol::Http | PortProtocol::Http2 => {
            let xfcc = leaf
                .as_deref()
                .and_then(|der| HeaderValue::from_str(&l7::xfcc_element(&[], der)).ok());
            let conn = Arc::new(InboundConn {
                peer,
                port,
                xfcc,
                peer_identity: subject,
                tls: used,
                app,
                flavor: Flavor::Http1,
                operation: rule.operation.clone(),
                edge_pending: AtomicBool::new(false),
                accepted_by: String::new(),
            });
            serve_inbound_http(shared, tls, conn, replaced).await;
        }
        _ => match upstream::connect_tcp(app.address).await {
            Ok(up) => {
                let (sent, received, result) = copy_until(tls, &[], up, replaced).await;
                tcp_log(
                    &shared,
                    Direction::Inbound,
                    peer,
                    subject.as_deref(),
                    &app.address.to_string(),
                    used,
                    result,
                    sent,
                    received,
                    started,
                );
            }
            Err(e) => {
                tracing::warn!(direction = "inbound", src = %peer, app = %app.address, error = %e, "the app could not be reached");
            }
        },
    }
}

/// The DER of the client's leaf certificate, when it sent one.
pub(crate) fn peer_leaf<IO>(tls: &tokio_rustls::server::TlsStream<IO>) -> Option<Vec<u8>> {
    let (_, session) = tls.get_ref();
    session
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
}

/// The TLS handshake with a user certificate; a refusal is counted and logged with its
/// reason on this side, and the client gets the alert.
pub(crate) async fn accept_user_tls(
    shared: &Shared,
    termination: &Termination,
    prefix: Bytes,
    tcp: TcpStream,
    peer: SocketAddr,
    port: u16,
) -> Option<tokio_rustls::server::TlsStream<Prefixed<TcpStream>>> {
    let acceptor = match termination {
        Termination::Ready(a) => a.clone(),
        Termination::Unavailable(why) => {
            shared.stats.refusal(Refusal::TlsUnavailable);
            tracing::warn!(direction = "inbound", src = %peer, port, reason = %why, "TLS refused: {}", Refusal::TlsUnavailable.explain());
            reset(tcp);
            return None;
        }
    };
    let accepted = tokio::time::timeout(
        upstream::HANDSHAKE_TIMEOUT,
        acceptor.accept(Prefixed::new(prefix, tcp)).into_fallible(),
    )
    .await;
    match accepted {
        Ok(Ok(tls)) => {
            shared
                .stats
                .handshake(Direction::Inbound, TlsUsed::Simple, true);
            Some(tls)
        }
        Ok(Err((e, io))) => {
            shared
                .stats
                .handshake(Direction::Inbound, TlsUsed::Simple, false);
            shared.stats.refusal(Refusal::TlsHandshake);
            tracing::warn!(direction = "inbound", src = %peer, port, reason = %tessera_ca::tls::handshake_reason(&e), "TLS handshake refused");
            close_after_alert(io).await;
            None
        }
        Err(_) => {
            shared.stats.refusal(Refusal::TlsHandshake);
            tracing::warn!(direction = "inbound", src = %peer, port, reason = "the client did not finish the TLS handshake in time", "TLS handshake refused");
            None
        }
    }
}

/// [`copy`], cut short when `stop` resolves; the result names which ended it.
async fn copy_until<D, U>(
    down: D,
    prefix: &[u8],
    up: U,
    stop: impl std::future::Future<Output = ()>,
) -> (u64, u64, &'static str)
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    tokio::select! {
        (sent, received) = copy(down, prefix, up) => (sent, received, "ok"),
        _ = stop => (0, 0, "closed: the port's policy changed"),
    }
}

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
            match upstream::connect_tcp(addr).await {
                Ok(up) => {
                    let (sent, received) = copy(tcp, &[], up).await;
                    tcp_log(
                        &shared,
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
    use tessera_contract::config::PortProtocol;
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
            service_fn(move |req| l7::outbound(svc_shared.clone(), upstream.clone(), peer, req));
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
        match upstream::connect(ep, Flavor::Tcp, &shared.edges).await {
            Ok((up, _)) => {
                let tls = ep.origination.used();
                if matches!(ep.origination, Origination::Tls { .. }) {
                    shared.stats.handshake(Direction::Outbound, tls, true);
                }
                let (sent, received) = copy(down, &prefix, up).await;
                tcp_log(
                    &shared,
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
                if e.phase == upstream::Phase::TlsHandshake {
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

fn mode_name(mode: tessera_contract::config::InboundMode) -> &'static str {
    match mode {
        tessera_contract::config::InboundMode::Strict => "STRICT",
        tessera_contract::config::InboundMode::Permissive => "PERMISSIVE",
        tessera_contract::config::InboundMode::Disable => "DISABLE",
    }
}
