//! Outbound HTTP: round robin over the endpoints; a connect or TLS failure tries the next
//! one, and when none answers, a 503 that says where and why.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::config::{EndpointRoute, Flavor, Upstream};
use crate::connect::{Phase, UpstreamError};
use crate::http::{answer, finish, prepare, Body, XFCC};
use crate::limits::body::StreamClock;
use crate::shared::Shared;
use crate::telemetry::access_log::AccessLine;
use crate::telemetry::{Direction, RequestResult, TlsUsed};

/// Outbound: round-robin over the endpoints; a connect or TLS failure tries the next one,
/// and when none answers, a 503 that says where and why.
pub async fn request(
    shared: Arc<Shared>,
    upstream: Arc<Upstream>,
    src: SocketAddr,
    mut req: Request<Incoming>,
    clock: Arc<StreamClock>,
) -> Response<Body> {
    let upstream = shared.with_endpoints(upstream).await;
    let limits = shared.limits();
    let mut outcome = RequestResult::new(shared.telemetry.clone(), Direction::Outbound);
    outcome.describe(|| AccessLine {
        side: "outbound",
        src: Some(src),
        src_identity: Some(shared.identity()),
        dst: Some(upstream.name.clone()),
        method: Some(req.method().to_string()),
        path: Some(req.uri().path().to_string()),
        ..Default::default()
    });
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
        let acquiring = shared.pools.acquire(ep, flavor, limits.upstream_idle);
        match shared
            .connect_unless_removed(&upstream.name, ep.address, acquiring)
            .await
        {
            Ok(sender) => {
                chosen = Some((ep.clone(), sender));
                break;
            }
            Err(e) => {
                shared
                    .telemetry
                    .metrics
                    .upstream_failed(ep.origination.used(), e.phase == Phase::TlsHandshake);
                failures.push((ep.clone(), e));
            }
        }
    }
    let (resp, endpoint, tls) = match chosen {
        Some((ep, sender)) => match shared.pools.send(sender, &ep, req, &clock).await {
            Ok(resp) => (
                finish(resp, "envoy", upstream_started),
                Some(ep.address),
                ep.origination.used(),
            ),
            Err(e) => {
                let tls = ep.origination.used();
                shared.telemetry.metrics.upstream_failed(tls, false);
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
    for (ep, e) in &failures {
        tracing::warn!(direction = "outbound", src = %src, dst = %upstream.name, endpoint = %ep.address, tls = ep.origination.used().label(), phase = e.phase.label(), reason = %e.reason, "upstream failed");
    }
    if let Some(line) = outcome.line_mut() {
        line.endpoint = endpoint;
        line.tls = Some(tls);
    }
    outcome.answered(resp.status().as_u16());
    resp
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
    if let Some(code) = failures.last().and_then(|(_, e)| e.stream_idle_status()) {
        return answer(code, server, "stream timeout\n".into());
    }
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
