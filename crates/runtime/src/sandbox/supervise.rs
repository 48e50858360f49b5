//! A supervisor per container: it starts the process in the pod's namespaces, restarts
//! it with backoff when it exits (as the kubelet's restart policy says), probes it, and
//! stops it with SIGTERM, then SIGKILL after the grace period.

use super::*;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

use crate::netns::{self};

/// What a container's supervisor reports.
#[derive(Debug, Clone, Default)]
pub(super) struct Observed {
    pub(super) pid: Option<u32>,
    pub(super) started_at: Option<String>,
    pub(super) restarts: u32,
    pub(super) last_exit: Option<(i32, String)>,
    pub(super) waiting: Option<(String, String)>,
    /// Exited for good (restartPolicy Never/OnFailure).
    pub(super) done: Option<i32>,
}

pub(super) struct Supervised {
    pub(super) name: String,
    pub(super) image: String,
    pub(super) probe: Probe,
    pub(super) observed: Arc<Mutex<Observed>>,
    pub(super) ready: bool,
    pub(super) stop: watch::Sender<bool>,
    pub(super) task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Probe {
    /// The proxy's `/ready` (200 once it has its certificate and first config).
    ProxyReady,
    /// A TCP connect to the container's first port.
    Port(u16),
    /// Running is ready.
    Running,
}

impl Sandbox {
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
}

pub(super) fn probe(p: Probe) -> bool {
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

pub(super) struct Launch {
    /// The pod's name: its hostname.
    pub(super) pod: String,
    pub(super) argv: Vec<String>,
    pub(super) info: ContainerInfo,
    pub(super) netns: PathBuf,
    pub(super) grace: Duration,
    pub(super) restart: String,
}

pub(super) fn spawn(l: &Launch) -> std::io::Result<tokio::process::Child> {
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
pub(super) async fn supervise(
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
pub(super) async fn terminate(
    child: &mut tokio::process::Child,
    pid: Option<u32>,
    grace: Duration,
) {
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
pub(super) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
