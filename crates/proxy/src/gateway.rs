//! Gateway mode: a listener per gateway pod port. A connection's first bytes choose the
//! filter chain (Envoy's order: exact SNI, then the longest `*.suffix`, then a chain
//! without names; plaintext goes to the port's HTTP server), then TLS is terminated with
//! the server's certificate, passed through by SNI, or not used; HTTP is routed by the
//! server's VirtualService table and forwarded over the mesh (auto mTLS per endpoint).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, HOST, LOCATION};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tessera_contract::config::{GatewayListener, RouteAction, ServerKind};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::chain::Refusal;
use crate::conn::{accept_user_tls, read_detect, reset_connection};
use crate::detect::Detected;
use crate::http::{self as l7, Body, XFCC};
use crate::io::Prefixed;
use crate::route::{self, CompiledVhost, RequestView};
use crate::snapshot::{Flavor, Upstream};
use crate::stats::Direction;
use crate::terminate::{self, Material, SecretInUse, Termination};
use crate::Shared;

/// One server (filter chain) of a gateway listener, ready to serve.
#[derive(Debug)]
pub struct ServerChain {
    pub name: String,
    pub source: String,
    pub kind: ServerKind,
    pub server_names: Vec<String>,
    pub termination: Option<Termination>,
    pub vhosts: Vec<CompiledVhost>,
    pub l4: Vec<tessera_contract::config::L4Route>,
}

/// A gateway listener's chains.
#[derive(Debug)]
pub struct GatewayTable {
    pub port: u16,
    pub server_port: u16,
    pub chains: Vec<Arc<ServerChain>>,
}

