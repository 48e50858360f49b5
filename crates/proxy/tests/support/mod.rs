//! A loopback mesh for tests: a CA, workload certificates on disk, apps (an httpbin-like
//! echo over HTTP and an nginx-like HTTPS server with its own certificate), proxies run
//! in-process, and real curl as the client.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tessera_ca::{Authority, KeyAlgorithm, SpiffeId};
use tessera_contract::config::*;
use tessera_proxy::ProxyHandle;
use tokio::net::TcpListener;

pub const TD: &str = "cluster.local";

pub fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new(TD, ns, sa).unwrap()
}

pub struct Mesh {
    pub dir: tempfile::TempDir,
    pub ca: Authority,
}

/// A workload's certificate files.
#[derive(Clone)]
pub struct Workload {
    pub identity: SpiffeId,
    pub chain: PathBuf,
    pub key: PathBuf,
    pub root: PathBuf,
}

impl Mesh {
    pub fn new() -> Mesh {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _) = Authority::init(&dir.path().join("ca")).unwrap();
        Mesh { dir, ca }
    }

    /// Issues a certificate for `ns`/`sa` into files (fresh serial on every call).
    pub fn workload(&self, ns: &str, sa: &str) -> Workload {
        let identity = id(ns, sa);
        let dir = self.dir.path().join(format!("{ns}-{sa}"));
        std::fs::create_dir_all(&dir).unwrap();
        let w = Workload {
            identity,
            chain: dir.join("cert-chain.pem"),
            key: dir.join("key.pem"),
            root: dir.join("root-cert.pem"),
        };
        self.reissue(&w);
        w
    }

    pub fn reissue(&self, w: &Workload) {
        let (key, chain) = self
            .ca
            .issue(&w.identity, None, KeyAlgorithm::EcdsaP256)
            .unwrap();
        // Key first, then the chain: the watcher may see a half-updated set and must keep
        // the old certificate until both match.
        write_replace(&w.key, key.as_bytes());
        write_replace(&w.chain, chain.chain_pem().as_bytes());
        write_replace(&w.root, self.ca.root_bundle().as_bytes());
    }
}

