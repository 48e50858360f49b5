//! The operator API's dispatch: one handler per route, JSON in and out; a request is
//! refused with a status and reasons before anything changes.

use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tessera_model::validate::ValidateOptions;
use tessera_model::{Kind, LoadOptions, Resource};

use super::types::*;
use super::{insight, objects, proxies};
use crate::objects::{ObjectKey, Outcome};
use crate::state::ControlState;

/// A request body's limit: manifests up to the loader's stream limit, JSON-escaped.
pub(crate) const MAX_REQUEST_BYTES: usize = 2 * tessera_model::yaml::Limits::DEFAULT.stream_bytes;

pub(super) type Reply = Response<Full<Bytes>>;

pub(super) fn json<T: Serialize>(status: StatusCode, body: &T) -> Reply {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            serde_json::to_vec(body).unwrap_or_default(),
        )))
        .unwrap()
}

pub(super) fn refused(status: StatusCode, errors: Vec<String>) -> Reply {
    json(status, &ErrorResponse { errors })
}

pub(super) async fn body<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, Reply> {
    let bytes = Limited::new(req.into_body(), MAX_REQUEST_BYTES)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<LengthLimitError>() {
                refused(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    vec![format!(
                        "error: the request is over the limit of {MAX_REQUEST_BYTES} bytes"
                    )],
                )
            } else {
                refused(StatusCode::BAD_REQUEST, vec![format!("error: {e}")])
            }
        })?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| {
        refused(
            StatusCode::BAD_REQUEST,
            vec![format!("error: malformed request: {e}")],
        )
    })
}

pub(crate) async fn handle(control: &ControlState, req: Request<Incoming>) -> Reply {
    let route = (req.method().clone(), req.uri().path().to_string());
    let result = match (&route.0, route.1.as_str()) {
        (&Method::GET, "/healthz") => Ok(json(
            StatusCode::OK,
            &Health {
                revision: control.objects().revision(),
                state_dir: control.state_dir.display().to_string(),
                trust_domain: control.options.trust_domain.clone(),
            },
        )),
        (&Method::GET, "/proxies") => Ok(json(StatusCode::OK, &control.proxies())),
        (&Method::POST, "/apply") => match body::<ApplyRequest>(req).await {
            Ok(r) => Ok(objects::apply(control, r).await),
            Err(e) => Err(e),
        },
        (&Method::POST, "/delete") => match body::<DeleteRequest>(req).await {
            Ok(r) => Ok(objects::delete(control, r).await),
            Err(e) => Err(e),
        },
        (&Method::POST, "/label") => match body::<LabelRequest>(req).await {
            Ok(r) => Ok(objects::label(control, r).await),
            Err(e) => Err(e),
        },
        (&Method::POST, "/status") => match body::<StatusRequest>(req).await {
            Ok(r) => Ok(objects::status(control, r).await),
            Err(e) => Err(e),
        },
        (&Method::POST, "/token") => match body::<TokenRequest>(req).await {
            Ok(r) => Ok(proxies::token(control, r)),
            Err(e) => Err(e),
        },
        (&Method::POST, "/config") => match body::<crate::api::ConfigRequest>(req).await {
            Ok(r) => Ok(
                match crate::compile::compile(&control.current_world(), &r.node_id) {
                    Ok(c) => json(StatusCode::OK, &c),
                    Err(e) => refused(StatusCode::NOT_FOUND, vec![format!("error: {e}")]),
                },
            ),
            Err(e) => Err(e),
        },
        (&Method::POST, "/explain") => match body::<ExplainRequest>(req).await {
            Ok(r) => Ok(insight::explain(control, r)),
            Err(e) => Err(e),
        },
        (&Method::POST, "/reachability") => match body::<ReachabilityRequest>(req).await {
            Ok(r) => Ok(insight::reachability(control, r)),
            Err(e) => Err(e),
        },
        (&Method::POST, "/analyze") => match body::<AnalyzeRequest>(req).await {
            Ok(r) => Ok(insight::analyze(control, r)),
            Err(e) => Err(e),
        },
        _ => Ok(refused(
            StatusCode::NOT_FOUND,
            vec![format!("error: no API {} {}", route.0, route.1)],
        )),
    };
    result.unwrap_or_else(|e| e)
}

pub(crate) fn load_options(control: &ControlState, namespace: Option<String>) -> LoadOptions {
    LoadOptions {
        namespace,
        default_namespace: "default".into(),
        validate: ValidateOptions {
            root_namespace: control.options.root_namespace.clone(),
        },
    }
}

/// Reads the documents; every error of every document, or the resources in order.
pub(super) fn read_documents(
    control: &ControlState,
    documents: &[Document],
    namespace: Option<String>,
) -> (Vec<(String, Resource)>, Vec<String>, Vec<String>) {
    let opts = load_options(control, namespace);
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    for doc in documents {
        let report = tessera_model::load_str(Path::new(&doc.name), &doc.text, &opts);
        for p in &report.problems {
            if p.is_error() {
                errors.push(p.to_string());
            } else {
                warnings.push(p.to_string());
            }
        }
        out.extend(
            report
                .documents
                .into_iter()
                .map(|d| (doc.name.clone(), d.resource)),
        );
    }
    (out, errors, warnings)
}

pub(super) fn changed(
    result: Result<(Vec<Outcome>, u64), Vec<String>>,
    warnings: Vec<String>,
) -> Reply {
    match result {
        Ok((outcomes, revision)) => json(
            StatusCode::OK,
            &ChangeResponse {
                outcomes,
                warnings,
                revision,
            },
        ),
        Err(errors) => refused(StatusCode::CONFLICT, errors),
    }
}

/// A refusal before any change: the status and the reasons.
pub(super) type Refusal = (StatusCode, Vec<String>);

pub(super) fn resolve_kind(word: &str) -> Result<Kind, Refusal> {
    Kind::from_cli(word).ok_or_else(|| {
        (
            StatusCode::NOT_FOUND,
            vec![super::client::unknown_kind(word)],
        )
    })
}

pub(super) fn target_key(t: &Target) -> Result<ObjectKey, Refusal> {
    let kind = resolve_kind(&t.kind)?;
    Ok(ObjectKey::new(
        kind,
        t.namespace.as_deref().unwrap_or("default"),
        &t.name,
    ))
}
