//! `tessera control`: the store, the world the compiler reads, and the three sockets in the
//! state dir — the operator API (`api.sock`), config push (`xds.sock`) and the CA
//! (`ca.sock`).

use std::convert::Infallible;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::policy::MeshOptions;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tessera_ca::issuance::Issuer;
use tessera_ca::service::CaService;
use tessera_ca::token::{TokenKey, DEFAULT_TOKEN_TTL, MAX_TOKEN_TTL};
use tessera_ca::{Authority, CaError};
use tessera_model::meta::LabelQuery;
use tessera_model::validate::ValidateOptions;
use tessera_model::{Kind, LoadOptions, Resource};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::api::*;
use crate::compile::compile;
use crate::insight;
use crate::objects::{ObjectKey, Objects, Op, Outcome};
use crate::push::{unix_now, ProxyTable, PushService, DEBOUNCE};
use crate::store::{SqliteStore, Store, StoreError};
use crate::world::World;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("store: object {key} cannot be read back ({why}); the store was written by an incompatible version")]
    Corrupt { key: String, why: String },
    #[error("CA: {0}")]
    Ca(#[from] CaError),
    #[error("a control plane already serves {0} (its API socket answers); stop it first or use another --state-dir")]
    AlreadyRunning(PathBuf),
    #[error("the store refused the built-in objects: {0}")]
    Bootstrap(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ControlError + '_ {
    move |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How to run a control plane.
#[derive(Clone)]
pub struct ControlOptions {
    pub state_dir: PathBuf,
    pub mesh: MeshOptions,
    /// Changes objects as they are admitted (the local runtime's sidecar injection), as
    /// Kubernetes' mutating admission webhooks do.
    pub admission: Option<Arc<dyn Admission>>,
    /// Pods' proxies (another uid) may reach the push and CA sockets: the state dir becomes
    /// traversable (not listable) and those two sockets world-connectable. Their callers
    /// prove who they are with a token; the operator API stays owner-only.
    pub pod_access: bool,
}

impl ControlOptions {
    pub fn new(state_dir: PathBuf, mesh: MeshOptions) -> ControlOptions {
        ControlOptions {
            state_dir,
            mesh,
            admission: None,
            pod_access: false,
        }
    }
}

/// Mutates an object before it is planned (create and apply only).
pub trait Admission: Send + Sync {
    /// `objects` is the state the batch applies to. An error refuses the whole batch.
    fn admit(&self, objects: &Objects, resource: Resource) -> Result<Resource, String>;
}

/// The control plane's state, shared by its servers.
pub struct Control {
    state_dir: PathBuf,
    options: MeshOptions,
    store: Box<dyn Store>,
    objects: Mutex<Arc<Objects>>,
    writes: tokio::sync::Mutex<()>,
    changes: watch::Sender<u64>,
    world: watch::Receiver<Arc<World>>,
    issuer: Arc<Issuer>,
    proxies: ProxyTable,
    admission: Option<Arc<dyn Admission>>,
}

impl Control {
    pub fn objects(&self) -> Arc<Objects> {
        self.objects.lock().unwrap().clone()
    }

    /// The world the compiler reads (recomputed [`DEBOUNCE`] after a change).
    pub fn world(&self) -> Arc<World> {
        self.world.borrow().clone()
    }

    /// The world at the latest revision, even inside the debounce window (for answers
    /// right after an apply: `describe`, `/config`).
    pub fn current_world(&self) -> Arc<World> {
        let world = self.world();
        let objects = self.objects();
        if world.revision >= objects.revision() {
            world
        } else {
            Arc::new(World::build(&objects, &self.options))
        }
    }

    /// The latest committed revision; changes with every write.
    pub fn revisions(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn world_watch(&self) -> watch::Receiver<Arc<World>> {
        self.world.clone()
    }

    pub fn options(&self) -> &MeshOptions {
        &self.options
    }

    pub fn issuer(&self) -> &Arc<Issuer> {
        &self.issuer
    }

    /// Every proxy that has connected, except disconnected ones whose pod is gone (a
    /// deleted pod's proxy is not news; one that dropped while its pod lives is).
    pub fn proxies(&self) -> Vec<ProxyStatusRow> {
        let now = unix_now();
        let objects = self.objects();
        let pod_exists = |node_id: &str| {
            node_id.rsplit_once('.').is_some_and(|(pod, ns)| {
                objects
                    .get(&crate::objects::ObjectKey::new(
                        tessera_model::Kind::Pod,
                        ns,
                        pod,
                    ))
                    .is_some()
            })
        };
        let mut table = self.proxies.lock().unwrap();
        table.retain(|node_id, s| s.connected || pod_exists(node_id));
        table
            .values()
            .map(|s| ProxyStatusRow {
                sync: s.state(now),
                status: s.clone(),
            })
            .collect()
    }

    /// Plans a batch, persists it in one transaction, then publishes it. All or nothing.
    pub async fn submit(&self, ops: Vec<Op>) -> Result<(Vec<Outcome>, u64), Vec<String>> {
        self.submit_with(|_| ops).await
    }

    /// [`Control::submit`] with the operations decided from the state they will apply to
    /// (under the write lock, so nothing changes in between).
    pub async fn submit_with(
        &self,
        ops: impl FnOnce(&Objects) -> Vec<Op>,
    ) -> Result<(Vec<Outcome>, u64), Vec<String>> {
        let _serialized = self.writes.lock().await;
        let current = self.objects();
        let mut ops = ops(&current);
        if let Some(admission) = &self.admission {
            ops = admit(admission.as_ref(), &current, ops)?;
        }
        let plan = current.plan(ops, time::OffsetDateTime::now_utc())?;
        let revision = plan.next.revision();
        if !plan.writes.is_empty() {
            // A synchronous commit (fsync) must not stall the push sessions' threads.
            let commit = || self.store.commit(&plan.writes, revision);
            let committed = match tokio::runtime::Handle::try_current() {
                Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                    tokio::task::block_in_place(commit)
                }
                _ => commit(),
            };
            committed.map_err(|e| vec![format!("Error from server (InternalError): {e}")])?;
            *self.objects.lock().unwrap() = Arc::new(plan.next);
            self.changes.send_replace(revision);
        }
        Ok((plan.outcomes, revision))
    }
}

fn admit(
    admission: &dyn Admission,
    objects: &Objects,
    ops: Vec<Op>,
) -> Result<Vec<Op>, Vec<String>> {
    let mut errors = Vec::new();
    let mut admitted = Vec::with_capacity(ops.len());
    for op in ops {
        let (origin, resource, create) = match op {
            Op::Apply { origin, resource } => (origin, resource, false),
            Op::Create { origin, resource } => (origin, resource, true),
            op => {
                admitted.push(op);
                continue;
            }
        };
        match admission.admit(objects, resource) {
            Ok(resource) if create => admitted.push(Op::Create { origin, resource }),
            Ok(resource) => admitted.push(Op::Apply { origin, resource }),
            Err(e) => errors.push(format!("{origin}: Error from server (admission): {e}")),
        }
    }
    if errors.is_empty() {
        Ok(admitted)
    } else {
        Err(errors)
    }
}

/// A running control plane.
pub struct ControlPlane {
    control: Arc<Control>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    sockets: Vec<PathBuf>,
}

impl ControlPlane {
    /// Opens the store and the CA in the state dir and serves the sockets. Must run inside
    /// a tokio runtime.
    pub async fn start(opts: ControlOptions) -> Result<ControlPlane, ControlError> {
        let dir = &opts.state_dir;
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = if opts.pod_access { 0o711 } else { 0o700 };
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
                .map_err(io_err(dir))?;
        }
        let api_path = dir.join(API_SOCKET);
        if UnixStream::connect(&api_path).await.is_ok() {
            return Err(ControlError::AlreadyRunning(dir.clone()));
        }

        let store = SqliteStore::open(&dir.join(STORE_FILE))?;
        let (rows, revision) = store.load()?;
        let objects =
            Objects::from_rows(rows, revision).map_err(|(key, why)| ControlError::Corrupt {
                key: key.to_string(),
                why,
            })?;

        let ca_dir = dir.join("ca");
        let (authority, created) = Authority::init(&ca_dir)?;
        if created {
            tracing::info!(dir = %ca_dir.display(), "created the mesh CA");
        }
        let tokens = TokenKey::load_or_create(&ca_dir)?;
        let issuer = Arc::new(Issuer {
            authority,
            tokens,
            trust_domain: opts.mesh.trust_domain.clone(),
            default_ttl: Some(Duration::from_secs(opts.mesh.workload_cert_ttl_secs)),
        });

        let world0 = Arc::new(World::build(&objects, &opts.mesh));
        let (world_tx, world_rx) = watch::channel(world0);
        let (changes, changes_rx) = watch::channel(objects.revision());
        let control = Arc::new(Control {
            state_dir: dir.clone(),
            options: opts.mesh.clone(),
            store: Box::new(store),
            objects: Mutex::new(Arc::new(objects)),
            writes: tokio::sync::Mutex::new(()),
            changes,
            world: world_rx.clone(),
            issuer: issuer.clone(),
            proxies: ProxyTable::default(),
            admission: opts.admission.clone(),
        });
        let boot = control.objects().bootstrap_ops();
        if !boot.is_empty() {
            control
                .submit(boot)
                .await
                .map_err(|e| ControlError::Bootstrap(e.join("; ")))?;
        }

        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(rebuild_world(control.clone(), changes_rx, world_tx));

        let mut sockets = Vec::new();
        let bind = |name: &str| -> Result<(UnixListener, PathBuf), ControlError> {
            let path = dir.join(name);
            let _ = std::fs::remove_file(&path);
            let l = UnixListener::bind(&path).map_err(io_err(&path))?;
            Ok((l, path))
        };
        let (api, p) = bind(API_SOCKET)?;
        sockets.push(p);
        tasks.spawn(serve_api(control.clone(), api, until(stopped.clone())));
        let open_to_pods = |path: &Path| -> Result<(), ControlError> {
            #[cfg(unix)]
            if opts.pod_access {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
                    .map_err(io_err(path))?;
            }
            Ok(())
        };
        let (push, p) = bind(PUSH_SOCKET)?;
        open_to_pods(&p)?;
        sockets.push(p);
        let push_service =
            PushService::new(world_rx, issuer.clone(), control.proxies.clone()).into_server();
        tasks.spawn(serve_grpc(push, push_service, until(stopped.clone())));
        let (ca, p) = bind(CA_SOCKET)?;
        open_to_pods(&p)?;
        sockets.push(p);
        tasks.spawn(serve_grpc(
            ca,
            CaService::new(issuer).into_server(),
            until(stopped.clone()),
        ));
        tracing::info!(
            state_dir = %dir.display(),
            revision = control.objects().revision(),
            trust_domain = %opts.mesh.trust_domain,
            "control plane serving api.sock, xds.sock and ca.sock"
        );
        Ok(ControlPlane {
            control,
            stop,
            tasks,
            sockets,
        })
    }

    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    pub fn state_dir(&self) -> &Path {
        &self.control.state_dir
    }

    /// Stops serving, closes every connection (proxies then serve their last snapshot)
    /// and removes the sockets.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        for s in &self.sockets {
            let _ = std::fs::remove_file(s);
        }
        tracing::info!("control plane stopped");
    }
}

