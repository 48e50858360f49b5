//! The sidecar's decision rows on loopback, with real curl as the client: auto mTLS per
//! endpoint, PERMISSIVE/STRICT/DISABLE per port, DestinationRule overrides, app HTTPS
//! passthrough, XFCC, and reloads under traffic.

mod support;

use std::time::Duration;

use support::*;
use tessera_contract::config::{InboundMode, PortProtocol, TlsMode};

const HTTPBIN: &str = "httpbin.full.svc.cluster.local";

/// sleep → httpbin over mesh mTLS; the app sees exactly Istio's XFCC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_mtls_sets_exact_xfcc_and_strips_the_apps() {
    let mesh = Mesh::new();
    let sleep = mesh.workload("full", "sleep");
    let httpbin = mesh.workload("full", "httpbin");
    let app = echo_app().await;
    let server = start(server_config(
        &httpbin,
        app.port(),
        PortProtocol::Http,
        InboundMode::Permissive,
    ))
    .await;
    let inbound = addr(&server, "inbound").await;
    let client = start(client_config(
        &sleep,
        HTTPBIN,
        8000,
        PortProtocol::Http,
        vec![endpoint(
            inbound,
            TlsMode::IstioMutual,
            &[&httpbin.identity],
        )],
    ))
    .await;
    let outbound = addr(&client, "outbound").await;
    // A value the app sets itself never leaves the pod.
    let out = curl(&[
        "-H",
        "X-Forwarded-Client-Cert: By=evil",
        &format!("http://{outbound}/headers"),
    ])
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        xfcc(&out.stdout).unwrap(),
        format!(
            "By=spiffe://cluster.local/ns/full/sa/httpbin;Hash={};Subject=\"\";URI=spiffe://cluster.local/ns/full/sa/sleep",
            leaf_hash(&sleep.chain)
        )
    );
    // The response comes back through both proxies.
    let out = curl(&["-sI", &format!("http://{outbound}/status/418")]).await;
    assert!(out.stdout.starts_with("HTTP/1.1 418"), "{}", out.stdout);
    assert!(
        out.stdout.to_lowercase().contains("server: envoy"),
        "{}",
        out.stdout
    );
}

/// Plaintext and mesh clients toward each mode of a port: PERMISSIVE takes both (XFCC only
/// for mesh clients), STRICT resets plaintext, DISABLE takes plaintext.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modes_per_port() {
    let mesh = Mesh::new();
    let sleep = mesh.workload("full", "sleep");
    let httpbin = mesh.workload("full", "httpbin");
    let app = echo_app().await;
    for mode in [
        InboundMode::Permissive,
        InboundMode::Strict,
        InboundMode::Disable,
    ] {
        let server = start(server_config(
            &httpbin,
            app.port(),
            PortProtocol::Http,
            mode,
        ))
        .await;
        let inbound = addr(&server, "inbound").await;
        let auto_tls = if mode == InboundMode::Disable {
            TlsMode::Disable // auto mTLS sends plaintext to a DISABLE endpoint
        } else {
            TlsMode::IstioMutual
        };
        let client = start(client_config(
            &sleep,
            HTTPBIN,
            8000,
            PortProtocol::Http,
            vec![endpoint(inbound, auto_tls, &[&httpbin.identity])],
        ))
        .await;
        let outbound = addr(&client, "outbound").await;

        // A client with a sidecar: always 200; XFCC unless the server is DISABLE (then auto mTLS sends plaintext).
        let out = curl(&[&format!("http://{outbound}/headers")]).await;
        assert_eq!(out.code, 0, "{mode:?} mesh client: {}", out.stderr);
        assert_eq!(
            xfcc(&out.stdout).is_some(),
            mode != InboundMode::Disable,
            "{mode:?}: {}",
            out.stdout
        );

        // A legacy (plaintext) client straight at the server sidecar, with a forged XFCC.
        let out = curl(&[
            "-w",
            "\n%{http_code}",
            "-H",
            "X-Forwarded-Client-Cert: By=evil",
            &format!("http://{inbound}/headers"),
        ])
        .await;
        match mode {
            InboundMode::Strict => {
                // No sidecar toward STRICT: reset; curl exit 56, http_code 000.
                assert_eq!(out.code, 56, "{mode:?}: {} {}", out.stdout, out.stderr);
                assert_eq!(out.http_code(), "000");
                assert!(out.stderr.contains("reset"), "{}", out.stderr);
            }
            _ => {
                assert_eq!(out.code, 0, "{mode:?}: {}", out.stderr);
                assert_eq!(out.http_code(), "200");
                let body = out.stdout.rsplit_once('\n').unwrap().0;
                assert_eq!(xfcc(body), None, "{mode:?}: a forged XFCC is stripped");
            }
        }
        if mode == InboundMode::Strict {
            let refused = server
                .shared()
                .telemetry
                .metrics
                .refusals_of(tessera_contract::inbound::Refusal::StrictPlaintext);
            assert_eq!(refused, 1, "the refusal is counted on the refusing side");
            let metrics = curl(&[&format!(
                "http://{}/stats/prometheus",
                server.admin_addr().unwrap()
            )])
            .await;
            assert!(
                metrics
                    .stdout
                    .contains("tessera_refusals_total{reason=\"strict_plaintext\"} 1"),
                "{}",
                metrics.stdout
            );
        }
    }
}

