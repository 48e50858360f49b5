//! One running pod: its directory (hosts file, volumes, /tmp, logs, proxy bootstrap), its
//! network namespace, and a supervisor per container that restarts it with backoff.
//! `sandbox.json` in the pod's directory tells `exec` and `logs` how to reach it.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tessera_contract::config::{self as pc, ProxyConfig, VolumeTable};
use tessera_control::{ObjectKey, Objects};
use tessera_model::kube::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, Pod, PodCondition, PodIp, PodStatus,
};
use tessera_model::Resource;
use tokio::sync::{watch, Notify};

use crate::capture::Capture;
use crate::netns::{self, Bind};
use crate::programs::{program_for, Program};
use crate::{write_private, RuntimeError};
use tessera_model::names::{DEFAULT_CONTAINER_ANNOTATION, PROXY_CONTAINER, PROXY_UID};

/// What `exec` and `logs` read about a running pod.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxInfo {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    pub netns: String,
    pub ip: Ipv4Addr,
    pub default_container: String,
    pub containers: Vec<ContainerInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerInfo {
    pub name: String,
    /// uid and gid (the proxy's 1337); root otherwise.
    pub user: Option<(u32, u32)>,
    pub env: Vec<(String, String)>,
    pub binds: Vec<(PathBuf, PathBuf, bool)>,
    /// Its volume mounts, for programs that resolve manifest paths themselves.
    pub volumes: VolumeTable,
    pub log: PathBuf,
}

impl SandboxInfo {
    pub fn container(&self, name: Option<&str>) -> Result<&ContainerInfo, String> {
        let name = name.unwrap_or(&self.default_container);
        self.containers
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| {
                format!(
                    "container {name} is not valid for pod {}; choose one of: [{}]",
                    self.pod,
                    self.containers
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            })
    }

    pub fn binds(c: &ContainerInfo) -> Vec<Bind> {
        c.binds
            .iter()
            .map(|(s, t, ro)| Bind {
                source: s.clone(),
                target: t.clone(),
                read_only: *ro,
            })
            .collect()
    }
}

/// A pod's directory under `<state>/runtime/pods/`.
pub fn pod_dir(runtime_dir: &Path, namespace: &str, pod: &str) -> PathBuf {
    // Namespaces have no dots; pod names may.
    runtime_dir.join("pods").join(format!("{namespace}.{pod}"))
}

pub fn read_info(runtime_dir: &Path, namespace: &str, pod: &str) -> Option<SandboxInfo> {
    let text = std::fs::read(pod_dir(runtime_dir, namespace, pod).join("sandbox.json")).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Why a pod could not start yet (shown as the containers' waiting reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub reason: String,
    pub message: String,
}

/// What the runtime shares with every sandbox.
pub struct Host {
    pub state_dir: PathBuf,
    pub runtime_dir: PathBuf,
    pub prefix: String,
    pub exe: PathBuf,
    pub trust_domain: String,
    /// Where LoadBalancer services are published on the host (Istio's INGRESS_HOST).
    pub ingress_ip: Ipv4Addr,
}

/// What a container's supervisor reports.
#[derive(Debug, Clone, Default)]
struct Observed {
    pid: Option<u32>,
    started_at: Option<String>,
    restarts: u32,
    last_exit: Option<(i32, String)>,
    waiting: Option<(String, String)>,
    /// Exited for good (restartPolicy Never/OnFailure).
    done: Option<i32>,
}

struct Supervised {
    name: String,
    image: String,
    probe: Probe,
    observed: Arc<Mutex<Observed>>,
    ready: bool,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Clone, Copy)]
enum Probe {
    /// The proxy's `/ready` (200 once it has its certificate and first config).
    ProxyReady,
    /// A TCP connect to the container's first port.
    Port(u16),
    /// Running is ready.
    Running,
}

pub struct Sandbox {
    pub info: SandboxInfo,
    dir: PathBuf,
    pod: Pod,
    supervised: Vec<Supervised>,
    init_done: Vec<String>,
    token_written: Instant,
}

