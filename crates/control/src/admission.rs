//! The admission webhooks over HTTPS, as istiod serves them: `POST /inject` (mutating:
//! sidecar injection answered as a JSON patch) and `POST /validate`, each an
//! `admission.k8s.io/v1` AdmissionReview answered by [`crate::webhook`] with the
//! namespace labels of the store. The serving certificate is made by the mesh CA at each
//! start, for `istiod.istio-system.svc` and the bound address; the mesh root is the
//! `caBundle` a webhook configuration names (written to `<state-dir>/webhook/ca-bundle.pem`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tessera_model::{Kind, LoadOptions, ObjectKey};
use tokio::net::TcpListener;

use crate::state::ControlState;

/// The DNS names of the serving certificate (istiod's service).
pub const SERVICE_NAMES: &[&str] = &[
    "istiod.istio-system.svc",
    "istiod.istio-system.svc.cluster.local",
];

/// An AdmissionReview is small; the API server sends at most a few MB.
const MAX_REVIEW_BYTES: usize = 8 << 20;
const MAX_CONNECTIONS: usize = 256;

/// The TLS configuration for serving at `bound`, and the CA bundle that verifies it.
pub fn tls(
    control: &ControlState,
    bound: SocketAddr,
) -> Result<(rustls::ServerConfig, String), String> {
    let authority = &control.issuer().authority;
    let (key_pem, chain) = authority
        .serving_certificate(SERVICE_NAMES, &[bound.ip()])
        .map_err(|e| e.to_string())?;
    let certs = rustls_pki_types::pem::PemObject::pem_slice_iter(chain.chain_pem().as_bytes())
        .collect::<Result<Vec<rustls_pki_types::CertificateDer<'static>>, _>>()
        .map_err(|e| format!("{e:?}"))?;
    let key =
        <rustls_pki_types::PrivateKeyDer as rustls_pki_types::pem::PemObject>::from_pem_slice(
            key_pem.as_bytes(),
        )
        .map_err(|e| format!("{e:?}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(tessera_ca::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((config, authority.root_bundle().to_string()))
}

/// The answer to one request: the AdmissionReview's, or an error status with why.
fn answer(control: &ControlState, path: &str, review: &Value) -> (StatusCode, Value) {
    let opts = LoadOptions {
        namespace: review["request"]["namespace"].as_str().map(str::to_string),
        ..LoadOptions::default()
    };
    match path {
        "/inject" => {
            let ns = review["request"]["namespace"].as_str().unwrap_or_default();
            let labels = control
                .objects()
                .get(&ObjectKey::new(Kind::Namespace, "", ns))
                .map(|s| s.resource.metadata().labels.clone())
                .unwrap_or_default();
            (
                StatusCode::OK,
                crate::webhook::inject_review(review, &labels, &opts),
            )
        }
        "/validate" => (
            StatusCode::OK,
            crate::webhook::validate_review(review, &opts),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": format!("no webhook at {path}; /inject and /validate are served")}),
        ),
    }
}

async fn handle(control: Arc<ControlState>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let respond = |code: StatusCode, body: Value| {
        let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
        *r.status_mut() = code;
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        r
    };
    if req.method() != hyper::Method::POST {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            serde_json::json!({"error": "an AdmissionReview is POSTed"}),
        );
    }
    let body = match Limited::new(req.into_body(), MAX_REVIEW_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return respond(
                StatusCode::PAYLOAD_TOO_LARGE,
                serde_json::json!({"error": format!("the review is over {MAX_REVIEW_BYTES} bytes or was cut off")}),
            )
        }
    };
    let Ok(review) = serde_json::from_slice::<Value>(&body) else {
        return respond(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": "the body is not an AdmissionReview in JSON"}),
        );
    };
    let (code, answered) = answer(&control, &path, &review);
    if answered["response"]["allowed"] == false {
        tracing::info!(webhook = %path, uid = %review["request"]["uid"], reason = %answered["response"]["status"]["message"], "admission refused");
    }
    respond(code, answered)
}

/// Serves the webhooks on `listener` until `shutdown`; every connection ends with it.
pub async fn serve(
    control: Arc<ControlState>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let serve = move |stream, _peer| {
        let control = control.clone();
        async move {
            let svc = hyper::service::service_fn(move |req| {
                let control = control.clone();
                async move { Ok::<_, Infallible>(handle(control, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        }
    };
    crate::tls_accept::serve_tls("webhooks", listener, tls, MAX_CONNECTIONS, shutdown, serve).await
}
