//! The Kubernetes API over HTTPS: TLS with the cluster CA, who the caller is (client
//! certificate or bearer token), and the routes, in front of the same store and rules as
//! the operator API.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tessera_ca::cluster::{certificate_subject, ClusterCredentials, ADMIN_GROUP};
use tokio::net::TcpListener;

use super::answer;
use super::attach;
use super::crd;
use super::discovery;
use super::exec;
use super::logs;
use super::openapi;
use super::path::{self, ApiPath, ObjectPath, PathError};
use super::protobuf;
use super::respond::{error, not_found_route, param, reply, reply_as, stream, Reply};
use super::watch;
use super::write;
use crate::state::ControlState;

/// The largest request body taken, as the operator API's.
const MAX_BODY_BYTES: usize = crate::api::routes::MAX_REQUEST_BYTES;

/// Connections the API serves at once (watches and execs hold one each).
const MAX_CONNECTIONS: usize = 1024;

/// Who is calling, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user: String,
    pub groups: Vec<String>,
}

/// Why a caller is turned away: 401 (no or bad credentials) or 403 (known, not allowed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    Unauthorized,
    Forbidden(String),
}

/// Who the caller is and whether it may use the API. A verified client certificate
/// names the user (CN) and groups (O); otherwise a bearer token must be the
/// administrator's. Only `system:masters` is allowed for now.
pub fn authorize(
    certificate: Option<(String, Vec<String>)>,
    bearer: Option<&str>,
    admin_token: &str,
) -> Result<Caller, Denied> {
    let caller = match (certificate, bearer) {
        (Some((user, groups)), _) => Caller { user, groups },
        (None, Some(token)) if !admin_token.is_empty() && token == admin_token => Caller {
            user: tessera_ca::cluster::ADMIN_USER.into(),
            groups: vec![ADMIN_GROUP.into()],
        },
        _ => return Err(Denied::Unauthorized),
    };
    if caller.groups.iter().any(|g| g == ADMIN_GROUP) {
        Ok(caller)
    } else {
        Err(Denied::Forbidden(caller.user))
    }
}

/// The TLS configuration: the serving certificate for `address`, and client
/// certificates verified against the cluster CA when offered (a token may stand in).
pub fn tls_config(
    creds: &ClusterCredentials,
    address: SocketAddr,
) -> Result<rustls::ServerConfig, String> {
    let (cert_pem, key_pem) = creds
        .serving_certificate(&[address.ip()])
        .map_err(|e| e.to_string())?;
    let certs = pem_certs(&cert_pem)?;
    let key = rustls_pki_types::PrivateKeyDer::try_from(
        pem::parse(&key_pem)
            .map_err(|e| e.to_string())?
            .contents()
            .to_vec(),
    )
    .map_err(|e| e.to_string())?;
    let mut roots = rustls::RootCertStore::empty();
    for c in pem_certs(&creds.ca_pem)? {
        roots.add(c).map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| e.to_string())?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn pem_certs(pem_text: &str) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, String> {
    pem::parse_many(pem_text)
        .map_err(|e| e.to_string())
        .map(|v| {
            v.into_iter()
                .map(|p| rustls_pki_types::CertificateDer::from(p.into_contents()))
                .collect()
        })
}

/// Serves the API on `listener` until `shutdown`.
pub async fn serve(
    control: Arc<ControlState>,
    pods: Option<Arc<dyn super::PodRuntime>>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    admin_token: String,
    shutdown: impl Future<Output = ()>,
) {
    let admin_token = Arc::new(admin_token);
    let Ok(local) = listener.local_addr() else {
        return;
    };
    let serve = move |tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>, peer| {
        let (control, admin_token, pods) = (control.clone(), admin_token.clone(), pods.clone());
        async move {
            let certificate = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| certificate_subject(c));
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (control, admin_token, certificate, pods) = (
                    control.clone(),
                    admin_token.clone(),
                    certificate.clone(),
                    pods.clone(),
                );
                async move {
                    let bearer = req
                        .headers()
                        .get(http::header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("Bearer "))
                        .map(str::to_string);
                    let reply = match authorize(certificate, bearer.as_deref(), &admin_token) {
                        Ok(_caller) => handle(&control, pods.as_deref(), req, local).await,
                        Err(denied) => refuse(&req, peer, denied),
                    };
                    Ok::<_, Infallible>(reply)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), svc)
                .with_upgrades()
                .await;
        }
    };
    crate::tls_accept::serve_tls(
        "Kubernetes API",
        listener,
        tls,
        MAX_CONNECTIONS,
        shutdown,
        serve,
    )
    .await
}