async fn until(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

/// Recomputes the world after changes, coalescing those within [`DEBOUNCE`].
async fn rebuild_world(
    control: Arc<Control>,
    mut changes: watch::Receiver<u64>,
    world: watch::Sender<Arc<World>>,
) {
    while changes.changed().await.is_ok() {
        tokio::time::sleep(DEBOUNCE).await;
        changes.borrow_and_update();
        let objects = control.objects();
        let next = World::build(&objects, &control.options);
        for (policy, why) in &next.problems {
            tracing::warn!(%policy, reason = %why, "policy without effect");
        }
        tracing::debug!(world = %next, "recomputed");
        world.send_replace(Arc::new(next));
    }
}

/// Accepts on `listener` until `shutdown`, running `serve` for each connection it returns
/// (`None` refuses one); every connection ends with the server.
async fn accept_loop<F>(
    listener: UnixListener,
    shutdown: impl Future<Output = ()>,
    mut serve: impl FnMut(UnixStream) -> Option<F>,
) where
    F: Future<Output = ()> + Send + 'static,
{
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Some(task) = serve(stream) {
            conns.spawn(task);
        }
        while conns.try_join_next().is_some() {}
    }
    conns.abort_all();
}

/// Serves a gRPC service (HTTP/2) on a Unix socket.
async fn serve_grpc<S>(listener: UnixListener, service: S, shutdown: impl Future<Output = ()>)
where
    S: tower_service_compat::GrpcService,
{
    accept_loop(listener, shutdown, |stream| {
        let service = service.clone();
        Some(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let mut service = service.clone();
                async move { service.call_grpc(req).await }
            });
            if let Err(e) = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(error = %e, "gRPC connection ended with an error");
            }
        })
    })
    .await
}

