//! Processes only: `tessera control` and two `tessera proxy` processes in pushed mode
//! (bootstrap files with `controlPlane`, tokens from `tessera ca token`). The control plane
//! is killed with SIGKILL (stale sockets left behind) and started again; traffic through the
//! proxies never fails, and `proxy-status` shows both proxies SYNCED again.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn tessera() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
}

/// Everything the test started: killed and removed at the end, failed or not.
struct Fixture {
    dir: PathBuf,
    children: Vec<Child>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Fixture {
    fn run(&self, args: &[&str]) -> Output {
        tessera()
            .arg("--state-dir")
            .arg(&self.dir)
            .args(args)
            .output()
            .unwrap()
    }

    fn spawn_control(&mut self) -> usize {
        let log = std::fs::File::create(
            self.dir
                .join(format!("control-{}.log", self.children.len())),
        )
        .unwrap();
        let child = tessera()
            .arg("--state-dir")
            .arg(&self.dir)
            .arg("control")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.push(child);
        let start = Instant::now();
        while !self.run(&["get", "ns"]).status.success() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "control plane did not come up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.children.len() - 1
    }

    fn spawn_proxy(&mut self, name: &str, config: &str) {
        let path = self.dir.join(format!("{name}.yaml"));
        std::fs::write(&path, config).unwrap();
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let child = tessera()
            .args(["proxy", "--config"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.push(child);
    }
}

fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// httpbin's /headers, enough of it: the request headers back, one per line.
fn echo_app() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&buf);
                let headers: String = text.lines().skip(1).map(|l| format!("{l}\n")).collect();
                let _ = stream.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{headers}",
                        headers.len()
                    )
                    .as_bytes(),
                );
            });
        }
    });
    port
}

fn bootstrap(dir: &Path, node: &str, sa: &str, admin: u16, listener: &str) -> String {
    format!(
        r#"version: bootstrap
node:
  id: {node}
  identity: spiffe://cluster.local/ns/full/sa/{sa}
certificates:
  ca:
    socket: {d}/ca.sock
    tokenFile: {d}/{sa}.token
controlPlane:
  socket: {d}/xds.sock
  tokenFile: {d}/{sa}.token
admin:
  address: 127.0.0.1:{admin}
runtime:
  threads: 1
  drainSeconds: 1
listeners:
  explicit:
{listener}"#,
        d = dir.display()
    )
}

fn curl(url: &str) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "-w", "\n%{http_code}", url])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn traffic_survives_a_killed_control_plane() {
    let dir = std::env::temp_dir().join(format!("tessera-pushed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut fx = Fixture {
        dir: dir.clone(),
        children: vec![],
    };
    let first = fx.spawn_control();

    let app = echo_app();
    let topology = format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: full}}
---
apiVersion: v1
kind: Service
metadata: {{name: httpbin, namespace: full}}
spec:
  selector: {{app: httpbin}}
  ports: [{{name: http, port: 8000, targetPort: {app}}}]
---
apiVersion: v1
kind: Pod
metadata:
  name: httpbin-1
  namespace: full
  labels: {{app: httpbin, security.istio.io/tlsMode: istio}}
spec:
  serviceAccountName: httpbin
  containers: [{{name: httpbin, image: httpbin}}, {{name: istio-proxy, image: tessera}}]
status: {{phase: Running, podIP: 127.0.0.2}}
---
apiVersion: v1
kind: Pod
metadata:
  name: sleep-1
  namespace: full
  labels: {{app: sleep, security.istio.io/tlsMode: istio}}
spec:
  serviceAccountName: sleep
  containers: [{{name: sleep, image: curl}}, {{name: istio-proxy, image: tessera}}]
status: {{phase: Running, podIP: 127.0.0.3}}
"#
    );
    let topo = dir.join("topology.yaml");
    std::fs::write(&topo, topology).unwrap();
    let o = fx.run(&["apply", "-f", topo.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for sa in ["httpbin", "sleep"] {
        let o = fx.run(&["ca", "token", "-n", "full", "--service-account", sa]);
        assert!(o.status.success());
        std::fs::write(dir.join(format!("{sa}.token")), o.stdout).unwrap();
    }

    let client_port = free_port("127.0.0.1");
    let (server_admin, client_admin) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
    fx.spawn_proxy(
        "server",
        &bootstrap(
            &dir,
            "httpbin-1.full",
            "httpbin",
            server_admin,
            &format!("    - {{name: inbound, bind: \"127.0.0.2:{app}\", inbound: {app}}}\n"),
        ),
    );
    fx.spawn_proxy(
        "client",
        &bootstrap(
            &dir,
            "sleep-1.full",
            "sleep",
            client_admin,
            &format!(
                "    - {{name: outbound, bind: \"127.0.0.1:{client_port}\", outbound: \"httpbin.full.svc.cluster.local:8000\"}}\n"
            ),
        ),
    );
    let synced = |fx: &Fixture| {
        let o = fx.run(&["proxy-status"]);
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        text.lines().filter(|l| l.contains(" SYNCED ")).count() == 2
    };
    wait_until("both proxies SYNCED", Duration::from_secs(15), || {
        synced(&fx)
    });
    for admin in [server_admin, client_admin] {
        let (code, body) = curl(&format!("http://127.0.0.1:{admin}/ready"));
        assert_eq!(code, 0);
        assert!(body.starts_with("LIVE"), "{body}");
    }
    let url = format!("http://127.0.0.1:{client_port}/headers");
    let check = |when: &str| {
        let (code, body) = curl(&url);
        assert_eq!(code, 0, "{when}: {body}");
        assert!(body.ends_with("\n200"), "{when}: {body}");
        assert!(
            body.contains("URI=spiffe://cluster.local/ns/full/sa/sleep"),
            "{when}: {body}"
        );
    };
    check("with the control plane");

    // SIGKILL: no cleanup, the sockets stay behind.
    fx.children[first].kill().unwrap();
    fx.children[first].wait().unwrap();
    assert!(dir.join("api.sock").exists());
    for i in 0..5 {
        check(&format!("control plane killed, request {i}"));
    }
    let o = fx.run(&["proxy-status"]);
    assert_eq!(o.status.code(), Some(1));

    fx.spawn_control();
    wait_until("reconnected and SYNCED", Duration::from_secs(20), || {
        synced(&fx)
    });
    check("after the restart");
    let (_, dump) = curl(&format!("http://127.0.0.1:{client_admin}/config_dump"));
    assert!(dump.contains("\"connected\": true"), "{dump}");
}