impl GatewayTable {
    pub fn build(
        l: &GatewayListener,
        material: &Material<'_>,
        used: &mut Vec<SecretInUse>,
    ) -> Result<GatewayTable, String> {
        let chains = l
            .servers
            .iter()
            .map(|s| {
                let alpn: &[&[u8]] = match s.kind {
                    ServerKind::TerminateHttp => terminate::ALPN_HTTP,
                    _ => &[],
                };
                Ok(Arc::new(ServerChain {
                    name: s.name.clone(),
                    source: s.source.clone(),
                    kind: s.kind,
                    server_names: s.server_names.clone(),
                    termination: s
                        .tls
                        .as_ref()
                        .map(|t| terminate::build(t, material, alpn, used)),
                    vhosts: route::compile(&s.virtual_hosts)?,
                    l4: s.l4_routes.clone(),
                }))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(GatewayTable {
            port: l.port,
            server_port: l.server_port,
            chains,
        })
    }

    /// The chain for a TLS connection with `sni`.
    pub fn tls_chain(&self, sni: Option<&str>) -> Option<&Arc<ServerChain>> {
        let tls = self
            .chains
            .iter()
            .filter(|c| c.kind != ServerKind::Http && c.kind != ServerKind::Tcp);
        if let Some(sni) = sni.map(str::to_ascii_lowercase) {
            if let Some(c) = tls.clone().find(|c| c.server_names.contains(&sni)) {
                return Some(c);
            }
            let wildcard = tls
                .clone()
                .filter_map(|c| {
                    c.server_names
                        .iter()
                        .filter_map(|n| n.strip_prefix('*'))
                        .filter(|suffix| sni.ends_with(suffix) && sni.len() > suffix.len())
                        .map(str::len)
                        .max()
                        .map(|len| (len, c))
                })
                .max_by_key(|(len, _)| *len);
            if let Some((_, c)) = wildcard {
                return Some(c);
            }
        }
        tls.clone().find(|c| c.server_names.is_empty())
    }

    fn plain_chain(&self, kind: ServerKind) -> Option<&Arc<ServerChain>> {
        self.chains.iter().find(|c| c.kind == kind)
    }
}

static DRAW: AtomicU64 = AtomicU64::new(0);

/// A connection on gateway pod port `port`.
pub async fn serve(shared: Arc<Shared>, mut tcp: TcpStream, peer: SocketAddr, port: u16) {
    let started = Instant::now();
    let guard_owner = shared.clone();
    let _active = guard_owner.stats.connection(Direction::Inbound);
    let Some(table) = shared.snapshot().gateway_table(port) else {
        tracing::warn!(direction = "gateway", src = %peer, port, "no Gateway server on this port; closed");
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
        shared.stats.refusal(Refusal::NoTlsChain);
        tracing::warn!(direction = "gateway", src = %peer, port, sni = sni.as_deref().unwrap_or("-"), tls = matches!(detected, Detected::Tls(_)), reason = Refusal::NoTlsChain.explain(), "connection refused (reset): filter_chain_not_found");
        reset_connection(tcp);
        return;
    };
    let server_port = table.server_port;
    match chain.kind {
        ServerKind::Http => {
            serve_http(
                shared,
                Prefixed::new(prefix, tcp),
                peer,
                chain,
                server_port,
                "http",
                None,
            )
            .await
        }
        ServerKind::Tcp => forward_l4(shared, tcp, prefix, peer, &chain, None, started).await,
        ServerKind::Passthrough => {
            forward_l4(shared, tcp, prefix, peer, &chain, sni.as_deref(), started).await
        }
        ServerKind::TerminateHttp | ServerKind::TerminateTcp => {
            let Some(termination) = chain.termination.clone() else {
                reset_connection(tcp);
                return;
            };
            let Some(tls) = accept_user_tls(&shared, &termination, prefix, tcp, peer, port).await
            else {
                return;
            };
            let leaf = crate::conn::peer_leaf(&tls);
            if chain.kind == ServerKind::TerminateHttp {
                let own: Vec<String> = Vec::new();
                let xfcc = leaf
                    .as_deref()
                    .and_then(|der| HeaderValue::from_str(&l7::xfcc_element(&own, der)).ok());
                serve_http(shared, tls, peer, chain, server_port, "https", xfcc).await
            } else {
                forward_l4(shared, tls, Bytes::new(), peer, &chain, None, started).await
            }
        }
    }
}

async fn serve_http<S>(
    shared: Arc<Shared>,
    io: S,
    peer: SocketAddr,
    chain: Arc<ServerChain>,
    server_port: u16,
    scheme: &'static str,
    xfcc: Option<HeaderValue>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc_shared = shared.clone();
    let svc = service_fn(move |req| {
        request(
            svc_shared.clone(),
            chain.clone(),
            peer,
            server_port,
            scheme,
            xfcc.clone(),
            req,
        )
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let served = builder.serve_connection(TokioIo::new(io), svc);
    let _ = shared
        .serve_graceful(served, std::future::pending::<()>())
        .await;
}

fn empty(code: StatusCode) -> Response<Body> {
    let mut resp = l7::answer(code, "istio-envoy", String::new());
    resp.headers_mut().remove(http::header::CONTENT_TYPE);
    resp
}

async fn request(
    shared: Arc<Shared>,
    chain: Arc<ServerChain>,
    peer: SocketAddr,
    server_port: u16,
    scheme: &'static str,
    xfcc: Option<HeaderValue>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let started = Instant::now();
    let authority = l7::authority_of(&req).unwrap_or_default();
    let host = route::host_of(&authority);
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let method = req.method().to_string();
    let (resp, routed, flag) = {
        let view = RequestView {
            path: &path,
            query: query.as_deref(),
            method: &method,
            authority: &authority,
            scheme,
            headers: req.headers(),
            port: server_port,
        };
        match route::find_vhost(&chain.vhosts, &host) {
            None => (
                Some(empty(StatusCode::NOT_FOUND)),
                None,
                "NR route_not_found",
            ),
            Some(vh) if vh.https_redirect && scheme == "http" => {
                let mut r = empty(StatusCode::MOVED_PERMANENTLY);
                if let Ok(v) = HeaderValue::from_str(&route::redirect_location(
                    &view,
                    &host,
                    None,
                    None,
                    Some("https"),
                    None,
                )) {
                    r.headers_mut().insert(LOCATION, v);
                }
                (Some(r), None, "https_redirect")
            }
            Some(vh) => match route::find_rule(vh, &view) {
                None => (
                    Some(empty(StatusCode::NOT_FOUND)),
                    None,
                    "NR route_not_found",
                ),
                Some((rule, matched)) => match &rule.action {
                    RouteAction::Redirect {
                        uri,
                        authority: a,
                        scheme: s,
                        port,
                        code,
                    } => {
                        let mut r = empty(
                            StatusCode::from_u16(*code).unwrap_or(StatusCode::MOVED_PERMANENTLY),
                        );
                        let loc = route::redirect_location(
                            &view,
                            &host,
                            uri.as_deref(),
                            a.as_deref(),
                            s.as_deref(),
                            *port,
                        );
                        if let Ok(v) = HeaderValue::from_str(&loc) {
                            r.headers_mut().insert(LOCATION, v);
                        }
                        (Some(r), None, "redirect")
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
                        (Some(r), None, "direct_response")
                    }
                    RouteAction::Forward {
                        destinations,
                        rewrite_uri,
                        rewrite_authority,
                        ..
                    } => {
                        let pick = route::pick(destinations, DRAW.fetch_add(1, Ordering::Relaxed));
                        let new_path = rewrite_uri
                            .as_deref()
                            .map(|to| route::rewrite_path(&path, query.as_deref(), matched, to));
                        (
                            None,
                            pick.map(|i| {
                                (
                                    destinations[i].service.clone(),
                                    new_path,
                                    rewrite_authority.clone(),
                                    rule.source.clone(),
                                    rule.action.clone(),
                                )
                            }),
                            "",
                        )
                    }
                },
            },
        }
    };
    let (resp, dst) = match (resp, routed) {
        (Some(r), _) => (r, String::from("-")),
        (None, None) => (
            l7::answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "istio-envoy",
                "no healthy upstream. reason: the route has no destination\n".into(),
            ),
            String::from("-"),
        ),
        (None, Some((service, new_path, new_authority, source, action))) => {
            // SANITIZE_SET: what the client sent is dropped; its certificate, if any, is set.
            req.headers_mut().remove(XFCC);
            if let Some(x) = &xfcc {
                req.headers_mut().insert(XFCC, x.clone());
            }
            if let Some(p) = new_path.and_then(|p| p.parse::<http::uri::PathAndQuery>().ok()) {
                let mut parts = req.uri().clone().into_parts();
                parts.path_and_query = Some(p);
                if let Ok(uri) = http::Uri::from_parts(parts) {
                    *req.uri_mut() = uri;
                }
            }
            if let Some(a) = new_authority.and_then(|a| HeaderValue::from_str(&a).ok()) {
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
            let upstream = shared.snapshot().upstream_named(&service).cloned();
            let resp = match upstream {
                None => l7::answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "istio-envoy",
                    format!("no healthy upstream. hop: gateway {} -> {service}; reason: {source} routes to {service}, which is not a service port of the mesh (NC cluster_not_found)\n", shared.node_id()),
                ),
                Some(up) => forward(&shared, up, req, &action, peer).await,
            };
            (resp, service)
        }
    };
    shared
        .stats
        .request(Direction::Inbound, resp.status().as_u16());
    if shared.access_log() {
        tracing::info!(
            target: "tessera::access",
            direction = "gateway",
            src = %peer,
            server = %chain.name,
            authority = %authority,
            method = %method,
            path = %path,
            dst = %dst,
            code = resp.status().as_u16(),
            flags = flag,
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        );
    }
    Ok(resp)
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
    let exchange = async {
        let upstream_started = Instant::now();
        let mut failures = Vec::new();
        for ep in upstream.pick_order().take(tries.max(1)) {
            match shared.pools.acquire(ep, flavor).await {
                Ok(sender) => {
                    return match shared.pools.send(sender, ep, req).await {
                        Ok(resp) => l7::finish(resp, "istio-envoy", upstream_started),
                        Err(e) => {
                            shared.stats.upstream_failure();
                            failures.push((ep.clone(), e));
                            l7::unavailable(shared, &upstream, &failures, "gateway", "istio-envoy")
                        }
                    };
                }
                Err(e) => {
                    shared.stats.upstream_failure();
                    if e.phase == crate::upstream::Phase::TlsHandshake {
                        shared
                            .stats
                            .handshake(Direction::Outbound, ep.origination.used(), false);
                    }
                    tracing::warn!(direction = "gateway", src = %peer, dst = %upstream.name, endpoint = %ep.address, tls = ep.origination.used().label(), phase = e.phase.label(), reason = %e.reason, "upstream failed");
                    failures.push((ep.clone(), e));
                }
            }
        }
        l7::unavailable(shared, &upstream, &failures, "gateway", "istio-envoy")
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

/// L4 at a gateway: the route (by SNI for passthrough), then the bytes to a destination
/// endpoint with the TLS the mesh decided for it.
async fn forward_l4<D>(
    shared: Arc<Shared>,
    down: D,
    prefix: Bytes,
    peer: SocketAddr,
    chain: &ServerChain,
    sni: Option<&str>,
    started: Instant,
) where
    D: AsyncRead + AsyncWrite + Unpin,
{
    let route = chain.l4.iter().find(|r| match sni {
        Some(sni) => r
            .sni_hosts
            .iter()
            .any(|h| crate::gateway::sni_matches(h, sni)),
        None => true,
    });
    let Some(dest) = route.and_then(|r| {
        let i = route::pick(&r.destinations, DRAW.fetch_add(1, Ordering::Relaxed))?;
        r.destinations.get(i)
    }) else {
        tracing::warn!(direction = "gateway", src = %peer, server = %chain.name, sni = sni.unwrap_or("-"), "no route for this connection; closed");
        return;
    };
    let Some(upstream) = shared.snapshot().upstream_named(&dest.service).cloned() else {
        tracing::warn!(direction = "gateway", src = %peer, dst = %dest.service, "the route's destination is not a service port of the mesh; closed");
        return;
    };
    crate::conn::forward_tcp(shared, down, peer, &upstream, prefix, started).await;
}

/// `*.example.com` covers `a.example.com`; exact names compare case-insensitively.
pub fn sni_matches(pattern: &str, sni: &str) -> bool {
    let sni = sni.to_ascii_lowercase();
    match pattern.strip_prefix('*') {
        Some(suffix) => sni.ends_with(suffix) && sni.len() > suffix.len(),
        None => pattern.eq_ignore_ascii_case(&sni),
    }
}
