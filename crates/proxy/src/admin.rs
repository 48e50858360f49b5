//! The admin endpoint (127.0.0.1:15000 by default): `/certs`, `/config_dump`,
//! `/stats/prometheus`, `/ready`. Shapes follow Envoy's where tools expect them.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tessera_ca::inspect::{describe_der, rfc3339, CertRow};
use tokio::net::TcpListener;

use crate::Shared;

pub async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, std::convert::Infallible>(route(&shared, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

fn reply(code: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn route(shared: &Shared, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/certs" => reply(
            StatusCode::OK,
            "application/json",
            serde_json::to_string_pretty(&certs(shared)).unwrap_or_default(),
        ),
        "/secrets" => reply(
            StatusCode::OK,
            "application/json",
            serde_json::to_string_pretty(&secrets(shared)).unwrap_or_default(),
        ),
        "/config_dump" => reply(
            StatusCode::OK,
            "application/json",
            serde_json::to_string_pretty(&config_dump(shared)).unwrap_or_default(),
        ),
        "/edges" => reply(
            StatusCode::OK,
            "application/json",
            serde_json::to_string_pretty(
                &shared
                    .telemetry
                    .edges
                    .report(shared.node_id(), shared.identity()),
            )
            .unwrap_or_default(),
        ),
        "/stats/prometheus" | "/stats" => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            shared.telemetry.metrics.render(),
        ),
        "/ready" | "/healthz/ready" => {
            if shared.is_draining() {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "DRAINING\n".into(),
                )
            } else if !shared.is_synced() {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "NOT SYNCED: waiting for the first configuration from the control plane\n"
                        .into(),
                )
            } else {
                reply(StatusCode::OK, "text/plain", "LIVE\n".into())
            }
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "admin: /certs /secrets /config_dump /stats/prometheus /ready\n".into(),
        ),
    }
}

fn details(row: &CertRow, name: &str, path: &str) -> Value {
    let sans: Vec<Value> = row
        .sans
        .iter()
        .map(|s| match s.split_once(':') {
            Some(("URI", v)) => json!({"uri": v}),
            Some(("DNS", v)) => json!({"dns": v}),
            Some(("IP", v)) => json!({"ip_address": v}),
            _ => json!({"other": s}),
        })
        .collect();
    // Envoy prints the serial in hex.
    let serial_hex = row
        .serial
        .parse::<u128>()
        .map(|n| format!("{n:x}"))
        .unwrap_or_else(|_| row.serial.clone());
    json!({
        "name": name,
        "path": path,
        "serial_number": serial_hex,
        "subject_alt_names": sans,
        "days_until_expiration": row.days_left.max(0).to_string(),
        "valid_from": rfc3339(row.not_before),
        "expiration_time": rfc3339(row.not_after),
    })
}

/// Envoy's `/certs` shape, with Istio's SDS resource names (`default`, `ROOTCA`).
pub fn certs(shared: &Shared) -> Value {
    let now = time::OffsetDateTime::now_utc();
    let creds = shared.store.credentials();
    let bundle = shared.store.trust_bundle();
    let chain: Vec<Value> = creds
        .chain
        .first()
        .and_then(|leaf| describe_der(leaf, now).ok())
        .map(|row| vec![details(&row, "default", "<inline>")])
        .unwrap_or_default();
    let cas: Vec<Value> = bundle
        .roots()
        .iter()
        .filter_map(|der| describe_der(der, now).ok())
        .map(|row| details(&row, "ROOTCA", "<inline>"))
        .collect();
    let mut contexts = vec![json!({"ca_cert": cas, "cert_chain": chain})];
    // One context per user certificate (Gateway servers, Sidecar ingress TLS).
    for s in &shared.snapshot().secrets_in_use {
        let Some(row) = s.certs.first().and_then(|c| describe_der(c, now).ok()) else {
            continue;
        };
        let path = s
            .name
            .strip_prefix("file-cert:")
            .and_then(|p| p.split('~').next())
            .or_else(|| s.name.strip_prefix("file-root:"))
            .unwrap_or("<inline>");
        let entry = details(&row, &s.name, path);
        contexts.push(if s.is_ca {
            json!({"ca_cert": [entry], "cert_chain": []})
        } else {
            json!({"ca_cert": [], "cert_chain": [entry]})
        });
    }
    json!({"certificates": contexts})
}

/// One row of `proxy-config secret` (istioctl's columns; serials in decimal as the
/// seeds show them).
fn secret_row(name: &str, der: Option<&[u8]>, warming: Option<&str>) -> Value {
    let now = time::OffsetDateTime::now_utc();
    match (der.and_then(|d| describe_der(d, now).ok()), warming) {
        (Some(row), None) => json!({
            "name": name,
            "type": if row.kind == tessera_ca::inspect::CertKind::Ca { "CA" } else { "Cert Chain" },
            "status": "ACTIVE",
            "valid": row.is_valid_at(now),
            "serial": row.serial,
            "notAfter": rfc3339(row.not_after),
            "notBefore": rfc3339(row.not_before),
        }),
        (_, why) => json!({
            "name": name,
            "type": "Cert Chain",
            "status": "WARMING",
            "valid": false,
            "serial": "",
            "notAfter": "",
            "notBefore": "",
            "reason": why.unwrap_or("unreadable certificate"),
        }),
    }
}

/// Every secret the proxy serves or waits for: user key pairs, the workload certificate
/// (`default`), the mesh roots (`ROOTCA`), then user CA bundles.
pub fn secrets(shared: &Shared) -> Value {
    let snap = shared.snapshot();
    let creds = shared.store.credentials();
    let bundle = shared.store.trust_bundle();
    let user = |ca: bool| {
        snap.secrets_in_use
            .iter()
            .filter(move |s| s.is_ca == ca)
            .map(|s| {
                secret_row(
                    &s.name,
                    s.certs.first().map(|c| c.as_ref()),
                    s.warming.as_deref(),
                )
            })
    };
    let mut rows: Vec<Value> = user(false).collect();
    rows.push(secret_row(
        "default",
        creds.chain.first().map(|c| c.as_ref()),
        None,
    ));
    rows.push(secret_row(
        "ROOTCA",
        bundle.roots().first().map(|c| c.as_ref()),
        None,
    ));
    rows.extend(user(true));
    Value::Array(rows)
}

fn config_dump(shared: &Shared) -> Value {
    let snap = shared.snapshot();
    let mut config = snap.config.clone();
    for s in &mut config.secrets {
        if s.private_key.is_some() {
            s.private_key = Some("[redacted]".into());
        }
    }
    json!({
        "version": snap.config.version,
        "identity": snap.identity.to_string(),
        "last_rejected": shared.last_rejected(),
        "control_plane": shared.push_status(),
        "config": config,
        "certificate": shared.store.credentials().describe(),
    })
}
