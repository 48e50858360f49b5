//! The inbound stage: a connection toward a workload port. Detect what arrives, decide
//! with the port's protocol and mode (`chain`), then act: terminate mesh mTLS, pass the
//! app's TLS through, forward plaintext, or reset. Ports with Sidecar ingress TLS are
//! served by `user_tls`; HTTP requests by `http`.

pub mod chain;
pub mod http;
pub mod user_tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use ::http::header::HeaderValue;
use bytes::Bytes;
use tessera_contract::config::{InboundMode, PortProtocol};
use tessera_contract::inbound::{decide, InboundAction, Payload, Refusal};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use self::chain::arrival;
use self::http::InboundConn;
use crate::config::{EndpointRoute, Flavor, InboundRule};
use crate::connect::connect_tcp;
use crate::detect::{read_detect, Detected};
use crate::http as l7;
use crate::io::{close_after_alert, copy_until, reset, Prefixed};
use crate::limits::LimitEvent;
use crate::server::{serve_http, Ended};
use crate::shared::Shared;
use crate::telemetry::access_log::AccessLine;
use crate::telemetry::{ConnectionResult, Direction, TlsUsed};

/// An inbound connection toward workload port `port`: detect what arrives, decide with the
/// port's rule, act.
pub async fn inbound(shared: Arc<Shared>, mut tcp: TcpStream, peer: SocketAddr, port: u16) {
    let result = ConnectionResult::new(shared.telemetry.clone(), Direction::Inbound, peer, port);
    // Subscribed before the rule is read, so no change between the two is missed.
    let updates = shared.config_updates();
    let snap = shared.snapshot();
    let rule = snap.inbound_rule(port).clone();
    let replaced = rule_replaced(shared.clone(), updates, port, rule.clone());
    let app = rule
        .forward_to
        .unwrap_or(SocketAddr::new(snap.app_host, port));
    let local = tcp.local_addr().map_or(snap.app_host, |a| a.ip());
    drop(snap);
    let decided = rule.port_rule();
    let (prefix, detected, silent) = if decided.inspects() {
        read_detect(&mut tcp, shared.detection_wait()).await
    } else {
        (Bytes::new(), Detected::Opaque, false)
    };
    let conn = Accepted {
        app: shared.app_route(app),
        shared,
        port,
        local,
        rule,
        result,
    };
    match decide(decided, arrival(&detected, silent)) {
        InboundAction::Reset(refusal) => conn.refuse(tcp, refusal),
        InboundAction::Plain(Payload::Http) => {
            let shared = conn.shared.clone();
            // Its edge is recorded at its first request: bytes that are not HTTP count
            // as refused instead.
            let http = Arc::new(conn.http(None, None, TlsUsed::Plaintext));
            serve_inbound_http(shared, Prefixed::new(prefix, tcp), http, replaced).await;
        }
        InboundAction::Plain(Payload::Tcp) => {
            if let Some(revoked) = conn.authorized(TlsUsed::Plaintext, None, None) {
                conn.accept(TlsUsed::Plaintext, None);
                let ends = either(replaced, revoked);
                Box::pin(conn.forward(tcp, prefix, TlsUsed::Plaintext, None, ends)).await;
            }
        }
        InboundAction::Passthrough => {
            if let Some(revoked) = conn.authorized(TlsUsed::AppTls, None, None) {
                conn.accept(TlsUsed::AppTls, None);
                let ends = either(replaced, revoked);
                Box::pin(conn.forward(tcp, prefix, TlsUsed::AppTls, None, ends)).await;
            }
        }
        // Boxed: a connection's task is as large as its largest stage, and most wait
        // in detection first; the TLS stages are allocated when reached.
        InboundAction::TerminateMesh(payload) => {
            Box::pin(conn.terminate_mesh(tcp, prefix, payload, replaced)).await
        }
        InboundAction::TerminateUser(payload) => {
            Box::pin(user_tls::serve(conn, tcp, prefix, payload, replaced)).await
        }
    }
}