/// The one bound the generated tonic servers need, named once.
mod tower_service_compat {
    use std::convert::Infallible;

    use hyper::body::Incoming;
    use tonic::body::Body;
    use tonic::codegen::Service;

    pub trait GrpcService: Clone + Send + Sync + 'static {
        fn call_grpc(
            &mut self,
            req: hyper::Request<Incoming>,
        ) -> impl std::future::Future<Output = Result<hyper::Response<Body>, Infallible>> + Send;
    }

    impl<S> GrpcService for S
    where
        S: Service<hyper::Request<Incoming>, Response = hyper::Response<Body>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send,
    {
        fn call_grpc(
            &mut self,
            req: hyper::Request<Incoming>,
        ) -> impl std::future::Future<Output = Result<hyper::Response<Body>, Infallible>> + Send
        {
            self.call(req)
        }
    }
}

async fn serve_api(
    control: Arc<Control>,
    listener: UnixListener,
    shutdown: impl Future<Output = ()>,
) {
    accept_loop(listener, shutdown, |stream| {
        // The API can mint any identity's token: only root and the control plane's own
        // user may use it, whatever the socket's file permissions.
        let allowed = match stream.peer_cred() {
            Ok(c) => c.uid() == 0 || Some(c.uid()) == own_uid(),
            Err(_) => false,
        };
        if !allowed {
            tracing::warn!(peer = ?stream.peer_cred().ok(), "operator API refused: the caller is neither root nor the control plane's user");
            return None;
        }
        let control = control.clone();
        Some(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let control = control.clone();
                async move { Ok::<_, Infallible>(handle(&control, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        })
    })
    .await
}

/// This process's effective uid (the owner of /proc/self), without a libc dependency.
fn own_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

type Reply = Response<Full<Bytes>>;

fn json<T: Serialize>(status: StatusCode, body: &T) -> Reply {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            serde_json::to_vec(body).unwrap_or_default(),
        )))
        .unwrap()
}