fn refuse(req: &Request<Incoming>, peer: SocketAddr, denied: Denied) -> Reply {
    match denied {
        Denied::Unauthorized => {
            tracing::warn!(peer = %peer, path = %req.uri().path(), "Kubernetes API: refused a request without valid credentials");
            error(answer::status(401, "Unauthorized", "Unauthorized", None))
        }
        Denied::Forbidden(user) => {
            tracing::warn!(peer = %peer, user = %user, path = %req.uri().path(), "Kubernetes API: refused a user who is not an administrator");
            error(answer::status(
                403,
                "Forbidden",
                &format!(
                    "User \"{user}\" cannot {} path \"{}\"",
                    req.method().as_str().to_ascii_lowercase(),
                    req.uri().path()
                ),
                None,
            ))
        }
    }
}

/// One request to the Kubernetes API, once the caller may make it.
pub async fn handle(
    control: &Arc<ControlState>,
    pods: Option<&dyn super::PodRuntime>,
    req: Request<Incoming>,
    local: SocketAddr,
) -> Reply {
    let path = req.uri().path().to_string();
    if path == "/openapi/v2" {
        return reply(StatusCode::OK, openapi::v2());
    }
    if let Some(rest) = path.strip_prefix("/openapi/v3") {
        return match rest.trim_start_matches('/') {
            "" => reply(StatusCode::OK, &openapi::index()),
            gv => openapi::document(gv).map_or_else(not_found_route, |d| reply(StatusCode::OK, d)),
        };
    }
    if path == "/apis/authentication.k8s.io/v1/tokenreviews" {
        return token_review(control, req).await;
    }
    let route = match path::parse(&path) {
        Ok(r) => r,
        Err(PathError::NotFound) => return not_found_route(),
        Err(PathError::UnknownResource {
            group_version,
            resource,
        }) => {
            return error(answer::status(
                404,
                "NotFound",
                &format!(
                "the server could not find the requested resource ({resource} in {group_version})"
            ),
                None,
            ))
        }
    };
    if let ApiPath::Definitions(name) = &route {
        return definitions(control, &req, name.as_deref());
    }
    let ApiPath::Object(o) = route else {
        if req.method() != http::Method::GET {
            return error(answer::status(
                405,
                "MethodNotAllowed",
                "discovery is read-only",
                None,
            ));
        }
        let accept = req
            .headers()
            .get(http::header::ACCEPT)
            .and_then(|a| a.to_str().ok())
            .unwrap_or("");
        return match route {
            ApiPath::LegacyVersions | ApiPath::Groups if discovery::wants_aggregated(accept) => {
                let doc = discovery::aggregated(route == ApiPath::LegacyVersions);
                reply_as(StatusCode::OK, &doc, discovery::AGGREGATED)
            }
            route => discover(route, local),
        };
    };
    object(control, pods, req, o).await
}

/// A request on a collection, an object or one of its subresources.
async fn object(
    control: &Arc<ControlState>,
    pods: Option<&dyn super::PodRuntime>,
    req: Request<Incoming>,
    o: ObjectPath,
) -> Reply {
    if o.subresource.as_deref() == Some("exec") {
        return exec::serve(control, pods, req, &o);
    }
    if o.subresource.as_deref() == Some("attach") {
        return attach::serve(control, pods, req, &o);
    }
    if o.info.kind == tessera_model::Kind::ServiceAccount
        && o.subresource.as_deref() == Some("token")
    {
        return token_request(control, req, &o).await;
    }
    if req.method() == http::Method::GET && o.subresource.as_deref() == Some("log") {
        return logs::serve(control, pods, &req, &o);
    }
    // The status subresource reads as the object, and writes only its status.
    let status = o.subresource.as_deref() == Some("status");
    if status && !o.info.has_status() {
        return not_found_route();
    }
    if req.method() == http::Method::GET {
        let whole = ObjectPath {
            subresource: o.subresource.clone().filter(|_| !status),
            ..o.clone()
        };
        return get(control, &req, &whole);
    }
    if o.subresource.is_some() && !status {
        return not_found_route();
    }
    write(control, req, o, status).await
}