/// Auto mTLS per endpoint: one endpoint with a sidecar (mTLS), one without (plaintext), round robin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_mtls_is_decided_per_endpoint() {
    let mesh = Mesh::new();
    let sleep = mesh.workload("full", "sleep");
    let httpbin = mesh.workload("partial", "httpbin");
    let app = echo_app().await;
    let plain_app = echo_app().await;
    let server = start(server_config(
        &httpbin,
        app.port(),
        PortProtocol::Http,
        InboundMode::Permissive,
    ))
    .await;
    let client = start(client_config(
        &sleep,
        "httpbin.partial.svc.cluster.local",
        8000,
        PortProtocol::Http,
        vec![
            endpoint(
                addr(&server, "inbound").await,
                TlsMode::IstioMutual,
                &[&httpbin.identity],
            ),
            endpoint(plain_app, TlsMode::Disable, &[]),
        ],
    ))
    .await;
    let outbound = addr(&client, "outbound").await;
    let mut with = 0;
    let mut without = 0;
    for _ in 0..10 {
        let out = curl(&[&format!("http://{outbound}/headers")]).await;
        assert_eq!(out.code, 0, "{}", out.stderr);
        match xfcc(&out.stdout) {
            Some(v) => {
                assert!(
                    v.contains("URI=spiffe://cluster.local/ns/full/sa/sleep"),
                    "{v}"
                );
                with += 1
            }
            None => without += 1,
        }
    }
    assert_eq!((with, without), (5, 5));
}