fn rfc3339_now() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl Sandbox {
    /// Prepares the pod (volumes first: a missing Secret keeps it waiting without a
    /// namespace), then its namespace, files and capture. Blocking.
    pub fn prepare(
        host: &Host,
        objects: &Objects,
        pod: &Pod,
        seq: u32,
        ip: Ipv4Addr,
        net: &crate::network::ClusterNetwork,
    ) -> Result<(SandboxInfo, PathBuf), PrepareError> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone();
        let dir = pod_dir(&host.runtime_dir, &ns, &name);
        let _ = std::fs::remove_dir_all(&dir);
        mkdir(&dir, 0o711)?;
        let tmp = dir.join("tmp");
        mkdir(&tmp, 0o1777)?;
        mkdir(&dir.join("logs"), 0o700)?;
        let volumes_root = dir.join("volumes");
        mkdir(&volumes_root, 0o750)?;
        chown(&volumes_root, 0, PROXY_UID)?;
        sync_volumes(objects, pod, &volumes_root)?;

        let netns_name = format!("{}p{seq}", host.prefix);
        net.attach(&netns_name, &format!("veth{seq}"), ip)
            .map_err(PrepareError::Failed)?;
        // Sidecar pods: the init step's capture, before any container runs.
        for c in &pod.spec.init_containers {
            match program_for(&pod.metadata, c) {
                Ok(Program::Capture) => {
                    let capture = Capture::from_args(&c.args)
                        .map_err(|e| PrepareError::Failed(RuntimeError::Pod(e.to_string())))?;
                    crate::network::install_capture(&netns_name, &capture.rules())
                        .map_err(PrepareError::Failed)?;
                }
                Ok(_) | Err(_) => {
                    return Err(PrepareError::Waiting(Waiting {
                        reason: "InitContainerUnsupported".into(),
                        message: format!(
                            "init container {:?}: only the sidecar's capture step (istio-init) runs here",
                            c.name
                        ),
                    }))
                }
            }
        }
        // The services are added by the runtime's next sync of the pods' files.
        std::fs::write(
            dir.join("hosts"),
            format!("127.0.0.1\tlocalhost\n{ip}\t{name}\n"),
        )
        .map_err(io(&dir))?;
        std::fs::write(
            dir.join("resolv.conf"),
            format!(
                "# Names resolve from /etc/hosts; there is no DNS server in the cluster network.\n\
                 search {ns}.svc.cluster.local svc.cluster.local cluster.local\n\
                 nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"
            ),
        )
        .map_err(io(&dir))?;
        set_mode(&dir.join("hosts"), 0o644)?;
        set_mode(&dir.join("resolv.conf"), 0o644)?;

        let containers = pod
            .spec
            .containers
            .iter()
            .map(|c| container_info(host, pod, c, &dir, &tmp, &volumes_root, ip))
            .collect::<Result<Vec<_>, _>>()?;
        let default_container = pod
            .metadata
            .annotations
            .get(DEFAULT_CONTAINER_ANNOTATION)
            .cloned()
            .or_else(|| pod.spec.containers.first().map(|c| c.name.clone()))
            .unwrap_or_default();
        let info = SandboxInfo {
            namespace: ns,
            pod: name,
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            netns: netns_name,
            ip,
            default_container,
            containers,
        };
        write_private(
            &dir.join("sandbox.json"),
            serde_json::to_string_pretty(&info)
                .unwrap_or_default()
                .as_bytes(),
        )
        .map_err(PrepareError::Failed)?;
        Ok((info, dir))
    }

    /// Starts every container's supervisor.
    pub fn start(
        host: &Host,
        control: &tessera_control::ControlState,
        pod: Pod,
        info: SandboxInfo,
        dir: PathBuf,
        wake: Arc<Notify>,
    ) -> Result<Sandbox, RuntimeError> {
        let mut sandbox = Sandbox {
            info,
            dir,
            pod,
            supervised: vec![],
            init_done: vec![],
            token_written: Instant::now(),
        };
        sandbox.init_done = sandbox
            .pod
            .spec
            .init_containers
            .iter()
            .map(|c| c.name.clone())
            .collect();
        let pod = sandbox.pod.clone();
        for c in &pod.spec.containers {
            let program = program_for(&pod.metadata, c);
            let ci = sandbox
                .info
                .container(Some(&c.name))
                .cloned()
                .map_err(RuntimeError::Pod)?;
            let observed = Arc::new(Mutex::new(Observed::default()));
            let (stop, stopped) = watch::channel(false);
            let probe = match &program {
                Ok(Program::Proxy) => Probe::ProxyReady,
                _ => c
                    .ports
                    .first()
                    .and_then(|p| u16::try_from(p.container_port).ok())
                    .map_or(Probe::Running, Probe::Port),
            };
            let launch = match program {
                Ok(Program::Proxy) => {
                    sandbox.write_proxy_files(host, control, &ci)?;
                    Ok(vec![
                        host.exe.display().to_string(),
                        "proxy".into(),
                        "--config".into(),
                        sandbox
                            .dir
                            .join("proxy/bootstrap.json")
                            .display()
                            .to_string(),
                    ])
                }
                Ok(Program::Builtin { app, args }) => {
                    let mut argv = vec![host.exe.display().to_string(), "app".into(), app.into()];
                    argv.extend(args);
                    Ok(argv)
                }
                Ok(Program::Shell(line)) => Ok(vec!["/bin/sh".into(), "-c".into(), line]),
                Ok(Program::Capture) => Err("the capture step is an init container".to_string()),
                Err(why) => Err(why),
            };
            let task = match launch {
                Ok(argv) => {
                    let launch = Launch {
                        pod: pod.metadata.name.clone(),
                        argv,
                        info: ci,
                        netns: netns::path(&sandbox.info.netns),
                        grace: Duration::from_secs(
                            pod.spec
                                .termination_grace_period_seconds
                                .unwrap_or(5)
                                .clamp(0, 10) as u64,
                        ),
                        restart: pod
                            .spec
                            .restart_policy
                            .clone()
                            .unwrap_or_else(|| "Always".into()),
                    };
                    tokio::spawn(supervise(launch, observed.clone(), stopped, wake.clone()))
                }
                Err(why) => {
                    observed.lock().unwrap().waiting = Some(("ImageUnknown".into(), why));
                    tokio::spawn(async {})
                }
            };
            sandbox.supervised.push(Supervised {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                probe,
                observed,
                ready: false,
                stop,
                task,
            });
        }
        Ok(sandbox)
    }

    fn write_proxy_files(
        &mut self,
        host: &Host,
        control: &tessera_control::ControlState,
        proxy: &ContainerInfo,
    ) -> Result<(), RuntimeError> {
        let dir = self.dir.join("proxy");
        std::fs::create_dir_all(&dir).map_err(|e| RuntimeError::io(&dir, e))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| RuntimeError::io(&dir, e))?;
        own_by_proxy(&dir)?;
        self.write_token(control)?;
        let ns = &self.info.namespace;
        let sa = self.pod.spec.service_account();
        let token_file = dir.join("token");
        let capture = self.pod.spec.init_containers.iter().find_map(|c| {
            match program_for(&self.pod.metadata, c) {
                Ok(Program::Capture) => Capture::from_args(&c.args).ok(),
                _ => None,
            }
        });
        let any = |port: u16| SocketAddr::from(([0, 0, 0, 0], port));
        let volumes = proxy.volumes.clone();
        let bootstrap = ProxyConfig {
            version: "bootstrap".into(),
            node: pc::Node {
                id: format!("{}.{ns}", self.info.pod),
                identity: format!("spiffe://{}/ns/{ns}/sa/{sa}", host.trust_domain),
                trust_domain: host.trust_domain.clone(),
            },
            certificates: pc::CertificateSource {
                files: None,
                ca: Some(pc::CaSource {
                    socket: host.state_dir.join(tessera_control::api::CA_SOCKET),
                    token_file: token_file.clone(),
                    ttl: None,
                }),
            },
            admin: pc::Admin::default(),
            runtime: pc::ProxyRuntime::default(),
            listeners: pc::Listeners {
                outbound_capture: capture.as_ref().map(|c| any(c.outbound_port)),
                inbound_capture: capture.as_ref().map(|c| any(c.inbound_port)),
                explicit: vec![],
            },
            services: vec![],
            inbound: pc::Inbound::default(),
            control_plane: Some(pc::ControlPlaneEndpoint {
                socket: host.state_dir.join(tessera_control::api::PUSH_SOCKET),
                token_file,
            }),
            volumes,
            gateway: vec![],
            secrets: vec![],
        };
        let path = dir.join("bootstrap.json");
        write_private(
            &path,
            serde_json::to_string_pretty(&bootstrap)
                .unwrap_or_default()
                .as_bytes(),
        )?;
        own_by_proxy(&path)
    }

    /// The bootstrap token for the pod's service account (24 h; renewed at half-life).
    fn write_token(&mut self, control: &tessera_control::ControlState) -> Result<(), RuntimeError> {
        let path = self.dir.join("proxy/token");
        let token = control.issuer().tokens.mint(
            &self.info.namespace,
            self.pod.spec.service_account(),
            TOKEN_TTL,
            std::time::SystemTime::now(),
        );
        write_private(&path, token.as_bytes())?;
        own_by_proxy(&path)?;
        self.token_written = Instant::now();
        Ok(())
    }

    /// Brings the pod's files up to a new state of the store: the hosts file and the
    /// volumes (Secret and ConfigMap updates reach the files).
    pub fn sync_files(&self, objects: &Objects, hosts: &str) -> Result<(), RuntimeError> {
        let path = self.dir.join("hosts");
        if std::fs::read_to_string(&path).ok().as_deref() != Some(hosts) {
            // In place: the pod's processes see this inode through a bind mount.
            std::fs::write(&path, hosts).map_err(|e| RuntimeError::io(&path, e))?;
        }
        match sync_volumes(objects, &self.pod, &self.dir.join("volumes")) {
            Ok(()) => Ok(()),
            Err(PrepareError::Waiting(w)) => {
                tracing::warn!(pod = %self.key_string(), reason = %w.message, "volume not updated");
                Ok(())
            }
            Err(PrepareError::Failed(e)) => Err(e),
        }
    }

    /// Renews the proxy's bootstrap token at half its lifetime.
    pub fn renew_token(
        &mut self,
        control: &tessera_control::ControlState,
    ) -> Result<(), RuntimeError> {
        let has_proxy = self.supervised.iter().any(|s| s.name == PROXY_CONTAINER);
        if has_proxy && self.token_written.elapsed() > TOKEN_TTL / 2 {
            self.write_token(control)?;
        }
        Ok(())
    }

    fn key_string(&self) -> String {
        format!("{}/{}", self.info.namespace, self.info.pod)
    }

    pub fn uid(&self) -> &str {
        &self.info.uid
    }

    /// Probes every running container (blocking: connects inside the pod's namespace).
    pub fn probe(&mut self) {
        let targets: Vec<(usize, Probe)> = self
            .supervised
            .iter()
            .enumerate()
            .filter(|(_, s)| s.observed.lock().unwrap().pid.is_some())
            .map(|(i, s)| (i, s.probe))
            .collect();
        let results = netns::within(&netns::path(&self.info.netns), move || {
            targets
                .into_iter()
                .map(|(i, p)| (i, probe(p)))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
        for s in &mut self.supervised {
            s.ready = false;
        }
        for (i, ok) in results {
            self.supervised[i].ready = ok;
        }
    }

    /// The pod's status as Kubernetes reports it.
    pub fn status(&self) -> PodStatus {
        let mut statuses = Vec::new();
        let mut all_ready = true;
        for s in &self.supervised {
            let o = s.observed.lock().unwrap().clone();
            let running = o.pid.is_some();
            let ready = running && s.ready;
            all_ready &= ready;
            let state = if running {
                ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: o.started_at.clone(),
                    }),
                    ..Default::default()
                }
            } else if let Some(code) = o.done {
                terminated(code, if code == 0 { "Completed" } else { "Error" })
            } else {
                let (reason, message) = o
                    .waiting
                    .clone()
                    .unwrap_or(("ContainerCreating".into(), String::new()));
                ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some(reason),
                        message: Some(message),
                    }),
                    ..Default::default()
                }
            };
            statuses.push(ContainerStatus {
                name: s.name.clone(),
                image: Some(s.image.clone()),
                ready,
                started: Some(running),
                restart_count: o.restarts as i32,
                state: Some(state),
                last_state: o
                    .last_exit
                    .as_ref()
                    .map(|(code, reason)| terminated(*code, reason)),
                ..Default::default()
            });
        }
        let ip = self.info.ip.to_string();
        PodStatus {
            phase: Some("Running".into()),
            host_ip: Some("127.0.0.1".into()),
            pod_ip: Some(ip.clone()),
            pod_ips: vec![PodIp { ip }],
            conditions: vec![
                PodCondition::of("PodScheduled", true),
                PodCondition::of("Initialized", true),
                PodCondition::of("ContainersReady", all_ready),
                PodCondition::of("Ready", all_ready),
            ],
            init_container_statuses: self
                .init_done
                .iter()
                .map(|n| ContainerStatus {
                    name: n.clone(),
                    ready: true,
                    state: Some(terminated(0, "Completed")),
                    ..Default::default()
                })
                .collect(),
            container_statuses: statuses,
            ..Default::default()
        }
    }

    /// Stops every container (SIGTERM, then SIGKILL after the grace period) and removes the
    /// pod's namespace and directory.
    pub async fn stop(self) {
        for s in &self.supervised {
            let _ = s.stop.send(true);
        }
        for s in self.supervised {
            let _ = s.task.await;
        }
        let ns = self.info.netns.clone();
        let dir = self.dir.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = netns::delete(&ns) {
                tracing::warn!(netns = %ns, error = %e, "pod namespace not removed");
            }
            let _ = std::fs::remove_dir_all(&dir);
        })
        .await;
    }
}

