//! End-to-end harness: a real `tessera up` on its own state dir, and the seed tasks' shell
//! commands run against it with bash, exactly as a user types them (with `tessera` for
//! `kubectl`/`istioctl`). The suites in `tests/` replay one seed task each and compare
//! what the commands print with what the seed prints.
//!
//! Needs root (network namespaces, iptables), iproute2, iptables, curl and openssl, and
//! the `tessera` binary built next to the test binary (`cargo nextest run --workspace`
//! builds it; `TESSERA_BIN` overrides the path).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod seed000;
pub mod seed002;
pub mod seed004;
pub mod transcript;

/// httpbin behind a port its Service declares TCP (`httpbin-tcp`, port 8001 to the pod's
/// 9000): opaque bytes to the sidecars, HTTP to the app.
pub const HTTPBIN_TCP: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: httpbin-tcp
spec:
  selector:
    app: httpbin-tcp
  ports:
  - name: tcp
    port: 8001
    targetPort: 9000
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: httpbin-tcp
spec:
  replicas: 1
  selector:
    matchLabels:
      app: httpbin-tcp
  template:
    metadata:
      labels:
        app: httpbin-tcp
    spec:
      containers:
      - name: httpbin
        image: docker.io/kennethreitz/httpbin
        ports:
        - containerPort: 9000
"#;

/// The `tessera` binary under test.
pub fn tessera_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TESSERA_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test> → target/<profile>/tessera
    let exe = std::env::current_exe().expect("the test binary's path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("tessera"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} does not exist: build it first (cargo build --bin tessera) or set TESSERA_BIN",
        bin.display()
    );
    bin
}

