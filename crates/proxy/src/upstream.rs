//! Connections toward endpoints: TCP connect, the TLS the snapshot decided, and keep-alive
//! pools per (endpoint, TLS settings). Failures carry the phase and a reason in words.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tessera_contract::config::{EndpointTls, TlsMode};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::edges::{Connection, Edges};
use crate::io::EitherIo;
use crate::snapshot::{invalid_config, ConfigError, EndpointRoute, Flavor, Origination};

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_IDLE_PER_KEY: usize = 256;

pub type UpstreamIo = EitherIo<TcpStream, TlsStream<TcpStream>>;

/// Where an upstream attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Connect,
    TlsHandshake,
    HttpHandshake,
    Request,
}

impl Phase {
    pub fn label(self) -> &'static str {
        match self {
            Phase::Connect => "TCP connect",
            Phase::TlsHandshake => "TLS handshake",
            Phase::HttpHandshake => "HTTP handshake",
            Phase::Request => "request",
        }
    }
}

#[derive(Debug, Clone)]
pub struct UpstreamError {
    pub phase: Phase,
    pub reason: String,
}

impl UpstreamError {
    /// Connect and handshake failures happen before any byte of the request left:
    /// another endpoint may be tried.
    pub fn retryable(&self) -> bool {
        matches!(self.phase, Phase::Connect | Phase::TlsHandshake)
    }
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} failed: {}", self.phase.label(), self.reason)
    }
}

/// A rustls config for DestinationRule SIMPLE / MUTUAL.
pub fn user_tls_config(tls: &EndpointTls, path: &str) -> Result<ClientConfig, ConfigError> {
    let provider = tessera_ca::tls::provider();
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid_config(path, e.to_string()))?;
    let builder = match &tls.ca_certificates {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(ca).map_err(|e| {
                invalid_config(
                    format!("{path}.caCertificates"),
                    format!("{}: {e:?}", ca.display()),
                )
            })?;
            for cert in certs {
                let cert = cert.map_err(|e| {
                    invalid_config(
                        format!("{path}.caCertificates"),
                        format!("{}: {e:?}", ca.display()),
                    )
                })?;
                roots
                    .add(cert)
                    .map_err(|e| invalid_config(format!("{path}.caCertificates"), e.to_string()))?;
            }
            builder.with_root_certificates(roots)
        }
        // Istio's SIMPLE without caCertificates does not verify the server (analyze warns).
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoServerVerification(
                tessera_ca::tls::algorithms(),
            ))),
    };
    let config = if tls.mode == TlsMode::Mutual {
        let (Some(cert), Some(key)) = (&tls.client_certificate, &tls.private_key) else {
            return Err(invalid_config(
                path,
                "MUTUAL needs clientCertificate and privateKey",
            ));
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                invalid_config(
                    format!("{path}.clientCertificate"),
                    format!("{}: {e:?}", cert.display()),
                )
            })?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
            invalid_config(
                format!("{path}.privateKey"),
                format!("{}: {e:?}", key.display()),
            )
        })?;
        builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| invalid_config(path, e.to_string()))?
    } else {
        builder.with_no_client_auth()
    };
    Ok(config)
}

/// Accepts any server certificate but still checks the handshake signatures against it.
#[derive(Debug)]
struct NoServerVerification(rustls::crypto::WebPkiSupportedAlgorithms);

impl rustls::client::danger::ServerCertVerifier for NoServerVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// Connects to `addr` with the endpoint's TLS for `flavor`. Returns the stream and the
/// ALPN protocol negotiated.
/// Each attempt is counted in `edges`.
pub async fn connect(
    ep: &EndpointRoute,
    flavor: Flavor,
    edges: &Edges,
) -> Result<(UpstreamIo, Option<Vec<u8>>), UpstreamError> {
    let result = connect_endpoint(ep, flavor).await;
    if ep.local_app {
        return result;
    }
    let edge = Connection::outbound(ep.address, ep.origination.used());
    // The server's identity is not parsed out of its certificate here (a cost per
    // connection): the verifier already held it to the endpoint's SANs, and the server's
    // own sidecar reports it for the same edge.
    match &result {
        Ok(_) => edges.record(edge, || ep.reason.clone()),
        Err(e) => {
            let failure = match e.phase {
                Phase::Connect => "connect_failed",
                Phase::TlsHandshake => "tls_handshake_failed",
                _ => "failed",
            };
            edges.record(edge.failed(failure), || e.reason.clone());
        }
    }
    result
}

