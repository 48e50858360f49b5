//! L7: forwarding requests (inbound to the app, outbound to an endpoint), the
//! X-Forwarded-Client-Cert header, and error answers that name the hop, phase and reason.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, HOST, SERVER};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use sha2::{Digest, Sha256};
use x509_parser::prelude::*;

use crate::snapshot::{EndpointRoute, Flavor, Upstream};
use crate::stats::{Direction, TlsUsed};
use crate::upstream::{Phase, UpstreamError};
use crate::Shared;

pub type Body = Either<Incoming, Full<Bytes>>;

pub const XFCC: &str = "x-forwarded-client-cert";

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    // Headers named in `Connection` are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for h in HOP_BY_HOP {
        headers.remove(*h);
    }
}

/// One XFCC element for a mesh mTLS peer, as Envoy's APPEND_FORWARD with Subject, URI and
/// DNS details: `By=<own URI>;Hash=<sha256 of the peer leaf>;Subject="<RFC 2253>";URI=<peer
/// URI>[;DNS=<peer DNS>]`.
pub fn xfcc_element(own_uris: &[String], peer_leaf_der: &[u8]) -> String {
    let mut out = String::new();
    for by in own_uris {
        out.push_str("By=");
        out.push_str(by);
        out.push(';');
    }
    out.push_str("Hash=");
    for b in Sha256::digest(peer_leaf_der) {
        out.push_str(&format!("{b:02x}"));
    }
    let (subject, uris, dns) = match parse_x509_certificate(peer_leaf_der) {
        Ok((_, cert)) => {
            let mut uris = Vec::new();
            let mut dns = Vec::new();
            if let Ok(Some(san)) = cert.subject_alternative_name() {
                for name in &san.value.general_names {
                    match name {
                        GeneralName::URI(u) => uris.push(u.to_string()),
                        GeneralName::DNSName(d) => dns.push(d.to_string()),
                        _ => {}
                    }
                }
            }
            (tessera_ca::inspect::rfc2253(cert.subject()), uris, dns)
        }
        Err(_) => (String::new(), Vec::new(), Vec::new()),
    };
    out.push_str(&format!(";Subject=\"{subject}\""));
    if uris.is_empty() {
        out.push_str(";URI=");
    }
    for u in &uris {
        out.push_str(";URI=");
        out.push_str(u);
    }
    for d in &dns {
        out.push_str(";DNS=");
        out.push_str(d);
    }
    out
}

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
    pub fn record_pending_edge(
        &self,
        edges: &crate::edges::Edges,
        refused: Option<crate::chain::Refusal>,
    ) {
        if !self
            .edge_pending
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        let edge = crate::edges::Connection::inbound(self.peer, self.port, self.tls);
        match refused {
            Some(r) => edges.record(edge.failed(r.label()), || r.explain().to_string()),
            None => edges.record(edge, || self.accepted_by.clone()),
        }
    }
}

/// A text answer from the proxy itself.
pub fn answer(code: StatusCode, server: &'static str, body: String) -> Response<Body> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *resp.status_mut() = code;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    h.insert(SERVER, HeaderValue::from_static(server));
    resp
}

/// The request's authority: `:authority` (HTTP/2, absolute-form) or the Host header.
pub(crate) fn authority_of<B>(req: &Request<B>) -> Option<String> {
    req.uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers()
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
}

/// Forms the request for the upstream's HTTP version: origin-form with Host for HTTP/1.1,
/// absolute-form (`:authority`) for HTTP/2.
pub(crate) fn prepare(req: &mut Request<Incoming>, flavor: Flavor) {
    strip_hop_by_hop(req.headers_mut());
    let authority = authority_of(req);
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    match flavor {
        Flavor::Http2 => {
            if let Some(a) = &authority {
                if let Ok(uri) = Uri::builder()
                    .scheme("http")
                    .authority(a.as_str())
                    .path_and_query(path)
                    .build()
                {
                    *req.uri_mut() = uri;
                }
            }
            req.headers_mut().remove(HOST);
            *req.version_mut() = Version::HTTP_2;
        }
        _ => {
            if let Some(a) = authority {
                if !req.headers().contains_key(HOST) {
                    if let Ok(v) = HeaderValue::from_str(&a) {
                        req.headers_mut().insert(HOST, v);
                    }
                }
            }
            if let Ok(uri) = path.parse() {
                *req.uri_mut() = uri;
            }
            *req.version_mut() = Version::HTTP_11;
        }
    }
}

/// The upstream's answer as the proxy returns it: its own `server` header and Envoy's
/// `x-envoy-upstream-service-time` (milliseconds the upstream took).
pub(crate) fn finish(
    mut resp: Response<Incoming>,
    server: &'static str,
    upstream_started: Instant,
) -> Response<Body> {
    strip_hop_by_hop(resp.headers_mut());
    let h = resp.headers_mut();
    if server == "envoy" {
        // A client sidecar does not pass the server side's tracing decorator on (SCI-02).
        h.remove("x-envoy-decorator-operation");
    }
    h.insert(SERVER, HeaderValue::from_static(server));
    h.insert(
        UPSTREAM_SERVICE_TIME,
        HeaderValue::from(upstream_started.elapsed().as_millis() as u64),
    );
    resp.map(Either::Left)
}

const UPSTREAM_SERVICE_TIME: &str = "x-envoy-upstream-service-time";