/// The proxy (uid 1337) reads its bootstrap files; nobody else but root does.
fn own_by_proxy(path: &Path) -> Result<(), RuntimeError> {
    std::os::unix::fs::chown(path, Some(PROXY_UID), Some(PROXY_UID))
        .map_err(|e| RuntimeError::io(path, e))
}

const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

fn probe(p: Probe) -> bool {
    use std::io::{Read, Write};
    let timeout = Duration::from_millis(500);
    match p {
        Probe::Running => true,
        Probe::Port(port) => {
            std::net::TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), timeout)
                .is_ok()
        }
        Probe::ProxyReady => {
            let Ok(mut s) = std::net::TcpStream::connect_timeout(
                &SocketAddr::from(([127, 0, 0, 1], 15000)),
                timeout,
            ) else {
                return false;
            };
            let _ = s.set_read_timeout(Some(timeout));
            if s.write_all(b"GET /ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .is_err()
            {
                return false;
            }
            let mut buf = [0u8; 16];
            s.read(&mut buf)
                .is_ok_and(|n| buf[..n].starts_with(b"HTTP/1.1 200"))
        }
    }
}

#[derive(Debug)]
pub enum PrepareError {
    Waiting(Waiting),
    Failed(RuntimeError),
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> PrepareError + '_ {
    move |e| PrepareError::Failed(RuntimeError::io(path, e))
}

