//! `tessera proxy --config FILE` as a process: it serves, re-reads its file when it
//! changes, and on SIGTERM finishes the request in flight, refuses new connections and
//! exits 0.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills the proxy if the test fails before it exits.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An app whose every answer takes `delay`.
fn slow_app(delay: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                std::thread::sleep(delay);
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nslow\n",
                );
            });
        }
    });
    port
}

fn config(dir: &Path, version: &str, inbound: u16, admin: u16, app: u16) -> String {
    format!(
        r#"version: "{version}"
node:
  id: httpbin.full
  identity: spiffe://cluster.local/ns/full/sa/httpbin
certificates:
  files:
    certChain: {d}/certs/cert-chain.pem
    privateKey: {d}/certs/key.pem
    rootCert: {d}/certs/root-cert.pem
admin:
  address: 127.0.0.1:{admin}
runtime:
  threads: 1
  drainSeconds: 10
listeners:
  explicit:
    - name: inbound
      bind: 127.0.0.1:{inbound}
      inbound: {app}
inbound:
  ports:
    - port: {app}
      protocol: HTTP
      mode: PERMISSIVE
"#,
        d = dir.display()
    )
}

fn curl(args: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn the_proxy_process_serves_reloads_and_drains() {
    let dir = Dir(std::env::temp_dir().join(format!("tessera-cli-proxy-{}", std::process::id())));
    let d = &dir.0;
    let _ = std::fs::remove_dir_all(d);
    let tessera = env!("CARGO_BIN_EXE_tessera");
    for args in [
        vec!["ca", "init"],
        vec![
            "ca",
            "issue",
            "--identity",
            "spiffe://cluster.local/ns/full/sa/httpbin",
            "--out",
            &format!("{}/certs", d.display()),
        ],
    ] {
        let out = Command::new(tessera)
            .arg("--state-dir")
            .arg(d)
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let app = slow_app(Duration::from_millis(1500));
    let (inbound, admin) = (free_port(), free_port());
    let file = d.join("proxy.yaml");
    std::fs::write(&file, config(d, "1", inbound, admin, app)).unwrap();
    let mut proxy = Proc(
        Command::new(tessera)
            .args(["proxy", "--config", file.to_str().unwrap()])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let ready_url = format!("http://127.0.0.1:{admin}/ready");
    let started = Instant::now();
    while curl(&["-o", "/dev/null", "-w", "%{http_code}", &ready_url]).1 != "200" {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the proxy never got ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A new version of the file is picked up.
    std::fs::write(&file, config(d, "2", inbound, admin, app)).unwrap();
    let dump_url = format!("http://127.0.0.1:{admin}/config_dump");
    let started = Instant::now();
    while !curl(&[&dump_url]).1.contains("\"version\": \"2\"") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the new config was not applied"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A slow request is in flight when SIGTERM arrives: it completes.
    let url = format!("http://127.0.0.1:{inbound}/slow");
    let in_flight = std::thread::spawn(move || curl(&[&url]));
    std::thread::sleep(Duration::from_millis(400));
    let pid = proxy.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    std::thread::sleep(Duration::from_millis(300));
    // New connections are refused while it drains.
    assert!(
        TcpStream::connect(("127.0.0.1", inbound)).is_err(),
        "the listener is closed"
    );
    assert_eq!(in_flight.join().unwrap(), (0, "slow\n".to_string()));
    let status = proxy.0.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    let mut logs = String::new();
    proxy
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    for line in [
        "proxy started",
        "configuration applied",
        "SIGTERM: draining",
        "drained",
    ] {
        assert!(logs.contains(line), "{line:?} not in the log:\n{logs}");
    }
    assert!(
        logs.contains("direction=\"inbound\"") || logs.contains("direction=inbound"),
        "an access-log line per request:\n{logs}"
    );
}
