//! Push latency: the time from an operator's apply (the API call starts) until every
//! affected proxy has applied the new snapshot and acknowledged it. A control plane and N
//! proxies in pushed mode run in this process (certificates from the control plane's CA,
//! snapshots over xds.sock); each change flips the namespace's PeerAuthentication between
//! STRICT and PERMISSIVE, which changes every proxy's snapshot (inbound modes and the
//! reasons of every endpoint's TLS). The time includes the control plane's debounce window.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use clap::Parser;
use tessera_contract::config::*;
use tessera_control::api::client::ApiClient;
use tessera_control::api::*;
use tessera_control::policy::MeshOptions;
use tessera_control::push::SyncState;
use tessera_control::{ControlOptions, ControlPlane};

#[derive(Parser)]
#[command(about = "Push latency from apply to every proxy's ACK")]
struct Args {
    /// Proxies (each one a pod of one Service, so every snapshot lists all of them)
    #[arg(long, default_value_t = 50)]
    proxies: usize,
    /// Policy changes to time
    #[arg(long, default_value_t = 30)]
    changes: usize,
}

fn pods(n: usize) -> String {
    let mut out = String::from(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: bench}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: app, namespace: bench}\nspec:\n  selector: {app: bench}\n  ports: [{name: http, port: 8000, targetPort: 80}]\n",
    );
    for i in 0..n {
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: app-{i}\n  namespace: bench\n  labels: {{app: bench, security.istio.io/tlsMode: istio}}\nspec:\n  serviceAccountName: app\n  containers:\n  - {{name: app, image: app, ports: [{{containerPort: 80}}]}}\n  - {{name: istio-proxy, image: tessera}}\nstatus: {{phase: Running, podIP: 10.244.{}.{}}}\n",
            i / 250 + 1,
            i % 250 + 1
        ));
    }
    out
}

fn policy(mode: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {{name: default, namespace: bench}}\nspec:\n  mtls: {{mode: {mode}}}\n"
    )
}

fn bootstrap(dir: &Path, i: usize, token: &Path) -> ProxyConfig {
    ProxyConfig {
        authorization: Default::default(),
        version: "bootstrap".into(),
        node: Node {
            id: format!("app-{i}.bench"),
            identity: "spiffe://cluster.local/ns/bench/sa/app".into(),
            trust_domain: "cluster.local".into(),
        },
        certificates: CertificateSource {
            files: None,
            ca: Some(CaSource {
                socket: dir.join(CA_SOCKET),
                token_file: token.to_path_buf(),
                ttl: None,
            }),
        },
        admin: Admin { address: None },
        runtime: ProxyRuntime {
            threads: 1,
            access_log: false,
            drain_seconds: 1,
            protocol_detection_ms: 300,
            ..Default::default()
        },
        listeners: Listeners::default(),
        services: vec![],
        inbound: Inbound::default(),
        control_plane: Some(tessera_contract::config::ControlPlaneEndpoint {
            socket: dir.join(PUSH_SOCKET),
            token_file: token.to_path_buf(),
        }),
        volumes: Default::default(),
        gateway: vec![],
        secrets: vec![],
    }
}

/// Polls until every proxy acknowledged a push made after `revision`; returns when the
/// first and the last did.
async fn wait_acked(
    client: &ApiClient,
    n: usize,
    revision: u64,
    start: Instant,
) -> (Duration, Duration) {
    let mut first = None;
    loop {
        let rows = client.proxies().await.expect("proxy status");
        let done = rows
            .iter()
            .filter(|r| {
                r.sync == SyncState::Synced
                    && r.status
                        .acked
                        .as_ref()
                        .and_then(|a| a.version.parse::<u64>().ok())
                        .is_some_and(|v| v >= revision)
            })
            .count();
        if done > 0 && first.is_none() {
            first = Some(start.elapsed());
        }
        if done == n {
            return (first.unwrap_or_default(), start.elapsed());
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "proxies did not converge"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let dir = tempfile::tempdir().expect("a temporary state dir");
    let plane = ControlPlane::start(ControlOptions::new(
        dir.path().to_path_buf(),
        MeshOptions::default(),
    ))
    .await
    .expect("control plane");
    let client = ApiClient::new(dir.path());
    let apply = |text: String| {
        let client = client.clone();
        async move {
            client
                .apply(&ApplyRequest {
                    documents: vec![Document {
                        name: "bench.yaml".into(),
                        text,
                    }],
                    namespace: None,
                    create: false,
                })
                .await
                .expect("apply")
        }
    };
    apply(pods(args.proxies)).await;
    let token = plane.control().issuer().tokens.mint(
        "bench",
        "app",
        Duration::from_secs(3600),
        SystemTime::now(),
    );
    let token_path = dir.path().join("app.token");
    std::fs::write(&token_path, token).unwrap();
    let mut proxies = Vec::new();
    for i in 0..args.proxies {
        proxies.push(
            tessera_proxy::start(bootstrap(dir.path(), i, &token_path), None)
                .await
                .expect("proxy"),
        );
    }
    let r0 = client.health().await.unwrap().revision;
    wait_acked(&client, args.proxies, r0, Instant::now()).await;

    let mut firsts = Vec::new();
    let mut lasts = Vec::new();
    for c in 0..args.changes {
        let mode = if c % 2 == 0 { "STRICT" } else { "PERMISSIVE" };
        let start = Instant::now();
        let revision = apply(policy(mode)).await.revision;
        let (first, last) = wait_acked(&client, args.proxies, revision, start).await;
        firsts.push(first);
        lasts.push(last);
        // Let the next change start from quiet.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    firsts.sort();
    lasts.sort();
    println!(
        "push latency, apply -> ACK, {} proxies, {} changes (debounce {} ms included)",
        args.proxies,
        args.changes,
        tessera_control::push::DEBOUNCE.as_millis()
    );
    println!("| | p50 ms | p90 ms | max ms |");
    println!("|---|---:|---:|---:|");
    for (name, v) in [("first proxy ACK", &firsts), ("every proxy ACK", &lasts)] {
        println!(
            "| {name} | {} | {} | {} |",
            ms(percentile(v, 0.5)),
            ms(percentile(v, 0.9)),
            ms(*v.last().unwrap())
        );
    }
    for p in proxies {
        p.drain(Duration::from_millis(10)).await;
    }
    plane.shutdown().await;
}