fn mkdir(path: &Path, mode: u32) -> Result<(), PrepareError> {
    std::fs::create_dir_all(path).map_err(io(path))?;
    set_mode(path, mode)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), PrepareError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io(path))
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), PrepareError> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(io(path))
}

/// A container's view: environment, binds (hosts, resolv.conf, /tmp, then its volume
/// mounts where the mount point exists on this host or lies under /tmp) and the volume
/// table for the programs that resolve paths themselves.
fn container_info(
    host: &Host,
    pod: &Pod,
    c: &Container,
    dir: &Path,
    tmp: &Path,
    volumes_root: &Path,
    ip: Ipv4Addr,
) -> Result<ContainerInfo, PrepareError> {
    // Order matters: each source is resolved in the view the binds before it made. What
    // the pod needs from the host's /tmp (a state dir, or this binary, living there) is
    // bound into the pod's own /tmp first, so the recursive /tmp bind carries it along.
    let mut binds = Vec::new();
    for needed in [Some(host.state_dir.as_path()), host.exe.parent()]
        .into_iter()
        .flatten()
    {
        if let Ok(rest) = needed.strip_prefix("/tmp") {
            let inside = tmp.join(rest);
            let _ = std::fs::create_dir_all(&inside);
            binds.push((needed.to_path_buf(), inside, false));
        }
    }
    binds.push((tmp.to_path_buf(), PathBuf::from("/tmp"), false));
    binds.push((dir.join("hosts"), PathBuf::from("/etc/hosts"), false));
    binds.push((
        dir.join("resolv.conf"),
        PathBuf::from("/etc/resolv.conf"),
        false,
    ));
    let mut table = VolumeTable::default();
    let mut mounts: Vec<_> = c.volume_mounts.iter().collect();
    mounts.sort_by_key(|m| Path::new(&m.mount_path).components().count());
    for m in mounts {
        let mut source = volumes_root.join(&m.name);
        if let Some(sub) = m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            source = source.join(sub);
        }
        let target = PathBuf::from(m.mount_path.trim_end_matches('/'));
        table.mounts.push(pc::VolumeMount {
            mount_path: target.clone(),
            host_path: source.clone(),
        });
        if let Ok(rest) = target.strip_prefix("/tmp") {
            let _ = std::fs::create_dir_all(tmp.join(rest));
            binds.push((source, target, m.read_only));
        } else {
            // Istio's own mount points (/etc/istio/ingressgateway-certs, ...) are created
            // empty on the host, so commands run in the pod (`ls`, `cat`) see the volume.
            if target.starts_with("/etc/istio") && !target.exists() {
                let _ = std::fs::create_dir_all(&target);
            }
            if target.is_dir() && source.is_dir() {
                binds.push((source, target, m.read_only));
            }
        }
    }
    let is_proxy = c.name == PROXY_CONTAINER;
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert(
        "PATH".into(),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
    );
    env.insert("HOSTNAME".into(), pod.metadata.name.clone());
    env.insert(
        "HOME".into(),
        if is_proxy {
            "/tmp".into()
        } else {
            "/root".into()
        },
    );
    for e in &c.env {
        let value = match (&e.value, &e.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) => match from["fieldRef"]["fieldPath"].as_str() {
                Some("metadata.name") => pod.metadata.name.clone(),
                Some("metadata.namespace") => pod.metadata.namespace.clone().unwrap_or_default(),
                Some("status.podIP") => ip.to_string(),
                Some("spec.serviceAccountName") => pod.spec.service_account().to_string(),
                _ => String::new(),
            },
            _ => String::new(),
        };
        env.insert(e.name.clone(), value);
    }
    env.insert(
        VolumeTable::ENV.into(),
        serde_json::to_string(&table).unwrap_or_default(),
    );
    if is_proxy {
        env.insert("TESSERA_LOG".into(), "info".into());
    }
    Ok(ContainerInfo {
        name: c.name.clone(),
        user: is_proxy.then_some((PROXY_UID, PROXY_UID)),
        env: env.into_iter().collect(),
        binds,
        volumes: table,
        log: dir.join("logs").join(format!("{}.log", c.name)),
    })
}

