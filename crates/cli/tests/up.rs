//! The real `tessera up` (root: network namespaces and iptables): a small mesh comes up,
//! pods resolve service names, sidecars capture traffic and authenticate each other (XFCC
//! names the client's SPIFFE id), `exec` runs curl in pods and passes exit codes through,
//! volumes follow their Secret, a real program (Debian's nginx) runs as a pod, a
//! LoadBalancer is published on the host's loopback, two meshes run side by side, and
//! teardown — clean (SIGTERM) or after a crash (SIGKILL, then `tessera down`) — leaves no
//! namespace, process or iptables rule behind.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn tessera() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
}

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
        .display()
        .to_string()
}

/// A running `tessera up` on its own state dir. Dropping it stops the mesh and removes
/// whatever is left (even when the test failed).
struct Up {
    dir: PathBuf,
    child: Option<Child>,
}

/// This test process's own loopback address for the mesh's gateway (meshes of parallel
/// tests must not share 127.0.0.1:80/443).
fn own_loopback() -> String {
    let pid = std::process::id();
    format!(
        "127.{}.{}.{}",
        201 + (pid >> 16) % 50,
        (pid >> 8) & 255,
        (pid & 255).max(2)
    )
}

impl Up {
    fn start(name: &str) -> Up {
        let dir = std::env::temp_dir().join(format!("tsr-up-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut child = tessera()
            .arg("--state-dir")
            .arg(&dir)
            .args(["up", "--log-level", "info", "--ingress-ip", &own_loopback()])
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(
                    std::env::temp_dir().join(format!("tsr-up-{name}-{}.log", std::process::id())),
                )
                .unwrap(),
            ))
            .spawn()
            .expect("tessera up (this test needs root, iproute2 and iptables)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        assert!(
            first.contains("mesh running; state dir"),
            "tessera up did not come up: {first:?} (log: /tmp/tsr-up-{name}-{}.log)",
            std::process::id()
        );
        std::thread::spawn(move || for _ in lines {});
        Up {
            dir,
            child: Some(child),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        tessera()
            .arg("--state-dir")
            .arg(&self.dir)
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "tessera {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn apply_stdin(&self, ns: &str, yaml: &str) {
        let mut child = tessera()
            .arg("--state-dir")
            .arg(&self.dir)
            .args(["-n", ns, "apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(yaml.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `exec deploy/NAME -c C -- argv` in a namespace: (exit code, stdout).
    fn exec(&self, ns: &str, target: &str, container: &str, argv: &[&str]) -> (i32, String) {
        let mut args = vec!["-n", ns, "exec", target, "-c", container, "--"];
        args.extend_from_slice(argv);
        let out = self.run(&args);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    fn wait_ready(&self, ns: &str, pods: usize) {
        let start = Instant::now();
        loop {
            let out = self.ok(&["-n", ns, "get", "pods", "-o", "json"]);
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
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
            if items.len() == pods && ready == pods {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "pods in {ns} not ready: {}",
                self.ok(&["-n", ns, "get", "pods"])
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn prefix(&self) -> String {
        tessera_runtime::mesh_prefix(&self.dir)
    }

    /// Every process in the mesh's namespaces.
    fn pids(&self) -> Vec<i32> {
        tessera_runtime::netns::list(&self.prefix())
            .iter()
            .flat_map(|n| tessera_runtime::netns::processes_in(&tessera_runtime::netns::path(n)))
            .collect()
    }

    /// SIGTERM (`kill -TERM`), as Ctrl-C would; the exit status.
    fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        unsafe_kill(child.id() as i32, "TERM");
        let start = Instant::now();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s.code();
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: a crash that leaves everything behind.
    fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn unsafe_kill(pid: i32, signal: &str) {
    Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
}

impl Drop for Up {
    fn drop(&mut self) {
        self.crash();
        let _ = tessera()
            .arg("--state-dir")
            .arg(&self.dir)
            .arg("down")
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
        // The mesh's log stays only to explain a failure.
        if !std::thread::panicking() {
            let mut log = self.dir.as_os_str().to_owned();
            log.push(".log");
            let _ = std::fs::remove_file(log);
        }
    }
}

/// Running (a zombie waiting for its new parent to reap it is not).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.to_string()))
        .is_some_and(|rest| !rest.starts_with('Z'))
}

const REAL_NGINX: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-conf
data:
  nginx.conf: |
    pid /tmp/nginx.pid;
    error_log stderr;
    events {}
    http {
      access_log /dev/stdout;
      server {
        listen 8080;
        location / { return 200 "real nginx from $hostname\n"; }
      }
    }
---
apiVersion: v1
kind: Secret
metadata:
  name: web-secret
stringData:
  greeting: hello
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
  annotations:
    program.tessera.io/nginx: "exec /usr/sbin/nginx -c /tmp/conf/nginx.conf -g 'daemon off;'"
spec:
  volumes:
  - name: conf
    configMap: {name: web-conf}
  - name: secret
    secret: {secretName: web-secret}
  containers:
  - name: nginx
    image: nginx:1.27
    ports: [{containerPort: 8080}]
    volumeMounts:
    - {name: conf, mountPath: /tmp/conf}
    - {name: secret, mountPath: /tmp/secret, readOnly: true}
"#;

const CRASHER: &str = "
apiVersion: v1
kind: Pod
metadata:
  name: crasher
  annotations:
    program.tessera.io/c: 'echo crashing with 3; exit 3'
spec:
  containers:
  - {name: c, image: busybox}
";

const PUBLISHED: &str = "
apiVersion: v1
kind: Service
metadata:
  name: httpbin-lb
spec:
  type: LoadBalancer
  selector: {app: httpbin}
  ports: [{name: http, port: 8000, targetPort: 80}]
";

#[test]
fn a_local_mesh_runs_pods_with_sidecars_and_leaves_nothing_behind() {
    let host_rules_before = iptables_save();
    let mut a = Up::start("a");
    let mut b = Up::start("b");

    // Mesh A: `full` injects by namespace label; `legacy` has no sidecars. The sleep in
    // `full` goes through kube-inject as in the seeds.
    a.ok(&["create", "ns", "full"]);
    a.ok(&["label", "ns", "full", "istio-injection=enabled"]);
    a.ok(&["create", "ns", "legacy"]);
    a.ok(&[
        "-n",
        "full",
        "apply",
        "-f",
        &repo("samples/httpbin/httpbin.yaml"),
    ]);
    let injected = a.ok(&["kube-inject", "-f", &repo("samples/sleep/sleep.yaml")]);
    assert!(injected.contains("name: istio-proxy"), "{injected}");
    a.apply_stdin("full", &injected);
    for f in ["samples/httpbin/httpbin.yaml", "samples/sleep/sleep.yaml"] {
        a.ok(&["-n", "legacy", "apply", "-f", &repo(f)]);
    }
    a.apply_stdin("legacy", REAL_NGINX);
    a.apply_stdin("full", PUBLISHED);
    // Mesh B, side by side: the same names, its own network.
    b.ok(&["create", "ns", "legacy"]);
    for f in ["samples/httpbin/httpbin.yaml", "samples/sleep/sleep.yaml"] {
        b.ok(&["-n", "legacy", "apply", "-f", &repo(f)]);
    }

    let waited = a.ok(&[
        "-n",
        "full",
        "wait",
        "--for=condition=Ready",
        "pod",
        "--all",
        "--timeout=60s",
    ]);
    assert!(waited.contains("condition met"), "{waited}");
    a.wait_ready("full", 2);
    a.wait_ready("legacy", 3);
    b.wait_ready("legacy", 2);
    b.ok(&["create", "ns", "crash"]);
    b.apply_stdin("crash", CRASHER);

    let pods = a.ok(&["-n", "full", "get", "pods"]);
    assert_eq!(pods.matches(" 2/2 ").count(), 2, "{pods}");
    assert!(pods.contains("Running"), "{pods}");
    let legacy = a.ok(&["-n", "legacy", "get", "pods"]);
    assert_eq!(legacy.matches(" 1/1 ").count(), 3, "{legacy}");

    // Names: svc, svc.ns and the FQDN resolve to the service VIP inside pods.
    let vip = a.ok(&[
        "-n",
        "full",
        "get",
        "svc",
        "httpbin",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    for name in ["httpbin", "httpbin.full", "httpbin.full.svc.cluster.local"] {
        let (code, out) = a.exec("full", "deploy/sleep", "sleep", &["getent", "hosts", name]);
        assert_eq!(code, 0, "{name}");
        assert!(out.starts_with(&format!("{vip} ")), "{name}: {out}");
    }
    let (code, _) = a.exec(
        "legacy",
        "deploy/sleep",
        "sleep",
        &["getent", "hosts", "httpbin.nowhere"],
    );
    assert_eq!(code, 2, "unknown names do not resolve");

    // Capture and mesh mTLS: the server's sidecar adds XFCC with the client's identity.
    // Pods are Ready before every sidecar has the push that lists them as endpoints (a
    // debounce later), so the first request may meet "no healthy upstream" for a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (code, out) = loop {
        let (code, out) = a.exec(
            "full",
            "deploy/sleep",
            "sleep",
            &["curl", "-sS", "-f", "http://httpbin.full:8000/headers"],
        );
        if code == 0 || std::time::Instant::now() > deadline {
            break (code, out);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("URI=spiffe://cluster.local/ns/full/sa/sleep"),
        "{out}"
    );
    // A client without a sidecar reaches the same server in plaintext (PERMISSIVE).
    let (code, out) = a.exec(
        "legacy",
        "deploy/sleep",
        "sleep",
        &[
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://httpbin.full:8000/headers",
        ],
    );
    assert_eq!((code, out.as_str()), (0, "200"));

    // The proxy container runs as uid 1337, so its commands bypass capture (seed 000).
    let (code, out) = a.exec("full", "deploy/sleep", "istio-proxy", &["id", "-u"]);
    assert_eq!((code, out.trim()), (0, "1337"));

    // Exit codes pass through: the command's own, curl's 6 (no such host), and 7 for an
    // address outside the sealed network (no route: nothing leaves the host).
    assert_eq!(
        a.exec("full", "deploy/sleep", "sleep", &["sh", "-c", "exit 7"])
            .0,
        7
    );
    assert_eq!(
        a.exec(
            "legacy",
            "deploy/sleep",
            "sleep",
            &["curl", "-sS", "http://nowhere.example/"]
        )
        .0,
        6
    );
    assert_eq!(
        a.exec(
            "legacy",
            "deploy/sleep",
            "sleep",
            &["curl", "-sS", "--max-time", "5", "http://192.0.2.1/"]
        )
        .0,
        7
    );

    // A real program from the host (Debian's nginx) runs as a pod, configured from a
    // ConfigMap volume, behind a service.
    let (code, out) = a.exec(
        "legacy",
        "deploy/sleep",
        "sleep",
        &["curl", "-sS", "http://web.legacy/"],
    );
    assert_eq!((code, out.as_str()), (0, "real nginx from web\n"));
    // Secret updates reach the files.
    let (_, out) = a.exec("legacy", "web", "nginx", &["cat", "/tmp/secret/greeting"]);
    assert_eq!(out, "hello");
    a.apply_stdin(
        "legacy",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: web-secret}\nstringData: {greeting: updated}\n",
    );
    let start = Instant::now();
    while a
        .exec("legacy", "web", "nginx", &["cat", "/tmp/secret/greeting"])
        .1
        != "updated"
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "secret update not seen"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let logs = a.ok(&["-n", "legacy", "logs", "web"]);
    assert!(logs.contains("GET / HTTP/1.1\" 200"), "{logs}");

    // The LoadBalancer is published on the host's loopback; Istio's recipe finds it.
    let host = a.ok(&[
        "-n",
        "full",
        "get",
        "svc",
        "httpbin-lb",
        "-o",
        "jsonpath={.status.loadBalancer.ingress[0].ip}",
    ]);
    let port = a.ok(&[
        "-n",
        "full",
        "get",
        "svc",
        "httpbin-lb",
        "-o",
        "jsonpath={.spec.ports[?(@.name==\"http\")].nodePort}",
    ]);
    assert_eq!(
        host,
        own_loopback(),
        "LoadBalancer services get the mesh's ingress address"
    );
    let service_port = a.ok(&[
        "-n",
        "full",
        "get",
        "svc",
        "httpbin-lb",
        "-o",
        "jsonpath={.spec.ports[?(@.name==\"http\")].port}",
    ]);
    // Istio's recipe (INGRESS_HOST:INGRESS_PORT), and the node port on 127.0.0.1.
    for url in [
        format!("http://{host}:{service_port}/status/418"),
        format!("http://127.0.0.1:{port}/status/418"),
    ] {
        let out = Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "10",
            ])
            .arg(&url)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "418", "{url}");
    }

    // Mesh B works on its own network with the same names and addresses.
    let (code, out) = b.exec(
        "legacy",
        "deploy/sleep",
        "sleep",
        &[
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://httpbin:8000/status/200",
        ],
    );
    assert_eq!((code, out.as_str()), (0, "200"));

    // A container that exits is restarted with backoff; STATUS and RESTARTS say so.
    let start = Instant::now();
    loop {
        let out = b.ok(&["-n", "crash", "get", "pod", "crasher", "-o", "json"]);
        let pod: serde_json::Value = serde_json::from_str(&out).unwrap();
        let c = &pod["status"]["containerStatuses"][0];
        if c["restartCount"].as_u64().unwrap_or(0) >= 2 {
            assert_eq!(c["lastState"]["terminated"]["exitCode"], 3, "{c}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "not restarted: {c}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let table = b.ok(&["-n", "crash", "get", "pods"]);
    assert!(
        table.contains("CrashLoopBackOff") || table.contains("Running"),
        "{table}"
    );
    let logs = b.ok(&["-n", "crash", "logs", "crasher"]);
    assert!(logs.matches("crashing with 3").count() >= 2, "{logs}");

    // Clean stop: SIGTERM exits 0 and removes its namespaces, processes and sockets.
    let a_pids = a.pids();
    assert!(a_pids.len() >= 7, "{a_pids:?}");
    assert_eq!(a.stop(), Some(0));
    assert!(tessera_runtime::netns::list(&a.prefix()).is_empty());
    assert!(
        a_pids.iter().all(|p| !alive(*p)),
        "processes left: {a_pids:?}"
    );
    assert!(!a.dir.join("api.sock").exists());

    // Crash: SIGKILL leaves pods behind; `down` removes them, and the state.
    let b_pids = b.pids();
    b.crash();
    assert!(!tessera_runtime::netns::list(&b.prefix()).is_empty());
    let down = b.ok(&["down"]);
    assert!(down.contains("removed network namespaces"), "{down}");
    assert!(tessera_runtime::netns::list(&b.prefix()).is_empty());
    assert!(
        b_pids.iter().all(|p| !alive(*p)),
        "processes left: {b_pids:?}"
    );
    assert!(!b.dir.exists(), "state dir removed");

    // The host's own tables were never touched.
    assert_eq!(iptables_save(), host_rules_before);
}

/// The host's iptables rules (counters stripped).
fn iptables_save() -> String {
    let out = Command::new("iptables-save").output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with(':'))
        .collect::<Vec<_>>()
        .join("\n")
}