/// A DestinationRule ISTIO_MUTUAL toward a server whose port is DISABLE (and toward a workload
/// without a sidecar): 503 that says the server answered plaintext.
/// A DestinationRule DISABLE toward STRICT: 503, the server closed the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_rule_overrides_fail_with_reasons() {
    let mesh = Mesh::new();
    let sleep = mesh.workload("full", "sleep");
    let httpbin = mesh.workload("full", "httpbin");
    let app = echo_app().await;
    let disabled = start(server_config(
        &httpbin,
        app.port(),
        PortProtocol::Http,
        InboundMode::Disable,
    ))
    .await;
    let strict = start(server_config(
        &httpbin,
        app.port(),
        PortProtocol::Http,
        InboundMode::Strict,
    ))
    .await;
    let rows = [
        (
            "ISTIO_MUTUAL to DISABLE",
            endpoint(addr(&disabled, "inbound").await, TlsMode::IstioMutual, &[]),
            "phase: TLS handshake; reason: the server did not answer with TLS (WRONG_VERSION_NUMBER",
        ),
        (
            "ISTIO_MUTUAL to a workload without sidecar",
            endpoint(app, TlsMode::IstioMutual, &[]),
            "phase: TLS handshake; reason: the server did not answer with TLS (WRONG_VERSION_NUMBER",
        ),
        (
            "DISABLE to STRICT",
            endpoint(addr(&strict, "inbound").await, TlsMode::Disable, &[]),
            "phase: request; reason: the server closed the connection before responding",
        ),
        (
            "ISTIO_MUTUAL to the wrong identity",
            endpoint(
                addr(&strict, "inbound").await,
                TlsMode::IstioMutual,
                &[&id("full", "other")],
            ),
            "reason: identity spiffe://cluster.local/ns/full/sa/httpbin is not the one expected (spiffe://cluster.local/ns/full/sa/other)",
        ),
    ];
    for (name, ep, reason) in rows {
        let target = ep.address;
        let client = start(client_config(
            &sleep,
            HTTPBIN,
            8000,
            PortProtocol::Http,
            vec![ep],
        ))
        .await;
        let outbound = addr(&client, "outbound").await;
        let out = curl(&[
            "-w",
            "\n%{http_code}",
            &format!("http://{outbound}/headers"),
        ])
        .await;
        assert_eq!(out.http_code(), "503", "{name}: {}", out.stdout);
        let body = out.stdout.rsplit_once('\n').unwrap().0;
        assert!(
            body.starts_with("upstream connect error or disconnect/reset before headers. hop: outbound sleep.full -> httpbin.full.svc.cluster.local:8000 endpoint "),
            "{name}: {body}"
        );
        assert!(body.contains(&target.to_string()), "{name}: {body}");
        assert!(body.contains(reason), "{name}: {body}");
    }
}

/// The app's own TLS passes through (PERMISSIVE), is wrapped in
/// mesh mTLS between sidecars (STRICT), and a client without a mesh cert fails on STRICT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_https_passthrough_with_and_without_mesh_mtls() {
    let mesh = Mesh::new();
    let sleep = mesh.workload("full", "sleep");
    let nginx = mesh.workload("full", "nginx");
    let app = https_app().await;
    for mode in [InboundMode::Permissive, InboundMode::Strict] {
        let server = start(server_config(&nginx, app.port(), PortProtocol::Tcp, mode)).await;
        let inbound = addr(&server, "inbound").await;
        let client = start(client_config(
            &sleep,
            "my-nginx.full.svc.cluster.local",
            443,
            PortProtocol::Tcp,
            vec![endpoint(inbound, TlsMode::IstioMutual, &[&nginx.identity])],
        ))
        .await;
        let outbound = addr(&client, "outbound").await;
        // Through both sidecars: curl validates nginx's own certificate, not a sidecar's.
        let out = curl(&["-k", "-v", &format!("https://{outbound}/")]).await;
        assert_eq!(out.code, 0, "{mode:?}: {}", out.stderr);
        assert_eq!(out.stdout, "Welcome to nginx!\n");
        assert!(
            out.stderr.contains("CN=my-nginx"),
            "{mode:?}: {}",
            out.stderr
        );
        // Bypassing the client sidecar (seed 000's `curl` from the istio-proxy container).
        let out = curl(&["-k", "-v", &format!("https://{inbound}/")]).await;
        match mode {
            InboundMode::Permissive => {
                assert_eq!(out.code, 0, "{}", out.stderr);
                assert!(out.stderr.contains("CN=my-nginx"), "{}", out.stderr);
            }
            _ => {
                // Under STRICT the sidecar demands a client certificate (TLS 1.3: alert after
                // the handshake, exit 56; TLS 1.2: handshake failure, exit 35).
                assert!(
                    out.code == 56 || out.code == 35,
                    "{}: {}",
                    out.code,
                    out.stderr
                );
                assert!(
                    out.stderr.contains("certificate required") || out.stderr.contains("alert"),
                    "{}",
                    out.stderr
                );
            }
        }
    }
}