/// A write: create, replace, patch (or server-side apply), delete, deletecollection, or
/// a write of the status.
async fn write(
    control: &Arc<ControlState>,
    req: Request<Incoming>,
    o: ObjectPath,
    status: bool,
) -> Reply {
    let method = req.method().clone();
    let query = req.uri().query().map(str::to_string);
    let user_agent = req
        .headers()
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let (content_type, body) = match read_body(req).await {
        Ok(b) => b,
        Err(refused) => return error(refused),
    };
    let query = query.as_deref();
    let call = write::Call::new(query, &user_agent);
    let (code, body) = match method {
        http::Method::PUT if status => write::write_status(control, &o, None, &body, &call).await,
        http::Method::PATCH if status => {
            write::write_status(control, &o, Some(&content_type), &body, &call).await
        }
        _ if status => (
            405,
            answer::status(
                405,
                "MethodNotAllowed",
                "status is read, replaced or patched",
                None,
            ),
        ),
        http::Method::POST if o.name.is_none() => write::create(control, &o, &body, &call).await,
        http::Method::PUT => write::replace(control, &o, &body, &call).await,
        http::Method::PATCH => write::patch(control, &o, &content_type, &body, &call).await,
        http::Method::DELETE if o.name.is_none() => {
            match watch::Selection::from_query(&o, query.unwrap_or("")) {
                Ok(selection) => write::delete_collection(control, &selection, query).await,
                Err(e) => (400, answer::status(400, "BadRequest", &e, None)),
            }
        }
        http::Method::DELETE => write::delete(control, &o, query).await,
        other => (
            405,
            answer::status(
                405,
                "MethodNotAllowed",
                &format!("{other} is not supported here"),
                None,
            ),
        ),
    };
    reply(
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &body,
    )
}

/// The body of a request that can only create a `kind` (TokenRequest, TokenReview): a
/// POST with a JSON body, or the reply refusing it.
async fn created(req: Request<Incoming>, kind: &str) -> Result<serde_json::Value, Reply> {
    if req.method() != http::Method::POST {
        let message = format!("a {kind} can only be created");
        return Err(error(answer::status(
            405,
            "MethodNotAllowed",
            &message,
            None,
        )));
    }
    let body = read_body(req).await.map_err(error)?.1;
    serde_json::from_slice(&body).map_err(|_| {
        let message = format!("the body is not a {kind} in JSON");
        error(answer::status(400, "BadRequest", &message, None))
    })
}