/// Inbound: the request goes to the app, XFCC set for mesh peers and stripped otherwise.
pub async fn inbound(
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

/// Outbound: round-robin over the endpoints; a connect or TLS failure tries the next one,
/// and when none answers, a 503 that says where and why.
pub async fn outbound(
    shared: Arc<Shared>,
    upstream: Arc<Upstream>,
    src: SocketAddr,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    // SANITIZE: an XFCC the app set never leaves the pod.
    req.headers_mut().remove(XFCC);
    let flavor = if upstream.protocol == tessera_contract::config::PortProtocol::Http2 {
        Flavor::Http2
    } else {
        Flavor::Http1
    };
    prepare(&mut req, flavor);
    let mut failures: Vec<(Arc<EndpointRoute>, UpstreamError)> = Vec::new();
    let mut chosen = None;
    let upstream_started = Instant::now();
    for ep in upstream.pick_order() {
        match shared.pools.acquire(ep, flavor).await {
            Ok(sender) => {
                chosen = Some((ep.clone(), sender));
                break;
            }
            Err(e) => {
                shared.stats.upstream_failure();
                if e.phase == Phase::TlsHandshake {
                    shared
                        .stats
                        .handshake(Direction::Outbound, ep.origination.used(), false);
                }
                failures.push((ep.clone(), e));
            }
        }
    }
    let (resp, endpoint, tls) = match chosen {
        Some((ep, sender)) => match shared.pools.send(sender, &ep, req).await {
            Ok(resp) => (
                finish(resp, "envoy", upstream_started),
                Some(ep.address),
                ep.origination.used(),
            ),
            Err(e) => {
                shared.stats.upstream_failure();
                let tls = ep.origination.used();
                failures.push((ep.clone(), e));
                (
                    unavailable(&shared, &upstream, &failures, "outbound", "envoy"),
                    Some(ep.address),
                    tls,
                )
            }
        },
        None => (
            unavailable(&shared, &upstream, &failures, "outbound", "envoy"),
            failures.last().map(|(ep, _)| ep.address),
            failures
                .last()
                .map_or(TlsUsed::Plaintext, |(ep, _)| ep.origination.used()),
        ),
    };
    shared
        .stats
        .request(Direction::Outbound, resp.status().as_u16());
    for (ep, e) in &failures {
        tracing::warn!(direction = "outbound", src = %src, dst = %upstream.name, endpoint = %ep.address, tls = ep.origination.used().label(), phase = e.phase.label(), reason = %e.reason, "upstream failed");
    }
    if shared.access_log() {
        tracing::info!(
            target: "tessera::access",
            direction = "outbound",
            src = %src,
            src_identity = %shared.identity(),
            dst = %upstream.name,
            endpoint = %endpoint.map_or("-".to_string(), |a| a.to_string()),
            tls = tls.label(),
            method = %method,
            path = %path,
            code = resp.status().as_u16(),
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        );
    }
    Ok(resp)
}

/// The 503 when no endpoint answered: each attempt's hop, TLS, phase and reason.
/// `hop` names this proxy's side (`outbound`, `gateway`), `server` its `server` header.
pub(crate) fn unavailable(
    shared: &Shared,
    upstream: &Upstream,
    failures: &[(Arc<EndpointRoute>, UpstreamError)],
    hop: &str,
    server: &'static str,
) -> Response<Body> {
    if failures.is_empty() {
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            server,
            format!(
                "no healthy upstream. hop: {hop} {} -> {}; reason: the service has no endpoints\n",
                shared.node_id(),
                upstream.name
            ),
        );
    }
    let mut body = String::from("upstream connect error or disconnect/reset before headers.");
    for (ep, e) in failures {
        let tls = match ep.origination.used() {
            TlsUsed::Mesh => "mesh mTLS (ISTIO_MUTUAL)",
            TlsUsed::Simple => "TLS (SIMPLE)",
            TlsUsed::Mutual => "mutual TLS (MUTUAL)",
            _ => "plaintext",
        };
        let why = if ep.reason.is_empty() {
            String::new()
        } else {
            format!(", because {}", ep.reason)
        };
        body.push_str(&format!(
            " hop: {hop} {} -> {} endpoint {}{} using {tls}{why}; phase: {}; reason: {}.",
            shared.node_id(),
            upstream.name,
            ep.address,
            ep.workload
                .as_deref()
                .map_or(String::new(), |w| format!(" ({w})")),
            e.phase.label(),
            e.reason
        ));
    }
    body.push('\n');
    answer(StatusCode::SERVICE_UNAVAILABLE, server, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_ca::{Authority, KeyAlgorithm, SpiffeId};

    #[test]
    fn xfcc_for_a_mesh_peer_is_istios() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _) = Authority::init(dir.path()).unwrap();
        let sleep = SpiffeId::new("cluster.local", "full", "sleep").unwrap();
        let (_, chain) = ca.issue(&sleep, None, KeyAlgorithm::EcdsaP256).unwrap();
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(chain.leaf_pem.as_bytes())
            .map(|d: rustls_pki_types::CertificateDer<'static>| d.to_vec())
            .unwrap();
        let got = xfcc_element(&["spiffe://cluster.local/ns/full/sa/httpbin".into()], &der);
        let hash: String = Sha256::digest(&der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            got,
            format!("By=spiffe://cluster.local/ns/full/sa/httpbin;Hash={hash};Subject=\"\";URI=spiffe://cluster.local/ns/full/sa/sleep")
        );
        assert_eq!(hash.len(), 64);
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }
}
