//! Tessera's sidecar proxy. It runs one immutable [`Snapshot`] at a time (swapped whole on
//! update), decides nothing the snapshot did not precompute, and serves:
//!
//! - captured outbound (15001) and inbound (15006) listeners, which recover the original
//!   destination with SO_ORIGINAL_DST, and explicit listeners bound to one target;
//! - inbound filter-chain selection by port protocol × effective mode × first bytes
//!   (`chain`), mesh mTLS termination with XFCC, app-TLS passthrough, STRICT resets;
//! - outbound per-endpoint TLS (mesh mTLS, DR SIMPLE/MUTUAL, plaintext), round robin,
//!   keep-alive pools, 503s that name the hop, phase and reason;
//! - the admin endpoint and one access-log line per request or TCP connection.

pub mod admin;
pub mod certs;
pub mod chain;
pub mod conn;
pub mod detect;
pub mod edges;
pub mod gateway;
pub mod http;
pub mod io;
pub mod push;
pub mod route;
pub mod snapshot;
pub mod stats;
pub mod terminate;
pub mod upstream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use hyper_util::server::graceful::GracefulConnection;
use tessera_ca::CredentialStore;
use tessera_contract::config::ProxyConfig;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::certs::{CertError, CertKeeper};
use crate::conn::OutboundTarget;
pub use crate::snapshot::{read_config, ConfigError, Snapshot};
use crate::snapshot::{EndpointRoute, Origination, ALPN_SERVER};
use crate::stats::Stats;
use crate::upstream::HttpPool;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("certificate: {0}")]
    Cert(#[from] CertError),
    #[error("listener {name}: cannot bind {addr}: {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Runtime(std::io::Error),
}

/// What every connection handler shares.
pub struct Shared {
    snapshot: ArcSwap<Snapshot>,
    pub store: CredentialStore,
    pub stats: Stats,
    pub pools: Arc<HttpPool>,
    /// Connections seen, per peer and outcome (admin `/edges`).
    pub edges: Arc<edges::Edges>,
    inbound_tls: TlsAcceptor,
    /// Set once when a drain starts; open HTTP connections are asked to finish.
    drain: tokio::sync::watch::Sender<bool>,
    draining: AtomicBool,
    /// Bumped on every applied configuration: inbound connections re-check the rule they
    /// were accepted under (a policy change must not leave connections it forbids open).
    config_epoch: tokio::sync::watch::Sender<u64>,
    last_rejected: Mutex<Option<String>>,
    /// Pushed mode only: the link to the control plane.
    push: Option<push::SharedPushStatus>,
}

impl Shared {
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    pub fn identity(&self) -> String {
        self.snapshot.load().config.node.identity.clone()
    }

    pub fn node_id(&self) -> String {
        self.snapshot.load().config.node.id.clone()
    }

    pub fn access_log(&self) -> bool {
        self.snapshot.load().config.runtime.access_log
    }

    pub fn detection_wait(&self) -> Duration {
        Duration::from_millis(self.snapshot.load().config.runtime.protocol_detection_ms)
    }

    pub fn inbound_tls(&self) -> TlsAcceptor {
        self.inbound_tls.clone()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn last_rejected(&self) -> Option<String> {
        self.last_rejected.lock().unwrap().clone()
    }

    /// Pushed mode: the state of the link to the control plane.
    pub fn push_status(&self) -> Option<push::PushStatus> {
        self.push.as_ref().map(|p| p.lock().unwrap().clone())
    }

    /// False while a pushed-mode proxy still runs its bootstrap (Istio's readiness gate).
    pub fn is_synced(&self) -> bool {
        self.push
            .as_ref()
            .is_none_or(|p| p.lock().unwrap().applied > 0)
    }

    /// The app behind the inbound side, plaintext; one pool per address.
    pub fn app_route(&self, address: SocketAddr) -> Arc<EndpointRoute> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        ("app", address).hash(&mut h);
        Arc::new(EndpointRoute {
            address,
            workload: None,
            origination: Origination::Plaintext,
            pool_key: h.finish(),
            reason: String::new(),
            local_app: true,
        })
    }

