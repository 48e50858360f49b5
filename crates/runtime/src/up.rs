//! `tessera up` and `tessera down`: the control plane and the runtime in one foreground
//! process, and the cleanup that leaves nothing behind — also after a crash, because
//! everything the mesh creates is found again by its namespace prefix and its state dir.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tessera_control::policy::MeshOptions;
use tessera_control::{ControlOptions, ControlPlane};
use tokio::sync::watch;

use crate::network::ClusterNetwork;
use crate::publish::Publisher;
use crate::runtime::Runtime;
use crate::sandbox::Host;
use crate::{mesh_prefix, netns, runtime_dir, RuntimeError};
use tessera_control::inject::SidecarInjector;
use tessera_control::objects::Objects;
use tessera_control::state::Admission;
use tessera_model::Resource;

pub struct UpOptions {
    pub state_dir: PathBuf,
    pub mesh: MeshOptions,
    /// This binary: pods' proxies and built-in apps run its `proxy` and `app` roles.
    pub exe: PathBuf,
    /// The loopback address LoadBalancer services are published on (their
    /// `status.loadBalancer.ingress[0].ip`).
    pub ingress_ip: std::net::Ipv4Addr,
}

const PID_FILE: &str = "up.pid";

/// The Kubernetes API's port, on the mesh's own loopback address (the ingress address),
/// as a cluster's API server listens on 6443.
pub const KUBE_API_PORT: u16 = 6443;

fn check_host() -> Result<(), RuntimeError> {
    if unsafe { libc::geteuid() } != 0 {
        return Err(RuntimeError::NotRoot);
    }
    let missing: Vec<&str> = ["ip", "iptables-restore"]
        .into_iter()
        .filter(|tool| {
            !std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
                .unwrap_or(false)
        })
        .collect();
    if !missing.is_empty() {
        return Err(RuntimeError::MissingTools(missing.join(", ")));
    }
    Ok(())
}