fn refused(status: StatusCode, errors: Vec<String>) -> Reply {
    json(status, &ErrorResponse { errors })
}

async fn body<T: DeserializeOwned>(req: Request<Incoming>) -> Result<T, Reply> {
    let bytes = req
        .into_body()
        .collect()
        .await
        .map_err(|e| refused(StatusCode::BAD_REQUEST, vec![format!("error: {e}")]))?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| {
        refused(
            StatusCode::BAD_REQUEST,
            vec![format!("error: malformed request: {e}")],
        )
    })
}

async fn handle(control: &Control, req: Request<Incoming>) -> Reply {
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
            Ok(r) => Ok(apply(control, r).await),
            Err(e) => Err(e),
        },
        (&Method::POST, "/delete") => match body::<DeleteRequest>(req).await {
            Ok(r) => Ok(delete(control, r).await),
            Err(e) => Err(e),
        },
        (&Method::POST, "/label") => match body::<LabelRequest>(req).await {
            Ok(r) => Ok(label(control, r).await),
            Err(e) => Err(e),
        },
        (&Method::POST, "/status") => match body::<StatusRequest>(req).await {
            Ok(r) => Ok(status(control, r).await),
            Err(e) => Err(e),
        },
        (&Method::POST, "/get") => match body::<GetRequest>(req).await {
            Ok(r) => Ok(get(control, r)),
            Err(e) => Err(e),
        },
        (&Method::POST, "/token") => match body::<TokenRequest>(req).await {
            Ok(r) => Ok(token(control, r)),
            Err(e) => Err(e),
        },
        (&Method::POST, "/config") => match body::<crate::api::ConfigRequest>(req).await {
            Ok(r) => Ok(match compile(&control.current_world(), &r.node_id) {
                Ok(c) => json(StatusCode::OK, &c),
                Err(e) => refused(StatusCode::NOT_FOUND, vec![format!("error: {e}")]),
            }),
            Err(e) => Err(e),
        },
        (&Method::POST, "/explain") => match body::<ExplainRequest>(req).await {
            Ok(r) => Ok(explain(control, r)),
            Err(e) => Err(e),
        },
        (&Method::POST, "/reachability") => match body::<ReachabilityRequest>(req).await {
            Ok(r) => Ok(reachability(control, r)),
            Err(e) => Err(e),
        },
        (&Method::POST, "/analyze") => match body::<AnalyzeRequest>(req).await {
            Ok(r) => Ok(analyze(control, r)),
            Err(e) => Err(e),
        },
        _ => Ok(refused(
            StatusCode::NOT_FOUND,
            vec![format!("error: no API {} {}", route.0, route.1)],
        )),
    };
    result.unwrap_or_else(|e| e)
}