    /// Serves an HTTP connection until it ends. When a drain starts or `stop` resolves,
    /// the connection is asked to finish (GOAWAY / `Connection: close` after the request
    /// in flight; an idle keep-alive connection closes at once) instead of being cut.
    pub async fn serve_graceful<C, F>(&self, conn: C, stop: F) -> C::Output
    where
        C: GracefulConnection,
        F: std::future::Future<Output = ()>,
    {
        let mut conn = std::pin::pin!(conn);
        let mut drain = self.drain.subscribe();
        let drain_started = async move {
            if drain.wait_for(|d| *d).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            out = conn.as_mut() => return out,
            _ = stop => {}
            _ = drain_started => {}
        }
        conn.as_mut().graceful_shutdown();
        conn.await
    }

    /// A receiver that sees every configuration applied from now on.
    pub fn config_updates(&self) -> tokio::sync::watch::Receiver<u64> {
        self.config_epoch.subscribe()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ListenerKind {
    OutboundCapture,
    InboundCapture,
    Outbound(String),
    Inbound(u16),
    /// A gateway pod port (Gateway servers).
    Gateway(u16),
}

struct RunningListener {
    requested: SocketAddr,
    kind: ListenerKind,
    bound: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

fn desired_listeners(config: &ProxyConfig) -> Vec<(String, SocketAddr, ListenerKind)> {
    let mut out = Vec::new();
    if let Some(a) = config.listeners.outbound_capture {
        out.push(("outbound-capture".into(), a, ListenerKind::OutboundCapture));
    }
    if let Some(a) = config.listeners.inbound_capture {
        out.push(("inbound-capture".into(), a, ListenerKind::InboundCapture));
    }
    for l in &config.listeners.explicit {
        let kind = match (&l.outbound, l.inbound) {
            (Some(t), _) => ListenerKind::Outbound(t.clone()),
            (None, Some(p)) => ListenerKind::Inbound(p),
            (None, None) => continue,
        };
        out.push((l.name.clone(), l.bind, kind));
    }
    for g in &config.gateway {
        out.push((
            format!("gateway-{}", g.port),
            SocketAddr::from(([0, 0, 0, 0], g.port)),
            ListenerKind::Gateway(g.port),
        ));
    }
    out
}

/// A running proxy.
pub struct ProxyHandle {
    control: Arc<Control>,
    admin: Option<SocketAddr>,
    _keeper: CertKeeper,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

struct Control {
    shared: Arc<Shared>,
    listeners: tokio::sync::Mutex<HashMap<String, RunningListener>>,
}

impl Control {
    async fn apply_listeners(&self, config: &ProxyConfig) -> Result<(), ProxyError> {
        let mut running = self.listeners.lock().await;
        let desired = desired_listeners(config);
        let names: Vec<&String> = desired.iter().map(|(n, _, _)| n).collect();
        running.retain(|name, l| {
            let keep = names.contains(&name);
            if !keep {
                l.task.abort();
            }
            keep
        });
        for (name, addr, kind) in desired {
            if let Some(l) = running.get(&name) {
                if l.requested == addr && l.kind == kind {
                    continue;
                }
                l.task.abort();
                running.remove(&name);
            }
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ProxyError::Bind {
                    name: name.clone(),
                    addr,
                    source,
                })?;
            let bound = listener.local_addr().map_err(ProxyError::Runtime)?;
            tracing::info!(listener = %name, address = %bound, kind = ?kind, "listening");
            let task = tokio::spawn(accept_loop(self.shared.clone(), listener, kind.clone()));
            running.insert(
                name,
                RunningListener {
                    requested: addr,
                    kind,
                    bound,
                    task,
                },
            );
        }
        Ok(())
    }

    /// Builds and installs a new snapshot, or refuses it whole and keeps the current one.
    async fn update(&self, config: ProxyConfig) -> Result<(), ProxyError> {
        let version = config.version.clone();
        let result = match Snapshot::build(config, &self.shared.store) {
            Ok(snap) => {
                let config = snap.config.clone();
                self.shared.snapshot.store(Arc::new(snap));
                self.shared.config_epoch.send_modify(|e| *e += 1);
                self.apply_listeners(&config).await
            }
            Err(e) => Err(e.into()),
        };
        match &result {
            Ok(()) => {
                self.shared.stats.config(true);
                tracing::info!(version = %version, "configuration applied");
            }
            Err(e) => {
                self.shared.stats.config(false);
                *self.shared.last_rejected.lock().unwrap() =
                    Some(format!("version {version}: {e}"));
                tracing::warn!(version = %version, error = %e, "configuration rejected; keeping the last good one");
            }
        }
        result
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, kind: ListenerKind) {
    let own = listener.local_addr().ok();
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        match &kind {
            ListenerKind::Outbound(name) => {
                let target = OutboundTarget::Named(name.clone());
                tokio::spawn(conn::outbound(shared, tcp, peer, target));
            }
            ListenerKind::Inbound(port) => {
                tokio::spawn(conn::inbound(shared, tcp, peer, *port));
            }
            ListenerKind::Gateway(port) => {
                tokio::spawn(gateway::serve(shared, tcp, peer, *port));
            }
            ListenerKind::OutboundCapture | ListenerKind::InboundCapture => {
                let Some(dst) = original_dst(&tcp) else {
                    tracing::warn!(src = %peer, "no original destination (the connection was not redirected by iptables); closed");
                    continue;
                };
                if Some(dst) == own {
                    tracing::warn!(src = %peer, "connection addressed to the capture port itself; closed");
                    continue;
                }
                if kind == ListenerKind::OutboundCapture {
                    tokio::spawn(conn::outbound(
                        shared,
                        tcp,
                        peer,
                        OutboundTarget::Original(dst),
                    ));
                } else {
                    tokio::spawn(conn::inbound(shared, tcp, peer, dst.port()));
                }
            }
        }
    }
}

/// The destination a connection had before iptables redirected it.
pub fn original_dst(tcp: &tokio::net::TcpStream) -> Option<SocketAddr> {
    let sock = socket2::SockRef::from(tcp);
    let addr = match tcp.local_addr().ok()? {
        SocketAddr::V4(_) => sock.original_dst_v4().ok()?,
        SocketAddr::V6(_) => sock.original_dst_v6().ok()?,
    };
    addr.as_socket()
}

impl ProxyHandle {
    pub fn shared(&self) -> &Arc<Shared> {
        &self.control.shared
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    pub async fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.control
            .listeners
            .lock()
            .await
            .get(name)
            .map(|l| l.bound)
    }

    /// Applies a new configuration (what a push does); a bad one is refused whole.
    pub async fn update(&self, config: ProxyConfig) -> Result<(), ProxyError> {
        self.control.update(config).await
    }

    /// Stops accepting, lets open connections finish for up to `deadline`, then returns.
    pub async fn drain(self, deadline: Duration) {
        let shared = self.control.shared.clone();
        shared.draining.store(true, Ordering::Relaxed);
        for (_, l) in self.control.listeners.lock().await.drain() {
            l.task.abort();
        }
        shared.drain.send_replace(true);
        let started = Instant::now();
        while shared.stats.active() > 0 && started.elapsed() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left = shared.stats.active();
        if left > 0 {
            tracing::warn!(
                connections = left,
                "drain deadline reached; closing the rest"
            );
        } else {
            tracing::info!("drained");
        }
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts a proxy on the current tokio runtime. With `watch_file`, the config file is
/// re-read when it changes.
pub async fn start(
    config: ProxyConfig,
    watch_file: Option<PathBuf>,
) -> Result<ProxyHandle, ProxyError> {
    let identity = config
        .node
        .identity
        .parse()
        .map_err(|e: tessera_ca::SpiffeError| ConfigError::Invalid {
            path: "node.identity".into(),
            message: e.to_string(),
        })?;
    let (store, keeper) =
        certs::load(&config.certificates, &identity, &config.node.trust_domain).await?;
    let snapshot = Snapshot::build(config.clone(), &store)?;
    let server_config = tessera_ca::tls::server_config(&store, true, ALPN_SERVER).map_err(|e| {
        ConfigError::Invalid {
            path: "certificates".into(),
            message: e.to_string(),
        }
    })?;
    let edges = Arc::new(edges::Edges::default());
    let shared = Arc::new(Shared {
        snapshot: ArcSwap::from_pointee(snapshot),
        store,
        stats: Stats::default(),
        pools: Arc::new(HttpPool::new(edges.clone())),
        edges,
        inbound_tls: TlsAcceptor::from(Arc::new(server_config)),
        drain: tokio::sync::watch::channel(false).0,
        draining: AtomicBool::new(false),
        config_epoch: tokio::sync::watch::channel(0).0,
        last_rejected: Mutex::new(None),
        push: config
            .control_plane
            .as_ref()
            .map(|_| Arc::new(Mutex::new(push::PushStatus::default()))),
    });
    let control = Arc::new(Control {
        shared: shared.clone(),
        listeners: tokio::sync::Mutex::new(HashMap::new()),
    });
    control.apply_listeners(&config).await?;
    let mut tasks = Vec::new();
    let admin = match config.admin.address {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ProxyError::Bind {
                    name: "admin".into(),
                    addr,
                    source,
                })?;
            let bound = listener.local_addr().map_err(ProxyError::Runtime)?;
            tasks.push(tokio::spawn(admin::serve(shared.clone(), listener)));
            Some(bound)
        }
        None => None,
    };
    tasks.push(tokio::spawn(watch_user_certificates(control.clone())));
    match (&config.control_plane, &shared.push) {
        // Pushed mode: the file was only the bootstrap.
        (Some(plane), Some(status)) => tasks.push(tokio::spawn(push::run(
            control.clone(),
            config.clone(),
            plane.clone(),
            status.clone(),
        ))),
        _ => {
            if let Some(path) = watch_file {
                tasks.push(tokio::spawn(watch_config(control.clone(), path)));
            }
        }
    }
    tracing::info!(
        identity = %config.node.identity,
        version = %config.version,
        "proxy started"
    );
    Ok(ProxyHandle {
        control,
        admin,
        _keeper: keeper,
        tasks,
    })
}

fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
}

async fn watch_config(control: Arc<Control>, path: PathBuf) {
    let mut last = file_stamp(&path);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = file_stamp(&path);
        if now == last {
            continue;
        }
        last = now;
        match read_config(&path) {
            Ok(config) => {
                let _ = control.update(config).await;
            }
            Err(e) => {
                control.shared.stats.config(false);
                *control.shared.last_rejected.lock().unwrap() = Some(e.to_string());
                tracing::warn!(error = %e, "configuration file changed but cannot be read; keeping the last good one");
            }
        }
    }
}

/// Certificate files named by Gateway servers and Sidecar ingress listeners are re-read
/// when they change (a Secret mounted after the proxy started, or rotated): the snapshot
/// is rebuilt from the same configuration.
async fn watch_user_certificates(control: Arc<Control>) {
    let stamps = |files: &[PathBuf]| files.iter().map(|f| file_stamp(f)).collect::<Vec<_>>();
    let mut watched = control.shared.snapshot().watched_files.clone();
    let mut last = stamps(&watched);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let snap = control.shared.snapshot();
        if snap.watched_files != watched {
            watched = snap.watched_files.clone();
            last = stamps(&watched);
            continue;
        }
        let now = stamps(&watched);
        if now == last {
            continue;
        }
        last = now;
        tracing::info!("certificate files changed; reloading them");
        let _ = control.update(snap.config.clone()).await;
    }
}

/// `tessera proxy --config FILE`: runs until SIGTERM or SIGINT, then drains.
pub fn run_from_file(path: &Path) -> Result<(), ProxyError> {
    let config = read_config(path)?;
    let threads = config.runtime.threads.max(1);
    let drain = Duration::from_secs(config.runtime.drain_seconds);
    // One worker: a current-thread runtime, so no request hops between threads (Envoy's
    // workers are single-threaded event loops too).
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .map_err(ProxyError::Runtime)?;
    runtime.block_on(async move {
        let handle = start(config, Some(path.to_path_buf())).await?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(ProxyError::Runtime)?;
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: draining"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: draining"),
        }
        handle.drain(drain).await;
        Ok(())
    })
}
