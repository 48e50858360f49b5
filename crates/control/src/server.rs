//! The control plane running: the store and CA opened from the state dir, the world
//! recomputed after changes, and the sockets served (the operator API, config push and
//! the CA).

use std::convert::Infallible;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tessera_ca::issuance::Issuer;
use tessera_ca::service::CaService;
use tessera_ca::token::TokenKey;
use tessera_ca::{Authority, CaError};
use tessera_contract::transport::{accept_unix, serve_unix};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::api::{self, API_SOCKET, CA_SOCKET, PUSH_SOCKET, STORE_FILE};
use crate::objects::Objects;
use crate::policy::MeshOptions;
use crate::push::{PushService, DEBOUNCE};
use crate::state::{Admission, ControlState};
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
    /// Where to serve the Kubernetes API (HTTPS), if at all. Its credentials live in
    /// `<state-dir>/kube/`, and `<state-dir>/kubeconfig` points `kubectl` at it.
    pub kube_api: Option<std::net::SocketAddr>,
    /// The pods' files (logs) the Kubernetes API serves, when a runtime runs them.
    pub pods: Option<Arc<dyn crate::kube::PodRuntime>>,
    /// Where to serve the admission webhooks (HTTPS, istiod's 15017), if at all.
    pub webhooks: Option<std::net::SocketAddr>,
}

impl ControlOptions {
    pub fn new(state_dir: PathBuf, mesh: MeshOptions) -> ControlOptions {
        ControlOptions {
            state_dir,
            mesh,
            admission: None,
            pod_access: false,
            kube_api: None,
            pods: None,
            webhooks: None,
        }
    }
}

/// A running control plane.
pub struct ControlPlane {
    control: Arc<ControlState>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    sockets: Vec<PathBuf>,
}

