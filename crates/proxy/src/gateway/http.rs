//! HTTP at a gateway: the request is routed by the server's VirtualService table
//! (redirect, direct response, or a weighted destination), then forwarded over the mesh
//! with retries on connect failure and the route's timeout.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{HeaderValue, HOST, LOCATION};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tessera_contract::config::RouteAction;

use crate::config::gateway::ServerChain;
use crate::config::route::{self, RequestView};
use crate::config::{Flavor, Upstream};
use crate::connect::Phase;
use crate::http::{self as l7, Body, XFCC};
use crate::limits::body::StreamClock;
use crate::outbound::http::unavailable;
use crate::shared::Shared;
use crate::telemetry::access_log::AccessLine;
use crate::telemetry::{Direction, RequestResult};

pub(super) static DRAW: AtomicU64 = AtomicU64::new(0);

fn empty(code: StatusCode) -> Response<Body> {
    let mut resp = l7::answer(code, "istio-envoy", String::new());
    resp.headers_mut().remove(http::header::CONTENT_TYPE);
    resp
}

/// What the route table says to do with a request.
enum Routed {
    /// Answered at the gateway (no route, a redirect, a direct response), with the
    /// access log's response flag.
    Answer(Response<Body>, &'static str),
    /// To a destination service.
    Forward(Forwarding),
}

/// A request's destination and the rewrites its route asks for.
struct Forwarding {
    /// `host:port` of a mesh service; `None` when the route has no destination.
    service: Option<String>,
    path: Option<String>,
    authority: Option<String>,
    /// The VirtualService, for messages.
    source: String,
    action: RouteAction,
}

/// The route for a request to `host`, from the server's virtual hosts.
fn route(chain: &ServerChain, view: &RequestView<'_>, host: &str, scheme: &str) -> Routed {
    let not_found = || Routed::Answer(empty(StatusCode::NOT_FOUND), "NR route_not_found");
    let Some(vh) = route::find_vhost(&chain.vhosts, host) else {
        return not_found();
    };
    if vh.https_redirect && scheme == "http" {
        let location = route::redirect_location(view, host, None, None, Some("https"), None);
        return Routed::Answer(
            redirect(StatusCode::MOVED_PERMANENTLY, &location),
            "https_redirect",
        );
    }
    let Some((rule, matched)) = route::find_rule(vh, view) else {
        return not_found();
    };
    match &rule.action {
        RouteAction::Redirect {
            uri,
            authority,
            scheme,
            port,
            code,
        } => {
            let location = route::redirect_location(
                view,
                host,
                uri.as_deref(),
                authority.as_deref(),
                scheme.as_deref(),
                *port,
            );
            let code = StatusCode::from_u16(*code).unwrap_or(StatusCode::MOVED_PERMANENTLY);
            Routed::Answer(redirect(code, &location), "redirect")
        }
        RouteAction::DirectResponse { status, body } => {
            let mut r = l7::answer(
                StatusCode::from_u16(*status).unwrap_or(StatusCode::OK),
                "istio-envoy",
                body.clone().unwrap_or_default(),
            );
            if body.is_none() {
                r.headers_mut().remove(http::header::CONTENT_TYPE);
            }
            Routed::Answer(r, "direct_response")
        }
        RouteAction::Forward {
            destinations,
            rewrite_uri,
            rewrite_authority,
            ..
        } => {
            let pick = route::pick(destinations, DRAW.fetch_add(1, Ordering::Relaxed));
            Routed::Forward(Forwarding {
                service: pick.map(|i| destinations[i].service.clone()),
                path: rewrite_uri
                    .as_deref()
                    .map(|to| route::rewrite_path(view.path, view.query, matched, to)),
                authority: rewrite_authority.clone(),
                source: rule.source.clone(),
                action: rule.action.clone(),
            })
        }
    }
}

fn redirect(code: StatusCode, location: &str) -> Response<Body> {
    let mut r = empty(code);
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(LOCATION, v);
    }
    r
}