fn load_options(control: &Control, namespace: Option<String>) -> LoadOptions {
    LoadOptions {
        namespace,
        default_namespace: "default".into(),
        validate: ValidateOptions {
            root_namespace: control.options.root_namespace.clone(),
        },
    }
}

/// Reads the documents; every error of every document, or the resources in order.
fn read_documents(
    control: &Control,
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

fn changed(result: Result<(Vec<Outcome>, u64), Vec<String>>, warnings: Vec<String>) -> Reply {
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

async fn apply(control: &Control, r: ApplyRequest) -> Reply {
    let (resources, errors, warnings) = read_documents(control, &r.documents, r.namespace);
    if !errors.is_empty() {
        return refused(StatusCode::UNPROCESSABLE_ENTITY, errors);
    }
    if resources.is_empty() {
        return refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            vec![format!(
                "error: no objects passed to {}",
                if r.create { "create" } else { "apply" }
            )],
        );
    }
    let ops = resources
        .into_iter()
        .map(|(origin, resource)| {
            if r.create {
                Op::Create { origin, resource }
            } else {
                Op::Apply { origin, resource }
            }
        })
        .collect();
    changed(control.submit(ops).await, warnings)
}

fn explain(control: &Control, r: ExplainRequest) -> Reply {
    let world = control.current_world();
    let result = insight::find_client(&world, &r.from).and_then(|client| {
        let svc = insight::find_service(&world, &r.to)?;
        insight::explain(&world, client, svc, r.port)
    });
    match result {
        Ok(reach) => json(StatusCode::OK, &reach),
        Err(e) => refused(StatusCode::NOT_FOUND, vec![format!("error: {e}")]),
    }
}

fn reachability(control: &Control, r: ReachabilityRequest) -> Reply {
    let world = control.current_world();
    let namespaces = if r.namespaces.is_empty() {
        insight::reach::default_namespaces(&world)
    } else {
        r.namespaces
    };
    json(
        StatusCode::OK,
        &ReachabilityResponse {
            revision: world.revision,
            reach: insight::matrix(&world, &namespaces),
            namespaces,
        },
    )
}

/// Analysis of what is stored, or of a change planned on it (never committed).
fn analyze(control: &Control, r: AnalyzeRequest) -> Reply {
    if r.documents.is_empty() {
        let world = control.current_world();
        return json(
            StatusCode::OK,
            &AnalyzeResponse {
                revision: world.revision,
                findings: insight::analyze(&world),
                what_if: None,
                planned: vec![],
                new_findings: vec![],
            },
        );
    }
    let (resources, errors, _) = read_documents(control, &r.documents, r.namespace);
    if !errors.is_empty() {
        return refused(StatusCode::UNPROCESSABLE_ENTITY, errors);
    }
    let objects = control.objects();
    let mut ops: Vec<Op> = resources
        .into_iter()
        .map(|(origin, resource)| Op::Apply { origin, resource })
        .collect();
    if let Some(admission) = &control.admission {
        ops = match admit(admission.as_ref(), &objects, ops) {
            Ok(ops) => ops,
            Err(errors) => return refused(StatusCode::CONFLICT, errors),
        };
    }
    let plan = match objects.plan(ops, time::OffsetDateTime::now_utc()) {
        Ok(plan) => plan,
        Err(errors) => return refused(StatusCode::CONFLICT, errors),
    };
    // The world as the objects stand now (not the debounced one), before and after.
    let before = World::build(&objects, &control.options);
    let after = World::build(&plan.next, &control.options);
    let findings = insight::analyze(&before);
    let after_findings = insight::analyze(&after);
    let new_findings = after_findings
        .iter()
        .filter(|f| !findings.contains(f))
        .cloned()
        .collect();
    json(
        StatusCode::OK,
        &AnalyzeResponse {
            revision: objects.revision(),
            what_if: Some(insight::what_if(&before, &after, &[])),
            findings: after_findings,
            planned: plan.outcomes,
            new_findings,
        },
    )
}

/// A refusal before any change: the status and the reasons.
type Refusal = (StatusCode, Vec<String>);

fn resolve_kind(word: &str) -> Result<Kind, Refusal> {
    Kind::from_cli(word).ok_or_else(|| {
        (
            StatusCode::NOT_FOUND,
            vec![format!(
                "error: the server doesn't have a resource type {word:?}"
            )],
        )
    })
}

fn target_key(t: &Target) -> Result<ObjectKey, Refusal> {
    let kind = resolve_kind(&t.kind)?;
    Ok(ObjectKey::new(
        kind,
        t.namespace.as_deref().unwrap_or("default"),
        &t.name,
    ))
}

async fn delete(control: &Control, r: DeleteRequest) -> Reply {
    let (resources, errors, _) = read_documents(control, &r.documents, r.namespace.clone());
    if !errors.is_empty() {
        return refused(StatusCode::UNPROCESSABLE_ENTITY, errors);
    }
    let mut keys: Vec<ObjectKey> = resources
        .iter()
        .map(|(_, res)| ObjectKey::of(res))
        .collect();
    for t in &r.targets {
        let mut t = t.clone();
        if t.namespace.is_none() {
            t.namespace = r.namespace.clone();
        }
        match target_key(&t) {
            Ok(k) => keys.push(k),
            Err((status, errors)) => return refused(status, errors),
        }
    }
    if keys.is_empty() {
        return refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["error: nothing to delete: give -f FILE or KIND NAME".into()],
        );
    }
    // kubectl deletes what it can and reports the rest; a batch here is still one
    // transaction, so the missing ones are reported and the others deleted.
    let mut missing = Vec::new();
    let result = control
        .submit_with(|objects| {
            let (present, absent): (Vec<ObjectKey>, Vec<ObjectKey>) =
                keys.into_iter().partition(|k| objects.get(k).is_some());
            missing = absent;
            present
                .into_iter()
                .map(|key| Op::Delete {
                    key,
                    ignore_not_found: true,
                })
                .collect()
        })
        .await;
    let not_found: Vec<String> = if r.ignore_not_found {
        vec![]
    } else {
        missing
            .iter()
            .map(|k| format!("Error from server (NotFound): {} not found", k.quoted()))
            .collect()
    };
    match result {
        Ok((outcomes, revision)) if not_found.is_empty() => json(
            StatusCode::OK,
            &ChangeResponse {
                outcomes,
                warnings: vec![],
                revision,
            },
        ),
        Ok((outcomes, revision)) => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({
                "outcomes": outcomes,
                "revision": revision,
                "errors": not_found,
            }),
        ),
        Err(errors) => refused(StatusCode::CONFLICT, errors),
    }
}

