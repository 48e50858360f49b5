//! The control plane at cluster scale, measured alone. This binary runs twice:
//! - `--serve DIR`: a control plane (the process measured), loaded with a modelled cluster
//!   (services × pods across namespaces, with DestinationRules, PeerAuthentications and
//!   namespace Sidecars with egress `hosts`); it writes one token per service account and
//!   prints `ready`, then serves until its standard input closes.
//! - the driver (no `--serve`): starts the first as a child, connects the simulated proxies
//!   (each its own connection and stream over `xds.sock`; it ACKs every snapshot on receipt
//!   and parses nothing), runs the scenarios through the API, and reads the child's CPU
//!   time and memory from `/proc`.
//!
//! A change is done when every connected session has evaluated its revision (the control
//! plane's `evaluated`) and every snapshot sent for it has reached its proxy. Its latency
//! is from the apply call to the last of those snapshots; the proxies pushed are the ones
//! that received one.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use tessera_contract::push::config_discovery_client::ConfigDiscoveryClient;
use tessera_contract::push::ConfigRequest;
use tessera_contract::transport::unix_channel;
use tessera_control::api::client::ApiClient;
use tessera_control::api::*;
use tessera_control::policy::MeshOptions;
use tessera_control::{ControlOptions, ControlPlane};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

#[derive(Parser, Clone)]
#[command(about = "The control plane at cluster scale: pushes to simulated proxies")]
struct Args {
    /// Namespaces
    #[arg(long, default_value_t = 50)]
    namespaces: usize,
    /// Services in all (spread over the namespaces)
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// Pods per service (each one a simulated proxy)
    #[arg(long, default_value_t = 2)]
    pods: usize,
    /// Repeats of each change scenario
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// Serve the control plane in DIR (the child process)
    #[arg(long)]
    serve: Option<PathBuf>,
}

/// The modelled cluster, as `(namespace, document)` batches.
fn cluster(a: &Args) -> Vec<String> {
    let per_ns = a.services.div_ceil(a.namespaces);
    let mut batches = Vec::new();
    for n in 0..a.namespaces {
        let ns = format!("ns-{n:02}");
        let mut doc = format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n");
        for s in (n * per_ns)..((n + 1) * per_ns).min(a.services) {
            doc.push_str(&service(&ns, s));
            for p in 0..a.pods {
                doc.push_str(&pod(&ns, s, p));
            }
            // Every tenth service has a DestinationRule of its own.
            if s % 10 == 0 {
                doc.push_str(&format!(
                    "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: svc-{s}, namespace: {ns}}}\nspec:\n  host: svc-{s}\n  trafficPolicy:\n    tls: {{mode: ISTIO_MUTUAL}}\n"
                ));
            }
        }
        // A fifth of the namespaces are STRICT.
        if n % 5 == 0 {
            doc.push_str(&peer_authentication(&ns, "STRICT"));
        }
        // Half of the namespaces scope their sidecars to themselves, the mesh's root and
        // the next namespace.
        if n % 2 == 0 {
            doc.push_str(&sidecar(&ns, &format!("ns-{:02}", (n + 1) % a.namespaces)));
        }
        batches.push(doc);
    }
    batches
}

fn service(ns: &str, s: usize) -> String {
    format!("---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{s}, namespace: {ns}}}\nspec:\n  selector: {{app: svc-{s}}}\n  clusterIP: 10.96.{}.{}\n  ports: [{{name: http, port: 8000, targetPort: 80}}]\n", s / 250, s % 250 + 1)
}

fn pod(ns: &str, s: usize, p: usize) -> String {
    let i = s * 8 + p;
    format!("---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: svc-{s}-{p}\n  namespace: {ns}\n  labels: {{app: svc-{s}, security.istio.io/tlsMode: istio}}\nspec:\n  serviceAccountName: svc-{s}\n  containers:\n  - {{name: app, image: app, ports: [{{containerPort: 80}}]}}\n  - {{name: istio-proxy, image: tessera}}\nstatus: {{phase: Running, podIP: 10.{}.{}.{}}}\n", 100 + i / 65536, (i / 256) % 256, i % 256)
}

fn peer_authentication(ns: &str, mode: &str) -> String {
    format!("---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: default, namespace: {ns}}}\nspec:\n  mtls: {{mode: {mode}}}\n")
}

fn sidecar(ns: &str, other: &str) -> String {
    format!("---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: default, namespace: {ns}}}\nspec:\n  egress:\n  - hosts: [\"./*\", \"istio-system/*\", \"{other}/*\"]\n")
}

async fn apply(client: &ApiClient, text: String) -> u64 {
    client
        .apply(&ApplyRequest {
            documents: vec![Document {
                name: "scale.yaml".into(),
                text,
            }],
            namespace: None,
            create: false,
        })
        .await
        .expect("apply")
        .revision
}