/// STRICT terminates any TLS: a non-mesh TLS client that holds a valid mesh certificate is
/// terminated and served (STRICT does not look at ALPN).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_serves_a_client_with_a_mesh_certificate() {
    let mesh = Mesh::new();
    let sleep = mesh.workload("full", "sleep");
    let httpbin = mesh.workload("full", "httpbin");
    let app = echo_app().await;
    let server = start(server_config(
        &httpbin,
        app.port(),
        PortProtocol::Http,
        InboundMode::Strict,
    ))
    .await;
    let inbound = addr(&server, "inbound").await;
    let out = curl(&[
        "-k",
        "--cert",
        sleep.chain.to_str().unwrap(),
        "--key",
        sleep.key.to_str().unwrap(),
        &format!("https://{inbound}/headers"),
    ])
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(xfcc(&out.stdout)
        .unwrap()
        .ends_with("URI=spiffe://cluster.local/ns/full/sa/sleep"));
    // The same request under PERMISSIVE is reset: its ALPN is not a mesh one.
    let permissive = start(server_config(
        &httpbin,
        app.port(),
        PortProtocol::Http,
        InboundMode::Permissive,
    ))
    .await;
    let out = curl(&[
        "-k",
        "--cert",
        sleep.chain.to_str().unwrap(),
        "--key",
        sleep.key.to_str().unwrap(),
        &format!("https://{}/headers", addr(&permissive, "inbound").await),
    ])
    .await;
    assert_ne!(out.code, 0, "{}", out.stdout);
}