async fn label(control: &Control, r: LabelRequest) -> Reply {
    let key = match target_key(&r.target) {
        Ok(k) => k,
        Err((status, errors)) => return refused(status, errors),
    };
    changed(
        control
            .submit(vec![Op::Label {
                key,
                set: r.set,
                remove: r.remove,
                overwrite: r.overwrite,
            }])
            .await,
        vec![],
    )
}

async fn status(control: &Control, r: StatusRequest) -> Reply {
    let key = match target_key(&r.target) {
        Ok(k) => k,
        Err((status, errors)) => return refused(status, errors),
    };
    changed(
        control
            .submit(vec![Op::Status {
                key,
                status: r.status,
            }])
            .await,
        vec![],
    )
}

fn get(control: &Control, r: GetRequest) -> Reply {
    let kind = match resolve_kind(&r.kind) {
        Ok(k) => k,
        Err((status, errors)) => return refused(status, errors),
    };
    let query = match r.selector.as_deref().map(LabelQuery::parse).transpose() {
        Ok(q) => q,
        Err(e) => {
            return refused(
                StatusCode::BAD_REQUEST,
                vec![format!("error: unable to parse requirement: {e}")],
            )
        }
    };
    let namespace = if r.all_namespaces || !kind.is_namespaced() {
        None
    } else {
        Some(r.namespace.clone().unwrap_or_else(|| "default".into()))
    };
    let objects = control.objects();
    let items: Vec<serde_json::Value> = objects
        .list(kind, namespace.as_deref(), query.as_ref())
        .filter(|s| r.name.as_deref().is_none_or(|n| s.resource.name() == n))
        .map(|s| s.resource.to_json())
        .collect();
    if let (Some(name), true) = (&r.name, items.is_empty()) {
        let key = ObjectKey::new(kind, namespace.as_deref().unwrap_or(""), name);
        return refused(
            StatusCode::NOT_FOUND,
            vec![format!(
                "Error from server (NotFound): {} not found",
                key.quoted()
            )],
        );
    }
    json(
        StatusCode::OK,
        &GetResponse {
            kind: kind.name().to_string(),
            namespaced: kind.is_namespaced(),
            namespace,
            items,
            revision: objects.revision(),
        },
    )
}

fn token(control: &Control, r: TokenRequest) -> Reply {
    let ttl = r
        .ttl_secs
        .map_or(DEFAULT_TOKEN_TTL, Duration::from_secs)
        .min(MAX_TOKEN_TTL);
    if let Err(e) = tessera_ca::SpiffeId::new(
        &control.options.trust_domain,
        &r.namespace,
        &r.service_account,
    ) {
        return refused(
            StatusCode::UNPROCESSABLE_ENTITY,
            vec![format!("error: {e}")],
        );
    }
    let token =
        control
            .issuer
            .tokens
            .mint(&r.namespace, &r.service_account, ttl, SystemTime::now());
    json(StatusCode::OK, &TokenResponse { token })
}

/// `tessera control`: serves until SIGTERM or SIGINT.
pub fn run(opts: ControlOptions) -> Result<(), ControlError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(io_err(Path::new("tokio runtime")))?;
    runtime.block_on(async move {
        let plane = ControlPlane::start(opts).await?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(io_err(Path::new("signal handler")))?;
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
        }
        plane.shutdown().await;
        Ok(())
    })
}
