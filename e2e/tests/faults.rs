//! Faults under load on a real local mesh. A `sleep` pod sends a bounded, open-loop load
//! (`tessera-e2e-load`: 200 requests a second for 60 s, keep-alive, no client retries)
//! through its sidecar to `httpbin`, while one fault happens:
//!
//! - the control plane restarts (`tessera up` on SIGHUP: every proxy loses its config
//!   stream and CA connection, a new control plane loads the store from disk);
//! - workload certificates rotate every 5 s (`workloadCertTtl=10s`, renewed at half-life);
//! - an `httpbin` pod is deleted and its Deployment makes a new one, twice;
//! - an `httpbin` sidecar is killed (SIGKILL) and its container restarted.
//!
//! Each failed request is attributed to the fault whose window holds its due time; none
//! may fall outside a window. Rotation and control-plane loss must cost nothing. Pod loss
//! and a killed proxy cost at most the requests in flight on the lost connections: the
//! client sidecar tries another endpoint when a connection cannot be made (Istio's
//! retry on connect failure), but does not resend a request that may have reached the app.
//! The figures these tests print are recorded in RELIABILITY.md.

use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use tessera_e2e::Mesh;

const RATE: u32 = 200;
const SECONDS: u32 = 60;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// `sleep` and `httpbin` (with `replicas` pods) in namespace `ns`, all Ready and synced.
fn workloads(mesh: &Mesh, ns: &str, replicas: u32) {
    mesh.ok(&format!(
        "tessera create ns {ns} && tessera label ns {ns} istio-injection=enabled && \
         tessera apply -n {ns} -f samples/sleep/sleep.yaml && \
         tessera apply -n {ns} -f <(sed 's/replicas: 1/replicas: {replicas}/' samples/httpbin/httpbin.yaml)"
    ));
    mesh.wait_pods(ns, 1 + replicas as usize);
    mesh.wait_synced();
}

/// A fault's window: from just before it starts until `settle` after it ended.
struct Window {
    name: String,
    from_ms: u64,
    to_ms: u64,
}

/// The load from `sleep`, while `faults` runs on this thread; the load's report.
fn under_load(mesh: &Mesh, ns: &str, faults: impl FnOnce(u64)) -> Value {
    let load = env!("CARGO_BIN_EXE_tessera-e2e-load");
    std::thread::scope(|s| {
        let running = s.spawn(|| {
            mesh.ok(&format!(
                "tessera -n {ns} exec deploy/sleep -c sleep -- {load} --rate {RATE} \
                 --duration {SECONDS} --connections 16 --timeout 5 http://httpbin:8000/get"
            ))
        });
        faults(now_ms());
        let out = running.join().expect("the load thread");
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
    })
}

/// Sleeps until `offset` after `t0` (Unix ms).
fn at(t0: u64, offset: Duration) {
    let due = t0 + offset.as_millis() as u64;
    let now = now_ms();
    if due > now {
        std::thread::sleep(Duration::from_millis(due - now));
    }
}

/// Failed requests per window, after checking that the load ran in full and that no
/// failure happened outside every window. Prints the figures for RELIABILITY.md.
fn failures_per_window(test: &str, report: &Value, windows: &[Window]) -> Vec<(String, u64)> {
    let requests = report["requests"].as_u64().unwrap();
    let ok = report["ok"].as_u64().unwrap();
    let failures = report["failures"].as_array().unwrap();
    assert_eq!(requests, u64::from(RATE * SECONDS), "{report}");
    assert_eq!(ok + failures.len() as u64, requests, "{report}");
    let start = report["start_unix_ms"].as_u64().unwrap();
    let mut counts: Vec<(String, u64)> = windows.iter().map(|w| (w.name.clone(), 0)).collect();
    for f in failures {
        let at = start + f["at_ms"].as_u64().unwrap();
        let Some(i) = windows
            .iter()
            .position(|w| (w.from_ms..=w.to_ms).contains(&at))
        else {
            panic!("a request failed outside every fault's window: {f}\n{report}");
        };
        counts[i].1 += 1;
    }
    eprintln!(
        "{test}: {requests} requests at {RATE}/s, {} failed: {counts:?}; failures: {}",
        failures.len(),
        serde_json::to_string(failures).unwrap()
    );
    counts
}