/// Config and certificate reloads under traffic: no failed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_traffic_fail_no_request() {
    let mesh = Mesh::new();
    let sleep = mesh.workload("full", "sleep");
    let httpbin = mesh.workload("full", "httpbin");
    let app = echo_app().await;
    let server_a = start(server_config(
        &httpbin,
        app.port(),
        PortProtocol::Http,
        InboundMode::Strict,
    ))
    .await;
    let server_b = start(server_config(
        &httpbin,
        app.port(),
        PortProtocol::Http,
        InboundMode::Strict,
    ))
    .await;
    let ep_a = endpoint(
        addr(&server_a, "inbound").await,
        TlsMode::IstioMutual,
        &[&httpbin.identity],
    );
    let ep_b = endpoint(
        addr(&server_b, "inbound").await,
        TlsMode::IstioMutual,
        &[&httpbin.identity],
    );
    let mut config = client_config(
        &sleep,
        HTTPBIN,
        8000,
        PortProtocol::Http,
        vec![ep_a.clone()],
    );
    let client = start(config.clone()).await;
    let outbound = addr(&client, "outbound").await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        tokio::task::spawn_blocking(move || {
            // curl with keep-alive over many URLs, then a new connection: both kinds.
            let mut results = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut args: Vec<String> = ["-sS", "--max-time", "10", "-w", "%{http_code}\n"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                for _ in 0..20 {
                    args.extend([
                        "-o".into(),
                        "/dev/null".into(),
                        format!("http://{outbound}/status/200"),
                    ]);
                }
                let out = std::process::Command::new("curl")
                    .args(&args)
                    .output()
                    .unwrap();
                results.push((
                    out.status.code(),
                    String::from_utf8_lossy(&out.stdout).into_owned(),
                ));
            }
            results
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    // New endpoints, new version.
    config.version = "2".into();
    config.services[0].ports[0].endpoints = vec![ep_a.clone(), ep_b.clone()];
    client.update(config.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A bad config is refused whole; the proxy keeps serving the last good one.
    let mut bad = config.clone();
    bad.version = "3".into();
    bad.listeners.explicit[0].outbound = Some("nowhere.svc:1".into());
    assert!(client.update(bad).await.is_err());
    // Certificates rotate on both sides (files rewritten; the watchers pick them up).
    let before = client.shared().store.credentials().serial_hex.clone();
    mesh.reissue(&sleep);
    mesh.reissue(&httpbin);
    let mut changes = client.shared().store.subscribe();
    tokio::time::timeout(Duration::from_secs(10), changes.wait_for(|g| *g >= 1))
        .await
        .expect("the client's certificate reloads")
        .unwrap();
    assert_ne!(client.shared().store.credentials().serial_hex, before);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    config.version = "4".into();
    config.services[0].ports[0].endpoints = vec![ep_b];
    client.update(config).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let results = load.await.unwrap();
    let codes: Vec<&str> = results.iter().flat_map(|(_, s)| s.lines()).collect();
    assert!(codes.len() >= 40, "enough requests ran: {}", codes.len());
    let failed: Vec<_> = results
        .iter()
        .filter(|(c, s)| *c != Some(0) || s.lines().any(|l| l != "200"))
        .take(3)
        .collect();
    assert!(failed.is_empty(), "every request succeeded: {failed:?}");
    let dump = curl(&[&format!(
        "http://{}/config_dump",
        client.admin_addr().unwrap()
    )])
    .await;
    let dump: serde_json::Value = serde_json::from_str(&dump.stdout).unwrap();
    assert_eq!(dump["version"], "4");
    assert!(dump["last_rejected"]
        .as_str()
        .unwrap()
        .starts_with("version 3: configuration: listeners.explicit[0]"));
}

/// The admin `/certs` shape (Envoy's, with Istio's resource names).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_certs() {
    let mesh = Mesh::new();
    let httpbin = mesh.workload("full", "httpbin");
    let app = echo_app().await;
    let server = start(server_config(
        &httpbin,
        app.port(),
        PortProtocol::Http,
        InboundMode::Strict,
    ))
    .await;
    let out = curl(&[&format!("http://{}/certs", server.admin_addr().unwrap())]).await;
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let leaf = &v["certificates"][0]["cert_chain"][0];
    assert_eq!(leaf["name"], "default");
    assert_eq!(
        leaf["subject_alt_names"][0]["uri"],
        "spiffe://cluster.local/ns/full/sa/httpbin"
    );
    assert_eq!(
        leaf["days_until_expiration"], "0",
        "a 24 h certificate has 0 whole days left"
    );
    assert_eq!(
        leaf["serial_number"]
            .as_str()
            .unwrap()
            .trim_start_matches('0'),
        server
            .shared()
            .store
            .credentials()
            .serial_hex
            .trim_start_matches('0')
    );
    assert_eq!(v["certificates"][0]["ca_cert"][0]["name"], "ROOTCA");
    let ready = curl(&[
        "-w",
        "%{http_code}",
        "-o",
        "/dev/null",
        &format!("http://{}/ready", server.admin_addr().unwrap()),
    ])
    .await;
    assert_eq!(ready.stdout, "200");
}

/// An HTTP2 port speaks h2 between the sidecars (ALPN istio-h2) and h2c to
/// the app; an HTTP/2 client works against an HTTP/1 port too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_end_to_end() {
    let mesh = Mesh::new();
    let sleep = mesh.workload("full", "sleep");
    let httpbin = mesh.workload("full", "httpbin");
    let app = echo_app().await;
    for protocol in [PortProtocol::Http2, PortProtocol::Http] {
        let server = start(server_config(
            &httpbin,
            app.port(),
            protocol,
            InboundMode::Strict,
        ))
        .await;
        let client = start(client_config(
            &sleep,
            HTTPBIN,
            8000,
            protocol,
            vec![endpoint(
                addr(&server, "inbound").await,
                TlsMode::IstioMutual,
                &[&httpbin.identity],
            )],
        ))
        .await;
        let outbound = addr(&client, "outbound").await;
        let out = curl(&[
            "--http2-prior-knowledge",
            "-w",
            "\n%{http_version}",
            &format!("http://{outbound}/headers"),
        ])
        .await;
        assert_eq!(out.code, 0, "{protocol:?}: {}", out.stderr);
        assert_eq!(
            out.http_code(),
            "2",
            "{protocol:?}: the client spoke HTTP/2"
        );
        let body = out.stdout.rsplit_once('\n').unwrap().0;
        assert!(xfcc(body)
            .unwrap()
            .ends_with("URI=spiffe://cluster.local/ns/full/sa/sleep"));
    }
}