/// The child: a control plane with the cluster loaded and a token per service account.
async fn serve(a: Args, dir: PathBuf) {
    let plane = ControlPlane::start(ControlOptions::new(dir.clone(), MeshOptions::default()))
        .await
        .expect("control plane");
    let client = ApiClient::new(&dir);
    for batch in cluster(&a) {
        apply(&client, batch).await;
    }
    let per_ns = a.services.div_ceil(a.namespaces);
    for s in 0..a.services {
        let token = plane.control().issuer().tokens.mint(
            &format!("ns-{:02}", s / per_ns),
            &format!("svc-{s}"),
            Duration::from_secs(24 * 3600),
            SystemTime::now(),
        );
        std::fs::write(dir.join(format!("svc-{s}.token")), token).unwrap();
    }
    println!("ready");
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    plane.shutdown().await;
}

/// A snapshot's arrival at a simulated proxy.
struct Arrival {
    version: u64,
    at: Instant,
    bytes: usize,
}

type Arrivals = Arc<Mutex<Vec<Vec<Arrival>>>>;

/// One simulated proxy: a stream that ACKs every snapshot as it arrives.
async fn simulated_proxy(
    socket: PathBuf,
    node_id: String,
    token: String,
    idx: usize,
    arrivals: Arrivals,
) {
    let mut client =
        ConfigDiscoveryClient::new(unix_channel(socket, None)).max_decoding_message_size(256 << 20);
    let (tx, rx) = mpsc::channel::<ConfigRequest>(4);
    tx.send(ConfigRequest {
        node_id: node_id.clone(),
        proxy_version: "simulated".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let mut responses = match client.stream(request).await {
        Ok(r) => r.into_inner(),
        Err(e) => panic!("{node_id}: {e}"),
    };
    let mut bytes = 0;
    while let Ok(Some(r)) = responses.message().await {
        bytes += r.config_json.len() + r.services_json.len();
        // A snapshot in parts is answered at its last part.
        if r.more {
            continue;
        }
        let at = Instant::now();
        arrivals.lock().unwrap()[idx].push(Arrival {
            version: r.version_info.parse().unwrap_or(0),
            at,
            bytes: std::mem::take(&mut bytes),
        });
        let ack = ConfigRequest {
            node_id: node_id.clone(),
            version_info: r.version_info,
            response_nonce: r.nonce,
            ..Default::default()
        };
        if tx.send(ack).await.is_err() {
            break;
        }
    }
}

/// The child's CPU seconds (user + system), resident and peak resident memory (MB).
fn usage(pid: u32) -> (f64, f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks / 100.0, kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0)
}

/// Waits until every session evaluated `revision` and the snapshots sent for it arrived;
/// returns (latency of the last arrival, proxies pushed, bytes pushed).
async fn settle(
    client: &ApiClient,
    arrivals: &Arrivals,
    revision: u64,
    start: Instant,
) -> (Duration, usize, usize) {
    loop {
        let rows = client.proxies().await.expect("proxy status");
        if rows.iter().all(|r| r.status.evaluated >= revision) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "sessions did not evaluate revision {revision}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // What was sent is in flight for at most a moment: wait until it stops arriving.
    let mut last_count = usize::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let count: usize = arrivals
            .lock()
            .unwrap()
            .iter()
            .map(|a| a.iter().filter(|x| x.version >= revision).count())
            .sum();
        if count == last_count {
            break;
        }
        last_count = count;
    }
    let log = arrivals.lock().unwrap();
    let mut latest = Duration::ZERO;
    let (mut pushed, mut bytes) = (0, 0);
    for a in log.iter() {
        let mine: Vec<&Arrival> = a
            .iter()
            .filter(|x| x.version >= revision && x.at >= start)
            .collect();
        if !mine.is_empty() {
            pushed += 1;
        }
        for x in mine {
            bytes += x.bytes;
            latest = latest.max(x.at - start);
        }
    }
    (latest, pushed, bytes)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

struct Row {
    name: &'static str,
    latencies: Vec<Duration>,
    pushed: Vec<usize>,
    bytes: Vec<usize>,
    cpu: f64,
}

impl Row {
    fn print(&mut self, proxies: usize) {
        self.latencies.sort();
        let median = |v: &mut Vec<usize>| {
            v.sort();
            v[v.len() / 2]
        };
        let pushed = median(&mut self.pushed);
        let bytes = median(&mut self.bytes);
        println!(
            "| {} | {} | {} | {} | {pushed} of {proxies} | {:.1} | {:.2} |",
            self.name,
            self.latencies.len(),
            ms(percentile(&self.latencies, 0.5)),
            ms(percentile(&self.latencies, 0.99)),
            bytes as f64 / 1e6,
            self.cpu / self.latencies.len() as f64
        );
    }
}

/// A change: the documents to apply for repeat `r`.
type Change = Box<dyn Fn(usize) -> Vec<String>>;

/// The change scenarios, each a change that repeats alternate or extend.
fn scenarios(a: &Args, per_ns: usize) -> Vec<(&'static str, Change)> {
    let per_ns_c = per_ns;
    let pods = a.pods;
    let nss = a.namespaces;
    vec![
        (
            "one PeerAuthentication change",
            Box::new(move |r| {
                let mode = if r % 2 == 0 { "PERMISSIVE" } else { "STRICT" };
                vec![peer_authentication(&format!("ns-{:02}", 5 % nss), mode)]
            }),
        ),
        (
            "one pod added to one service",
            Box::new(move |r| {
                let s = (7 % nss) * per_ns_c + 1;
                vec![pod(&format!("ns-{:02}", 7 % nss), s, pods + r)]
            }),
        ),
        (
            "one namespace-wide change",
            Box::new(move |r| {
                let mode = if r % 2 == 0 {
                    "DISABLE"
                } else {
                    "ISTIO_MUTUAL"
                };
                vec![format!("---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: all, namespace: ns-{0:02}}}\nspec:\n  host: \"*.ns-{0:02}.svc.cluster.local\"\n  trafficPolicy:\n    tls: {{mode: {mode}}}\n", 12 % nss)]
            }),
        ),
        (
            "a burst of 100 pod changes",
            Box::new(move |r| {
                (0..100)
                    .map(|i| {
                        let s = (i * 10 + 3) % (per_ns_c * nss);
                        pod(&format!("ns-{:02}", s / per_ns_c), s, pods + 10 + r)
                    })
                    .collect()
            }),
        ),
    ]
}

/// The child process, once its control plane is ready.
async fn start_control_plane(a: &Args, dir: &std::path::Path) -> tokio::process::Child {
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--namespaces",
            &a.namespaces.to_string(),
            "--services",
            &a.services.to_string(),
            "--pods",
            &a.pods.to_string(),
            "--serve",
        ])
        .arg(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("control plane process");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while let Some(line) = lines.next_line().await.unwrap() {
        if line == "ready" {
            break;
        }
    }
    child
}

async fn drive(a: Args) {
    let dir = tempfile::tempdir().expect("a temporary state dir");
    let mut child = start_control_plane(&a, dir.path()).await;
    let pid = child.id().unwrap();
    let client = ApiClient::new(dir.path());
    let per_ns = a.services.div_ceil(a.namespaces);
    let mut nodes = Vec::new();
    for s in 0..a.services {
        for p in 0..a.pods {
            nodes.push((s, format!("svc-{s}-{p}.ns-{:02}", s / per_ns)));
        }
    }
    let n = nodes.len();
    let arrivals: Arrivals = Arc::new(Mutex::new((0..n).map(|_| Vec::new()).collect()));
    let (cpu0, _, _) = usage(pid);
    let start = Instant::now();
    let socket = dir.path().join(tessera_control::api::PUSH_SOCKET);
    for (idx, (s, node)) in nodes.iter().enumerate() {
        let token = std::fs::read_to_string(dir.path().join(format!("svc-{s}.token"))).unwrap();
        tokio::spawn(simulated_proxy(
            socket.clone(),
            node.clone(),
            token,
            idx,
            arrivals.clone(),
        ));
    }
    // Cold start: every proxy connected and holds a snapshot.
    loop {
        let have = arrivals
            .lock()
            .unwrap()
            .iter()
            .filter(|a| !a.is_empty())
            .count();
        if have == n {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "cold start: {have} of {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Every snapshot counts here, whatever revision it was compiled from.
    let (cold, pushed, bytes) = settle(&client, &arrivals, 0, start).await;
    let (cpu1, rss1, _) = usage(pid);
    let mut rows = vec![Row {
        name: "cold start (every proxy connects)",
        latencies: vec![cold],
        pushed: vec![pushed],
        bytes: vec![bytes],
        cpu: cpu1 - cpu0,
    }];
    let scenarios = scenarios(&a, per_ns);
    for (name, change) in scenarios {
        let mut row = Row {
            name,
            latencies: vec![],
            pushed: vec![],
            bytes: vec![],
            cpu: 0.0,
        };
        for r in 0..a.repeats {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let (c0, _, _) = usage(pid);
            let start = Instant::now();
            let mut revision = 0;
            for doc in change(r) {
                revision = apply(&client, doc).await;
            }
            let (latency, pushed, bytes) = settle(&client, &arrivals, revision, start).await;
            let (c1, _, _) = usage(pid);
            row.latencies.push(latency);
            row.pushed.push(pushed);
            row.bytes.push(bytes);
            row.cpu += c1 - c0;
        }
        rows.push(row);
    }
    let (i0, _, _) = usage(pid);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (i1, rss, peak) = usage(pid);
    println!(
        "control plane at scale: {} services × {} pods in {} namespaces = {n} simulated proxies; {} repeats per change",
        a.services, a.pods, a.namespaces, a.repeats
    );
    println!("| scenario | changes | apply → last affected ACK p50 ms | p99 ms | proxies pushed (median) | MB pushed (median) | control-plane CPU s per change |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for row in &mut rows {
        row.print(n);
    }
    println!(
        "control plane: RSS {rss:.0} MB after the cold start {rss1:.0} MB, peak {peak:.0} MB; idle CPU {:.3} s over 5 s",
        i1 - i0
    );
    drop(child.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = Args::parse();
    match a.serve.clone() {
        Some(dir) => serve(a, dir).await,
        None => drive(a).await,
    }
}