/// Writes every Secret and ConfigMap volume's files (changed files replaced atomically,
/// removed keys deleted); a missing source that is not optional keeps the pod waiting.
fn sync_volumes(objects: &Objects, pod: &Pod, root: &Path) -> Result<(), PrepareError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    for v in &pod.spec.volumes {
        let dir = root.join(&v.name);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        set_mode(&dir, 0o755)?;
        let (files, optional, what) = if let Some(s) = &v.secret {
            let key = ObjectKey::new(tessera_model::Kind::Secret, ns, &s.secret_name);
            let files = objects.get(&key).and_then(|o| match &o.resource {
                Resource::Secret(secret) => Some(select(secret.files(), &s.items)),
                _ => None,
            });
            (
                files,
                s.optional == Some(true),
                format!("secret {:?}", s.secret_name),
            )
        } else if let Some(cm) = &v.config_map {
            let key = ObjectKey::new(tessera_model::Kind::ConfigMap, ns, &cm.name);
            let files = objects.get(&key).and_then(|o| match &o.resource {
                Resource::ConfigMap(map) => Some(select(map.files(), &cm.items)),
                _ => None,
            });
            (
                files,
                cm.optional == Some(true),
                format!("configmap {:?}", cm.name),
            )
        } else {
            // emptyDir and the rest: an empty directory of the pod's own.
            (Some(BTreeMap::new()), true, String::new())
        };
        let files = match (files, optional) {
            (Some(f), _) => f,
            (None, true) => BTreeMap::new(),
            (None, false) => {
                return Err(PrepareError::Waiting(Waiting {
                    reason: "ContainerCreating".into(),
                    message: format!(
                        "MountVolume.SetUp failed for volume {:?} : {what} not found",
                        v.name
                    ),
                }))
            }
        };
        write_volume(&dir, &files)?;
    }
    Ok(())
}