fn write_replace(path: &Path, data: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

pub fn base_config(w: &Workload) -> ProxyConfig {
    ProxyConfig {
        authorization: Default::default(),
        version: "1".into(),
        node: Node {
            id: format!(
                "{}.{}",
                w.identity.service_account(),
                w.identity.namespace()
            ),
            identity: w.identity.to_string(),
            trust_domain: TD.into(),
        },
        certificates: CertificateSource {
            files: Some(CertificateFiles {
                cert_chain: w.chain.clone(),
                private_key: w.key.clone(),
                root_cert: w.root.clone(),
            }),
            ca: None,
        },
        admin: Admin {
            address: Some("127.0.0.1:0".parse().unwrap()),
        },
        runtime: ProxyRuntime {
            threads: 1,
            access_log: true,
            drain_seconds: 2,
            protocol_detection_ms: 300,
            ..Default::default()
        },
        listeners: Listeners::default(),
        services: vec![],
        inbound: Inbound::default(),
        control_plane: None,
        volumes: Default::default(),
        gateway: vec![],
        secrets: vec![],
    }
}

/// A server-side sidecar: one explicit inbound listener ("inbound") for `app_port`.
pub fn server_config(
    w: &Workload,
    app_port: u16,
    protocol: PortProtocol,
    mode: InboundMode,
) -> ProxyConfig {
    let mut c = base_config(w);
    c.listeners.explicit.push(ExplicitListener {
        name: "inbound".into(),
        bind: "127.0.0.1:0".parse().unwrap(),
        outbound: None,
        inbound: Some(app_port),
    });
    c.inbound.ports.push(InboundPort {
        port: app_port,
        protocol,
        mode,
        reason: "test".into(),
        forward_to: None,
        tls: None,
        operation: None,
    });
    c
}

pub fn endpoint(address: SocketAddr, mode: TlsMode, sans: &[&SpiffeId]) -> Endpoint {
    Endpoint {
        address,
        workload: None,
        tls: EndpointTls {
            mode,
            subject_alt_names: sans.iter().map(|s| s.to_string()).collect(),
            reason: match mode {
                TlsMode::IstioMutual => "test: mesh mTLS".into(),
                _ => "test: plaintext".into(),
            },
            ..EndpointTls::default()
        },
    }
}

/// A client-side sidecar with one explicit outbound listener ("outbound") for `host:port`.
pub fn client_config(
    w: &Workload,
    host: &str,
    port: u16,
    protocol: PortProtocol,
    endpoints: Vec<Endpoint>,
) -> ProxyConfig {
    let mut c = base_config(w);
    c.listeners.explicit.push(ExplicitListener {
        name: "outbound".into(),
        bind: "127.0.0.1:0".parse().unwrap(),
        outbound: Some(format!("{host}:{port}")),
        inbound: None,
    });
    c.services.push(Service {
        host: host.into(),
        vips: vec![],
        ports: vec![ServicePort {
            port,
            name: None,
            protocol,
            endpoints,
        }],
    });
    c
}

pub async fn start(config: ProxyConfig) -> ProxyHandle {
    tessera_proxy::start(config, None).await.unwrap()
}

pub async fn addr(p: &ProxyHandle, listener: &str) -> SocketAddr {
    p.listener_addr(listener).await.unwrap()
}

/// An httpbin-like app: `/headers` answers the request headers as JSON, `/status/N` with N.
pub async fn echo_app() -> SocketAddr {
    echo_app_on("127.0.0.1:0").await
}

pub async fn echo_app_on(bind: &str) -> SocketAddr {
    let listener = TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let path = req.uri().path().to_string();
                    let code = path
                        .strip_prefix("/status/")
                        .and_then(|c| c.parse::<u16>().ok())
                        .unwrap_or(200);
                    let mut headers = serde_json::Map::new();
                    for (k, v) in req.headers() {
                        headers.insert(
                            k.as_str().to_string(),
                            serde_json::Value::String(v.to_str().unwrap_or("").to_string()),
                        );
                    }
                    let body = serde_json::json!({"headers": headers, "path": path}).to_string();
                    let resp = hyper::Response::builder()
                        .status(code)
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(body)))
                        .unwrap();
                    Ok::<_, std::convert::Infallible>(resp)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
            });
        }
    });
    addr
}

/// An nginx-like HTTPS app with its own certificate (CN=my-nginx), not a mesh one.
pub async fn https_app() -> SocketAddr {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["my-nginx".to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "my-nginx");
    let cert = params.self_signed(&key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(tessera_ca::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    let mut config = config;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(|_req: hyper::Request<hyper::body::Incoming>| async move {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                        Bytes::from_static(b"Welcome to nginx!\n"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

pub struct Curl {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Curl {
    /// `%{http_code}` when curl was asked for it with `-w`.
    pub fn http_code(&self) -> &str {
        self.stdout.rsplit('\n').next().unwrap_or("")
    }
}

/// Runs real curl (off the async runtime's threads).
pub async fn curl(args: &[&str]) -> Curl {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10"])
            .args(&args)
            .output()
            .expect("curl is installed");
        Curl {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .unwrap()
}

/// The headers the echo app saw, from its JSON answer.
pub fn seen_headers(body: &str) -> serde_json::Map<String, serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_str(body.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    v["headers"].as_object().cloned().unwrap_or_default()
}

pub fn xfcc(body: &str) -> Option<String> {
    seen_headers(body)
        .get("x-forwarded-client-cert")
        .and_then(|v| v.as_str())
        .map(str::to_string)
}

/// Lowercase hex SHA-256 of the leaf in a PEM chain file.
pub fn leaf_hash(chain: &Path) -> String {
    use sha2::Digest;
    let pem = std::fs::read_to_string(chain).unwrap();
    let der: rustls_pki_types::CertificateDer<'static> =
        rustls_pki_types::pem::PemObject::from_pem_slice(pem.as_bytes()).unwrap();
    sha2::Sha256::digest(der.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