/// An inbound connection once its port's rule is known.
pub(crate) struct Accepted {
    pub shared: Arc<Shared>,
    pub port: u16,
    /// The address the client connected to (the workload's).
    pub local: std::net::IpAddr,
    pub rule: InboundRule,
    /// The app behind the port.
    pub app: Arc<EndpointRoute>,
    pub result: ConnectionResult,
}

impl Accepted {
    /// The connection went through (its edge).
    pub fn accept(&self, tls: TlsUsed, identity: Option<&str>) {
        self.result
            .accepted(tls, identity, || accepted_by(self.port, self.rule.mode));
    }

    /// Whether the workload's AuthorizationPolicies let this connection through as TCP
    /// (its payload is not HTTP: each HTTP request is decided on its own). A denied
    /// connection is counted and recorded here; the caller closes it. An allowed one gets
    /// a future that resolves when a later configuration denies it, so that a policy
    /// change does not leave a connection it forbids open.
    pub fn authorized(
        &self,
        tls: TlsUsed,
        identity: Option<&str>,
        sni: Option<&str>,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        // Subscribed before deciding, so no change between the two is missed.
        let mut updates = self.shared.config_updates();
        let (source, local, port) = (self.result.peer().ip(), self.local, self.port);
        let peer = crate::authz::Peer {
            source,
            remote: source,
            identity,
            local,
            port,
            sni,
        };
        if let Err(denied) = crate::authz::decide(&self.shared, &peer, None) {
            self.result.denied(tls, &denied.reason);
            return None;
        }
        let shared = self.shared.clone();
        let (identity, sni) = (identity.map(str::to_string), sni.map(str::to_string));
        Some(async move {
            loop {
                if updates.changed().await.is_err() {
                    return std::future::pending().await;
                }
                let peer = crate::authz::Peer {
                    source,
                    remote: source,
                    identity: identity.as_deref(),
                    local,
                    port,
                    sni: sni.as_deref(),
                };
                // A denial is logged by the decision itself.
                if crate::authz::decide(&shared, &peer, None).is_err() {
                    return;
                }
            }
        })
    }

    /// Closes with a reset; counted and logged with the reason.
    pub fn refuse(self, tcp: TcpStream, refusal: Refusal) {
        let tls = if refusal == Refusal::NonMeshTlsOnHttpPort {
            TlsUsed::AppTls
        } else {
            TlsUsed::Plaintext
        };
        self.result.refused(refusal, tls, refusal.explain());
        reset(tcp);
    }

    /// What HTTP requests on this connection carry; the connection's result goes with it.
    /// (Its mesh principal and SNI are set by the caller that has them.)
    pub fn http(
        self,
        xfcc: Option<HeaderValue>,
        peer_identity: Option<String>,
        tls: TlsUsed,
    ) -> InboundConn {
        let flavor = match (self.rule.protocol, self.rule.termination.is_some()) {
            (PortProtocol::Http2, false) => Flavor::Http2,
            _ => Flavor::Http1,
        };
        InboundConn {
            mode: self.rule.mode,
            port: self.port,
            local: self.local,
            principal: None,
            sni: None,
            xfcc,
            peer_identity,
            tls,
            app: self.app,
            flavor,
            operation: self.rule.operation,
            result: self.result,
        }
    }

    /// Opaque bytes to the app until either side closes or the port's policy changes.
    pub async fn forward<D>(
        self,
        down: D,
        prefix: Bytes,
        tls: TlsUsed,
        peer_identity: Option<String>,
        replaced: impl Future<Output = ()>,
    ) where
        D: AsyncRead + AsyncWrite + Unpin,
    {
        match connect_tcp(self.app.address).await {
            Ok(up) => {
                let (sent, received, ended) =
                    copy_until(down, &prefix, up, self.shared.tcp_idle(), replaced).await;
                let line = AccessLine {
                    src_identity: peer_identity,
                    dst: Some(self.app.address.to_string()),
                    tls: Some(tls),
                    ..Default::default()
                };
                self.result.forwarded(line, ended, sent, received);
            }
            Err(e) => {
                tracing::warn!(direction = "inbound", src = %self.result.peer(), app = %self.app.address, error = %e, "the app could not be reached");
            }
        }
    }

