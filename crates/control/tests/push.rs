//! Config push end to end: a control plane and two proxies in pushed mode (certificates
//! from the control plane's CA, snapshots over xds.sock), real curl through them. Covers
//! ACK → SYNCED, a change reaching only the proxies it affects, a NACK that leaves the
//! last good snapshot serving, and traffic that keeps flowing while the control plane is
//! stopped and started again.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tessera_contract::config::*;
use tessera_control::api::client::ApiClient;
use tessera_control::api::*;
use tessera_control::policy::MeshOptions;
use tessera_control::push::SyncState;
use tessera_control::{ControlOptions, ControlPlane};
use tessera_proxy::ProxyHandle;

async fn start_plane(dir: &Path) -> ControlPlane {
    ControlPlane::start(ControlOptions::new(
        dir.to_path_buf(),
        MeshOptions::default(),
    ))
    .await
    .expect("control plane starts")
}

/// A stand-in for httpbin's /headers: echoes the request headers, one per line.
async fn echo_app(addr: SocketAddr) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let bound = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: hyper::Request<Incoming>| async move {
                    let mut text = String::new();
                    for (k, v) in req.headers() {
                        text.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
                    }
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(
                        text,
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    bound
}

fn topology(app_port: u16) -> String {
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: full}}
---
apiVersion: v1
kind: Service
metadata: {{name: httpbin, namespace: full}}
spec:
  selector: {{app: httpbin}}
  ports:
  - {{name: http, port: 8000, targetPort: {app_port}}}
---
apiVersion: v1
kind: Pod
metadata:
  name: httpbin-1
  namespace: full
  labels: {{app: httpbin, security.istio.io/tlsMode: istio}}
spec:
  serviceAccountName: httpbin
  containers:
  - {{name: httpbin, image: docker.io/kennethreitz/httpbin, ports: [{{containerPort: {app_port}}}]}}
  - {{name: istio-proxy, image: tessera}}
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
  containers:
  - {{name: sleep, image: curlimages/curl}}
  - {{name: istio-proxy, image: tessera}}
status: {{phase: Running, podIP: 127.0.0.3}}
"#
    )
}

fn bootstrap(
    dir: &Path,
    node: &str,
    identity: &str,
    token: &Path,
    listener: ExplicitListener,
) -> ProxyConfig {
    ProxyConfig {
        authorization: Default::default(),
        version: "bootstrap".into(),
        node: Node {
            id: node.into(),
            identity: identity.into(),
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
            access_log: true,
            drain_seconds: 1,
            protocol_detection_ms: 300,
            ..Default::default()
        },
        listeners: Listeners {
            outbound_capture: None,
            inbound_capture: None,
            explicit: vec![listener],
        },
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

fn token_file(plane: &ControlPlane, dir: &Path, ns: &str, sa: &str) -> PathBuf {
    let token =
        plane
            .control()
            .issuer()
            .tokens
            .mint(ns, sa, Duration::from_secs(3600), SystemTime::now());
    let path = dir.join(format!("{sa}.token"));
    std::fs::write(&path, token).unwrap();
    path
}

/// curl through the client sidecar: (exit code, HTTP code, body).
async fn curl(port: u16) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "5", "-w", "\n%{http_code}"])
            .arg(format!("http://127.0.0.1:{port}/headers"))
            .output()
            .expect("curl runs");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (
            out.status.code().unwrap_or(-1),
            code.to_string(),
            body.to_string(),
        )
    })
    .await
    .unwrap()
}

