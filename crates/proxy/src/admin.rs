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
        "/config_dump" => reply(
            StatusCode::OK,
            "application/json",
            serde_json::to_string_pretty(&config_dump(shared)).unwrap_or_default(),
        ),
        "/stats/prometheus" | "/stats" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            shared.stats.prometheus(),
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
            "admin: /certs /config_dump /stats/prometheus /ready\n".into(),
        ),
    }
}

fn details(row: &CertRow, name: &str) -> Value {
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
        "path": "<inline>",
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
        .map(|row| vec![details(&row, "default")])
        .unwrap_or_default();
    let cas: Vec<Value> = bundle
        .roots()
        .iter()
        .filter_map(|der| describe_der(der, now).ok())
        .map(|row| details(&row, "ROOTCA"))
        .collect();
    json!({"certificates": [{"ca_cert": cas, "cert_chain": chain}]})
}

fn config_dump(shared: &Shared) -> Value {
    let snap = shared.snapshot();
    json!({
        "version": snap.config.version,
        "identity": snap.identity.to_string(),
        "last_rejected": shared.last_rejected(),
        "control_plane": shared.push_status(),
        "config": snap.config,
        "certificate": shared.store.credentials().describe(),
    })
}