/// An undeclared port sniffs HTTP (L7,
/// XFCC) and passes the app's TLS through (inside mesh mTLS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_ports_sniff() {
    let mesh = Mesh::new();
    let sleep = mesh.workload("full", "sleep");
    let httpbin = mesh.workload("full", "httpbin");
    for (app, scheme) in [(echo_app().await, "http"), (https_app().await, "https")] {
        let server = start(server_config(
            &httpbin,
            app.port(),
            PortProtocol::Auto,
            InboundMode::Strict,
        ))
        .await;
        let client = start(client_config(
            &sleep,
            HTTPBIN,
            8000,
            PortProtocol::Auto,
            vec![endpoint(
                addr(&server, "inbound").await,
                TlsMode::IstioMutual,
                &[&httpbin.identity],
            )],
        ))
        .await;
        let outbound = addr(&client, "outbound").await;
        let out = curl(&["-k", &format!("{scheme}://{outbound}/headers")]).await;
        assert_eq!(out.code, 0, "{scheme}: {}", out.stderr);
        if scheme == "http" {
            assert!(
                xfcc(&out.stdout).is_some(),
                "sniffed as HTTP: {}",
                out.stdout
            );
        } else {
            assert_eq!(out.stdout, "Welcome to nginx!\n");
        }
    }
}

/// The app speaks TLS to a port declared `http`: the client sidecar
/// answers 400 in plaintext and curl's TLS fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_an_http_port_fails_at_the_client() {
    let mesh = Mesh::new();
    let sleep = mesh.workload("full", "sleep");
    let app = https_app().await;
    let client = start(client_config(
        &sleep,
        "my-nginx.full.svc.cluster.local",
        443,
        PortProtocol::Http,
        vec![endpoint(app, TlsMode::Disable, &[])],
    ))
    .await;
    let out = curl(&[
        "-k",
        &format!("https://{}/", addr(&client, "outbound").await),
    ])
    .await;
    assert_eq!(out.code, 35, "{}", out.stderr);
}

/// Certificates from the mesh CA: the proxy makes its key, presents its bootstrap token
/// (read from a file, as a projected service-account token) and serves mesh mTLS with
/// what the CA signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_from_the_ca() {
    let mesh = Mesh::new();
    let sleep = mesh.workload("full", "sleep");
    let ca_dir = tempfile::tempdir().unwrap();
    let ca = tessera_ca::testing::LocalCa::start(ca_dir.path(), TD).unwrap();
    let token_file = ca_dir.path().join("httpbin.token");
    std::fs::write(&token_file, ca.token("full", "httpbin")).unwrap();
    let app = echo_app().await;
    let httpbin = Workload {
        identity: id("full", "httpbin"),
        chain: "unused".into(),
        key: "unused".into(),
        root: "unused".into(),
    };
    let mut config = server_config(
        &httpbin,
        app.port(),
        PortProtocol::Http,
        InboundMode::Strict,
    );
    config.certificates = tessera_contract::config::CertificateSource {
        files: None,
        ca: Some(tessera_contract::config::CaSource {
            socket: ca.socket.clone(),
            token_file: token_file.clone(),
            ttl: Some("1h".into()),
        }),
    };
    let server = start(config.clone()).await;
    let creds = server.shared().store.credentials();
    assert_eq!(creds.identity, id("full", "httpbin"));
    let lifetime = creds.not_after.duration_since(creds.not_before).unwrap();
    assert!(lifetime <= Duration::from_secs(3600 + 180), "{lifetime:?}");
    // The client (certificates from files, same CA) accepts it as httpbin.
    // (Mesh's CA and the LocalCa differ: give the client the LocalCa's root.)
    std::fs::write(&sleep.root, ca.issuer.authority.root_bundle()).unwrap();
    let (key, chain) = ca
        .issuer
        .authority
        .issue(&sleep.identity, None, tessera_ca::KeyAlgorithm::EcdsaP256)
        .unwrap();
    std::fs::write(&sleep.key, key).unwrap();
    std::fs::write(&sleep.chain, chain.chain_pem()).unwrap();
    let client = start(client_config(
        &sleep,
        HTTPBIN,
        8000,
        PortProtocol::Http,
        vec![endpoint(
            addr(&server, "inbound").await,
            TlsMode::IstioMutual,
            &[&id("full", "httpbin")],
        )],
    ))
    .await;
    let out = curl(&[&format!(
        "http://{}/headers",
        addr(&client, "outbound").await
    )])
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(xfcc(&out.stdout)
        .unwrap()
        .starts_with("By=spiffe://cluster.local/ns/full/sa/httpbin;"));
    // A token for another service account is refused by the CA: the proxy does not start.
    std::fs::write(&token_file, ca.token("full", "sleep")).unwrap();
    let err = tessera_proxy::start(config, None)
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string()
            .contains("the token authenticates spiffe://cluster.local/ns/full/sa/sleep"),
        "{err}"
    );
}

