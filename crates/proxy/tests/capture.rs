//! Captured listeners: iptables REDIRECT in a private network namespace sends the app's
//! connections to 15001 (outbound) and a pod's connections to 15006 (inbound); the proxy
//! recovers where they were going with SO_ORIGINAL_DST. Needs root, `ip` and `iptables`.

mod support;

use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::mpsc;

use support::*;
use tessera_contract::config::{
    InboundMode, InboundPort, PortProtocol, Service, ServicePort, TlsMode,
};

const VIP: &str = "10.96.0.10";
const POD: &str = "10.244.0.5";

/// A network namespace with a unique name, deleted on drop (its iptables rules go with it).
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("tsr-cap-{}-{nanos}", std::process::id());
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns(name);
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    fn exec(&self, cmd: &[&str]) -> std::process::Output {
        let mut argv = vec!["ip", "netns", "exec", &self.0];
        argv.extend_from_slice(cmd);
        sh(&argv)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn sh(argv: &[&str]) -> std::process::Output {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("{argv:?}: {e} (this test needs root, iproute2 and iptables)"));
    assert!(
        out.status.success() || argv.contains(&"curl"),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn captured_connections_keep_their_original_destination() {
    let mesh = Mesh::new();
    let sleep = mesh.workload("full", "sleep");
    let httpbin = mesh.workload("full", "httpbin");
    let ns = Netns::new();
    for addr in [VIP, POD] {
        ns.exec(&["ip", "addr", "add", &format!("{addr}/32"), "dev", "lo"]);
    }
    for (dst, port, to) in [(VIP, "8000", "15001"), (POD, "80", "15006")] {
        ns.exec(&[
            "iptables",
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "-d",
            dst,
            "--dport",
            port,
            "-j",
            "REDIRECT",
            "--to-ports",
            to,
        ]);
    }

    // Client sidecar: the service VIP maps to the pod endpoint over mesh mTLS.
    let mut client = base_config(&sleep);
    client.listeners.outbound_capture = Some("127.0.0.1:15001".parse().unwrap());
    client.services.push(Service {
        host: "httpbin.full.svc.cluster.local".into(),
        vips: vec![VIP.parse().unwrap()],
        ports: vec![ServicePort {
            port: 8000,
            name: Some("http".into()),
            protocol: PortProtocol::Http,
            endpoints: vec![endpoint(
                format!("{POD}:80").parse().unwrap(),
                TlsMode::IstioMutual,
                &[&httpbin.identity],
            )],
        }],
    });
    // Server sidecar: port 80 is STRICT; undeclared ports are PERMISSIVE.
    let mut server = base_config(&httpbin);
    server.listeners.inbound_capture = Some("0.0.0.0:15006".parse().unwrap());
    server.inbound.ports.push(InboundPort {
        port: 80,
        protocol: PortProtocol::Http,
        mode: InboundMode::Strict,
        reason: "test".into(),
        forward_to: None,
        tls: None,
        operation: None,
    });

    // The app and both proxies run on a thread that entered the namespace.
    let (ready_tx, ready_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let ns_path = format!("/var/run/netns/{}", ns.0);
    let runner = std::thread::spawn(move || {
        let file = std::fs::File::open(&ns_path).unwrap();
        assert_eq!(
            unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
            0,
            "setns"
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let _app = echo_app_on("127.0.0.1:80").await;
            let _server = start(server).await;
            let _client = start(client).await;
            ready_tx.send(()).unwrap();
            let _ = stop_rx.await;
        });
    });
    ready_rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("proxies started in the namespace");

    // The app calls the service VIP: captured twice, mesh mTLS in between.
    let out = ns.exec(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        &format!("http://{VIP}:8000/headers"),
    ]);
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let xfcc = xfcc(&body).expect("the request arrived over mesh mTLS");
    assert!(
        xfcc.ends_with("URI=spiffe://cluster.local/ns/full/sa/sleep"),
        "{xfcc}"
    );

    // A plaintext client straight at the pod's port 80: the inbound capture found port 80,
    // which is STRICT (the default would have let it through): reset.
    let out = ns.exec(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{POD}:80/headers"),
    ]);
    assert_eq!(
        out.status.code(),
        Some(56),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "000");

    let _ = stop_tx.send(());
    runner.join().unwrap();
}
