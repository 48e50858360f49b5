//! Inbound HTTP: each request goes to the app, with X-Forwarded-Client-Cert set for a
//! verified peer and stripped otherwise; a failure to reach the app is a 503 that names
//! the hop.

use std::sync::Arc;
use std::time::Instant;

use http::header::HeaderValue;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use tessera_contract::config::InboundMode;

use crate::config::{EndpointRoute, Flavor};
use crate::http::{answer, finish, prepare, Body, XFCC};
use crate::limits::body::StreamClock;
use crate::shared::Shared;
use crate::telemetry::access_log::AccessLine;
use crate::telemetry::{ConnectionResult, Direction, RequestResult, TlsUsed};

/// What the inbound side knows about a downstream HTTP connection.
pub struct InboundConn {
    /// The connection's result: its edge is recorded at its first request.
    pub result: ConnectionResult,
    pub port: u16,
    /// The workload address the client connected to.
    pub local: std::net::IpAddr,
    /// The peer's mesh identity (SPIFFE), from a verified mesh certificate only.
    pub principal: Option<String>,
    /// The SNI of the mesh TLS the connection came in, if any.
    pub sni: Option<String>,
    /// The XFCC element of a mesh mTLS peer; `None` on plaintext (XFCC is then stripped).
    pub xfcc: Option<HeaderValue>,
    pub peer_identity: Option<String>,
    pub tls: TlsUsed,
    pub app: Arc<EndpointRoute>,
    pub flavor: Flavor,
    /// `x-envoy-decorator-operation` on responses (Sidecar ingress listeners).
    pub operation: Option<HeaderValue>,
    /// The port's mode, for its edge's reason.
    pub mode: InboundMode,
}

/// The workload's AuthorizationPolicies on one request.
fn authorize(
    shared: &Shared,
    conn: &InboundConn,
    req: &Request<Incoming>,
) -> Result<(), crate::authz::Denied> {
    let source = conn.result.peer().ip();
    let peer = crate::authz::Peer {
        source,
        remote: source,
        identity: conn.principal.as_deref(),
        local: conn.local,
        port: conn.port,
        sni: conn.sni.as_deref(),
    };
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("");
    let request = crate::authz::Request {
        method: req.method(),
        path: req.uri().path(),
        host,
        headers: req.headers(),
    };
    crate::authz::decide(shared, &peer, Some(&request))
}

/// Inbound: the request goes to the app, XFCC set for mesh peers and stripped otherwise.
pub async fn request(
    shared: Arc<Shared>,
    conn: Arc<InboundConn>,
    mut req: Request<Incoming>,
    clock: Arc<StreamClock>,
) -> Response<Body> {
    let peer = conn.result.peer();
    conn.result
        .accepted(conn.tls, conn.peer_identity.as_deref(), || {
            super::accepted_by(conn.port, conn.mode)
        });
    let mut outcome = RequestResult::new(conn.result.telemetry().clone(), Direction::Inbound);
    outcome.describe(|| AccessLine {
        side: "inbound",
        src: Some(peer),
        src_identity: conn.peer_identity.clone(),
        dst: Some(conn.app.address.to_string()),
        tls: Some(conn.tls),
        method: Some(req.method().to_string()),
        path: Some(req.uri().path().to_string()),
        ..Default::default()
    });
    if authorize(&shared, &conn, &req).is_err() {
        outcome.answered(StatusCode::FORBIDDEN.as_u16());
        return answer(
            StatusCode::FORBIDDEN,
            "istio-envoy",
            crate::authz::DENIED_BODY.into(),
        );
    }
    match &conn.xfcc {
        Some(element) => {
            // APPEND_FORWARD: a value the peer's proxy forwarded is kept, ours appended.
            let value = match req.headers().get(XFCC) {
                Some(existing) => {
                    let mut v = existing.as_bytes().to_vec();
                    v.push(b',');
                    v.extend_from_slice(element.as_bytes());
                    HeaderValue::from_bytes(&v).unwrap_or_else(|_| element.clone())
                }
                None => element.clone(),
            };
            req.headers_mut().insert(XFCC, value);
        }
        None => {
            req.headers_mut().remove(XFCC);
        }
    }
    prepare(&mut req, conn.flavor);
    let upstream_started = Instant::now();
    let limits = shared.limits();
    let pools = &shared.pools;
    let result = match pools
        .acquire(&conn.app, conn.flavor, limits.upstream_idle)
        .await
    {
        Ok(sender) => pools.send(sender, &conn.app, req, &clock).await,
        Err(e) => Err(e),
    };
    let mut resp = match result {
        Ok(resp) => finish(resp, "istio-envoy", upstream_started),
        Err(e) if e.stream_idle_status().is_some() => {
            let code = e
                .stream_idle_status()
                .unwrap_or(StatusCode::GATEWAY_TIMEOUT);
            answer(code, "istio-envoy", "stream timeout\n".into())
        }
        Err(e) => {
            shared
                .telemetry
                .metrics
                .upstream_failed(TlsUsed::Plaintext, false);
            tracing::warn!(direction = "inbound", src = %peer, app = %conn.app.address, error = %e, "the app could not be reached");
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "istio-envoy",
                format!(
                    "upstream connect error or disconnect/reset before headers. hop: inbound {} (from {} over {}{}) -> app {}; phase: {}; reason: {}\n",
                    shared.node_id(),
                    peer.ip(),
                    conn.tls.label(),
                    conn.peer_identity
                        .as_deref()
                        .map_or(String::new(), |id| format!(" as {id}")),
                    conn.app.address,
                    e.phase.label(),
                    e.reason
                ),
            )
        }
    };
    if let Some(op) = &conn.operation {
        resp.headers_mut()
            .insert("x-envoy-decorator-operation", op.clone());
    }
    outcome.answered(resp.status().as_u16());
    resp
}