/// A policy change reaches connections that are already open: a plaintext keep-alive
/// connection let in under PERMISSIVE is closed when the port turns STRICT (else a
/// lockdown would not lock out clients that connected before it), while one whose port
/// keeps its mode stays open across the same update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connections_follow_a_policy_change() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mesh = Mesh::new();
    let httpbin = mesh.workload("full", "httpbin");
    let app = echo_app().await;
    let permissive = server_config(
        &httpbin,
        app.port(),
        PortProtocol::Http,
        InboundMode::Permissive,
    );
    let server = start(permissive.clone()).await;
    let inbound = addr(&server, "inbound").await;

    // One request on a keep-alive connection; returns the open connection.
    async fn request(conn: &mut tokio::net::TcpStream) -> String {
        conn.write_all(b"GET /headers HTTP/1.1\r\nHost: httpbin\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
    let mut conn = tokio::net::TcpStream::connect(inbound).await.unwrap();
    assert!(request(&mut conn).await.starts_with("HTTP/1.1 200"));

    // The same config again (a push that changes nothing for this port): still open.
    let mut same = permissive.clone();
    same.version = "2".into();
    server.update(same).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(request(&mut conn).await.starts_with("HTTP/1.1 200"));

    // STRICT: the server closes the connection on its own, without a request.
    let mut strict = permissive.clone();
    strict.version = "3".into();
    strict.inbound.ports[0].mode = InboundMode::Strict;
    server.update(strict).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
        .await
        .expect("the server closes the connection");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "closed, not answered: {read:?}"
    );
    // And a new plaintext connection is refused as STRICT refuses it.
    let out = curl(&["-w", "\n%{http_code}", &format!("http://{inbound}/headers")]).await;
    assert_eq!((out.code, out.http_code()), (56, "000"), "{}", out.stderr);
}

/// A known service without endpoints yet: the request is held until a configuration that
/// lists one arrives (then answered), or answered 503 when none does within the hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_a_service_without_endpoints_waits_for_the_push_that_brings_one() {
    let mesh = Mesh::new();
    let sleep = mesh.workload("full", "sleep");
    let app = echo_app().await;
    let host = "httpbin.full.svc.cluster.local";
    let mut empty = client_config(&sleep, host, 8000, PortProtocol::Http, vec![]);
    empty.runtime.endpoint_hold_ms = 3000;
    let client = start(empty.clone()).await;
    let outbound = addr(&client, "outbound").await;
    let code = ["-w", "\n%{http_code}"];
    let request =
        tokio::spawn(
            async move { curl(&[code[0], code[1], &format!("http://{outbound}/get")]).await },
        );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mut with_endpoint = client_config(
        &sleep,
        host,
        8000,
        PortProtocol::Http,
        vec![endpoint(app, TlsMode::Disable, &[])],
    );
    with_endpoint.version = "2".into();
    with_endpoint.runtime.endpoint_hold_ms = 3000;
    client.update(with_endpoint).await.unwrap();
    let out = request.await.unwrap();
    assert_eq!(out.http_code(), "200", "{}", out.stdout);

    // No push brings one: 503 after the hold, naming the empty service.
    let mut short = empty;
    short.version = "3".into();
    short.runtime.endpoint_hold_ms = 300;
    client.update(short).await.unwrap();
    let started = std::time::Instant::now();
    let out = curl(&["-w", "\n%{http_code}", &format!("http://{outbound}/get")]).await;
    assert_eq!(out.http_code(), "503", "{}", out.stdout);
    assert!(
        out.stdout.contains("the service has no endpoints"),
        "{}",
        out.stdout
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
}
