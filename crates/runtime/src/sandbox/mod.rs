//! One running pod: its directory (hosts file, volumes, /tmp, logs, proxy bootstrap), its
//! network namespace, and a supervisor per container that restarts it with backoff.
//! `sandbox.json` in the pod's directory tells `exec` and `logs` how to reach it.

mod bootstrap;
mod status;
mod supervise;
mod volumes;

use self::supervise::{supervise, Launch, Observed, Probe, Supervised};
use self::volumes::sync_volumes;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tessera_contract::config::{self as pc, VolumeTable};
use tessera_control::Objects;
use tessera_model::kube::{Container, Pod};
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

    fn key_string(&self) -> String {
        format!("{}/{}", self.info.namespace, self.info.pod)
    }

    pub fn uid(&self) -> &str {
        &self.info.uid
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