/// The request as it leaves the gateway: XFCC as Envoy's SANITIZE_SET (what the client
/// sent is dropped; its certificate, if any, is set) and the route's rewrites.
fn rewrite(req: &mut Request<Incoming>, xfcc: Option<&HeaderValue>, f: &Forwarding) {
    req.headers_mut().remove(XFCC);
    if let Some(x) = xfcc {
        req.headers_mut().insert(XFCC, x.clone());
    }
    if let Some(p) = f
        .path
        .as_deref()
        .and_then(|p| p.parse::<http::uri::PathAndQuery>().ok())
    {
        let mut parts = req.uri().clone().into_parts();
        parts.path_and_query = Some(p);
        if let Ok(uri) = http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    if let Some(a) = f
        .authority
        .as_deref()
        .and_then(|a| HeaderValue::from_str(a).ok())
    {
        req.headers_mut().insert(HOST, a);
        if req.uri().authority().is_some() {
            let mut parts = req.uri().clone().into_parts();
            parts.authority = req
                .headers()
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .and_then(|h| h.parse().ok());
            if let Ok(uri) = http::Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
}

/// A downstream connection on a gateway server, as its requests see it.
pub(super) struct GatewayConn {
    pub chain: Arc<ServerChain>,
    pub peer: SocketAddr,
    /// The server port clients addressed.
    pub server_port: u16,
    pub scheme: &'static str,
    /// The XFCC element of a client certificate (MUTUAL).
    pub xfcc: Option<HeaderValue>,
    /// The gateway pod's address and port the client reached (AuthorizationPolicy's
    /// `destination.ip` and `ports`).
    pub local: std::net::IpAddr,
    pub pod_port: u16,
    /// The client certificate's SPIFFE identity, if it has one.
    pub principal: Option<String>,
    pub sni: Option<String>,
}

impl GatewayConn {
    /// The connection as an authorization decision reads it.
    pub fn authz_peer(&self) -> crate::authz::Peer<'_> {
        crate::authz::Peer {
            source: self.peer.ip(),
            remote: self.peer.ip(),
            identity: self.principal.as_deref(),
            local: self.local,
            port: self.pod_port,
            sni: self.sni.as_deref(),
        }
    }
}

/// One request on a gateway server: routed by its VirtualService table, answered here or
/// forwarded over the mesh.
pub(super) async fn request(
    shared: Arc<Shared>,
    conn: Arc<GatewayConn>,
    mut req: Request<Incoming>,
    clock: Arc<StreamClock>,
) -> Response<Body> {
    let (chain, peer, server_port, scheme) =
        (&conn.chain, conn.peer, conn.server_port, conn.scheme);
    let authority = l7::authority_of(&req).unwrap_or_default();
    let host = route::host_of(&authority);
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let method = req.method().to_string();
    let mut outcome = RequestResult::new(shared.telemetry.clone(), Direction::Inbound);
    outcome.describe(|| AccessLine {
        side: "gateway",
        src: Some(peer),
        server: Some(chain.name.clone()),
        authority: Some(authority.clone()),
        method: Some(method.clone()),
        path: Some(path.clone()),
        ..Default::default()
    });
    let view = RequestView {
        path: &path,
        query: query.as_deref(),
        method: &method,
        authority: &authority,
        scheme,
        headers: req.headers(),
        port: server_port,
    };
    let request = crate::authz::Request {
        method: req.method(),
        path: &path,
        host: &authority,
        headers: req.headers(),
    };
    let denied = crate::authz::decide(&shared, &conn.authz_peer(), Some(&request)).is_err();
    let routed = if denied {
        let body = crate::authz::DENIED_BODY.to_string();
        Routed::Answer(
            l7::answer(StatusCode::FORBIDDEN, "istio-envoy", body),
            "rbac_access_denied",
        )
    } else {
        route(chain, &view, &host, scheme)
    };
    let (resp, dst, flags) = match routed {
        Routed::Answer(resp, flags) => (resp, None, flags),
        Routed::Forward(Forwarding { service: None, .. }) => (
            l7::answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "istio-envoy",
                "no healthy upstream. reason: the route has no destination\n".into(),
            ),
            None,
            "",
        ),
        Routed::Forward(f) => {
            rewrite(&mut req, conn.xfcc.as_ref(), &f);
            let service = f.service.clone().unwrap_or_default();
            let resp = match shared.snapshot().upstream_named(&service).cloned() {
                None => l7::answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "istio-envoy",
                    format!("no healthy upstream. hop: gateway {} -> {service}; reason: {} routes to {service}, which is not a service port of the mesh (NC cluster_not_found)\n", shared.node_id(), f.source),
                ),
                Some(up) => {
                    let up = shared.with_endpoints(up).await;
                    forward(&shared, up, req, &f.action, peer, &clock).await
                }
            };
            (resp, Some(service), "")
        }
    };
    if let Some(line) = outcome.line_mut() {
        line.dst = dst;
        line.flags = flags;
    }
    outcome.answered(resp.status().as_u16());
    resp
}