async fn connect_endpoint(
    ep: &EndpointRoute,
    flavor: Flavor,
) -> Result<(UpstreamIo, Option<Vec<u8>>), UpstreamError> {
    let tcp = connect_tcp(ep.address).await?;
    match &ep.origination {
        Origination::Plaintext => Ok((EitherIo::Left(tcp), None)),
        Origination::Tls {
            server_name,
            configs,
            ..
        } => {
            let config = configs[flavor as usize].clone();
            let handshake = TlsConnector::from(config).connect(server_name.clone(), tcp);
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    return Err(UpstreamError {
                        phase: Phase::TlsHandshake,
                        reason: upstream_tls_reason(&e),
                    })
                }
                Err(_) => {
                    return Err(UpstreamError {
                        phase: Phase::TlsHandshake,
                        reason: format!(
                            "no answer within {}s (the server may be waiting for plaintext)",
                            HANDSHAKE_TIMEOUT.as_secs()
                        ),
                    })
                }
            };
            let alpn = tls.get_ref().1.alpn_protocol().map(|p| p.to_vec());
            Ok((EitherIo::Right(tls), alpn))
        }
    }
}

pub async fn connect_tcp(addr: SocketAddr) -> Result<TcpStream, UpstreamError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => {
            let _ = tcp.set_nodelay(true);
            Ok(tcp)
        }
        Ok(Err(e)) => Err(UpstreamError {
            phase: Phase::Connect,
            reason: match e.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    format!("connection refused by {addr} (nothing listens there)")
                }
                _ => format!("{addr}: {e}"),
            },
        }),
        Err(_) => Err(UpstreamError {
            phase: Phase::Connect,
            reason: format!(
                "{addr} did not answer within {}s",
                CONNECT_TIMEOUT.as_secs()
            ),
        }),
    }
}

/// A client-side handshake failure in words; the common mesh misconfigurations named.
fn upstream_tls_reason(e: &std::io::Error) -> String {
    let base = tessera_ca::tls::handshake_reason(e);
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        Some(rustls::Error::InvalidMessage(_)) => format!(
            "the server did not answer with TLS (WRONG_VERSION_NUMBER: it reads this connection as plaintext; its port is DISABLE or it has no sidecar) [{base}]"
        ),
        Some(_) => base,
        None => match e.kind() {
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => format!(
                "the server closed the connection during the handshake (it may not accept mesh mTLS here) [{base}]"
            ),
            _ => base,
        },
    }
}

/// Keep-alive HTTP connections per pool key.
pub struct HttpPool {
    h1: Mutex<HashMap<u64, Vec<http1::SendRequest<Incoming>>>>,
    h2: Mutex<HashMap<u64, http2::SendRequest<Incoming>>>,
    /// New connections are counted here.
    edges: Arc<Edges>,
}

/// A connection ready for one request.
pub enum Sender {
    H1 {
        sender: http1::SendRequest<Incoming>,
        key: u64,
        /// Whether it came from the pool (it may have been closed by the server since).
        reused: bool,
    },
    H2(http2::SendRequest<Incoming>),
}

impl HttpPool {
    pub fn new(edges: Arc<Edges>) -> HttpPool {
        HttpPool {
            h1: Mutex::default(),
            h2: Mutex::default(),
            edges,
        }
    }