    /// Mesh mTLS: the handshake with the workload's certificate (a mesh client certificate
    /// required), then HTTP with XFCC or opaque bytes to the app.
    async fn terminate_mesh(
        self,
        tcp: TcpStream,
        prefix: Bytes,
        payload: Payload,
        replaced: impl Future<Output = ()>,
    ) {
        let acceptor = self.shared.inbound_tls();
        let accepted = tokio::time::timeout(
            self.shared.limits().tls_handshake,
            acceptor.accept(Prefixed::new(prefix, tcp)).into_fallible(),
        )
        .await;
        let refused = match accepted {
            Ok(Ok(tls)) => Ok(tls),
            Ok(Err((e, io))) => Err((tessera_ca::tls::handshake_reason(&e), Some(io))),
            Err(_) => {
                let telemetry = &self.shared.telemetry;
                telemetry.limit_hit(LimitEvent::TlsHandshakeTimeout);
                Err((
                    "the client did not finish the TLS handshake in time".to_string(),
                    None,
                ))
            }
        };
        let tls = match refused {
            Ok(tls) => tls,
            Err((reason, io)) => {
                self.result
                    .handshake(Direction::Inbound, TlsUsed::Mesh, false);
                self.result
                    .refused(Refusal::Handshake, TlsUsed::Mesh, &reason);
                if let Some(io) = io {
                    close_after_alert(io).await;
                }
                return;
            }
        };
        self.result
            .handshake(Direction::Inbound, TlsUsed::Mesh, true);
        let (_, session) = tls.get_ref();
        let leaf = session
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec());
        let peer_identity =
            tessera_ca::tls::peer_identity(session.peer_certificates()).map(|i| i.to_string());
        let sni = session.server_name().map(str::to_string);
        if payload == Payload::Tcp {
            let Some(revoked) =
                self.authorized(TlsUsed::Mesh, peer_identity.as_deref(), sni.as_deref())
            else {
                return;
            };
            self.accept(TlsUsed::Mesh, peer_identity.as_deref());
            let ends = either(replaced, revoked);
            return self
                .forward(tls, Bytes::new(), TlsUsed::Mesh, peer_identity, ends)
                .await;
        }
        self.accept(TlsUsed::Mesh, peer_identity.as_deref());
        let own = vec![self.shared.identity()];
        let xfcc = leaf
            .as_deref()
            .and_then(|der| HeaderValue::from_str(&l7::xfcc_element(&own, der)).ok());
        let shared = self.shared.clone();
        let principal = peer_identity.clone();
        let http = InboundConn {
            principal,
            sni,
            ..self.http(xfcc, peer_identity, TlsUsed::Mesh)
        };
        serve_inbound_http(shared, tls, Arc::new(http), replaced).await;
    }
}

/// Resolves when either does.
pub(crate) async fn either(a: impl Future<Output = ()>, b: impl Future<Output = ()>) {
    tokio::select! {
        () = a => {}
        () = b => {}
    }
}

pub(crate) async fn serve_inbound_http<S>(
    shared: Arc<Shared>,
    io: S,
    conn: Arc<InboundConn>,
    replaced: impl Future<Output = ()>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc_shared = shared.clone();
    let served_conn = conn.clone();
    let handler =
        move |req, clock| http::request(svc_shared.clone(), served_conn.clone(), req, clock);
    if serve_http(&shared, io, handler, replaced).await == Ended::NotHttp {
        // Envoy logs these as `400 DPE`. The usual cause in a mesh: a client forcing mesh
        // mTLS (DestinationRule ISTIO_MUTUAL) toward a port whose policy is DISABLE.
        conn.result
            .refused(Refusal::NotHttp, conn.tls, Refusal::NotHttp.explain());
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

/// Why a port took a connection, for its edge.
fn accepted_by(port: u16, mode: InboundMode) -> String {
    format!("accepted by port {port} ({})", mode_name(mode))
}

fn mode_name(mode: InboundMode) -> &'static str {
    match mode {
        InboundMode::Strict => "STRICT",
        InboundMode::Permissive => "PERMISSIVE",
        InboundMode::Disable => "DISABLE",
    }
}
