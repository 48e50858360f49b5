//! An external TLS scanner (Debian's `sslscan`, built on OpenSSL) against a STRICT sidecar
//! port and a gateway SIMPLE port: no protocol below TLS 1.2, only AEAD suites with
//! forward secrecy, the server's cipher order, and (OpenSSL's `s_client`) the mesh port
//! refusing a client without a certificate.

mod support;

use std::net::SocketAddr;
use std::process::Command;

use support::*;
use tessera_contract::config::{
    GatewayListener, GatewayServer, InboundMode, KeyPairSource, PortProtocol, ServerKind,
    ServerTls, TerminationMode,
};

/// Runs a command off the runtime's threads; its stdout and stderr together.
async fn run(program: &str, args: Vec<String>) -> String {
    let program = program.to_string();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(&program)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{program} is installed: {e}"));
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
    .await
    .unwrap()
}

/// What sslscan found: protocol → enabled, and the accepted suites (protocol, bits, name),
/// the preferred one of each protocol first.
struct Scan {
    text: String,
    protocols: Vec<(String, bool)>,
    suites: Vec<(String, u32, String, bool)>,
}

async fn sslscan(addr: SocketAddr) -> Scan {
    let text = run("sslscan", vec!["--no-colour".into(), addr.to_string()]).await;
    let mut protocols = Vec::new();
    let mut suites = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [p, state] if p.starts_with("SSLv") || p.starts_with("TLSv") => {
                protocols.push((p.to_string(), *state == "enabled"));
            }
            [kind @ ("Preferred" | "Accepted"), proto, bits, "bits", name, ..] => {
                suites.push((
                    proto.to_string(),
                    bits.parse().unwrap(),
                    name.to_string(),
                    *kind == "Preferred",
                ));
            }
            _ => {}
        }
    }
    Scan {
        text,
        protocols,
        suites,
    }
}

/// The strong-suite rule: AEAD (GCM or ChaCha20-Poly1305), at least 128 bits, and for
/// TLS 1.2 an ephemeral (ECDHE) key exchange.
fn strong(proto: &str, bits: u32, name: &str) -> bool {
    let aead = name.contains("GCM") || name.contains("CHACHA20");
    let forward_secret = proto == "TLSv1.3" || name.starts_with("ECDHE-");
    aead && forward_secret && bits >= 128
}

fn assert_hardened(scan: &Scan, what: &str) {
    for old in ["SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1"] {
        assert!(
            scan.protocols.iter().any(|(p, on)| p == old && !on),
            "{what}: {old} must be disabled:\n{}",
            scan.text
        );
    }
    assert!(
        scan.protocols.iter().any(|(p, on)| p == "TLSv1.3" && *on),
        "{what}: TLS 1.3 on:\n{}",
        scan.text
    );
    assert!(!scan.suites.is_empty(), "{what}: no suites:\n{}", scan.text);
    for (proto, bits, name, _) in &scan.suites {
        assert!(
            strong(proto, *bits, name),
            "{what}: weak suite {proto} {name}:\n{}",
            scan.text
        );
    }
    // The server's own order: the strongest TLS 1.3 suite is preferred whatever the
    // client lists first.
    let preferred13 = scan
        .suites
        .iter()
        .find(|(p, _, _, preferred)| p == "TLSv1.3" && *preferred)
        .map(|s| s.2.as_str());
    assert_eq!(
        preferred13,
        Some("TLS_AES_256_GCM_SHA384"),
        "{what}:\n{}",
        scan.text
    );
}

/// The suite OpenSSL's client ends up with when it offers `offer` (its order).
async fn chosen_suite(addr: SocketAddr, version: &str, offer: &str) -> String {
    let suites_flag = if version == "-tls1_3" {
        "-ciphersuites"
    } else {
        "-cipher"
    };
    let text = run(
        "openssl",
        vec![
            "s_client".into(),
            "-connect".into(),
            addr.to_string(),
            version.into(),
            suites_flag.into(),
            offer.into(),
            "-brief".into(),
        ],
    )
    .await;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Ciphersuite: "))
        .unwrap_or_else(|| panic!("no ciphersuite in:\n{text}"))
        .to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strict_port_and_a_gateway_port_pass_an_external_scan() {
    let mesh = Mesh::new();
    let httpbin = mesh.workload("full", "httpbin");
    let app = echo_app().await;
    let sidecar = start(server_config(
        &httpbin,
        app.port(),
        PortProtocol::Http,
        InboundMode::Strict,
    ))
    .await;
    let strict = addr(&sidecar, "inbound").await;

    // A gateway with a SIMPLE server, its certificate from files.
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["httpbin.example.com".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let dir = mesh.dir.path().join("gateway-cert");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
    let port = free_port();
    let mut gw = base_config(&mesh.workload("istio-system", "istio-ingressgateway"));
    gw.gateway.push(GatewayListener {
        port,
        server_port: 443,
        servers: vec![GatewayServer {
            name: "https.443.https.mygateway.default".into(),
            source: "Gateway default/mygateway server 0".into(),
            kind: ServerKind::TerminateHttp,
            server_names: vec![],
            tls: Some(ServerTls {
                mode: TerminationMode::Simple,
                key_pair: KeyPairSource::Files {
                    cert_chain: dir.join("tls.crt"),
                    private_key: dir.join("tls.key"),
                },
                client_ca: None,
                subject_alt_names: vec![],
                min_protocol_version: None,
                max_protocol_version: None,
                cipher_suites: vec![],
            }),
            virtual_hosts: vec![],
            l4_routes: vec![],
        }],
    });
    let _gateway = start(gw).await;
    let simple = SocketAddr::from(([127, 0, 0, 1], port));

    let scan = sslscan(strict).await;
    eprintln!("sslscan of the STRICT sidecar port:\n{}", scan.text);
    assert_hardened(&scan, "STRICT sidecar port");
    let scan = sslscan(simple).await;
    eprintln!("sslscan of the gateway SIMPLE port:\n{}", scan.text);
    assert_hardened(&scan, "gateway SIMPLE port");
    assert!(
        scan.protocols.iter().any(|(p, on)| p == "TLSv1.2" && *on),
        "the gateway serves TLS 1.2 clients:\n{}",
        scan.text
    );
    let tls12: Vec<&str> = scan
        .suites
        .iter()
        .filter(|s| s.0 == "TLSv1.2")
        .map(|s| s.2.as_str())
        .collect();
    assert_eq!(
        tls12.first(),
        Some(&"ECDHE-ECDSA-AES256-GCM-SHA384"),
        "{}",
        scan.text
    );

    // Server order, asked directly: a client that lists the weakest first still gets the
    // server's first choice.
    assert_eq!(
        chosen_suite(
            simple,
            "-tls1_3",
            "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384"
        )
        .await,
        "TLS_AES_256_GCM_SHA384"
    );
    assert_eq!(
        chosen_suite(
            simple,
            "-tls1_2",
            "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384"
        )
        .await,
        "ECDHE-ECDSA-AES256-GCM-SHA384"
    );

    // The mesh port refuses a client without a certificate (TLS alert 116). In TLS 1.3
    // the alert follows the client's Finished: keep the client reading for a moment.
    let text = run(
        "sh",
        vec![
            "-c".into(),
            format!(
                "(printf 'GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'; sleep 1) | openssl s_client -connect {strict} -alpn istio-peer-exchange,istio-http/1.1 -brief"
            ),
        ],
    )
    .await;
    assert!(
        text.contains("certificate required"),
        "a client without a certificate:\n{text}"
    );
}