    /// A pooled connection to `ep`, or a new one. Connect and TLS failures surface here,
    /// before the request is committed, so the caller can try another endpoint.
    pub async fn acquire(
        self: &Arc<Self>,
        ep: &EndpointRoute,
        flavor: Flavor,
    ) -> Result<Sender, UpstreamError> {
        if flavor == Flavor::Http2 {
            let existing = {
                let conns = self.h2.lock().unwrap();
                conns.get(&ep.pool_key).filter(|s| !s.is_closed()).cloned()
            };
            if let Some(s) = existing {
                return Ok(Sender::H2(s));
            }
            let (io, _) = connect(ep, Flavor::Http2, &self.edges).await?;
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .handshake(TokioIo::new(io))
                .await
                .map_err(|e| UpstreamError {
                    phase: Phase::HttpHandshake,
                    reason: e.to_string(),
                })?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.h2.lock().unwrap().insert(ep.pool_key, sender.clone());
            return Ok(Sender::H2(sender));
        }
        if let Some(sender) = self.checkout_h1(ep.pool_key) {
            return Ok(Sender::H1 {
                sender,
                key: ep.pool_key,
                reused: true,
            });
        }
        Ok(Sender::H1 {
            sender: self.new_h1(ep).await?,
            key: ep.pool_key,
            reused: false,
        })
    }

    async fn new_h1(
        &self,
        ep: &EndpointRoute,
    ) -> Result<http1::SendRequest<Incoming>, UpstreamError> {
        let (io, _) = connect(ep, Flavor::Http1, &self.edges).await?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| UpstreamError {
                phase: Phase::HttpHandshake,
                reason: e.to_string(),
            })?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// Sends the request. A pooled HTTP/1 connection that the server closed meanwhile
    /// hands the request back unsent; it then goes over a new connection to `ep`.
    pub async fn send(
        self: &Arc<Self>,
        sender: Sender,
        ep: &EndpointRoute,
        req: Request<Incoming>,
    ) -> Result<http::Response<Incoming>, UpstreamError> {
        match sender {
            Sender::H2(mut s) => s.send_request(req).await.map_err(|e| UpstreamError {
                phase: Phase::Request,
                reason: request_reason(&e),
            }),
            Sender::H1 {
                mut sender,
                key,
                reused,
            } => {
                let req = match sender.try_send_request(req).await {
                    Ok(resp) => {
                        self.checkin_h1(key, sender);
                        return Ok(resp);
                    }
                    Err(mut e) => match (reused, e.take_message()) {
                        (true, Some(back)) => back,
                        _ => {
                            return Err(UpstreamError {
                                phase: Phase::Request,
                                reason: request_reason(e.error()),
                            })
                        }
                    },
                };
                let mut sender = self.new_h1(ep).await?;
                match sender.send_request(req).await {
                    Ok(resp) => {
                        self.checkin_h1(key, sender);
                        Ok(resp)
                    }
                    Err(e) => Err(UpstreamError {
                        phase: Phase::Request,
                        reason: request_reason(&e),
                    }),
                }
            }
        }
    }

    fn checkout_h1(&self, key: u64) -> Option<http1::SendRequest<Incoming>> {
        let mut idle = self.h1.lock().unwrap();
        let list = idle.get_mut(&key)?;
        while let Some(sender) = list.pop() {
            if sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    /// Returns the connection to the pool once its response has been read.
    fn checkin_h1(self: &Arc<Self>, key: u64, mut sender: http1::SendRequest<Incoming>) {
        let pool = self.clone();
        tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                let mut idle = pool.h1.lock().unwrap();
                let list = idle.entry(key).or_default();
                if list.len() < MAX_IDLE_PER_KEY {
                    list.push(sender);
                }
            }
        });
    }
}

fn request_reason(e: &hyper::Error) -> String {
    let mut source = std::error::Error::source(e);
    let mut reset = false;
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            reset |= io.kind() == std::io::ErrorKind::ConnectionReset;
        }
        source = s.source();
    }
    if e.is_incomplete_message() || e.is_canceled() || reset {
        "the server closed the connection before responding (reset reason: connection termination; a STRICT server refuses plaintext this way)".into()
    } else if e.is_parse() {
        format!("the server's answer is not HTTP ({e})")
    } else {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }
}