fn select(
    all: BTreeMap<String, Vec<u8>>,
    items: &[tessera_model::kube::KeyToPath],
) -> BTreeMap<String, Vec<u8>> {
    if items.is_empty() {
        return all;
    }
    items
        .iter()
        .filter_map(|i| Some((i.path.clone(), all.get(&i.key)?.clone())))
        .collect()
}

fn write_volume(dir: &Path, files: &BTreeMap<String, Vec<u8>>) -> Result<(), PrepareError> {
    for (name, data) in files {
        let path = dir.join(name);
        if std::fs::read(&path).ok().as_deref() == Some(data.as_slice()) {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let tmp = dir.join(format!(".{}.tmp", name.replace('/', "_")));
        std::fs::write(&tmp, data).map_err(io(&tmp))?;
        set_mode(&tmp, 0o644)?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if e.path().is_file() && !files.contains_key(&name) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

struct Launch {
    /// The pod's name: its hostname.
    pod: String,
    argv: Vec<String>,
    info: ContainerInfo,
    netns: PathBuf,
    grace: Duration,
    restart: String,
}

fn spawn(l: &Launch) -> std::io::Result<tokio::process::Child> {
    let netns_file = std::fs::File::open(&l.netns)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&l.info.log)?;
    let mut cmd = std::process::Command::new(&l.argv[0]);
    cmd.args(&l.argv[1..])
        .env_clear()
        .envs(l.info.env.iter().map(|(k, v)| (k, v)))
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    netns::enter_pod(
        &mut cmd,
        &netns_file,
        &l.pod,
        &SandboxInfo::binds(&l.info),
        l.info.user,
    )?;
    let child = tokio::process::Command::from(cmd).spawn();
    drop(netns_file);
    child
}

/// Runs a container, restarting it (Always, or OnFailure after a failure) with a backoff
/// that doubles from 1 s to 30 s and resets after 10 s of good running.
async fn supervise(
    l: Launch,
    observed: Arc<Mutex<Observed>>,
    mut stop: watch::Receiver<bool>,
    wake: Arc<Notify>,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let started = Instant::now();
        let mut child = match spawn(&l) {
            Ok(c) => c,
            Err(e) => {
                observed.lock().unwrap().waiting =
                    Some(("RunContainerError".into(), format!("{}: {e}", l.argv[0])));
                wake.notify_one();
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stopped(&mut stop) => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        let pid = child.id();
        {
            let mut o = observed.lock().unwrap();
            o.pid = pid;
            o.started_at = Some(rfc3339_now());
            o.waiting = None;
        }
        wake.notify_one();
        let status = tokio::select! {
            s = child.wait() => s.ok(),
            _ = stopped(&mut stop) => {
                terminate(&mut child, pid, l.grace).await;
                observed.lock().unwrap().pid = None;
                return;
            }
        };
        let code = status.map_or(-1, |s| {
            use std::os::unix::process::ExitStatusExt;
            s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
        });
        let again = match l.restart.as_str() {
            "Never" => false,
            "OnFailure" => code != 0,
            _ => true,
        };
        {
            let mut o = observed.lock().unwrap();
            o.pid = None;
            o.last_exit = Some((code, if code == 0 { "Completed" } else { "Error" }.into()));
            if !again {
                o.done = Some(code);
            }
        }
        if !again {
            wake.notify_one();
            return;
        }
        {
            let mut o = observed.lock().unwrap();
            o.restarts += 1;
            o.waiting = Some((
                "CrashLoopBackOff".into(),
                format!(
                    "back-off {}s restarting failed container {} (exit code {code})",
                    backoff.as_secs(),
                    l.info.name
                ),
            ));
        }
        tracing::warn!(container = %l.info.name, exit = code, "container exited; restarting");
        wake.notify_one();
        if started.elapsed() > Duration::from_secs(10) {
            backoff = Duration::from_secs(1);
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stopped(&mut stop) => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// SIGTERM to the container's process group, SIGKILL after the grace period.
async fn terminate(child: &mut tokio::process::Child, pid: Option<u32>, grace: Duration) {
    if let Some(pid) = pid {
        unsafe {
            libc::kill(-(pid as libc::pid_t), libc::SIGTERM);
        }
        if tokio::time::timeout(grace, child.wait()).await.is_ok() {
            unsafe {
                libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
            }
            return;
        }
        unsafe {
            libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
        }
    }
    let _ = child.kill().await;
}

/// Resolves once `stop` says so (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// A terminated container's state.
fn terminated(code: i32, reason: &str) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: code,
            reason: Some(reason.to_string()),
            ..Default::default()
        }),
        ..Default::default()
    }
}