/// `POST .../serviceaccounts/NAME/token`: a TokenRequest.
async fn token_request(
    control: &Arc<ControlState>,
    req: Request<Incoming>,
    o: &ObjectPath,
) -> Reply {
    let (Some(ns), Some(sa)) = (o.namespace.clone(), o.name.clone()) else {
        return not_found_route();
    };
    let body = match created(req, "TokenRequest").await {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    let objects = control.objects();
    match super::token::request(
        &objects,
        &control.issuer().tokens,
        &ns,
        &sa,
        &body,
        std::time::SystemTime::now(),
    ) {
        Ok(answered) => reply(StatusCode::CREATED, &answered),
        Err(status) => error(status),
    }
}

/// `POST /apis/authentication.k8s.io/v1/tokenreviews`: a TokenReview.
async fn token_review(control: &Arc<ControlState>, req: Request<Incoming>) -> Reply {
    let body = match created(req, "TokenReview").await {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    let objects = control.objects();
    let answered = super::token::review(
        &objects,
        &control.issuer().tokens,
        &body,
        std::time::SystemTime::now(),
    );
    reply(StatusCode::CREATED, &answered)
}

/// A write's body, as JSON (kubectl's typed commands, `create namespace`, `create
/// secret`..., send protobuf), with its content type; or the `Status` refusing it.
async fn read_body(req: Request<Incoming>) -> Result<(String, Bytes), serde_json::Value> {
    let content_type = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|_| {
            answer::status(
                413,
                "RequestEntityTooLarge",
                &format!("the request body is over {MAX_BODY_BYTES} bytes or was cut off"),
                None,
            )
        })?
        .to_bytes();
    if content_type.starts_with("application/vnd.kubernetes.protobuf") {
        let json = protobuf::to_json(&body)
            .map_err(|e| answer::status(415, "UnsupportedMediaType", &e, None))?;
        return Ok((content_type, Bytes::from(json.to_string())));
    }
    Ok((content_type, body))
}

fn discover(route: ApiPath, local: SocketAddr) -> Reply {
    match route {
        ApiPath::Version => reply(StatusCode::OK, &discovery::version()),
        ApiPath::LegacyVersions => reply(
            StatusCode::OK,
            &discovery::legacy_versions(&local.to_string()),
        ),
        ApiPath::Groups => reply(StatusCode::OK, &discovery::groups()),
        ApiPath::Group(g) => {
            discovery::group(&g).map_or_else(not_found_route, |d| reply(StatusCode::OK, &d))
        }
        ApiPath::Resources { group, version } => {
            reply(StatusCode::OK, &discovery::resources(&group, &version))
        }
        ApiPath::Object(_) | ApiPath::Definitions(_) => not_found_route(),
    }
}

/// The Istio kinds' CustomResourceDefinitions: GET of one or all, as JSON or a Table.
/// They came with the mesh (their creation time is its root namespace's) and are
/// read-only.
fn definitions(control: &ControlState, req: &Request<Incoming>, name: Option<&str>) -> Reply {
    if req.method() != http::Method::GET {
        return error(answer::status(
            405,
            "MethodNotAllowed",
            "the definitions of the mesh's kinds are built in and read-only",
            None,
        ));
    }
    let objects = control.objects();
    let root = crate::objects::ObjectKey::new(
        tessera_model::Kind::Namespace,
        "",
        &control.options.root_namespace,
    );
    let created = objects
        .get(&root)
        .and_then(|s| s.resource.metadata().creation_timestamp.clone());
    let items = crd::definitions(name, created.as_deref(), objects.revision());
    let table = req
        .headers()
        .get(http::header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(answer::wants_table);
    let revision = objects.revision();
    let Some(name) = name else {
        let body = if table {
            answer::table(crd::KIND, &items, revision)
        } else {
            serde_json::json!({
                "apiVersion": format!("{}/{}", crd::GROUP, crd::VERSION),
                "kind": format!("{}List", crd::KIND),
                "metadata": {"resourceVersion": revision.to_string()},
                "items": items,
            })
        };
        return reply(StatusCode::OK, &body);
    };
    match items.into_iter().next() {
        None => error(answer::status(
            404,
            "NotFound",
            &format!("{}.{} \"{name}\" not found", crd::PLURAL, crd::GROUP),
            None,
        )),
        Some(item) if table => reply(
            StatusCode::OK,
            &answer::table(crd::KIND, std::slice::from_ref(&item), revision),
        ),
        Some(item) => reply(StatusCode::OK, &item),
    }
}

/// GET of one object or a collection, as JSON or as a Table.
fn get(control: &Arc<ControlState>, req: &Request<Incoming>, o: &ObjectPath) -> Reply {
    if o.subresource.is_some() {
        return not_found_route();
    }
    let selection = match watch::Selection::from_query(o, req.uri().query().unwrap_or("")) {
        Ok(s) => s,
        Err(e) => return error(answer::status(400, "BadRequest", &e, None)),
    };
    let table = req
        .headers()
        .get(http::header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(answer::wants_table);
    if param(req, "watch").is_some_and(|w| w == "1" || w == "true") {
        return watch_stream(control, req, selection, table);
    }
    let objects = control.objects();
    let items = selection.list(&objects);
    let revision = objects.revision();
    match &o.name {
        Some(name) => match items.into_iter().next() {
            None => error(answer::not_found(o.info, name)),
            Some(item) if table => reply(
                StatusCode::OK,
                &answer::table(o.info.name, std::slice::from_ref(&item), revision),
            ),
            Some(item) => reply(StatusCode::OK, &item),
        },
        None if table => reply(
            StatusCode::OK,
            &answer::table(o.info.name, &items, revision),
        ),
        None => reply(
            StatusCode::OK,
            &answer::list(o.info, &o.version, items, revision),
        ),
    }
}

/// The longest a watch runs when the client does not say (`timeoutSeconds`).
const WATCH_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How often a watch that asked for bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

/// A watch: from `resourceVersion` (or, without one, every selected object as ADDED), the
/// events of each later revision, one JSON line each, until the client leaves or
/// `timeoutSeconds` passes. A version older than the kept history gets an ERROR event
/// with 410 Expired, after which clients list again.
fn watch_stream(
    control: &Arc<ControlState>,
    req: &Request<Incoming>,
    selection: watch::Selection,
    table: bool,
) -> Reply {
    let from = param(req, "resourceVersion").filter(|v| !v.is_empty() && v != "0");
    let baseline = match from {
        None => Some(Arc::new(crate::objects::Objects::default())),
        Some(v) => v.parse().ok().and_then(|r| control.objects_at(r)),
    };
    let timeout = param(req, "timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map_or(WATCH_TIMEOUT, Duration::from_secs)
        .min(WATCH_TIMEOUT);
    let bookmarks = param(req, "allowWatchBookmarks").is_some_and(|b| b == "true");
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let mut revisions = control.revisions();
    let current = control.objects();
    let Some(mut seen) = baseline else {
        let expired = answer::status(410, "Expired", "too old resource version", None);
        let _ = tx.try_send(Bytes::from(watch::event_line("ERROR", &expired)));
        return stream(rx, "application/json");
    };
    let control = control.clone();
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut bookmark = tokio::time::interval(BOOKMARK_EVERY);
        bookmark.tick().await;
        let mut now = current;
        loop {
            for (kind, object) in selection.events(&seen, &now) {
                let object = if table {
                    answer::table(
                        selection.object.info.name,
                        std::slice::from_ref(&object),
                        now.revision(),
                    )
                } else {
                    object
                };
                if tx
                    .send(Bytes::from(watch::event_line(kind, &object)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            seen = now;
            tokio::select! {
                changed = revisions.changed() => if changed.is_err() { return },
                _ = bookmark.tick(), if bookmarks => {
                    let mark = serde_json::json!({
                        "kind": selection.object.info.name,
                        "apiVersion": tessera_model::resource::api_version(selection.object.info.group, &selection.object.version),
                        "metadata": {"resourceVersion": seen.revision().to_string()},
                    });
                    if tx.send(Bytes::from(watch::event_line("BOOKMARK", &mark))).await.is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep_until(deadline) => return,
                () = tx.closed() => return,
            }
            now = control.objects();
        }
    });
    stream(rx, "application/json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin() -> Option<(String, Vec<String>)> {
        Some(("tessera-admin".into(), vec![ADMIN_GROUP.into()]))
    }

    #[test]
    fn who_may_call() {
        let token = "s3cret";
        type Row<'a> = (
            Option<(String, Vec<String>)>,
            Option<&'a str>,
            Result<&'a str, Denied>,
        );
        let table: &[Row] = &[
            (admin(), None, Ok("tessera-admin")),
            (None, Some("s3cret"), Ok("tessera-admin")),
            (None, None, Err(Denied::Unauthorized)),
            (None, Some("wrong"), Err(Denied::Unauthorized)),
            (
                Some(("alice".into(), vec!["dev".into()])),
                None,
                Err(Denied::Forbidden("alice".into())),
            ),
            // A certificate names the caller even when a token is sent too.
            (
                Some(("bob".into(), vec![])),
                Some("s3cret"),
                Err(Denied::Forbidden("bob".into())),
            ),
        ];
        for (cert, bearer, want) in table {
            let got = authorize(cert.clone(), *bearer, token).map(|c| c.user);
            assert_eq!(got, want.clone().map(str::to_string), "{cert:?} {bearer:?}");
        }
        // No token configured: a token never authenticates.
        assert_eq!(authorize(None, Some(""), ""), Err(Denied::Unauthorized));
    }
}
