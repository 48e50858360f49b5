//! A running proxy: start it from a configuration, apply new snapshots whole (or refuse
//! them whole), follow the config file or the control plane, drain on SIGTERM.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use tessera_contract::config::ProxyConfig;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::config::{read_config, ConfigError, Snapshot, ALPN_SERVER};
use crate::identity::{CertError, CertKeeper};
use crate::listeners::{accept_loop, bind_listener, desired_listeners, RunningListener};
use crate::pool::HttpPool;
use crate::shared::Shared;
use crate::telemetry::Telemetry;
use crate::{admin, identity, push};

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

/// A running proxy.
pub struct ProxyHandle {
    control: Arc<ProxyControl>,
    admin: Option<SocketAddr>,
    _keeper: CertKeeper,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

pub(crate) struct ProxyControl {
    shared: Arc<Shared>,
    listeners: tokio::sync::Mutex<HashMap<String, RunningListener>>,
}

impl ProxyControl {
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
            let listener = bind_listener(addr).map_err(|source| ProxyError::Bind {
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
                self.shared
                    .telemetry
                    .set_access_log(config.runtime.access_log);
                self.shared.snapshot.store(Arc::new(snap));
                self.shared.config_epoch.send_modify(|e| *e += 1);
                self.apply_listeners(&config).await
            }
            Err(e) => Err(e.into()),
        };
        match &result {
            Ok(()) => {
                self.shared.telemetry.metrics.config(true);
                tracing::info!(version = %version, "configuration applied");
            }
            Err(e) => {
                self.shared.telemetry.metrics.config(false);
                *self.shared.last_rejected.lock().unwrap() =
                    Some(format!("version {version}: {e}"));
                tracing::warn!(version = %version, error = %e, "configuration rejected; keeping the last good one");
            }
        }
        result
    }
}

impl push::ConfigTarget for ProxyControl {
    fn current_version(&self) -> String {
        self.shared.snapshot().config.version.clone()
    }

    async fn apply(&self, config: ProxyConfig) -> Result<(), String> {
        self.update(config).await.map_err(|e| e.to_string())
    }

    fn refused(&self, reason: &str) {
        self.shared.telemetry.metrics.config(false);
        *self.shared.last_rejected.lock().unwrap() = Some(reason.to_string());
    }
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
        while shared.telemetry.metrics.active() > 0 && started.elapsed() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left = shared.telemetry.metrics.active();
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
        identity::load(&config.certificates, &identity, &config.node.trust_domain).await?;
    let snapshot = Snapshot::build(config.clone(), &store)?;
    let server_config = tessera_ca::tls::server_config(&store, true, ALPN_SERVER).map_err(|e| {
        ConfigError::Invalid {
            path: "certificates".into(),
            message: e.to_string(),
        }
    })?;
    let telemetry = Arc::new(Telemetry::default());
    telemetry.set_access_log(config.runtime.access_log);
    let shared = Arc::new(Shared {
        snapshot: ArcSwap::from_pointee(snapshot),
        store,
        pools: Arc::new(HttpPool::new(telemetry.clone())),
        telemetry,
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
    let control = Arc::new(ProxyControl {
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
    tasks.push(tokio::spawn(sweep_pools(shared.clone())));
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

async fn watch_config(control: Arc<ProxyControl>, path: PathBuf) {
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
                control.shared.telemetry.metrics.config(false);
                *control.shared.last_rejected.lock().unwrap() = Some(e.to_string());
                tracing::warn!(error = %e, "configuration file changed but cannot be read; keeping the last good one");
            }
        }
    }
}

/// Certificate files named by Gateway servers and Sidecar ingress listeners are re-read
/// when they change (a Secret mounted after the proxy started, or rotated): the snapshot
/// is rebuilt from the same configuration.
async fn watch_user_certificates(control: Arc<ProxyControl>) {
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

/// Closes pooled upstream connections idle past the upstream idle timeout, at a quarter
/// of it, so connections to endpoints no longer used do not stay open.
async fn sweep_pools(shared: Arc<Shared>) {
    loop {
        let idle = shared.limits().upstream_idle;
        tokio::time::sleep((idle / 4).max(Duration::from_millis(10))).await;
        shared.pools.sweep(idle);
    }
}

/// Raises the open-file limit to its hard maximum: every connection is a descriptor (two
/// when forwarded), and the per-listener connection cap, not the kernel's default soft
/// limit of 1024, is what should bound them.
fn raise_open_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let was = lim.rlim_cur;
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                tracing::debug!(from = was, to = lim.rlim_max, "raised the open-file limit");
            }
        }
    }
}

/// `tessera proxy --config FILE`: runs until SIGTERM or SIGINT, then drains.
pub fn run_from_file(path: &Path) -> Result<(), ProxyError> {
    let config = read_config(path)?;
    raise_open_file_limit();
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