/// Runs `fault`, returning its window (1 s before it until `settle` after it returned).
fn window(name: &str, settle: Duration, fault: impl FnOnce()) -> Window {
    let from_ms = now_ms().saturating_sub(1000);
    fault();
    Window {
        name: name.to_string(),
        from_ms,
        to_ms: now_ms() + settle.as_millis() as u64,
    }
}

#[test]
fn a_control_plane_restart_costs_no_request() {
    let mesh = Mesh::up("fault-control", &[]);
    workloads(&mesh, "cp", 1);
    let pid = std::fs::read_to_string(mesh.state_dir().join("runtime/up.pid"))
        .expect("up.pid")
        .trim()
        .to_string();
    let mut windows = Vec::new();
    let report = under_load(&mesh, "cp", |t0| {
        for (i, offset) in [15, 35].into_iter().enumerate() {
            at(t0, Duration::from_secs(offset));
            windows.push(window(
                &format!("control plane restart {}", i + 1),
                Duration::from_secs(10),
                || {
                    let socket = mesh.state_dir().join("api.sock");
                    let inode = || {
                        use std::os::unix::fs::MetadataExt;
                        // A new socket may get the old one's inode number: compare the
                        // creation time, too.
                        std::fs::metadata(&socket)
                            .map(|m| (m.ino(), m.ctime(), m.ctime_nsec()))
                            .ok()
                    };
                    let before = inode();
                    mesh.ok(&format!("kill -HUP {pid}"));
                    // Down, then back on new sockets: the operator API answers again.
                    let start = Instant::now();
                    while inode().is_none()
                        || inode() == before
                        || mesh.sh("tessera get ns").code != 0
                    {
                        assert!(start.elapsed() < Duration::from_secs(20), "no restart");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    mesh.wait_synced();
                },
            ));
        }
    });
    let counts = failures_per_window("control plane restart", &report, &windows);
    assert!(counts.iter().all(|(_, n)| *n == 0), "{counts:?}");
    // The restarted control plane still pushes: a STRICT policy reaches both proxies.
    mesh.ok("tessera apply -n cp -f - <<'EOF'\n\
         apiVersion: security.istio.io/v1beta1\n\
         kind: PeerAuthentication\n\
         metadata: {name: default}\n\
         spec: {mtls: {mode: STRICT}}\n\
         EOF");
    mesh.wait_synced();
    let code = mesh.ok(
        "tessera -n cp exec deploy/sleep -c sleep -- curl -s -o /dev/null -w '%{http_code}' http://httpbin:8000/get",
    );
    assert_eq!(code.trim(), "200");
}

/// The serial numbers of the certificate a sidecar serves, sampled until `until`.
fn serials(mesh: &Mesh, ns: &str, app: &str) -> String {
    let out = mesh.ok(&format!(
        "tessera -n {ns} exec deploy/{app} -c istio-proxy -- curl -s localhost:15000/certs"
    ));
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v["certificates"][0]["cert_chain"][0]["serial_number"]
        .as_str()
        .unwrap_or_else(|| panic!("no serial in {out}"))
        .to_string()
}

#[test]
fn certificates_rotating_every_five_seconds_cost_no_request() {
    let mesh = Mesh::up("fault-rotate", &["values.global.workloadCertTtl=10s"]);
    workloads(&mesh, "rot", 1);
    let mut seen = std::collections::BTreeSet::new();
    let mut windows = Vec::new();
    let report = under_load(&mesh, "rot", |t0| {
        windows.push(window("rotation every 5 s", Duration::ZERO, || {
            while now_ms() < t0 + u64::from(SECONDS) * 1000 - 2000 {
                for app in ["sleep", "httpbin"] {
                    seen.insert((app, serials(&mesh, "rot", app)));
                }
                std::thread::sleep(Duration::from_secs(2));
            }
        }));
    });
    let counts = failures_per_window("rotation", &report, &windows);
    assert_eq!(counts[0].1, 0, "{counts:?}");
    // Both sidecars went through about a dozen certificates during the minute.
    for app in ["sleep", "httpbin"] {
        let n = seen.iter().filter(|(a, _)| *a == app).count();
        assert!(n >= 8, "{app}: {n} certificates seen: {seen:?}");
    }
}

/// Pods named `app=<app>` in `ns`.
fn pod_names(mesh: &Mesh, ns: &str, app: &str) -> Vec<String> {
    mesh.ok(&format!(
        "tessera -n {ns} get pod -l app={app} -o jsonpath='{{.items[*].metadata.name}}'"
    ))
    .split_whitespace()
    .map(str::to_string)
    .collect()
}

/// At most this many requests may fail per lost pod or proxy: those in flight on the
/// connections it held. At 200 requests a second of about a millisecond each, that is
/// rarely more than one; a client sidecar that kept sending to the lost pod would lose
/// one request per connection of the load (16).
const IN_FLIGHT_BOUND: u64 = 5;

#[test]
fn a_deleted_pod_costs_at_most_the_requests_in_flight() {
    let mesh = Mesh::up("fault-pod", &[]);
    workloads(&mesh, "pods", 2);
    let mut windows = Vec::new();
    let report = under_load(&mesh, "pods", |t0| {
        for (i, offset) in [15, 35].into_iter().enumerate() {
            at(t0, Duration::from_secs(offset));
            let victim = pod_names(&mesh, "pods", "httpbin")[i % 2].clone();
            windows.push(window(
                &format!("pod {} deleted", i + 1),
                Duration::from_secs(3),
                || {
                    mesh.ok(&format!("tessera -n pods delete pod {victim}"));
                    mesh.wait_pods("pods", 3);
                },
            ));
        }
    });
    let counts = failures_per_window("pod deleted", &report, &windows);
    assert!(
        counts.iter().all(|(_, n)| *n <= IN_FLIGHT_BOUND),
        "{counts:?}"
    );
}

#[test]
fn a_killed_sidecar_costs_at_most_the_requests_in_flight() {
    let mesh = Mesh::up("fault-proxy", &[]);
    workloads(&mesh, "crash", 2);
    let mut windows = Vec::new();
    let report = under_load(&mesh, "crash", |t0| {
        for (i, offset) in [15, 35].into_iter().enumerate() {
            at(t0, Duration::from_secs(offset));
            let victim = pod_names(&mesh, "crash", "httpbin")[i % 2].clone();
            windows.push(window(
                &format!("sidecar {} killed", i + 1),
                Duration::from_secs(3),
                || {
                    // The proxy is the process of uid 1337 in the pod's network namespace.
                    mesh.ok(&format!(
                        "net=$(tessera -n crash exec {victim} -c httpbin -- readlink /proc/self/ns/net) && \
                         for p in /proc/[0-9]*; do \
                           if [ \"$(readlink $p/ns/net 2>/dev/null)\" = \"$net\" ] && [ \"$(stat -c %u $p)\" = 1337 ]; then \
                             kill -KILL ${{p#/proc/}}; echo killed ${{p#/proc/}}; fi; \
                         done | grep -q killed"
                    ));
                    // The supervisor restarts it; the pod is Ready again.
                    let start = Instant::now();
                    loop {
                        let restarts = mesh.ok(&format!(
                            "tessera -n crash get pod {victim} -o jsonpath='{{.status.containerStatuses[?(@.name==\"istio-proxy\")].restartCount}}'"
                        ));
                        if restarts.trim() == "1" {
                            break;
                        }
                        assert!(start.elapsed() < Duration::from_secs(20), "not restarted: {restarts}");
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    mesh.wait_pods("crash", 3);
                },
            ));
        }
    });
    let counts = failures_per_window("sidecar killed", &report, &windows);
    assert!(
        counts.iter().all(|(_, n)| *n <= IN_FLIGHT_BOUND),
        "{counts:?}"
    );
}