/// The repository root: the seeds' commands run there (`samples/...` paths).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// What a shell snippet printed.
#[derive(Debug, Clone)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Both streams, for failure messages.
    pub fn both(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A running `tessera up` on a private state dir, with a scratch dir for the seeds' files
/// (`/tmp/nginx.key` becomes `$SCRATCH/nginx.key` so suites can run side by side).
/// Dropping it stops the mesh and removes everything, even when the test failed; the
/// mesh's log is kept only then.
pub struct Mesh {
    name: String,
    dir: PathBuf,
    scratch: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A loopback address of this process's own, so meshes side by side publish their
/// gateways on ports 80 and 443 without colliding.
pub fn unique_loopback() -> std::net::Ipv4Addr {
    use std::sync::atomic::{AtomicU8, Ordering};
    static NEXT: AtomicU8 = AtomicU8::new(0);
    let pid = std::process::id();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::net::Ipv4Addr::new(
        127,
        1 + ((pid >> 16) as u8 % 200).wrapping_add(n.wrapping_mul(7)) % 250,
        (pid >> 8) as u8,
        (pid as u8).max(2),
    )
}

impl Mesh {
    /// `tessera up [--set K=V]...`, returning once the mesh serves.
    pub fn up(name: &str, sets: &[&str]) -> Mesh {
        let unique = format!("tsr-e2e-{name}-{}", std::process::id());
        let tmp = std::env::temp_dir();
        let dir = tmp.join(&unique);
        let scratch = tmp.join(format!("{unique}-files"));
        let log = tmp.join(format!("{unique}.log"));
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch).expect("scratch dir");
        let mut cmd = Command::new(tessera_bin());
        cmd.arg("--state-dir")
            .arg(&dir)
            .arg("up")
            .args(["--ingress-ip", &unique_loopback().to_string()]);
        for s in sets {
            cmd.args(["--set", s]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log).expect("log file")))
            .spawn()
            .expect("tessera up (needs root, iproute2 and iptables)");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        let mesh = Mesh {
            name: name.to_string(),
            dir,
            scratch,
            log,
            child: Some(child),
        };
        assert!(
            first.contains("mesh running; state dir"),
            "tessera up did not come up: {first:?}\n{}",
            std::fs::read_to_string(&mesh.log).unwrap_or_default()
        );
        std::thread::spawn(move || for _ in lines {});
        mesh
    }

    /// The gateway's address on this host (`status.loadBalancer.ingress[0].ip`).
    pub fn ingress_ip(&self) -> String {
        self.ok("tessera -n istio-system get service istio-ingressgateway -o jsonpath='{.status.loadBalancer.ingress[0].ip}'")
            .trim()
            .to_string()
    }

    pub fn state_dir(&self) -> &Path {
        &self.dir
    }

    /// Runs a snippet with bash in the repository root: `tessera` on PATH, the mesh's
    /// state dir in `TESSERA_STATE_DIR`, its kubeconfig in `KUBECONFIG`, `$SCRATCH` for
    /// files (and as `HOME`). `echo` expands `\n` as
    /// in the shells the seeds were written for (`echo -n "\n"` prints a newline).
    pub fn sh(&self, script: &str) -> Run {
        let bin_dir = tessera_bin().parent().expect("bin dir").to_path_buf();
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!("shopt -s xpg_echo\n{script}"))
            .current_dir(repo_root())
            .env("PATH", path)
            .env("TESSERA_STATE_DIR", &self.dir)
            .env("SCRATCH", &self.scratch)
            // The machine's kubectl talks to this mesh's Kubernetes API, and keeps its
            // discovery cache in this mesh's scratch dir.
            .env("KUBECONFIG", self.dir.join("kubeconfig"))
            .env("HOME", &self.scratch)
            .stdin(Stdio::null())
            .output()
            .expect("bash");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// [`Mesh::sh`] that must exit 0; its stdout.
    pub fn ok(&self, script: &str) -> String {
        let run = self.sh(script);
        assert_eq!(run.code, 0, "{script}\n{}", run.both());
        run.stdout
    }

    /// Waits until every pod of `ns` is Ready (`tessera wait`), standing in for the
    /// seeds' "make sure the pods are running". A Deployment's pods appear a moment after `apply` returns, so first every
    /// Deployment of `ns` must have its replicas ready (`wait --all` right away could see
    /// only the pods made already).
    pub fn wait_ready(&self, ns: &str) {
        let start = Instant::now();
        loop {
            let out = self.ok(&format!("tessera get deploy -n {ns} -o json"));
            let v: serde_json::Value = serde_json::from_str(&out).expect("deployments json");
            let items = v["items"].as_array().cloned().unwrap_or_default();
            if items.iter().all(|d| {
                d["status"]["readyReplicas"].as_i64().unwrap_or(0)
                    >= d["spec"]["replicas"].as_i64().unwrap_or(1)
            }) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "{ns}: deployments not ready:\n{}",
                self.ok(&format!("tessera get pods -n {ns}"))
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.ok(&format!(
            "tessera wait --for=condition=Ready pod --all -n {ns} --timeout 90s"
        ));
    }

    /// Waits until `ns` has exactly `count` pods, all Ready (after a delete and re-apply
    /// the old pods must be gone, too); the `get pod` listing then.
    pub fn wait_pods(&self, ns: &str, count: usize) -> String {
        let start = Instant::now();
        loop {
            let out = self.ok(&format!("tessera get pods -n {ns} -o json"));
            let v: serde_json::Value = serde_json::from_str(&out).expect("pods json");
            let items = v["items"].as_array().cloned().unwrap_or_default();
            let ready = items
                .iter()
                .filter(|p| {
                    p["status"]["conditions"].as_array().is_some_and(|c| {
                        c.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
                })
                .count();
            if items.len() == count && ready == count {
                return self.ok(&format!("tessera get pod -n {ns}"));
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "{ns}: want {count} ready pods:\n{}",
                self.ok(&format!("tessera get pods -n {ns}"))
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until no pod of `ns` is left (deletes finish asynchronously, as in a cluster).
    pub fn wait_no_pods(&self, ns: &str) {
        self.wait_pods(ns, 0);
    }

    /// Waits until every proxy has acknowledged the configuration the control plane
    /// pushed last (`tessera proxy-status` shows SYNCED everywhere), after a policy change.
    pub fn wait_synced(&self) {
        let start = Instant::now();
        loop {
            let out = self.ok("tessera proxy-status");
            let rows: Vec<&str> = out.lines().skip(1).collect();
            if rows
                .iter()
                .all(|r| r.split_whitespace().nth(2) == Some("SYNCED"))
            {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "proxies not synced:\n{out}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `script` until `done` holds for what it printed, for up to `limit` (a policy
    /// change reaches the proxies within milliseconds, but not synchronously; pods of a
    /// re-created controller take a moment); the last run.
    pub fn until(&self, script: &str, limit: Duration, done: impl Fn(&Run) -> bool) -> Run {
        let start = Instant::now();
        loop {
            let run = self.sh(script);
            if done(&run) || start.elapsed() > limit {
                return run;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM: `up` stops its pods and removes its namespaces.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let start = Instant::now();
            while child.try_wait().ok().flatten().is_none() {
                if start.elapsed() > Duration::from_secs(30) {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // Whatever a failed stop left behind.
        let _ = Command::new(tessera_bin())
            .arg("--state-dir")
            .arg(&self.dir)
            .arg("down")
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.scratch);
        if std::thread::panicking() {
            eprintln!("mesh {} log kept: {}", self.name, self.log.display());
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}
