//! `tessera proxy` as a process under 10,000 idle connections: a legitimate request is
//! still served, the proxy's memory stays bounded, the header timeout closes every idle
//! connection, and the log says so once, not 10,000 times.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const IDLE_CONNECTIONS: usize = 10_000;

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills the proxy if the test fails before it is stopped.
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

/// An app that answers every request 200 and closes.
fn app() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n",
                );
            });
        }
    });
    port
}

fn config(dir: &Path, inbound: u16, admin: u16, app: u16) -> String {
    format!(
        r#"version: "1"
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
  accessLog: false
  protocolDetectionMs: 200
  limits:
    headerReadTimeoutMs: 4000
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

fn metric(admin: u16, line_prefix: &str) -> u64 {
    let (_, text) = curl(&[&format!("http://127.0.0.1:{admin}/stats/prometheus")]);
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// This test holds 10,000 sockets itself: raise its own open-file limit.
fn raise_open_file_limit(needed: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        assert!(
            lim.rlim_max >= needed,
            "the hard open-file limit ({}) is below the {needed} this test needs",
            lim.rlim_max
        );
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
}

#[test]
fn ten_thousand_idle_connections_leave_requests_served_and_memory_bounded() {
    raise_open_file_limit(IDLE_CONNECTIONS as u64 + 1000);
    let dir = Dir(std::env::temp_dir().join(format!("tessera-cli-limits-{}", std::process::id())));
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
    let app = app();
    let (inbound, admin) = (free_port(), free_port());
    let file = d.join("proxy.yaml");
    std::fs::write(&file, config(d, inbound, admin, app)).unwrap();
    let mut proxy = Proc(
        Command::new(tessera)
            .args(["proxy", "--config", file.to_str().unwrap()])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let pid = proxy.0.id();
    let mut stderr = proxy.0.stderr.take().unwrap();
    let logs = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let url = format!("http://127.0.0.1:{inbound}/get");
    let started = Instant::now();
    while curl(&["-o", "/dev/null", "-w", "%{http_code}", &url]).1 != "200" {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the proxy never served"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let rss_before = rss_kib(pid);

    let opened = Instant::now();
    let mut idle = Vec::with_capacity(IDLE_CONNECTIONS);
    for _ in 0..IDLE_CONNECTIONS {
        idle.push(TcpStream::connect(("127.0.0.1", inbound)).unwrap());
    }
    let active = "tessera_connections_active{direction=\"inbound\"} ";
    while metric(admin, active) < IDLE_CONNECTIONS as u64 {
        assert!(
            opened.elapsed() < Duration::from_secs(3),
            "the proxy took the connections too slowly to test before their timeout"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Past detection, every connection is in hyper, waiting for a request head.
    std::thread::sleep(Duration::from_millis(600));
    let rss_held = rss_kib(pid);
    let (code, body) = curl(&["-w", "\n%{http_code}", &url]);
    assert_eq!(
        (code, body.as_str()),
        (0, "ok\n\n200"),
        "served while 10,000 idle connections are open"
    );
    eprintln!(
        "RSS: {rss_before} KiB before, {rss_held} KiB with {IDLE_CONNECTIONS} idle connections ({} bytes each)",
        (rss_held.saturating_sub(rss_before)) * 1024 / IDLE_CONNECTIONS as u64
    );
    // Bounded: under 16 KiB of resident memory per idle connection in this (debug)
    // build; BENCHMARKS.md has the release build's figure.
    assert!(
        rss_held.saturating_sub(rss_before) < 16 * IDLE_CONNECTIONS as u64,
        "{rss_before} KiB -> {rss_held} KiB"
    );

    // The header timeout (4 s) closes every one of them.
    for (i, tcp) in idle.iter_mut().enumerate() {
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 16];
        match tcp.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("idle connection {i}: {other:?} instead of a close"),
        }
    }
    assert!(
        opened.elapsed() >= Duration::from_millis(3500),
        "not closed before the timeout"
    );
    drop(idle);
    let timeouts = metric(admin, "tessera_limits_total{reason=\"header_timeout\"} ");
    assert!(
        timeouts >= IDLE_CONNECTIONS as u64,
        "{timeouts} header timeouts counted"
    );
    eprintln!("RSS after the timeouts: {} KiB", rss_kib(pid));
    let (code, _) = curl(&[&url]);
    assert_eq!(code, 0);

    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let _ = proxy.0.wait();
    let logs = logs.join().unwrap();
    let lines = logs
        .lines()
        .filter(|l| l.contains("header_timeout"))
        .count();
    assert_eq!(lines, 1, "one log line for 10,000 header timeouts:\n{logs}");
}