/// Forwards to an upstream service: endpoints in round-robin order, a connect or TLS
/// failure retried on the next one up to the route's retry attempts, the route timeout
/// over the whole exchange (504 when it passes).
async fn forward(
    shared: &Shared,
    upstream: Arc<Upstream>,
    mut req: Request<Incoming>,
    action: &RouteAction,
    peer: SocketAddr,
    clock: &Arc<StreamClock>,
) -> Response<Body> {
    let RouteAction::Forward {
        timeout_ms,
        retries,
        ..
    } = action
    else {
        return empty(StatusCode::INTERNAL_SERVER_ERROR);
    };
    let flavor = if upstream.protocol == tessera_contract::config::PortProtocol::Http2 {
        Flavor::Http2
    } else {
        Flavor::Http1
    };
    l7::prepare(&mut req, flavor);
    let retry_connect = retries.retry_on.iter().any(|t| {
        matches!(
            t.as_str(),
            "connect-failure"
                | "reset"
                | "refused-stream"
                | "unavailable"
                | "5xx"
                | "gateway-error"
        )
    });
    let tries = if retry_connect {
        1 + retries.attempts as usize
    } else {
        1
    };
    let limits = shared.limits();
    let exchange = async {
        let upstream_started = Instant::now();
        let mut failures = Vec::new();
        for ep in upstream.pick_order().take(tries.max(1)) {
            let acquiring = shared.pools.acquire(ep, flavor, limits.upstream_idle);
            match shared
                .connect_unless_removed(&upstream.name, ep.address, acquiring)
                .await
            {
                Ok(sender) => {
                    return match shared.pools.send(sender, ep, req, clock).await {
                        Ok(resp) => l7::finish(resp, "istio-envoy", upstream_started),
                        Err(e) => {
                            shared
                                .telemetry
                                .metrics
                                .upstream_failed(ep.origination.used(), false);
                            failures.push((ep.clone(), e));
                            unavailable(shared, &upstream, &failures, "gateway", "istio-envoy")
                        }
                    };
                }
                Err(e) => {
                    shared
                        .telemetry
                        .metrics
                        .upstream_failed(ep.origination.used(), e.phase == Phase::TlsHandshake);
                    tracing::warn!(direction = "gateway", src = %peer, dst = %upstream.name, endpoint = %ep.address, tls = ep.origination.used().label(), phase = e.phase.label(), reason = %e.reason, "upstream failed");
                    failures.push((ep.clone(), e));
                }
            }
        }
        unavailable(shared, &upstream, &failures, "gateway", "istio-envoy")
    };
    match timeout_ms {
        Some(ms) => match tokio::time::timeout(Duration::from_millis(*ms), exchange).await {
            Ok(r) => r,
            Err(_) => l7::answer(
                StatusCode::GATEWAY_TIMEOUT,
                "istio-envoy",
                "upstream request timeout".into(),
            ),
        },
        None => exchange.await,
    }
}
