//! Connections toward endpoints: TCP connect and the TLS the snapshot decided, with
//! timeouts. A failure carries the phase it failed in and a reason in words (the common
//! mesh misconfigurations named). Every attempt is counted as an edge.

use crate::config::{EndpointRoute, Flavor, Origination};
use crate::io::EitherIo;
use crate::telemetry::Telemetry;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub type UpstreamIo = EitherIo<TcpStream, TlsStream<TcpStream>>;

/// Where an upstream attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Connect,
    TlsHandshake,
    HttpHandshake,
    Request,
    /// The client's request body stopped moving for the stream idle timeout.
    RequestIdle,
    /// The upstream's response stopped moving (or never began) for the stream idle timeout.
    ResponseIdle,
}

impl Phase {
    pub fn label(self) -> &'static str {
        match self {
            Phase::Connect => "TCP connect",
            Phase::TlsHandshake => "TLS handshake",
            Phase::HttpHandshake => "HTTP handshake",
            Phase::Request => "request",
            Phase::RequestIdle => "request body (stream idle timeout)",
            Phase::ResponseIdle => "response (stream idle timeout)",
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

    /// The proxy's own answer when the stream idle timeout ended the exchange, as
    /// Envoy's: 408 when the client's request body stopped, 504 when the upstream's
    /// answer did not come.
    pub fn stream_idle_status(&self) -> Option<http::StatusCode> {
        match self.phase {
            Phase::RequestIdle => Some(http::StatusCode::REQUEST_TIMEOUT),
            Phase::ResponseIdle => Some(http::StatusCode::GATEWAY_TIMEOUT),
            _ => None,
        }
    }
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} failed: {}", self.phase.label(), self.reason)
    }
}

/// Connects to `addr` with the endpoint's TLS for `flavor`. Returns the stream and the
/// ALPN protocol negotiated. Each attempt toward the mesh is an outbound edge.
pub async fn connect(
    ep: &EndpointRoute,
    flavor: Flavor,
    telemetry: &Telemetry,
) -> Result<(UpstreamIo, Option<Vec<u8>>), UpstreamError> {
    let result = connect_endpoint(ep, flavor).await;
    if ep.local_app {
        return result;
    }
    let tls = ep.origination.used();
    match &result {
        Ok(_) => telemetry.upstream_connection(ep.address, tls, None, || ep.reason.to_string()),
        Err(e) => {
            let failure = match e.phase {
                Phase::Connect => "connect_failed",
                Phase::TlsHandshake => "tls_handshake_failed",
                _ => "failed",
            };
            telemetry.upstream_connection(ep.address, tls, Some(failure), || e.reason.clone());
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
            let config = configs.get(flavor).map_err(|e| UpstreamError {
                phase: Phase::TlsHandshake,
                reason: format!("no TLS configuration: {e}"),
            })?;
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