async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn states(client: &ApiClient) -> Vec<(String, SyncState, Option<String>)> {
    client
        .proxies()
        .await
        .map(|rows| {
            rows.into_iter()
                .map(|r| {
                    (
                        r.status.node_id.clone(),
                        r.sync,
                        r.status.pushed.map(|p| p.nonce),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn all_synced(client: &ApiClient) -> bool {
    let s = states(client).await;
    s.len() == 2 && s.iter().all(|(_, st, _)| *st == SyncState::Synced)
}

const XFCC_SLEEP: &str = "URI=spiffe://cluster.local/ns/full/sa/sleep";

async fn assert_mtls_200(port: u16, when: &str) {
    let (exit, code, body) = curl(port).await;
    assert_eq!((exit, code.as_str()), (0, "200"), "{when}: {body}");
    assert!(
        body.contains(XFCC_SLEEP),
        "{when}: no client identity in {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_follow_pushes_refuse_bad_ones_and_outlive_the_control_plane() {
    let dir = tempfile::tempdir().unwrap();
    let plane = start_plane(dir.path()).await;
    let client = ApiClient::new(dir.path());

    let app = echo_app("127.0.0.1:0".parse().unwrap()).await;
    let r = client
        .apply(&ApplyRequest {
            documents: vec![Document {
                name: "topology.yaml".into(),
                text: topology(app.port()),
            }],
            namespace: None,
            create: false,
        })
        .await
        .unwrap();
    assert_eq!(r.outcomes.len(), 4);

    let server_token = token_file(&plane, dir.path(), "full", "httpbin");
    let client_token = token_file(&plane, dir.path(), "full", "sleep");
    let server: ProxyHandle = tessera_proxy::start(
        bootstrap(
            dir.path(),
            "httpbin-1.full",
            "spiffe://cluster.local/ns/full/sa/httpbin",
            &server_token,
            ExplicitListener {
                name: "inbound".into(),
                bind: SocketAddr::new("127.0.0.2".parse().unwrap(), app.port()),
                outbound: None,
                inbound: Some(app.port()),
            },
        ),
        None,
    )
    .await
    .expect("server sidecar starts");
    let sidecar: ProxyHandle = tessera_proxy::start(
        bootstrap(
            dir.path(),
            "sleep-1.full",
            "spiffe://cluster.local/ns/full/sa/sleep",
            &client_token,
            ExplicitListener {
                name: "outbound".into(),
                bind: "127.0.0.1:0".parse().unwrap(),
                outbound: Some("httpbin.full.svc.cluster.local:8000".into()),
                inbound: None,
            },
        ),
        None,
    )
    .await
    .expect("client sidecar starts");
    let port = sidecar.listener_addr("outbound").await.unwrap().port();

    wait_for("both proxies SYNCED", Duration::from_secs(10), || {
        all_synced(&client)
    })
    .await;
    assert!(sidecar.shared().is_synced() && server.shared().is_synced());
    assert_mtls_200(port, "after the first push").await;

    // A change that concerns no proxy pushes nothing.
    let pushed_before = states(&client).await;
    client
        .apply(&ApplyRequest {
            documents: vec![Document {
                name: "cm.yaml".into(),
                text: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: unrelated, namespace: default}\ndata: {a: b}\n".into(),
            }],
            namespace: None,
            create: false,
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        states(&client).await,
        pushed_before,
        "an unrelated change was pushed"
    );

    // A policy change reaches the server's inbound side.
    client
        .apply(&ApplyRequest {
            documents: vec![Document {
                name: "strict.yaml".into(),
                text: "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: full}\nspec:\n  mtls: {mode: STRICT}\n".into(),
            }],
            namespace: None,
            create: false,
        })
        .await
        .unwrap();
    let app_port = app.port();
    wait_for(
        "STRICT on the server's port",
        Duration::from_secs(10),
        || {
            let snap = server.shared().snapshot();
            async move {
                snap.config
                    .inbound
                    .ports
                    .iter()
                    .any(|p| p.port == app_port && p.mode == InboundMode::Strict)
            }
        },
    )
    .await;
    wait_for("SYNCED after STRICT", Duration::from_secs(10), || {
        all_synced(&client)
    })
    .await;
    assert_mtls_200(port, "under STRICT").await;

    // NACK: a DestinationRule naming a CA file the client proxy does not have.
    client
        .apply(&ApplyRequest {
            documents: vec![Document {
                name: "dr.yaml".into(),
                text: "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {name: httpbin, namespace: full}\nspec:\n  host: httpbin.full.svc.cluster.local\n  trafficPolicy:\n    tls: {mode: SIMPLE, caCertificates: /nonexistent/ca.pem}\n".into(),
            }],
            namespace: None,
            create: false,
        })
        .await
        .unwrap();
    wait_for("the client proxy's NACK", Duration::from_secs(10), || async {
        states(&client).await.iter().any(|(node, st, _)| {
            node == "sleep-1.full"
                && matches!(st, SyncState::Nacked { reason } if reason.contains("caCertificates") && reason.contains("/nonexistent/ca.pem"))
        })
    })
    .await;
    let rejected = sidecar.shared().last_rejected().unwrap_or_default();
    assert!(rejected.contains("/nonexistent/ca.pem"), "{rejected}");
    // The last good snapshot keeps serving: still mesh mTLS.
    assert_mtls_200(port, "after the NACK").await;
    client
        .delete(&DeleteRequest {
            documents: vec![],
            namespace: Some("full".into()),
            targets: vec![Target {
                kind: "dr".into(),
                name: "httpbin".into(),
                namespace: None,
            }],
            ignore_not_found: false,
        })
        .await
        .unwrap();
    wait_for(
        "SYNCED once the DestinationRule is gone",
        Duration::from_secs(10),
        || all_synced(&client),
    )
    .await;

    // The control plane goes away: traffic keeps flowing on the last snapshots.
    plane.shutdown().await;
    let status = sidecar.shared().clone();
    wait_for("the proxy to notice", Duration::from_secs(10), || {
        let s = status.clone();
        async move { s.push_status().is_some_and(|p| !p.connected) }
    })
    .await;
    for i in 0..5 {
        assert_mtls_200(port, &format!("control plane down, request {i}")).await;
    }

    // It comes back on the same state dir: the proxies reconnect and are SYNCED again.
    let plane = start_plane(dir.path()).await;
    wait_for("reconnect and SYNCED", Duration::from_secs(20), || {
        all_synced(&client)
    })
    .await;
    assert_mtls_200(port, "after the restart").await;
    let push = sidecar.shared().push_status().unwrap();
    assert!(push.connected && push.last_nack.is_none(), "{push:?}");

    let shared: Arc<_> = server.shared().clone();
    drop(shared);
    sidecar.drain(Duration::from_millis(100)).await;
    server.drain(Duration::from_millis(100)).await;
    plane.shutdown().await;
}

/// Opens a config stream as `node` with `token`; the first thing the server says.
async fn first_answer(dir: &Path, node: &str, token: &str) -> Result<ProxyConfig, tonic::Status> {
    use tessera_contract::push::config_discovery_client::ConfigDiscoveryClient;
    use tessera_contract::push::ConfigRequest;
    let channel = tessera_contract::transport::unix_channel(dir.join(PUSH_SOCKET), None);
    let mut client = ConfigDiscoveryClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(ConfigRequest {
        node_id: node.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let mut stream = client.stream(request).await?.into_inner();
    // The first push of a stream is whole, in parts: the configuration, then services.
    let mut config: Option<ProxyConfig> = None;
    let mut services = Vec::new();
    loop {
        let response = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("an answer")?
            .expect("a message");
        assert!(!response.incremental);
        if config.is_none() {
            config = Some(serde_json::from_slice(&response.config_json).unwrap());
        }
        services.extend(serde_json::from_slice::<Vec<Service>>(&response.services_json).unwrap());
        if !response.more {
            break;
        }
    }
    drop(tx);
    let mut config = config.unwrap();
    config.services = services;
    Ok(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_gets_only_the_configuration_of_its_own_service_account() {
    let dir = tempfile::tempdir().unwrap();
    let plane = start_plane(dir.path()).await;
    let client = ApiClient::new(dir.path());
    client
        .apply(&ApplyRequest {
            documents: vec![Document {
                name: "topology.yaml".into(),
                text: topology(8080),
            }],
            namespace: None,
            create: false,
        })
        .await
        .unwrap();
    let mint = |ns: &str, sa: &str| {
        plane
            .control()
            .issuer()
            .tokens
            .mint(ns, sa, Duration::from_secs(3600), SystemTime::now())
    };
    let own = first_answer(dir.path(), "sleep-1.full", &mint("full", "sleep"))
        .await
        .expect("its own configuration");
    assert_eq!(own.node.identity, "spiffe://cluster.local/ns/full/sa/sleep");

    // Another pod of the same namespace, run by another service account.
    let other = first_answer(dir.path(), "httpbin-1.full", &mint("full", "sleep"))
        .await
        .unwrap_err();
    assert_eq!(other.code(), tonic::Code::PermissionDenied);
    assert!(
        other.message().contains(
            "runs as spiffe://cluster.local/ns/full/sa/httpbin, but the token is for full/sleep"
        ),
        "{}",
        other.message()
    );
    // A node in another namespace.
    let foreign = first_answer(dir.path(), "sleep-1.legacy", &mint("full", "sleep"))
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), tonic::Code::PermissionDenied);
    // A token of another mesh.
    let stranger = tessera_ca::token::TokenKey::from_secret(b"another mesh").mint(
        "full",
        "sleep",
        Duration::from_secs(60),
        SystemTime::now(),
    );
    let refused = first_answer(dir.path(), "sleep-1.full", &stranger)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    assert!(
        refused
            .message()
            .contains("not minted by this control plane"),
        "{}",
        refused.message()
    );
    plane.shutdown().await;
}