/// The pid of a live `tessera up` on this state dir.
fn running_up(state_dir: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(runtime_dir(state_dir).join(PID_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    // A tessera binary (possibly rebuilt or replaced since it started).
    let ours = std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .zip(std::env::current_exe().ok())
        .is_some_and(|(running, me)| {
            let running = running.to_string_lossy().replace(" (deleted)", "");
            Path::new(&running) == me || Path::new(&running).file_name() == me.file_name()
        });
    (alive && ours && pid != std::process::id() as i32).then_some(pid)
}

/// What `down` removed.
#[derive(Debug, Default)]
pub struct DownReport {
    pub stopped_up: Option<i32>,
    pub namespaces: Vec<String>,
    pub removed_state: bool,
}

/// Removes what a mesh left on this host: its namespaces (with their processes, veths and
/// iptables rules) and the runtime directory.
fn clean(state_dir: &Path) -> Vec<String> {
    let prefix = mesh_prefix(state_dir);
    let mut removed = Vec::new();
    // Pods first, the cluster namespace (its bridge) last.
    let mut names = netns::list(&prefix);
    names.sort_by_key(|n| n.ends_with("cluster"));
    for name in names {
        match netns::delete(&name) {
            Ok(()) => removed.push(name),
            Err(e) => tracing::warn!(netns = %name, error = %e, "not removed"),
        }
    }
    let _ = std::fs::remove_dir_all(runtime_dir(state_dir));
    removed
}

/// Stops a running `up` on the state dir (SIGTERM, then waits), cleans what is left,
/// and unless `keep_state`, removes the mesh's state (store, CA, sockets).
pub fn down(state_dir: &Path, keep_state: bool) -> Result<DownReport, RuntimeError> {
    check_host()?;
    let mut report = DownReport::default();
    if let Some(pid) = running_up(state_dir) {
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        for _ in 0..300 {
            if unsafe { libc::kill(pid, 0) } != 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        if unsafe { libc::kill(pid, 0) } == 0 {
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        report.stopped_up = Some(pid);
    }
    report.namespaces = clean(state_dir);
    if !keep_state && state_dir.exists() {
        for name in [
            "store.db",
            "store.db-wal",
            "store.db-shm",
            tessera_control::api::API_SOCKET,
            tessera_control::api::PUSH_SOCKET,
            tessera_control::api::CA_SOCKET,
        ] {
            let _ = std::fs::remove_file(state_dir.join(name));
        }
        let _ = std::fs::remove_file(state_dir.join(tessera_control::server::KUBECONFIG));
        let _ = std::fs::remove_dir_all(state_dir.join("ca"));
        let _ = std::fs::remove_dir_all(state_dir.join("kube"));
        // Only if nothing else (not ours) is in it.
        report.removed_state = std::fs::remove_dir(state_dir).is_ok();
    }
    Ok(report)
}

/// Runs the mesh in the foreground until SIGINT or SIGTERM. `ready` is called with the
/// state dir once the control plane serves and the cluster network exists.
pub fn up(opts: UpOptions, ready: impl FnOnce(&Path)) -> Result<(), RuntimeError> {
    check_host()?;
    std::fs::create_dir_all(&opts.state_dir).map_err(|e| RuntimeError::io(&opts.state_dir, e))?;
    if let Some(pid) = running_up(&opts.state_dir) {
        return Err(RuntimeError::AlreadyUp {
            state_dir: opts.state_dir.clone(),
            pid,
        });
    }
    let leftovers = clean(&opts.state_dir);
    if !leftovers.is_empty() {
        tracing::warn!(namespaces = %leftovers.join(" "), "removed what an earlier run left behind");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| RuntimeError::Pod(format!("runtime: {e}")))?;
    let result = rt.block_on(serve(opts, ready));
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    result
}

async fn serve(opts: UpOptions, ready: impl FnOnce(&Path)) -> Result<(), RuntimeError> {
    let state_dir =
        std::fs::canonicalize(&opts.state_dir).map_err(|e| RuntimeError::io(&opts.state_dir, e))?;
    let rdir = runtime_dir(&state_dir);
    std::fs::create_dir_all(rdir.join("pods")).map_err(|e| RuntimeError::io(&rdir, e))?;
    for d in [rdir.clone(), rdir.join("pods")] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o711))
            .map_err(|e| RuntimeError::io(&d, e))?;
    }
    let control_options = ControlOptions {
        state_dir: state_dir.clone(),
        mesh: opts.mesh.clone(),
        admission: Some(Arc::new(LocalAdmission { node: node_name() })),
        pod_access: true,
        kube_api: Some(std::net::SocketAddr::new(
            opts.ingress_ip.into(),
            KUBE_API_PORT,
        )),
        pods: Some(Arc::new(LocalPods {
            state_dir: state_dir.clone(),
        })),
        webhooks: None,
    };
    let mut plane = ControlPlane::start(control_options.clone()).await?;
    if opts.mesh.ingress_gateway {
        let ops = crate::install::ingress_gateway_ops(&opts.mesh.root_namespace);
        if let Err(e) = plane.control().submit(ops).await {
            tracing::error!(errors = %e.join("; "), "the ingress gateway could not be installed");
        }
    }
    // Written after the control plane took the state dir (it refuses a second one).
    std::fs::write(rdir.join(PID_FILE), std::process::id().to_string())
        .map_err(|e| RuntimeError::io(&rdir, e))?;
    let prefix = mesh_prefix(&state_dir);
    let started = tokio::task::block_in_place(|| {
        let net = ClusterNetwork::create(&prefix)?;
        let publisher = Publisher::start(&netns::path(&net.namespace()))
            .map_err(|e| RuntimeError::io(&netns::path(&net.namespace()), e))?;
        Ok::<_, RuntimeError>((net, publisher))
    });
    let (net, publisher) = match started {
        Ok(x) => x,
        Err(e) => {
            plane.shutdown().await;
            tokio::task::block_in_place(|| clean(&state_dir));
            return Err(e);
        }
    };
    let host = Host {
        state_dir: state_dir.clone(),
        runtime_dir: rdir.clone(),
        prefix: prefix.clone(),
        exe: opts.exe.clone(),
        trust_domain: opts.mesh.trust_domain.clone(),
        ingress_ip: opts.ingress_ip,
    };
    tracing::info!(state_dir = %state_dir.display(), cluster = %net.namespace(), "mesh up");
    ready(&state_dir);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (controls_tx, controls_rx) = watch::channel(plane.control().clone());
    let pause = Arc::new(tokio::sync::Mutex::new(()));
    let runtime = tokio::spawn(
        Runtime::new(host, plane.control().clone(), net, publisher).run(
            stop_rx,
            controls_rx,
            pause.clone(),
        ),
    );
    while wait_for_signal().await == Signal::Restart {
        let _paused = pause.lock().await;
        plane = restart_control_plane(plane, &control_options).await;
        let _ = controls_tx.send(plane.control().clone());
    }
    tracing::info!("stopping pods");
    let _ = stop_tx.send(true);
    let _ = runtime.await;
    plane.shutdown().await;
    tokio::task::block_in_place(|| clean(&state_dir));
    tracing::info!("mesh down");
    Ok(())
}

/// What the local mesh does to a pod it is given: the sidecar injection of a cluster's
/// webhook, then the scheduler's binding to the one node there is (`spec.nodeName`).
struct LocalAdmission {
    node: String,
}

impl Admission for LocalAdmission {
    fn admit(&self, objects: &Objects, resource: Resource) -> Result<Resource, String> {
        let mut resource = SidecarInjector.admit(objects, resource)?;
        if let Resource::Pod(p) = &mut resource {
            p.spec.node_name.get_or_insert_with(|| self.node.clone());
        }
        Ok(resource)
    }
}

/// The node's name, as a kubelet names its node: the host name.
fn node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The local pods' files, for the Kubernetes API (`kubectl logs`).
struct LocalPods {
    state_dir: PathBuf,
}

impl tessera_control::kube::PodRuntime for LocalPods {
    fn log_path(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
    ) -> Result<PathBuf, String> {
        crate::exec::log_path(&self.state_dir, namespace, pod, container).map_err(|e| e.to_string())
    }

    fn exec_command(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        argv: &[String],
        tty: bool,
    ) -> Result<tessera_control::kube::Exec, String> {
        let pod_cmd = crate::exec::command(&self.state_dir, namespace, pod, container, argv)
            .map_err(|e| e.to_string())?;
        let (mut command, guard) = pod_cmd.into_parts();
        let terminal = if tty {
            let controller = crate::terminal::attach(&mut command, 0, 0)
                .map_err(|e| format!("no terminal for the command: {e}"))?;
            Some(tessera_control::kube::Terminal {
                controller,
                resize: Box::new(crate::terminal::resize),
            })
        } else {
            None
        };
        Ok(tessera_control::kube::Exec {
            command,
            guard: Box::new(guard),
            terminal,
        })
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Signal {
    Stop,
    Restart,
}

/// SIGTERM or SIGINT stop the mesh; SIGHUP restarts its control plane.
async fn wait_for_signal() -> Signal {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        std::future::pending::<()>().await;
        return Signal::Stop;
    };
    tokio::select! {
        _ = term.recv() => Signal::Stop,
        _ = int.recv() => Signal::Stop,
        _ = hup.recv() => Signal::Restart,
    }
}

/// Stops the control plane (every proxy loses its config stream and CA connection, the
/// sockets go away) and starts a new one from the store and CA files on disk, as a
/// restarted istiod comes back. The pods and their proxies keep running meanwhile; the
/// proxies serve their last configuration and reconnect. A start that fails is retried
/// every second.
async fn restart_control_plane(plane: ControlPlane, options: &ControlOptions) -> ControlPlane {
    tracing::info!("restarting the control plane");
    plane.shutdown().await;
    loop {
        match ControlPlane::start(options.clone()).await {
            Ok(plane) => {
                tracing::info!("control plane restarted");
                return plane;
            }
            Err(e) => {
                tracing::error!(error = %e, "the control plane did not start; retrying in 1 s");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}
