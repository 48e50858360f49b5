//! Inbound HTTP: each request goes to the app, with X-Forwarded-Client-Cert set for a
//! verified peer and stripped otherwise; a failure to reach the app is a 503 that names
//! the hop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::HeaderValue;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::config::{EndpointRoute, Flavor};
use crate::http::{answer, finish, prepare, Body, XFCC};
use crate::shared::Shared;
use crate::telemetry::edges::{Connection, Edges};
use crate::telemetry::{Direction, TlsUsed};
use tessera_contract::inbound::Refusal;

/// What the inbound side knows about a downstream connection.
pub struct InboundConn {
    pub peer: SocketAddr,
    pub port: u16,
    /// The XFCC element of a mesh mTLS peer; `None` on plaintext (XFCC is then stripped).
    pub xfcc: Option<HeaderValue>,
    pub peer_identity: Option<String>,
    pub tls: TlsUsed,
    pub app: Arc<EndpointRoute>,
    pub flavor: Flavor,
    /// `x-envoy-decorator-operation` on responses (Sidecar ingress listeners).
    pub operation: Option<HeaderValue>,
    /// A plaintext HTTP connection is counted as an edge at its first request (before
    /// that it may turn out not to be HTTP at all).
    pub edge_pending: std::sync::atomic::AtomicBool,
    /// Why the port took it, for that edge.
    pub accepted_by: String,
}

impl InboundConn {
    /// Counts a plaintext HTTP connection once: at its first request, or as refused when
    /// its bytes turned out not to be HTTP.
    pub fn record_pending_edge(&self, edges: &Edges, refused: Option<Refusal>) {
        if !self
            .edge_pending
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        let edge = Connection::inbound(self.peer, self.port, self.tls);
        match refused {
            Some(r) => edges.record(edge.failed(r.label()), || r.explain().to_string()),
            None => edges.record(edge, || self.accepted_by.clone()),
        }
    }
}

/// Inbound: the request goes to the app, XFCC set for mesh peers and stripped otherwise.
pub async fn request(
    shared: Arc<Shared>,
    conn: Arc<InboundConn>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let started = Instant::now();
    conn.record_pending_edge(&shared.edges, None);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
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
    let result = match shared.pools.acquire(&conn.app, conn.flavor).await {
        Ok(sender) => shared.pools.send(sender, &conn.app, req).await,
        Err(e) => Err(e),
    };
    let mut resp = match result {
        Ok(resp) => finish(resp, "istio-envoy", upstream_started),
        Err(e) => {
            shared.stats.upstream_failure();
            tracing::warn!(direction = "inbound", src = %conn.peer, app = %conn.app.address, error = %e, "the app could not be reached");
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "istio-envoy",
                format!(
                    "upstream connect error or disconnect/reset before headers. hop: inbound {} (from {} over {}{}) -> app {}; phase: {}; reason: {}\n",
                    shared.node_id(),
                    conn.peer.ip(),
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
    shared
        .stats
        .request(Direction::Inbound, resp.status().as_u16());
    if shared.access_log() {
        tracing::info!(
            target: "tessera::access",
            direction = "inbound",
            src = %conn.peer,
            src_identity = conn.peer_identity.as_deref().unwrap_or("-"),
            port = conn.port,
            tls = conn.tls.label(),
            method = %method,
            path = %path,
            code = resp.status().as_u16(),
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        );
    }
    Ok(resp)
}