impl ControlPlane {
    /// Opens the store and the CA in the state dir and serves the sockets. Must run inside
    /// a tokio runtime.
    pub async fn start(opts: ControlOptions) -> Result<ControlPlane, ControlError> {
        let dir = &opts.state_dir;
        make_state_dir(dir, opts.pod_access)?;
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

        let issuer = open_issuer(dir, &opts.mesh)?;

        let world0 = Arc::new(World::build(&objects, &opts.mesh));
        let (world_tx, world_rx) = watch::channel(world0);
        let (changes, changes_rx) = watch::channel(objects.revision());
        let control = Arc::new(ControlState {
            state_dir: dir.clone(),
            options: opts.mesh.clone(),
            store: Box::new(store),
            history: Mutex::new([Arc::new(objects.clone())].into()),
            objects: Mutex::new(Arc::new(objects)),
            writes: tokio::sync::Mutex::new(()),
            changes,
            world: world_rx.clone(),
            issuer: issuer.clone(),
            proxies: crate::push::ProxyTable::default(),
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
        let kube_local = opts
            .kube_api
            .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        tasks.spawn(serve_api(
            control.clone(),
            opts.pods.clone(),
            kube_local,
            api,
            until(stopped.clone()),
        ));
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
        tasks.spawn(serve_unix(push, push_service, until(stopped.clone())));
        let (ca, p) = bind(CA_SOCKET)?;
        open_to_pods(&p)?;
        sockets.push(p);
        tasks.spawn(serve_unix(
            ca,
            CaService::new(issuer).into_server(),
            until(stopped.clone()),
        ));
        spawn_https(&mut tasks, &control, &opts, &stopped).await?;
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

    pub fn control(&self) -> &Arc<ControlState> {
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

/// The mesh CA in `<dir>/ca` (created on first start) and the token key beside it.
fn open_issuer(dir: &Path, mesh: &MeshOptions) -> Result<Arc<Issuer>, ControlError> {
    let ca_dir = dir.join("ca");
    let (authority, created) = Authority::init(&ca_dir)?;
    if created {
        tracing::info!(dir = %ca_dir.display(), "created the mesh CA");
    }
    let tokens = TokenKey::load_or_create(&ca_dir)?;
    Ok(Arc::new(Issuer {
        authority,
        tokens,
        trust_domain: mesh.trust_domain.clone(),
        default_ttl: Some(Duration::from_secs(mesh.workload_cert_ttl_secs)),
    }))
}

/// The kubeconfig `tessera up` writes for `kubectl`.
pub const KUBECONFIG: &str = "kubeconfig";

/// Binds the Kubernetes API's port, loads or creates its credentials and writes the
/// kubeconfig: the listener, the TLS configuration and the administrator's token.
async fn start_kube_api(
    dir: &Path,
    address: std::net::SocketAddr,
) -> Result<(tokio::net::TcpListener, Arc<rustls::ServerConfig>, String), ControlError> {
    let kube_dir = dir.join("kube");
    let creds = tessera_ca::cluster::ClusterCredentials::load_or_create(&kube_dir)?;
    // Another mesh on the same address has the port: take any free one, which the
    // kubeconfig names.
    let listener = match tokio::net::TcpListener::bind(address).await {
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            tracing::warn!(address = %address, "Kubernetes API: the port is taken; serving on a free one");
            tokio::net::TcpListener::bind((address.ip(), 0)).await
        }
        bound => bound,
    }
    .map_err(io_err(Path::new(&address.to_string())))?;
    let bound = listener.local_addr().map_err(io_err(&kube_dir))?;
    let tls = crate::kube::tls_config(&creds, bound).map_err(|e| ControlError::Io {
        path: kube_dir.clone(),
        source: std::io::Error::other(e),
    })?;
    let kubeconfig = dir.join(KUBECONFIG);
    tessera_ca::authority::write_atomic(
        &kubeconfig,
        creds.kubeconfig(&format!("https://{bound}")).as_bytes(),
        0o600,
    )?;
    tracing::info!(address = %bound, kubeconfig = %kubeconfig.display(), "Kubernetes API serving");
    Ok((listener, Arc::new(tls), creds.admin_token.clone()))
}

/// The HTTPS servers the options ask for: the admission webhooks, the Kubernetes API.
async fn spawn_https(
    tasks: &mut JoinSet<()>,
    control: &Arc<ControlState>,
    opts: &ControlOptions,
    stopped: &watch::Receiver<bool>,
) -> Result<(), ControlError> {
    if let Some(address) = opts.webhooks {
        let (listener, tls) = start_webhooks(control, address).await?;
        tasks.spawn(crate::admission::serve(
            control.clone(),
            listener,
            Arc::new(tls),
            until(stopped.clone()),
        ));
    }
    if let Some(address) = opts.kube_api {
        let (listener, tls, token) = start_kube_api(&opts.state_dir, address).await?;
        tasks.spawn(crate::kube::serve(
            control.clone(),
            opts.pods.clone(),
            listener,
            tls,
            token,
            until(stopped.clone()),
        ));
    }
    Ok(())
}

/// Binds the webhooks' address and makes their serving certificate; the mesh root, which
/// verifies it, goes to `<state-dir>/webhook/ca-bundle.pem` and the bound address beside it.
async fn start_webhooks(
    control: &ControlState,
    address: std::net::SocketAddr,
) -> Result<(tokio::net::TcpListener, rustls::ServerConfig), ControlError> {
    let dir = control.state_dir.join("webhook");
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(io_err(Path::new(&address.to_string())))?;
    let bound = listener.local_addr().map_err(io_err(&dir))?;
    let (tls, bundle) = crate::admission::tls(control, bound).map_err(|e| ControlError::Io {
        path: dir.clone(),
        source: std::io::Error::other(e),
    })?;
    tessera_ca::authority::write_atomic(&dir.join("ca-bundle.pem"), bundle.as_bytes(), 0o644)?;
    tessera_ca::authority::write_atomic(&dir.join("address"), bound.to_string().as_bytes(), 0o644)?;
    tracing::info!(address = %bound, "admission webhooks serving (/inject, /validate)");
    Ok((listener, tls))
}

async fn until(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

/// Recomputes the world after changes, coalescing those within [`DEBOUNCE`].
async fn rebuild_world(
    control: Arc<ControlState>,
    mut changes: watch::Receiver<u64>,
    world: watch::Sender<Arc<World>>,
) {
    let mut trim_pending = false;
    loop {
        let changed = if trim_pending {
            tokio::select! {
                c = changes.changed() => c,
                () = tokio::time::sleep(TRIM_AFTER) => {
                    trim_pending = false;
                    tokio::task::spawn_blocking(release_freed_memory);
                    continue;
                }
            }
        } else {
            changes.changed().await
        };
        if changed.is_err() {
            break;
        }
        trim_pending = true;
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

/// How long after the last recompute the freed memory is given back.
const TRIM_AFTER: Duration = Duration::from_secs(2);

/// A recompute is followed by a wave of pushes whose buffers are freed once the proxies
/// have read them; glibc's allocator keeps freed heap memory unless asked to return it.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Creates the state directory: its owner's alone, or passable (not listable) by the pods'
/// users when they reach the sockets in it.
fn make_state_dir(dir: &Path, pod_access: bool) -> Result<(), ControlError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    use std::os::unix::fs::PermissionsExt;
    let mode = if pod_access { 0o711 } else { 0o700 };
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(io_err(dir))
}

/// The operator API on `api.sock`, and the Kubernetes API beside it (paths under `/api`,
/// `/apis`, `/version` and `/openapi`), which `tessera`'s reads use.
async fn serve_api(
    control: Arc<ControlState>,
    pods: Option<Arc<dyn crate::kube::PodRuntime>>,
    kube_local: std::net::SocketAddr,
    listener: UnixListener,
    shutdown: impl Future<Output = ()>,
) {
    accept_unix(listener, shutdown, |stream| {
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
        let (control, pods) = (control.clone(), pods.clone());
        Some(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (control, pods) = (control.clone(), pods.clone());
                async move {
                    let reply = if crate::kube::is_kubernetes_path(req.uri().path()) {
                        crate::kube::handle(&control, pods.as_deref(), req, kube_local).await
                    } else {
                        api::handle(&control, req)
                            .await
                            .map(http_body_util::BodyExt::boxed)
                    };
                    Ok::<_, Infallible>(reply)
                }
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

/// `tessera control`: serves until SIGTERM or SIGINT.
pub fn run(opts: ControlOptions) -> Result<(), ControlError> {
    run_with(opts, |_| async {})
}

/// [`run`] with a task beside the control plane (Kubernetes mode's mirror), started once
/// the control plane serves and dropped when it stops.
pub fn run_with<F, Fut>(opts: ControlOptions, alongside: F) -> Result<(), ControlError>
where
    F: FnOnce(Arc<ControlState>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(io_err(Path::new("tokio runtime")))?;
    runtime.block_on(async move {
        let plane = ControlPlane::start(opts).await?;
        let beside = tokio::spawn(alongside(plane.control().clone()));
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(io_err(Path::new("signal handler")))?;
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
        }
        beside.abort();
        plane.shutdown().await;
        Ok(())
    })
}
